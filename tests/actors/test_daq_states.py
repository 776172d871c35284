"""The DAQ life-cycle table, checked exhaustively: every pair of phases, every command, every await."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stationd.actors.daq_coordinator import states
from stationd.actors.daq_coordinator.states import (
    ABORTED,
    ABORTING_ACQUIRING,
    ABORTING_MERGING,
    ACQUIRING,
    COMPLETED,
    FINAL,
    MERGING,
    NOT_SCHEDULED,
    NOT_STARTED,
    PHASES,
    RELEASING,
    SCHEDULED,
    STARTING,
    STOPPED,
    STOPPING,
    TRANSITIONS,
)
from stationd.protocol.daq import DaqState, DaqSubState
from stationd.protocol.errors import InvalidParams, InvalidState

LIFE_CYCLE = [
    NOT_STARTED,
    STARTING,
    ACQUIRING,
    STOPPING,
    STOPPED,
    NOT_SCHEDULED,
    SCHEDULED,
    MERGING,
    RELEASING,
    COMPLETED,
]
"""OCM's normal life-cycle, in order (OCM then DPM)."""


def _step(current: states.Phase, new: states.Phase) -> int:
    return LIFE_CYCLE.index(new) - LIFE_CYCLE.index(current)


def expected_legal(current: states.Phase, new: states.Phase) -> bool:
    """The rule of the spec, written independently of the table: one step along the life-cycle, or abort."""
    if current in (ABORTING_ACQUIRING, ABORTING_MERGING):
        return new == ABORTED
    if current in FINAL:
        return False
    if new in (ABORTING_ACQUIRING, ABORTING_MERGING):
        return new[0] == current[0]  # Aborting belongs to the state the DAQ is in
    return (
        current in LIFE_CYCLE and new in LIFE_CYCLE and LIFE_CYCLE.index(new) == LIFE_CYCLE.index(current) + 1
    )


@pytest.mark.parametrize(("current", "new"), list(itertools.product(sorted(PHASES), repeat=2)))
def test_a_transition_is_legal_exactly_when_the_spec_allows_it(
    current: states.Phase, new: states.Phase
) -> None:
    if expected_legal(current, new):
        states.check_transition(current, new, "D1")
    else:
        with pytest.raises(InvalidState, match=r"DAQ 'D1': illegal transition") as info:
            states.check_transition(current, new, "D1")
        assert info.value.id == "D1"


def test_completed_and_aborted_are_the_only_final_phases() -> None:
    assert {COMPLETED, ABORTED} == FINAL
    assert all(p[0] == DaqState.COMPLETED for p in FINAL)


def test_every_phase_belongs_to_its_ocm_state() -> None:
    acquiring = {s for st, s in PHASES if st == DaqState.ACQUIRING}
    merging = {s for st, s in PHASES if st == DaqState.MERGING}
    assert acquiring == {
        DaqSubState.NOT_STARTED,
        DaqSubState.STARTING,
        DaqSubState.ACQUIRING,
        DaqSubState.STOPPING,
        DaqSubState.STOPPED,
        DaqSubState.ABORTING,
    }
    assert merging == {
        DaqSubState.NOT_SCHEDULED,
        DaqSubState.SCHEDULED,
        DaqSubState.MERGING,
        DaqSubState.RELEASING,
        DaqSubState.ABORTING,
    }


@pytest.mark.parametrize("phase", sorted(PHASES - FINAL))
def test_every_non_final_phase_can_still_be_aborted(phase: states.Phase) -> None:
    assert states.reachable(phase, ABORTED)
    states.check_command("abort", phase, "D1")
    states.check_command("force_abort", phase, "D1")


@given(st.lists(st.integers(min_value=0, max_value=10), max_size=30))
def test_any_walk_along_the_table_ends_in_a_final_phase_within_the_life_cycle_length(
    picks: list[int],
) -> None:
    phase, steps = NOT_STARTED, 0
    while phase not in FINAL:
        choices = sorted(TRANSITIONS[phase])
        phase = choices[picks[steps] % len(choices)] if steps < len(picks) else choices[0]
        steps += 1
    assert steps <= len(LIFE_CYCLE) + 1


@pytest.mark.parametrize(("command", "accepted"), [
    ("stop", {ACQUIRING, STOPPING}),
    ("force_stop", {ACQUIRING, STOPPING}),
    ("update_keywords", {NOT_STARTED, STARTING, ACQUIRING, STOPPING, STOPPED}),
    ("abort", PHASES - FINAL),
    ("force_abort", PHASES - FINAL),
])  # fmt: skip
def test_each_command_is_accepted_in_exactly_its_phases(command: states.Command, accepted: set) -> None:
    for phase in PHASES:
        if phase in accepted:
            states.check_command(command, phase, "D1")
        else:
            with pytest.raises(InvalidState, match=f"DAQ 'D1' is .*: {command} is accepted only in"):
                states.check_command(command, phase, "D1")


def test_update_keywords_is_refused_from_not_scheduled_on() -> None:
    for phase in (NOT_SCHEDULED, SCHEDULED, MERGING, RELEASING, ABORTING_MERGING, COMPLETED, ABORTED):
        with pytest.raises(InvalidState):
            states.check_command("update_keywords", phase, "D1")


@pytest.mark.parametrize(("current", "target"), list(itertools.product(sorted(PHASES), repeat=2)))
def test_an_await_is_fulfilled_when_the_target_is_reached_or_out_of_reach(
    current: states.Phase, target: states.Phase
) -> None:
    ahead = (
        current in LIFE_CYCLE
        and target in LIFE_CYCLE
        and LIFE_CYCLE.index(target) > LIFE_CYCLE.index(current)
    )
    abort_ahead = target == ABORTED and current not in FINAL
    aborting_ahead = target[1] == DaqSubState.ABORTING and target[0] == current[0] and current not in FINAL
    aborting_ahead = aborting_ahead and current not in (ABORTING_ACQUIRING, ABORTING_MERGING)
    # an Aborting of the merging state is still ahead of any phase of the acquiring state
    aborting_ahead = aborting_ahead or (target == ABORTING_MERGING and current in LIFE_CYCLE[:5])
    still_ahead = ahead or abort_ahead or aborting_ahead
    assert states.await_fulfilled(current, target) == (current == target or not still_ahead)


def test_awaiting_scheduled_is_fulfilled_by_an_aborted_daq_as_the_spec_says() -> None:
    assert states.await_fulfilled(ABORTED, SCHEDULED)
    assert not states.await_fulfilled(ACQUIRING, SCHEDULED)


def test_an_impossible_state_substate_pair_is_invalid_params_naming_the_valid_ones() -> None:
    with pytest.raises(InvalidParams, match="substate Merging does not exist in StateAcquiring"):
        states.parse_phase(DaqState.ACQUIRING, DaqSubState.MERGING)
    assert states.parse_phase(DaqState.MERGING, DaqSubState.ABORTING) == ABORTING_MERGING
