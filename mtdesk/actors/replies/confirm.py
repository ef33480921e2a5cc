"""What Meta confirmed it accepted from us, as the shard reads it, and what this process
knows it sent but could not record yet.

Meta's Send API has no idempotency key, but it tells us what it accepted: every message
a Page sends comes back as a ``message_echoes`` webhook carrying our ``metadata``
(``mtdesk:<reply_key>#<part>``, :func:`mtdesk.channels.outbound.metadata_for`), and
every WhatsApp message's ``statuses`` webhooks (sent, delivered, read) carry the same
mark as ``biz_opaque_callback_data``. The gateway queues them on the conversation's
partition like any event; the shard notes each mark as it reads it
(:meth:`SendConfirmations.note`, in memory: no Redis command), before the event waits
its turn in the conversation's queue.

Why this is enough after a crash: the echo of a part sits in the same partition as the
message its reply answers, behind it in the conversation's order, so it is not
acknowledged before that reply is handled; whichever shard resumes the reply reads the
echo too (from its pending entries or new ones) and :meth:`SendConfirmations.wait` sees
it. What a caller may rely on:

- :meth:`SendConfirmations.note` keeps the last ``capacity`` marks (oldest dropped);
- :meth:`SendConfirmations.wait` answers the message id Meta gave the marked part, at
  once when it was noted, else as soon as it is, else ``None`` after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mtdesk.channels.outbound import is_our_metadata


class SendConfirmations:
    """Marks of our sends Meta confirmed (mark → Graph message id), bounded."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = max(1, capacity)
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._waiting: dict[str, asyncio.Future[str]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, mark: str | None, message_id: str) -> None:
        """Meta confirmed the send marked ``mark`` as ``message_id`` (not ours: ignored)."""
        if not mark or not message_id or not is_our_metadata(mark):
            return
        self._seen[mark] = message_id
        self._seen.move_to_end(mark)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        waiter = self._waiting.pop(mark, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message_id)

    def get(self, mark: str) -> str | None:
        return self._seen.get(mark)

    async def wait(self, mark: str, timeout_s: float, *,
                   look: Callable[[], Awaitable[None]] | None = None,
                   look_every_s: float = 0.5) -> str | None:
        """The message id of the send marked ``mark``, waiting up to ``timeout_s``.
        ``look`` (the shard's look into its partition stream for confirmations it has
        not read yet: a shard behind its load reads them late) runs first and then every
        ``look_every_s`` while waiting; what it finds it notes here."""
        found = self._seen.get(mark)
        if found is not None or timeout_s <= 0:
            return found
        waiter = self._waiting.get(mark)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[mark] = waiter
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while (left := deadline - loop.time()) > 0:
                if look is not None:
                    with contextlib.suppress(Exception):  # best effort: the wait goes on
                        await look()
                    if (found := self._seen.get(mark)) is not None:
                        return found
                step = min(left, look_every_s) if look is not None else left
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(waiter), step)
            return self._seen.get(mark)
        finally:
            if self._waiting.get(mark) is waiter:
                del self._waiting[mark]  # a later wait looks at what was noted first
