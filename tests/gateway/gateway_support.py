"""Gateway test helpers: settings, signed posts, routing for the fixtures' accounts."""

from __future__ import annotations

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.gateway.signature import sign

APP_SECRET = "test-app-secret"
OLD_SECRET = "old-app-secret"
VERIFY_TOKEN = "verify-me"

# The fixtures' business accounts.
PAGE_ID = "112233445566778"
IG_ID = "17841400000000001"
WA_PHONE_ID = "106540352242922"
FIXTURE_ACCOUNTS = (("messenger", PAGE_ID), ("instagram", IG_ID), ("whatsapp", WA_PHONE_ID))

# Just after the newest fixture event, so fixtures are fresh unless a test moves the clock.
FRESH_NOW = 1_751_142_900.0


def make_settings(redis_url: str, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "redis_url": redis_url,
        "meta_app_secrets": (Secret(APP_SECRET), Secret(OLD_SECRET)),
        "meta_verify_token": Secret(VERIFY_TOKEN),
        "partitions": 8,
        "max_event_age_s": 400 * 24 * 3600,  # fixtures date from 2024-2025
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


async def route(redis: Redis, channel: str, account_id: str, tenant: str = "t1") -> None:
    """Provision an account the way the admin API does."""
    await redis.hset(keys.account(channel, account_id), mapping={"tenant": tenant, "channel_id": "c1"})


def signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(body, secret), "Content-Type": "application/json"}


async def stream_entries(redis: Redis, partitions: int) -> list[dict[bytes, bytes]]:
    out: list[dict[bytes, bytes]] = []
    for p in range(partitions):
        for _id, fields in await redis.xrange(keys.inbound(p)):
            out.append(fields)
    return out

