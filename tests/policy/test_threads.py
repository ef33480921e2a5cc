"""Who owns a thread under the handover protocol: the rules as a person would expect
them, and as properties over any order Meta delivers the events in."""

from __future__ import annotations

from typing import Literal

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.actors.turns import ConversationContext, context_encoder
from mtdesk.core.events import Handover
from mtdesk.policy.threads import (
    ANOTHER_APP,
    ThreadControl,
    after_handover,
    after_message,
    decode_thread_control,
)

OURS = "APP1"
AGENT = "263902037430900"


def handover(action: Literal["pass", "take", "request"], ts: int, new: str | None = None) -> Handover:
    return Handover(event_id=f"{action}:{ts}", channel="messenger", account_id="P", user_id="U",
                    timestamp_ms=ts, action=action, new_owner_app_id=new)


def test_a_take_gives_the_thread_to_the_taker_and_a_pass_back_returns_it() -> None:
    start = ThreadControl()
    taken = after_handover(start, handover("take", 10, AGENT), OURS)
    assert taken == ThreadControl(thread_owner=AGENT, thread_owner_ms=10) and not taken.ours
    back = after_handover(taken, handover("pass", 20, OURS), OURS)
    assert back is not None and back.ours


def test_without_our_app_id_a_pass_is_ours_and_a_take_is_not() -> None:
    taken = after_handover(ThreadControl(), handover("take", 10), None)
    assert taken is not None and taken.thread_owner == ANOTHER_APP
    back = after_handover(taken, handover("pass", 11, AGENT), None)
    assert back is not None and back.ours


def test_a_request_changes_nothing_and_an_older_event_never_wins() -> None:
    taken = ThreadControl(thread_owner=AGENT, thread_owner_ms=50)
    assert after_handover(taken, handover("request", 60), OURS) is None
    assert after_handover(taken, handover("pass", 40, OURS), OURS) is None
    assert after_message(taken, 40, standby=False) is None  # older than the take


def test_messages_tell_who_owns_the_thread() -> None:
    seen = after_message(ThreadControl(), 5, standby=True)
    assert seen is not None and seen.thread_owner == ANOTHER_APP
    # Delivered to us on "messaging" after that: Meta gave the thread back.
    back = after_message(seen, 6, standby=False)
    assert back is not None and back.ours


def test_the_inbox_reads_the_owner_from_the_stored_context() -> None:
    ctx = ConversationContext(thread_owner=AGENT, thread_owner_ms=7, last_inbound_ms=3)
    assert decode_thread_control(context_encoder.encode(ctx)) == ThreadControl(
        thread_owner=AGENT, thread_owner_ms=7)
    assert decode_thread_control(None).ours and decode_thread_control(b"\xc1junk").ours


STEPS = st.lists(st.tuples(st.sampled_from(["pass", "take", "request", "standby", "message"]),
                           st.integers(min_value=0, max_value=100),
                           st.sampled_from([OURS, AGENT, None])), max_size=12)


def _apply(control: ThreadControl, step: tuple[str, int, str | None]) -> ThreadControl:
    kind, ts, app = step
    if kind in ("pass", "take", "request"):
        changed = after_handover(control, handover(kind, ts, app), OURS)  # type: ignore[arg-type]
    else:
        changed = after_message(control, ts, standby=kind == "standby")
    return changed or control


@given(STEPS)
def test_the_owner_time_never_goes_back_and_requests_never_move_it(steps: list[tuple[str, int, str | None]]) -> None:
    control = ThreadControl()
    for step in steps:
        nxt = _apply(control, step)
        assert nxt.thread_owner_ms >= control.thread_owner_ms
        if step[0] == "request":
            assert nxt == control
        control = nxt


@given(STEPS, st.integers(min_value=101, max_value=200))
def test_the_latest_handover_decides(steps: list[tuple[str, int, str | None]], last: int) -> None:
    control = ThreadControl()
    for step in steps:
        control = _apply(control, step)
    assert _apply(control, ("take", last, AGENT)).thread_owner == AGENT
    assert _apply(control, ("pass", last, OURS)).ours
