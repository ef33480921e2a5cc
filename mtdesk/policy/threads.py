"""Who owns a Messenger/Instagram thread: the handover protocol, as one small state.

A Page (or Instagram account) may have several apps answering it: ours, Meta's Page
inbox, Meta's Business Agent, another bot. One of them owns each thread; Meta delivers
the person's messages to the owner on ``messaging`` and to the others on ``standby``,
and tells the apps when control moves (``messaging_handovers``: pass, take, request).

The state is two fields of the conversation's context (``keys.context``):
``thread_owner`` (``""``: this app, or nobody said otherwise; else the owning app's id,
or :data:`ANOTHER_APP` when Meta did not name it) and ``thread_owner_ms`` (the time of
the event that set it: an older event never overrides a newer one, since Meta does not
promise order). While another app owns the thread the bot is silent.
:func:`read_thread_control` reads it for the inbox (without the rest of the context).

Rules (pure, :func:`after_handover`, :func:`after_message`):

- ``pass_thread_control`` is sent to the app receiving control: ours, unless it names
  a new owner that is not our app id (``settings.meta_app_id``, when configured);
- ``take_thread_control`` is sent to the app losing control: another app owns it now
  (the one named), unless the new owner named is our own app;
- ``request_thread_control`` changes nothing (the owner decides; we record it);
- a message on ``standby`` while we think we own the thread: another app does;
- a message on ``messaging`` newer than the last change while another app owns it:
  Meta delivered it to us as the owner, so control came back (its pass was lost or
  is late).
"""

from __future__ import annotations

from typing import Final

import msgspec

from mtdesk.core import keys
from mtdesk.core.events import Handover
from mtdesk.core.redis import Redis, as_opt_bytes

ANOTHER_APP: Final = "another app"
OWNED_ELSEWHERE: Final = "another app owns the thread"  # the reason a message is skipped


class ThreadControl(msgspec.Struct, frozen=True, kw_only=True):
    """The thread-control fields of a conversation's context (decodes from the whole
    context's msgpack, ignoring its other fields)."""

    thread_owner: str = ""
    thread_owner_ms: int = 0

    @property
    def ours(self) -> bool:
        return not self.thread_owner


_decoder = msgspec.msgpack.Decoder(ThreadControl)


def after_handover(
    current: ThreadControl, event: Handover, our_app_id: str | None
) -> ThreadControl | None:
    """The thread control after ``event``; None when it changes nothing."""
    if event.timestamp_ms < current.thread_owner_ms:
        return None  # older than what set the current owner
    if event.action == "pass":
        new = event.new_owner_app_id
        ours = new is None or our_app_id is None or new == our_app_id
        owner = "" if ours else new or ANOTHER_APP
    elif event.action == "take":
        new = event.new_owner_app_id
        ours = our_app_id is not None and new == our_app_id
        owner = "" if ours else new or ANOTHER_APP
    else:
        return None
    if owner == current.thread_owner:
        return None
    return ThreadControl(thread_owner=owner, thread_owner_ms=event.timestamp_ms)


def after_message(
    current: ThreadControl, timestamp_ms: int, *, standby: bool
) -> ThreadControl | None:
    """The thread control a message tells (``standby``: it came on the standby
    channel); None when it changes nothing."""
    if standby:
        if current.ours and timestamp_ms >= current.thread_owner_ms:
            return ThreadControl(thread_owner=ANOTHER_APP, thread_owner_ms=timestamp_ms)
        return None
    if not current.ours and timestamp_ms > current.thread_owner_ms:
        return ThreadControl(thread_owner="", thread_owner_ms=timestamp_ms)
    return None


def decode_thread_control(context: bytes | None) -> ThreadControl:
    """The thread control of a stored context (ours when there is none, or it does not
    decode)."""
    if not context:
        return ThreadControl()
    try:
        return _decoder.decode(context)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ThreadControl()


async def read_thread_control(redis: Redis, tenant_id: str, conversation: str) -> ThreadControl:
    """Who owns the conversation's thread, as its shard last persisted it."""
    raw = as_opt_bytes(await redis.get(keys.context(tenant_id, conversation)))
    return decode_thread_control(raw)
