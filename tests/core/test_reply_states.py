"""The reply state machine as a table: what every step does in every state (no Redis)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core.replystate import (
    IN_FLIGHT,
    RESUMABLE,
    TERMINAL,
    TRANSITIONS,
    ReplyState,
    Step,
    after,
    lua_prelude,
    on_delivery,
)

S = ReplyState


def test_every_state_is_exactly_one_of_none_in_flight_or_terminal() -> None:
    assert IN_FLIGHT.isdisjoint(TERMINAL) and S.NONE not in IN_FLIGHT | TERMINAL
    assert {S.NONE} | IN_FLIGHT | TERMINAL == set(ReplyState)
    assert RESUMABLE <= IN_FLIGHT


def test_a_reply_goes_from_claim_through_its_parts_to_sent() -> None:
    state = S.NONE
    for step in (Step.CLAIM, Step.GENERATED, Step.PART_SENT, Step.PART_SENT, Step.SENT):
        moved = after(state, step)
        assert moved is not None, (state, step)
        state = moved
    assert state is S.SENT


def test_a_terminal_reply_never_moves_again() -> None:
    for state, step in itertools.product(TERMINAL, Step):
        assert after(state, step) is None, (state, step)


def test_only_an_unclaimed_event_can_be_claimed_skipped_or_answered_by_a_burst() -> None:
    for step in (Step.CLAIM, Step.SKIP, Step.ANSWER_WITH):
        assert [s for s in ReplyState if after(s, step) is not None] == [S.NONE]
    assert after(S.NONE, Step.ANSWER_WITH) is S.ANSWERED
    assert after(S.NONE, Step.SKIP) is S.SKIPPED


def test_the_text_is_stored_only_while_generating() -> None:
    assert [s for s in ReplyState if after(s, Step.GENERATED) is not None] == [S.GENERATING]


def test_a_part_meta_accepted_is_recorded_from_any_unfinished_state_even_an_erased_one() -> None:
    for state in (S.NONE, *IN_FLIGHT):
        assert after(state, Step.PART_SENT) is S.SENDING


def test_a_send_ends_sent_or_failed_from_any_unfinished_state() -> None:
    for state in (S.NONE, *IN_FLIGHT):
        assert after(state, Step.SENT) is S.SENT and after(state, Step.FAIL) is S.FAILED


def test_what_a_redelivery_does_in_each_state() -> None:
    expected = {S.NONE: "answer", S.GENERATING: "generate", S.GENERATED: "resume",
                S.SENDING: "resume", S.SENT: "done", S.SKIPPED: "done", S.FAILED: "done",
                S.ANSWERED: "done"}
    assert {state: on_delivery(state) for state in ReplyState} == expected


def test_the_scripts_get_the_same_sets() -> None:
    prelude = lua_prelude()
    assert "local TERMINAL = {answered=true, failed=true, sent=true, skipped=true}" in prelude
    assert "local IN_FLIGHT = {generated=true, generating=true, sending=true}" in prelude


@given(st.lists(st.sampled_from(list(Step)), max_size=30))
def test_any_sequence_of_steps_stays_in_the_table_and_ends_stay_ends(steps: list[Step]) -> None:
    state = S.NONE
    for step in steps:
        moved = after(state, step)
        if state in TERMINAL:
            assert moved is None
        if moved is not None:
            assert (state, step) in TRANSITIONS
            state = moved
    assert state in set(ReplyState)
