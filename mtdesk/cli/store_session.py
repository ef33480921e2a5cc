"""Run one operator command against Redis: settings from the environment, one client,
closed afterwards; Redis unreachable becomes a clear StoreUnavailable (exit 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mtdesk.core.errors import StoreUnavailable, ValidationError
from mtdesk.core.redis import UNAVAILABLE, Redis, connect_to
from mtdesk.core.settings import Settings, names_server

T = TypeVar("T")

_FLAGS = {"access_token": "--token-env/--token-stdin", "tenant_id": "--tenant",
          "body": "options"}


def run_with_store(job: Callable[[Redis, Settings], Awaitable[T]]) -> T:
    settings = Settings.from_env()

    async def go() -> T:
        redis = connect_to(settings.redis_url, cluster=settings.redis_cluster, max_connections=4)
        try:
            return await job(redis, settings)
        except ValidationError as exc:
            # Name the option the operator typed, not the API's field.
            flag = _FLAGS.get(exc.field, "--" + exc.field.replace("_", "-"))
            raise ValidationError(flag, exc.problem) from None
        except UNAVAILABLE as exc:
            if settings.keystore_url and names_server(str(exc), settings.keystore_url):
                raise StoreUnavailable(
                    "MTDESK_KEYSTORE_URL: cannot reach the key store at "
                    f"{settings.keystore_url.split('@')[-1].split('?')[0]}"
                ) from exc
            raise StoreUnavailable(
                f"MTDESK_REDIS_URL: cannot reach Redis at {settings.redis_url.split('@')[-1]}"
            ) from exc
        finally:
            await redis.aclose()

    return asyncio.run(go())
