"""An answered message costs the shard the same Redis round trips as before: three
scripts for a one-part reply (admit + claim; the stored text + the first send's permit;
the part + the reply's end + the context), seen on the wire with MONITOR."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from shardkit import desk, eventually

from mtdesk.core.groups import FENCED_ACK
from mtdesk.core.redis import Redis

# Stream plumbing and the test's own pushes: batched per shard, not per message.
_PLUMBING = {"XREADGROUP", "XACK", "XDEL", "XADD", "FENCED_ACK", "BACKGROUND"}


async def _watch(redis_url: str, seen: Counter[str], ready: asyncio.Event) -> None:
    from mtdesk.core.redis import connect

    client = connect(redis_url)
    try:
        async with client.monitor() as monitor:
            ready.set()
            async for command in monitor.listen():
                if command.get("client_type") == "lua":  # run inside a script: no round trip
                    continue
                words = str(command.get("command", "")).split(" ", 4)
                name = words[0].strip('"').upper()
                if name == "EVALSHA" and len(words) > 3 and words[1].strip('"') == FENCED_ACK.sha:
                    name = "FENCED_ACK"  # acknowledgements: batched, like XACK + XDEL were
                elif name == "EVALSHA" and len(words) > 3 and ":reply:" not in words[3]:
                    name = "BACKGROUND"  # analytics, erasure checks: per second, not per message
                seen[name] += 1
    finally:
        await client.aclose()


async def test_an_answered_one_part_reply_takes_three_scripts(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("warm up", user="w0"))  # caches filled, scripts loaded
        await eventually(lambda: shard.handled == 1)
        seen: Counter[str] = Counter()
        ready = asyncio.Event()
        watcher = asyncio.create_task(_watch(redis_url, seen, ready))
        await ready.wait()
        users = [f"rt{i}" for i in range(5)]
        for u in users:
            await d.push(d.message(f"hello from {u}", user=u))
        await eventually(lambda: shard.handled == 1 + len(users))
        await eventually(lambda: all(d.texts_to(u) for u in users))
        await asyncio.sleep(0.2)  # the monitor's lines trail the commands
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        print("commands while answering", len(users), "messages:", dict(seen))
        scripts = seen["EVALSHA"] + seen["EVAL"]
        assert scripts == 3 * len(users), dict(seen)
        per_message = {c: n for c, n in seen.items()
                       if c not in _PLUMBING and c not in {"EVALSHA", "EVAL"}}
        # Nothing else per message but restoring each new conversation's context (and
        # cache refreshes, at most one per tenant/account every 1-2 s).
        assert per_message.pop("GET", 0) <= len(users) + 1, dict(seen)
        assert all(n < len(users) for n in per_message.values()), dict(seen)
