"""The read mark / typing bodies per channel, as Meta documents them, and the window's
arithmetic (24 h; 72 h for a WhatsApp free entry point)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.actors.window import FREE_ENTRY_MS, STANDARD_MS, is_open, send_refusal, window_end
from mtdesk.channels.outbound import render_signals
from mtdesk.core.errors import GraphError
from mtdesk.core.events import Message, Referral


def _bodies(channel: str, *, read: bool, first: bool) -> list[object]:
    return [json.loads(b) for b in render_signals(channel, "U1", "wamid.X", read=read,  # type: ignore[arg-type]
                                                  first=first)]


def test_messenger_and_instagram_mark_seen_once_then_type() -> None:
    for channel in ("messenger", "instagram"):
        assert _bodies(channel, read=True, first=True) == [
            {"recipient": {"id": "U1"}, "sender_action": "mark_seen"},
            {"recipient": {"id": "U1"}, "sender_action": "typing_on"}]
        assert _bodies(channel, read=True, first=False) == [
            {"recipient": {"id": "U1"}, "sender_action": "typing_on"}]
        assert _bodies(channel, read=False, first=True) == [
            {"recipient": {"id": "U1"}, "sender_action": "typing_on"}]


def test_whatsapp_types_only_with_a_read_mark() -> None:
    body = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X",
            "typing_indicator": {"type": "text"}}
    assert _bodies("whatsapp", read=True, first=True) == [body]
    assert _bodies("whatsapp", read=True, first=False) == [body]  # the refresh
    assert _bodies("whatsapp", read=False, first=True) == []


def _msg(channel: str, ts: int, origin: Referral | None = None) -> Message:
    return Message(event_id="m", channel=channel, account_id="A", user_id="U",  # type: ignore[arg-type]
                   timestamp_ms=ts, origin=origin)


@given(ts=st.integers(1, 2**45), received=st.integers(1, 2**45))
def test_the_window_is_24_hours_and_72_from_a_whatsapp_ad(ts: int, received: int) -> None:
    ad = Referral(source="ad", ad_id="1")
    assert window_end(_msg("messenger", ts), received) == ts + STANDARD_MS
    assert window_end(_msg("messenger", ts, ad), received) == ts + STANDARD_MS
    assert window_end(_msg("whatsapp", ts, ad), received) == ts + FREE_ENTRY_MS
    assert window_end(_msg("whatsapp", 0), received) == received + STANDARD_MS  # no timestamp
    end = window_end(_msg("whatsapp", ts), received)
    assert is_open(end, ts, end - 1) and not is_open(end, ts, end)


def test_a_context_kept_before_the_window_counts_24_hours_from_the_last_message() -> None:
    assert is_open(0, 1_000, 1_000 + STANDARD_MS - 1)
    assert not is_open(0, 1_000, 1_000 + STANDARD_MS)
    assert not is_open(0, 0, 5)  # nothing inbound known: closed


def test_only_the_window_and_delivery_limit_errors_are_refusals() -> None:
    assert send_refusal(GraphError(131047, "m")) == "outside the 24 h window (131047)"
    assert send_refusal(GraphError(10, "m", subcode=2018278)) == \
        "outside the 24 h window (10/2018278)"
    assert send_refusal(GraphError(131049, "m")) is not None
    assert send_refusal(GraphError(10, "m")) is None
    assert send_refusal(GraphError(100, "m")) is None
