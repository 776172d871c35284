"""The DAQ life-cycle as data: phases (state, substate), the transition table, what each command accepts, and
the await-state rule ("reached, or no longer reachable")."""

from __future__ import annotations

import functools
from typing import Literal

from stationd.protocol.daq import DaqState, DaqSubState
from stationd.protocol.errors import InvalidParams, InvalidState

__all__ = [
    "COMMAND_ACCEPTS",
    "FINAL",
    "PHASES",
    "TRANSITIONS",
    "Command",
    "Phase",
    "await_fulfilled",
    "check_command",
    "check_transition",
    "is_final",
    "parse_phase",
    "reachable",
]

Phase = tuple[DaqState, DaqSubState]
"""Where a DAQ is: OCM reports a state and a substate; Aborting exists in two states (libdaq's
AbortingAcquiring and AbortingMerging)."""

A, M, C = DaqState.ACQUIRING, DaqState.MERGING, DaqState.COMPLETED
S = DaqSubState

NOT_STARTED: Phase = (A, S.NOT_STARTED)
STARTING: Phase = (A, S.STARTING)
ACQUIRING: Phase = (A, S.ACQUIRING)
STOPPING: Phase = (A, S.STOPPING)
STOPPED: Phase = (A, S.STOPPED)
ABORTING_ACQUIRING: Phase = (A, S.ABORTING)
NOT_SCHEDULED: Phase = (M, S.NOT_SCHEDULED)
SCHEDULED: Phase = (M, S.SCHEDULED)
MERGING: Phase = (M, S.MERGING)
RELEASING: Phase = (M, S.RELEASING)
ABORTING_MERGING: Phase = (M, S.ABORTING)
COMPLETED: Phase = (C, S.COMPLETED)
ABORTED: Phase = (C, S.ABORTED)

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    NOT_STARTED: frozenset({STARTING, ABORTING_ACQUIRING}),
    STARTING: frozenset({ACQUIRING, ABORTING_ACQUIRING}),
    ACQUIRING: frozenset({STOPPING, ABORTING_ACQUIRING}),
    STOPPING: frozenset({STOPPED, ABORTING_ACQUIRING}),
    STOPPED: frozenset({NOT_SCHEDULED, ABORTING_ACQUIRING}),
    ABORTING_ACQUIRING: frozenset({ABORTED}),
    NOT_SCHEDULED: frozenset({SCHEDULED, ABORTING_MERGING}),
    SCHEDULED: frozenset({MERGING, ABORTING_MERGING}),
    MERGING: frozenset({RELEASING, ABORTING_MERGING}),
    RELEASING: frozenset({COMPLETED, ABORTING_MERGING}),
    ABORTING_MERGING: frozenset({ABORTED}),
    COMPLETED: frozenset(),
    ABORTED: frozenset(),
}
"""Every legal step. Aborting may follow every non-final phase; Completed and Aborted are final."""

PHASES: frozenset[Phase] = frozenset(TRANSITIONS)
FINAL: frozenset[Phase] = frozenset(p for p, nexts in TRANSITIONS.items() if not nexts)

Command = Literal["stop", "force_stop", "abort", "force_abort", "update_keywords"]

_STOPPABLE = frozenset({ACQUIRING, STOPPING})
COMMAND_ACCEPTS: dict[Command, frozenset[Phase]] = {
    # Stopping: a stop that partly failed may be repeated, or forced
    "stop": _STOPPABLE,
    "force_stop": _STOPPABLE,
    "abort": PHASES - FINAL,
    "force_abort": PHASES - FINAL,
    # "no more modifications are allowed from this point" (libdaq state.hpp): from NotScheduled on
    "update_keywords": frozenset({NOT_STARTED, STARTING, ACQUIRING, STOPPING, STOPPED}),
}


def is_final(phase: Phase) -> bool:
    return phase in FINAL


def check_transition(current: Phase, new: Phase, daq_id: str) -> None:
    """Raise `InvalidState` unless `current -> new` is in the table."""
    if new not in TRANSITIONS.get(current, frozenset()):
        raise InvalidState(f"DAQ {daq_id!r}: illegal transition {_show(current)} -> {_show(new)}", id=daq_id)


def check_command(command: Command, current: Phase, daq_id: str) -> None:
    """Raise `InvalidState` (naming the DAQ, its phase and what it accepts) unless `command` is accepted."""
    if current not in COMMAND_ACCEPTS[command]:
        accepted = sorted({sub.value for _, sub in COMMAND_ACCEPTS[command]})
        raise InvalidState(
            f"DAQ {daq_id!r} is {_show(current)}: {command} is accepted only in {', '.join(accepted)}",
            id=daq_id,
        )


def parse_phase(state: DaqState, substate: DaqSubState, daq_id: str = "") -> Phase:
    """The phase a client names in `daq_await_state`; an impossible pair is `InvalidParams`."""
    phase = (state, substate)
    if phase not in PHASES:
        valid = sorted(sub.value for st, sub in PHASES if st == state)
        raise InvalidParams(
            f"substate {substate.value} does not exist in {state.value}"
            + (f" (valid: {', '.join(valid)})" if valid else ""),
            id=daq_id,
        )
    return phase


@functools.cache
def reachable(current: Phase, target: Phase) -> bool:
    """True when `target` can still come after `current` (following the table)."""
    seen, todo = {current}, [current]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt == target:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def await_fulfilled(current: Phase, target: Phase) -> bool:
    """OCM's AwaitDaqState condition: the target is reached, or it can no longer be reached."""
    return current == target or not reachable(current, target)


def _show(phase: Phase) -> str:
    return f"{phase[0].value}/{phase[1].value}"
