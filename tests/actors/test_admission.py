"""Admission's pure half: why a message is recorded and not answered, before Redis is
asked (the store's own checks, restricted and paused, come between the two kinds)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.actors.admission import Skip, skip_reason
from mtdesk.core.events import Message, Postback
from mtdesk.core.ports import BotConfig

STOP = ("STOP", "UNSUBSCRIBE")
ON = BotConfig()
OFF = BotConfig(enabled=False)


def _msg(text: str | None) -> Message:
    return Message(event_id="m1", channel="messenger", account_id="P1", user_id="U1",
                   timestamp_ms=1, text=text)


@pytest.mark.parametrize("text, bot, connected, stale, expected", [
    ("hello", ON, True, False, None),
    ("hello", ON, True, True, Skip("stale", final=True)),
    ("STOP", OFF, False, True, Skip("stale", final=True)),  # stale comes first
    ("  stop ", ON, True, False, Skip("stop word", final=True)),
    ("Unsubscribe", OFF, True, False, Skip("stop word", final=True)),
    ("stop please", ON, True, False, None),
    ("hello", OFF, True, False, Skip("bot disabled", final=False)),
    ("hello", OFF, False, False, Skip("bot disabled", final=False)),
    ("hello", ON, False, False, Skip("channel disconnected", final=False)),
    (None, ON, True, False, None),  # an attachment: answered (described to the model)
])
def test_skip_reasons_in_order(text: str | None, bot: BotConfig, connected: bool,
                               stale: bool, expected: Skip | None) -> None:
    assert skip_reason(_msg(text), bot, connected, stale=stale, stop_words=STOP) == expected


def test_outside_the_window_comes_after_stale_and_stop_words() -> None:
    def reason(text: str, *, stale: bool = False) -> Skip | None:
        return skip_reason(_msg(text), OFF, False, stale=stale, stop_words=STOP,
                           window_open=False)

    assert reason("hello") == Skip("outside the 24 h window", final=True)
    assert reason("STOP") == Skip("stop word", final=True)  # still restricts the sender
    assert reason("hello", stale=True) == Skip("stale", final=True)


def test_a_postback_is_never_a_stop_word() -> None:
    postback = Postback(event_id="p1", channel="messenger", account_id="P1", user_id="U1",
                        timestamp_ms=1, payload="STOP", title="STOP")
    assert skip_reason(postback, ON, True, stop_words=STOP) is None


@given(st.text(max_size=200))
def test_any_text_is_answered_unless_it_is_a_stop_word(text: str) -> None:
    verdict = skip_reason(_msg(text), ON, True, stop_words=STOP)
    is_stop = text.strip().upper() in STOP
    assert verdict == (Skip("stop word", final=True) if is_stop else None)
