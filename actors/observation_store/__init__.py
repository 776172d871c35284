"""The observation store actor (IQM station-control data, Ricochet messages)."""

from .actor import ObservationStore, ObservationStoreOptions

__all__ = ["ObservationStore", "ObservationStoreOptions"]
