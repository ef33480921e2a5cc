"""Read marks and typing while an answer is being made.

:func:`start_typing` is called once admission decided that a message IS answered (a
skipped message gets nothing) and the burst is claimed: it marks the latest message of
the burst read (unless the bot's ``read_receipts`` is off) and shows typing, then shows
typing again every ``settings.typing_interval_s`` until :meth:`Typing.stop` (called when
the model is done, before the reply is sent). Everything here is best effort and costs
no Redis round trip: the bot config is the one the answer already read, the token comes
from the sender's credential cache, and a failed call only ends the indicator.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

from mtdesk.channels.outbound import render_signals
from mtdesk.core.events import Message, Postback
from mtdesk.core.ports import BotConfig

if TYPE_CHECKING:
    from mtdesk.actors.work import ReplySender

# How long stop() waits for a call already under way, so a late typing_on never lands
# after the reply (Messenger would show typing again under it).
_SETTLE_S: Final = 2.0


class Typing:
    """One answer's indicator: a task posting the signals until stopped."""

    def __init__(self, sender: ReplySender, event: Message | Postback, *, read: bool,
                 interval_s: float) -> None:
        self._sender = sender
        self._event = event
        self._read = read
        self._interval = interval_s
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"typing:{event.event_id}")

    async def _run(self) -> None:
        e = self._event
        first = True
        while True:
            bodies = render_signals(e.channel, e.user_id, e.event_id, read=self._read,
                                    first=first)
            if not bodies or not await self._sender.signal(e.channel, e.account_id, bodies):
                return  # nothing to show on this channel, or it failed: stop trying
            first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval)
            if self._stopped.is_set():
                return

    async def stop(self) -> None:
        """No further typing; waits (briefly) for a call already on its way."""
        self._stopped.set()
        if self._task.done():
            return
        done, _ = await asyncio.wait({self._task}, timeout=_SETTLE_S)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def start_typing(sender: ReplySender, bot: BotConfig, event: Message | Postback, *,
                 interval_s: float) -> Typing:
    """Mark ``event`` read (per ``bot.read_receipts``) and keep typing shown until stopped."""
    return Typing(sender, event, read=bot.read_receipts, interval_s=interval_s)
