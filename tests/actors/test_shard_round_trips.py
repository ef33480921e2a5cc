"""An answered message costs the shard three Redis round trips, three scripts for a
one-part reply (admit + claim; the stored text + the first send's permit; the part + the
reply's end + the context), and few commands inside them, seen on the wire with
MONITOR (Redis' CPU goes with the commands it runs, scripts' included)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import msgspec
from shardkit import desk, eventually

from mtdesk.core import keys
from mtdesk.core.groups import FENCED_ACK, FENCED_ACK_MANY
from mtdesk.core.redis import Redis

# Stream plumbing and the test's own pushes: batched per shard, not per message.
_PLUMBING = {"XREADGROUP", "XACK", "XDEL", "XADD", "FENCED_ACK", "BACKGROUND", "CACHE"}


def _name(command: dict[str, object], *, outside: bool = True) -> str:
    words = str(command.get("command", "")).split(" ", 4)
    name = words[0].strip('"').upper()
    if name == "EVALSHA" and len(words) > 3 and words[1].strip('"') in {
            FENCED_ACK.sha, FENCED_ACK_MANY.sha}:
        name = "FENCED_ACK"  # acknowledgements: batched, like XACK + XDEL were
    elif name == "EVALSHA" and len(words) > 3 and ":reply:" not in words[3]:
        name = "BACKGROUND"  # analytics, erasure checks: per second, not per message
    elif outside and (name in {"HGET", "HMGET", "HGETALL"} or (
            name == "GET" and len(words) > 1 and ":ctx:" not in words[1])):
        name = "CACHE"  # bot, channel, credentials: one per tenant/account every 1-2 s
    return name


async def _watch(redis_url: str, seen: Counter[str], ready: asyncio.Event,
                 inside: Counter[str] | None = None) -> None:
    """Commands as clients sent them (``seen``) and, with ``inside``, those the reply
    scripts ran (MONITOR shows a script's commands right after its call)."""
    from mtdesk.core.redis import connect

    client = connect(redis_url)
    try:
        async with client.monitor() as monitor:
            ready.set()
            caller = ""
            async for command in monitor.listen():
                if command.get("client_type") == "lua":  # run inside a script: no round trip
                    if inside is not None and caller in {"EVALSHA", "EVAL"}:
                        inside[_name(command, outside=False)] += 1
                    continue
                caller = _name(command)
                seen[caller] += 1
    finally:
        await client.aclose()


async def test_an_answered_one_part_reply_takes_three_scripts(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        # The analytics (and usage) tally is written once a second whatever the load:
        # not a per-message cost, kept out of the window watched.
        shard = await d.shard(analytics_interval_s=3600.0)
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


async def test_an_answered_message_runs_few_commands_inside_its_scripts(
    redis: Redis, redis_url: str
) -> None:
    """Commands Redis runs for a one-part reply of a new conversation, the scripts'
    own included: 29 (51 before each step read and wrote its records once)."""
    async with desk(redis, redis_url) as d:
        # The analytics (and usage) tally is written once a second whatever the load:
        # not a per-message cost, kept out of the window watched.
        shard = await d.shard(analytics_interval_s=3600.0)
        await shard.start()
        await d.push(d.message("warm up", user="w0"))
        await eventually(lambda: shard.handled == 1)
        seen: Counter[str] = Counter()
        inside: Counter[str] = Counter()
        ready = asyncio.Event()
        watcher = asyncio.create_task(_watch(redis_url, seen, ready, inside))
        await ready.wait()
        users = [f"cm{i}" for i in range(5)]
        for u in users:
            await d.push(d.message(f"hello from {u}", user=u))
        await eventually(lambda: shard.handled == 1 + len(users))
        await eventually(lambda: all(d.texts_to(u) for u in users))
        await asyncio.sleep(0.2)  # the monitor's lines trail the commands
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        print("inside scripts:", dict(inside), "outside:", dict(seen))
        # The test's pushes are XADDs outside any script; the stream plumbing is batched.
        outside = sum(n for c, n in seen.items() if c not in _PLUMBING)
        per_message = (sum(inside.values()) + outside) / len(users)
        assert per_message <= 30, (dict(inside), dict(seen))
        # Each step reads its reply record once (and the card once); TTLs set when made.
        assert inside["HGET"] + inside["HMGET"] <= 4 * len(users), dict(inside)
        # (and a send window's counter gets its own with its second's first permit)
        assert inside["EXPIRE"] <= 3 * len(users) + 2, dict(inside)


async def test_what_an_answer_writes_expires_though_its_ttl_is_set_once(
    redis: Redis, redis_url: str
) -> None:
    """A TTL is set when a record is made, not on every write: the reply record, the
    inbox card and the context of an answered message all expire (a redelivered
    message's second pass sets none and the TTLs stay). The replies' outbound links
    carry none (the retention sweep removes them by their entry's time:
    tests/policy/test_retention.py)."""
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        first = d.message("hello there", user="ttl1")
        await d.push(first)
        await eventually(lambda: shard.handled == 1)
        await d.push(first)  # redelivered: answered once, nothing made again
        await d.push(d.message("and again", user="ttl1"))
        await eventually(lambda: shard.handled == 3)
        assert len(d.texts_to("ttl1")) == 2
        tid, conv = d.tenant_id, first.conversation
        names = [keys.reply(tid, first.event_id), keys.inbox_card(tid, conv),
                 keys.context(tid, conv)]
        for name in names:
            assert await redis.ttl(name) > 0, name
        links = [k.decode() async for k in redis.scan_iter(match=keys.outbound(tid, "*"))]
        assert len(links) == 2, links
        for link in links:
            assert await redis.hget(link, "entry"), link


async def test_a_stored_message_is_told_on_the_live_channel_only_while_an_inbox_listens(
    redis: Redis, redis_url: str
) -> None:
    """Nobody listening on the tenant's live channel: the reply scripts publish nothing
    (two commands of every answered message, a cluster-wide message on a cluster).
    An inbox subscribing is seen within a poll, and both the customer's message and
    the reply are told again."""
    async with desk(redis, redis_url) as d:
        shard = await d.shard(analytics_interval_s=3600.0)
        await shard.start()
        await d.push(d.message("warm up", user="lw0"))
        await eventually(lambda: shard.handled == 1)
        await asyncio.sleep(1.2)  # a poll asked about the tenant: nobody listens
        seen: Counter[str] = Counter()
        inside: Counter[str] = Counter()
        ready = asyncio.Event()
        watcher = asyncio.create_task(_watch(redis_url, seen, ready, inside))
        await ready.wait()
        await d.push(d.message("nobody is looking", user="lw1"))
        await eventually(lambda: d.texts_to("lw1"))
        await asyncio.sleep(0.2)  # the monitor's lines trail the commands
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        assert inside["XADD"] == 2 and inside["PUBLISH"] == 0, dict(inside)

        told: list[str] = []
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(keys.live(d.tenant_id))
        try:
            await asyncio.sleep(1.2)  # the shard's next poll sees the listener
            message = d.message("now someone is", user="lw2")
            await d.push(message)
            await eventually(lambda: d.texts_to("lw2"))
            deadline = asyncio.get_running_loop().time() + 5
            while len(told) < 2 and asyncio.get_running_loop().time() < deadline:
                got = await pubsub.get_message(timeout=0.2)
                if got is not None:
                    told.append(got["data"].decode())
        finally:
            await pubsub.aclose()
        assert [line.split(" ")[:2] for line in told] == [["m", message.conversation]] * 2


async def test_a_conversation_leaves_memory_without_writing_what_redis_already_holds(
    redis: Redis, redis_url: str
) -> None:
    """The reply's end wrote the context: evicting the idle conversation writes nothing
    more (one command per conversation before), and its next message is answered from
    the context Redis holds, the earlier turn remembered."""
    from mtdesk.core.redis import connect

    async with desk(redis, redis_url) as d:
        settings = msgspec.structs.replace(d.settings, conversation_idle_s=1.5)
        shard = await d.shard(settings=settings, analytics_interval_s=3600.0)
        await shard.start()
        writes: list[str] = []
        ready = asyncio.Event()

        async def watch() -> None:
            client = connect(redis_url)
            try:
                async with client.monitor() as monitor:
                    ready.set()
                    async for command in monitor.listen():
                        text = str(command.get("command", ""))
                        if ":ctx:" in text and text.startswith("SET"):
                            writes.append(f"{command.get('client_type')} {text[:60]}")
            finally:
                await client.aclose()

        watcher = asyncio.create_task(watch())
        await ready.wait()
        first = d.message("my order number is 4711", user="ev1")
        await d.push(first)
        await eventually(lambda: d.texts_to("ev1"))
        await eventually(lambda: not shard._convs)  # evicted once idle
        await asyncio.sleep(0.2)  # the monitor's lines trail the commands
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        # The reply's end (inside its script), not the eviction.
        assert [w.split()[0] for w in writes] == ["lua"], writes
        await d.push(d.message("where is it?", user="ev1"))
        await eventually(lambda: len(d.texts_to("ev1")) == 2)
        assert "4711" in d.llm.chat_requests[-1].prompt_text()
