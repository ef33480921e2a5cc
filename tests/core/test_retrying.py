"""Retries off the hot path: transient errors are tried again a bounded number of times,
anything else is raised at once, and the last error comes out as it was."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from mtdesk.core.errors import StoreUnavailable, ValidationError
from mtdesk.core.retrying import is_transient, retry_transient


class Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


async def test_transient_errors_are_tried_again_until_it_works() -> None:
    call = Flaky([RedisConnectionError("blip"), StoreUnavailable("down")])
    assert await retry_transient(call, attempts=3, first_s=0.001, max_s=0.01) == "done"
    assert call.calls == 3


async def test_a_mistake_is_raised_at_once() -> None:
    call = Flaky([ValidationError("name", "is wrong")])
    with pytest.raises(ValidationError):
        await retry_transient(call, attempts=5, first_s=0.001, max_s=0.01)
    assert call.calls == 1


async def test_the_last_transient_error_is_raised_as_it_was_after_the_attempts() -> None:
    call = Flaky([RedisConnectionError(str(i)) for i in range(10)])
    with pytest.raises(RedisConnectionError, match="^3$"):
        await retry_transient(call, attempts=4, first_s=0.001, max_s=0.01)
    assert call.calls == 4


def test_what_counts_as_transient() -> None:
    assert is_transient(StoreUnavailable("x")) and is_transient(OSError())
    assert not is_transient(ValidationError("f", "p")) and not is_transient(KeyError())
