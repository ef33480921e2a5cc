"""Meta's customer service window: when the bot may still write to a person.

A business may answer within 24 hours of the person's last message (Messenger,
Instagram, WhatsApp). On WhatsApp a conversation opened from a free entry point (a
click-to-WhatsApp ad or a Page's call-to-action: the message carries a ``referral``,
our ``origin``) stays open 72 hours. The conversation's context keeps when its window
ends (``window_until_ms``, updated at admission from each inbound message), so checking
it before a send costs no Redis round trip.

Outside the window the bot stays silent: the message is recorded ``skipped`` (or the
reply ``failed``) with :data:`OUTSIDE_WINDOW`, never counted as sent. A human agent's
reply tagged ``HUMAN_AGENT`` (7 days on Messenger/Instagram) is the inbox's to send:
:func:`human_agent_until_ms` is where that send checks its own limit.
"""

from __future__ import annotations

from typing import Final

from mtdesk.core.errors import GraphError
from mtdesk.core.events import Message, Postback
from mtdesk.core.history import OUTSIDE_WINDOW

__all__ = ["OUTSIDE_WINDOW", "window_end", "open_until", "is_open", "human_agent_until_ms",
           "send_refusal"]

HOUR_MS: Final = 3_600_000
STANDARD_MS: Final = 24 * HOUR_MS
FREE_ENTRY_MS: Final = 72 * HOUR_MS
HUMAN_AGENT_MS: Final = 7 * 24 * HOUR_MS


def window_end(event: Message | Postback, received_ms: int) -> int:
    """When the window this inbound message opens ends (epoch ms); a message without a
    timestamp counts from when the gateway received it."""
    free_entry = event.channel == "whatsapp" and event.origin is not None
    start = event.timestamp_ms if event.timestamp_ms > 0 else received_ms
    return start + (FREE_ENTRY_MS if free_entry else STANDARD_MS)


def open_until(window_until_ms: int, last_inbound_ms: int) -> int:
    """When the conversation's window ends; a context written before the window was
    kept has only its last inbound time (24 h from it)."""
    legacy = last_inbound_ms + STANDARD_MS if last_inbound_ms else 0
    return max(window_until_ms, legacy)


def is_open(window_until_ms: int, last_inbound_ms: int, now_ms: int) -> bool:
    return now_ms < open_until(window_until_ms, last_inbound_ms)


def human_agent_until_ms(last_inbound_ms: int) -> int:
    """Until when a human agent's ``HUMAN_AGENT``-tagged reply may go (Messenger and
    Instagram; not WhatsApp, where only an approved template can go outside the window)."""
    return last_inbound_ms + HUMAN_AGENT_MS


# Graph errors that mean "this person cannot be written to now", with what the
# message's record says.
_REFUSALS: Final[dict[tuple[int, int | None], str]] = {
    (131047, None): f"{OUTSIDE_WINDOW} (131047)",
    (131049, None): "not delivered: Meta's per-person marketing limit (131049)",
    (10, 2018278): f"{OUTSIDE_WINDOW} (10/2018278)",
}


def send_refusal(exc: GraphError) -> str | None:
    """The recorded reason for a Graph error about the window or Meta's delivery
    limits (131047, 131049, 10 with subcode 2018278); None for any other error."""
    return _REFUSALS.get((exc.code, None)) or _REFUSALS.get((exc.code, exc.subcode))
