"""stationd actors: one module per actor, plus the shared libraries they use (base, specs)."""
