"""Retries off the hot path, through tenacity: what is worth trying again, and how long
to wait between tries, said once.

What a caller may rely on:

- :func:`is_transient` is the one rule: an :class:`MTDeskError` whose ``retriable`` flag is
  set (Redis unreachable, a provider's 429/5xx, a retriable Graph code), or redis-py's
  connection and timeout errors. Anything else is raised at once.
- :func:`retry_transient` runs an async callable until it succeeds, a non-transient error
  is raised, or ``attempts`` tries are used up (the last error is raised as it was, not
  wrapped). Waits grow exponentially from ``first_s`` to at most ``max_s``, with jitter so
  that many conversations retrying one Redis blip do not retry in step.

The Graph sender keeps its own loop: it pays a rate-limit permit per try and its delays
come from the Graph error table, which is more than a retry policy says.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mtdesk.core.errors import MTDeskError
from mtdesk.core.redis import UNAVAILABLE

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """True for errors that trying again may cure."""
    if isinstance(exc, MTDeskError):
        return exc.retriable
    return isinstance(exc, UNAVAILABLE)


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    first_s: float,
    max_s: float,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """``await call()``, tried again on transient errors (see the module's contract)."""
    # The first try costs nothing extra (tenacity's machinery is ~20 µs a call, and these
    # calls sit on the reply path); only a transient failure enters the retry loop.
    try:
        return await call()
    except BaseException as exc:
        if attempts <= 1 or not transient(exc):
            raise
    await asyncio.sleep(first_s * (1 + random.random()))  # noqa: S311 - jitter, not secrets
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts - 1),
        wait=wait_exponential_jitter(initial=min(2 * first_s, max_s), max=max_s, jitter=first_s),
        retry=retry_if_exception(transient),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover
