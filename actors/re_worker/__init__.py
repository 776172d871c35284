"""The RunEngine worker actor: the station profile, plans and tasks in their own process."""

from .actor import RunEngineWorker

__all__ = ["RunEngineWorker"]
