"""Versions of the stationd package and of its wire protocol."""

VERSION = "0.1.0"
"""Release of the stationd package (daemon, actors, protocol, clients)."""

PROTOCOL_VERSION = 5
"""Version of the message schema; bump it whenever protocol/schema.json changes."""
