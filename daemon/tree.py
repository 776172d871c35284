"""The daemon's supervision tree, built from the config as data."""

from __future__ import annotations

import msgspec

from stationd.actors.specs import ActorSpec, ChildSpec, SupervisorSpec
from stationd.protocol.methods import DAQ_COORDINATOR, OBSERVATION_STORE, QUEUE_MANAGER

from .config import Config

__all__ = ["ROOT", "build_tree"]

ROOT = "supervisor"
"""Name of the root supervisor."""


def build_tree(config: Config) -> SupervisorSpec:
    """The root supervisor: the built-in actors, then the config's extra children."""
    builtin: list[ChildSpec] = [
        ActorSpec(
            name=OBSERVATION_STORE,
            actor="stationd.actors.observation_store:ObservationStore",
            options=msgspec.to_builtins(config.observation_store),
        ),
        ActorSpec(
            name=QUEUE_MANAGER,
            actor="stationd.actors.queue_manager:QueueManager",
            options=msgspec.to_builtins(config.queue_manager),
            shutdown_timeout=20.0,  # time to stop a running plan and close the environment in order
        ),
        ActorSpec(
            name=DAQ_COORDINATOR,
            actor="stationd.actors.daq_coordinator:DaqCoordinator",
            options=msgspec.to_builtins(config.daq_coordinator),
        ),
    ]
    return SupervisorSpec(
        name=ROOT,
        strategy=config.supervisor.strategy,
        intensity=config.supervisor.intensity,
        period=config.supervisor.period,
        shutdown_timeout=config.shutdown_timeout,
        children=[*builtin, *config.supervisor.children],
    )
