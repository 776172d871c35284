"""The queue manager: bluesky-queueserver's RE Manager as an actor, and its in-memory plan queue."""
