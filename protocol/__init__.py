"""stationd protocol: message types, codecs, errors, the front-door method table and the clients."""

from .errors import StationError
from .version import PROTOCOL_VERSION, VERSION

__all__ = ["PROTOCOL_VERSION", "VERSION", "StationError"]
