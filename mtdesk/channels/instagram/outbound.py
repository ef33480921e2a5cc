"""Instagram outbound: the Messenger send body under a byte limit.

Callers rely on :data:`MAX_BYTES` (an Instagram text is at most 1,000 UTF-8 bytes) and
:func:`fit`, which never cuts a character in two; the body is Messenger's
(:func:`mtdesk.channels.messenger.outbound.render_body`), and so are its sender actions
(:func:`~mtdesk.channels.messenger.outbound.render_signals`: ``mark_seen``, ``typing_on``).
"""

from __future__ import annotations

from typing import Final

from mtdesk.channels.messenger.outbound import render_attachment, render_body, render_signals

MAX_BYTES: Final = 1000

__all__ = ["MAX_BYTES", "fit", "render_attachment", "render_body", "render_signals"]


def fit(text: str) -> int:
    """How many leading characters of ``text`` fit in :data:`MAX_BYTES` UTF-8 bytes."""
    if len(text) * 4 <= MAX_BYTES:  # fast path: cannot exceed even at 4 bytes a char
        return len(text)
    encoded = text[:MAX_BYTES].encode("utf-8")  # a char is ≥ 1 byte: limit chars suffice
    if len(encoded) <= MAX_BYTES:
        return min(len(text), MAX_BYTES)
    # Longest character prefix within the limit (drop a cut multibyte char).
    return len(encoded[:MAX_BYTES].decode("utf-8", errors="ignore"))
