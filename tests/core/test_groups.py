"""Reading a stream as one consumer of a group (the shards' partitions, the deletion
jobs): nothing read is lost by a crash, stale entries of a vanished consumer are taken
over, entries deleted while pending never come back, acknowledged ones are gone."""

from __future__ import annotations

import asyncio

from mtdesk.core.groups import FENCED_ACK_MANY, FencedAcks, GroupReader
from mtdesk.core.redis import Redis

S1, S2 = "in:1", "in:2"


async def _add(redis: Redis, stream: str, n: int) -> list[str]:
    return [(await redis.xadd(stream, {"i": str(i)})).decode() for i in range(n)]


async def test_entries_added_before_the_group_existed_are_read_and_groups_are_made_once(
    redis: Redis,
) -> None:
    early = await _add(redis, S1, 2)
    reader = GroupReader(redis, "g", "c1", [S1, S2])
    await reader.ensure_groups()
    await reader.ensure_groups()  # an existing group is left as it is
    got = await reader.read_new(count=10)
    assert got == [(S1, [(early[0], {b"i": b"0"}), (early[1], {b"i": b"1"})])]
    assert await reader.read_new(count=10, block_ms=10) == []


async def test_what_was_read_but_not_acknowledged_is_read_again_after_a_restart(redis: Redis) -> None:
    reader = GroupReader(redis, "g", "c1", [S1])
    await reader.ensure_groups()
    ids = await _add(redis, S1, 5)
    await reader.read_new(count=10)  # ... and the consumer crashes
    again = GroupReader(redis, "g", "c1", [S1])
    pages: list[list[str]] = []
    after: str | None = "0"
    while after is not None:
        after, entries = await again.own_pending(S1, count=2, after=after)
        if entries:
            pages.append([e for e, _ in entries])
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]


async def test_stale_entries_of_another_consumer_are_claimed_once(redis: Redis) -> None:
    gone = GroupReader(redis, "g", "old-shard", [S1])
    await gone.ensure_groups()
    ids = await _add(redis, S1, 3)
    await gone.read_new(count=10)
    me = GroupReader(redis, "g", "c1", [S1])
    start, claimed = await me.claim_idle(S1, min_idle_ms=60_000, count=10)
    assert claimed == []  # not idle long enough yet
    await asyncio.sleep(0.05)
    start, claimed = await me.claim_idle(S1, min_idle_ms=10, count=10)
    assert [e for e, _ in claimed] == ids and start == "0-0"
    _, mine = await me.own_pending(S1, count=10)
    assert [e for e, _ in mine] == ids


async def test_entries_deleted_while_pending_are_acknowledged_and_never_handed_out(redis: Redis) -> None:
    reader = GroupReader(redis, "g", "c1", [S1])
    await reader.ensure_groups()
    ids = await _add(redis, S1, 3)
    await reader.read_new(count=10)
    await redis.xdel(S1, ids[1])
    _, entries = await reader.own_pending(S1, count=10)
    assert [e for e, _ in entries] == [ids[0], ids[2]]
    pending = await redis.xpending(S1, "g")
    assert pending["pending"] == 2  # the deleted one left the pending list


async def test_ack_removes_the_entries_from_the_group_and_the_stream(redis: Redis) -> None:
    reader = GroupReader(redis, "g", "c1", [S1, S2])
    await reader.ensure_groups()
    a, b = await _add(redis, S1, 2)
    (c,) = await _add(redis, S2, 1)
    await reader.read_new(count=10)
    await reader.ack({S1: [a], S2: [c]})
    await reader.ack({S1: [b]}, transaction=True)
    await reader.ack({S1: []})  # nothing to do
    assert await redis.xlen(S1) == 0 and await redis.xlen(S2) == 0
    assert (await redis.xpending(S1, "g"))["pending"] == 0


async def test_a_fenced_flush_over_several_streams_refuses_only_the_one_handed_over(
    redis: Redis,
) -> None:
    """Three partitions acknowledged in one flush: the one whose owner key names another
    epoch keeps its entries pending and stored (its new owner answers them), the others
    are acknowledged and deleted; on a single Redis that is one script call, not three."""
    streams = ["in:{1}", "in:{2}", "in:{3}"]
    reader = GroupReader(redis, "g", "c1", streams)
    await reader.ensure_groups()
    ids = {s: await _add(redis, s, 2) for s in streams}
    await reader.read_new(count=10)
    for s in streams:
        await redis.set(f"own:{s}", "7")
    await redis.set("own:in:{2}", "8")  # handed over to epoch 8
    # Cached as on a server that ran it before (another test may have flushed scripts:
    # a first call would add the NOSCRIPT answer and the EVAL that follows it).
    await redis.script_load(FENCED_ACK_MANY.source)
    calls = await _script_calls(redis)
    outcome = await reader.ack_fenced({s: (f"own:{s}", "7", ids[s]) for s in streams})
    assert outcome == FencedAcks(refused=["in:{2}"], failed=[])
    assert await _script_calls(redis) - calls == 1
    assert [await redis.xlen(s) for s in streams] == [0, 2, 0]
    assert [(await redis.xpending(s, "g"))["pending"] for s in streams] == [0, 2, 0]
    # Unfenced (no epoch given) and a stream with nothing to acknowledge: done as asked.
    assert await reader.ack_fenced({"in:{2}": ("own:in:{2}", "", ids["in:{2}"]),
                                    "in:{3}": ("own:in:{3}", "7", [])}) == ([], [])
    assert await redis.xlen("in:{2}") == 0


async def _script_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in {"cmdstat_evalsha", "cmdstat_eval"})
