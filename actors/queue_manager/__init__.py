"""The queue manager: bluesky-queueserver's RE Manager as an actor, and its in-memory plan queue."""

from .actor import QueueManager, QueueManagerOptions

__all__ = ["QueueManager", "QueueManagerOptions"]
