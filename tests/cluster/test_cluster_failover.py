"""A master of the cluster killed under load: with MTDESK_ACK_DURABILITY=replica, every
event the gateway acknowledged is in its stream afterwards, once (its replica took
over; the killed node, restarted, rejoins as its replica, so ``replica`` acknowledges
those slots again). Its own cluster: the session's keeps all its masters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis as redis_sync
from shardkit import ACCOUNTS, desk, eventually

from mtdesk.cli.localredis import cluster_ok, local_cluster, start_cluster_node
from mtdesk.core import keys
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.events import Message, decode_event, partition_of
from mtdesk.core.groups import GroupReader
from mtdesk.core.redis import connect_cluster
from mtdesk.gateway.ingest import IngestBatcher, Outcome, build_call

PARTITIONS = 16


class Doomed:
    def __init__(self, workdir: str, url: str, ports: list[int], pids: list[int]) -> None:
        self.workdir, self.url, self.ports, self.pids = workdir, url, ports, pids
        self.restarted: list[int] = []


@pytest.fixture
def doomed_cluster() -> Iterator[Doomed]:
    with tempfile.TemporaryDirectory(prefix="mtdesk-failover-") as workdir:
        pids: list[int] = []
        with local_cluster(workdir, pid_out=pids, who="tests", node_timeout_ms=1000) as (url, ports):
            doomed = Doomed(workdir, url, ports, pids)
            try:
                yield doomed
            finally:
                for pid in doomed.restarted:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                for pid in doomed.restarted:
                    for _ in range(200):
                        try:
                            os.kill(pid, 0)
                        except ProcessLookupError:
                            break
                        time.sleep(0.05)


def flags_of(port: int, asked: int) -> str:
    """The flags the node on ``asked`` gives the node on ``port`` (CLUSTER NODES)."""
    node = redis_sync.Redis(port=asked)
    try:
        table = node.execute_command("CLUSTER NODES")  # parsed: {"host:port": {"flags": …}}
    finally:
        node.close()
    return next((str(v.get("flags", "")) for k, v in table.items()
                 if str(k).split("@")[0].endswith(f":{port}")), "")


def wait_failed_over(survivor: int, dead: int) -> None:
    """Until the node on ``survivor`` sees the node on ``dead`` failed and the cluster ok."""
    for _ in range(600):
        flags = flags_of(dead, survivor)
        if "fail" in flags and "fail?" not in flags and cluster_ok(survivor):
            return
        time.sleep(0.05)
    raise AssertionError("no failover within 30 s")


def event(i: int) -> Message:
    return Message(event_id=f"m_{i}", channel="messenger", account_id="page-1",
                   user_id=f"U{i % 50}", timestamp_ms=1, text=f"hello {i}")


async def test_no_acknowledged_event_is_lost_when_a_master_dies(doomed_cluster: Doomed) -> None:
    url, ports, pids = doomed_cluster.url, doomed_cluster.ports, doomed_cluster.pids
    redis = connect_cluster(url)
    await redis.hset(keys.account("messenger", "page-1"), mapping={"tenant": "t_1"})
    batcher = IngestBatcher(redis, dedup_ttl_s=3600, durability="replica", ack_timeout_ms=500)
    await batcher.start()
    acked: set[str] = set()
    refused = 0
    victim = next(n for n in redis.get_primaries()  # type: ignore[attr-defined]
                  if n.port != int(url.rsplit(":", 1)[1].split("/")[0]))

    async def post(i: int) -> None:
        nonlocal refused
        for _ in range(200):  # Meta retries a refused webhook
            call = build_call([event(i)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0)
            try:
                [outcome] = await batcher.submit(call)
            except StoreUnavailable:
                refused += 1
                await asyncio.sleep(0.1)
                continue
            assert outcome in (Outcome.ENQUEUED, Outcome.DUPLICATE)
            acked.add(event(i).event_id)
            return

    try:
        first = [asyncio.ensure_future(post(i)) for i in range(300)]
        await asyncio.gather(*first)
        on_victim = {p for p in range(PARTITIONS)
                     if redis.get_node_from_key(keys.inbound(p)).port == victim.port}  # type: ignore[attr-defined]
        assert on_victim
        victim_pid = pids[ports.index(victim.port)]
        os.kill(victim_pid, signal.SIGKILL)
        rest = []
        for i in range(300, 900):
            rest.append(asyncio.ensure_future(post(i)))
            if i % 20 == 0:
                await asyncio.sleep(0.05)
            if i == 600:
                # The dead node comes back once its replica has taken over (it then
                # rejoins as that one's replica). Back sooner, an empty master without
                # persistence would win and its replica resync from it: docs/redis.md.
                survivor = next(p for p in ports if p != victim.port)
                await asyncio.to_thread(wait_failed_over, survivor, victim.port)
                doomed_cluster.restarted.append(await asyncio.to_thread(
                    start_cluster_node, doomed_cluster.workdir, victim.port,
                    node_timeout_ms=1000))
        await asyncio.gather(*rest)
    finally:
        await batcher.aclose()
    assert len(acked) == 900
    stored: list[str] = []
    after_kill_on_victim = 0
    for p in range(PARTITIONS):
        for _id, fields in await redis.xrange(keys.inbound(p)):
            stored.append(decode_event(fields[b"e"]).event_id)
            if p in on_victim and int(stored[-1][2:]) >= 300:
                after_kill_on_victim += 1
    await redis.aclose()
    assert sorted(stored) == sorted(acked)  # every acknowledged event, once
    assert after_kill_on_victim > 0  # and the dead master's partitions took events again


@pytest.fixture
def slow_failover_cluster() -> Iterator[Doomed]:
    """A cluster whose nodes wait 20 s before failing a silent master over: longer than
    redis-py's retries of a command sent to it."""
    with tempfile.TemporaryDirectory(prefix="mtdesk-failover-") as workdir:
        pids: list[int] = []
        with local_cluster(workdir, pid_out=pids, who="tests", node_timeout_ms=20000) as (url, ports):
            yield Doomed(workdir, url, ports, pids)


async def test_a_shard_reading_every_master_goes_on_reading_and_acknowledging_the_live_ones_when_one_dies(
    slow_failover_cluster: Doomed,
) -> None:
    """A shard's partitions are spread over the masters. One master dies and is not yet
    failed over: a read still hands out what the live masters hold, nothing it read is
    lost, and acknowledging them is done on the live masters, the dead one's streams
    named to be acknowledged again. (One pipeline for all the masters failed as a whole once redis-py's
    retries of the dead one ran out, and what the live ones had delivered waited a
    minute for the idle claim: `mtdesk drill master-kill`.)"""
    url, ports, pids = (slow_failover_cluster.url, slow_failover_cluster.ports,
                        slow_failover_cluster.pids)
    redis = connect_cluster(url)
    streams = [keys.inbound(p) for p in range(PARTITIONS)]
    reader = GroupReader(redis, "shards", "shard-0", streams)
    await reader.ensure_groups()
    added = {stream: (await redis.xadd(stream, {"n": stream})).decode() for stream in streams}
    victim = next(n for n in redis.get_primaries()  # type: ignore[attr-defined]
                  if n.port != int(url.rsplit(":", 1)[1].split("/")[0]))
    on_victim = {s for s in streams if redis.get_node_from_key(s).port == victim.port}  # type: ignore[attr-defined]
    assert on_victim and len(on_victim) < len(streams)
    os.kill(pids[ports.index(victim.port)], signal.SIGKILL)
    try:
        first = await reader.read_new(count=10)
        again = await reader.read_new(count=10)  # nothing new: nothing handed out twice
        # Acknowledging every stream: the live masters' are done, the dead one's named.
        acks = await reader.ack_fenced({s: (f"own:{s}", "", [added[s]]) for s in streams})
        live = [s for s in streams if s not in on_victim]
        pending = [(await redis.xpending(s, "shards"))["pending"] for s in live]
        lengths = [await redis.xlen(s) for s in live]
    finally:
        await redis.aclose()
    assert {s: [e for e, _ in entries] for s, entries in first} == {
        s: [added[s]] for s in streams if s not in on_victim}
    assert again == []
    assert acks.refused == [] and sorted(acks.failed) == sorted(on_victim)
    assert pending == [0] * len(live) and lengths == [0] * len(live)


def is_master(port: int, asked: int) -> bool:
    """Whether the node on ``asked`` still lists the node on ``port`` as a master that
    has not failed (its replica not promoted yet)."""
    flags = flags_of(port, asked)
    return "master" in flags and "fail" not in flags.replace("fail?", "")


async def test_a_shard_answers_the_live_masters_partitions_past_its_cap_while_one_is_down(
    slow_failover_cluster: Doomed,
) -> None:
    """A shard acknowledged a message of a partition on a master that then dies (not
    failed over yet, for 20 s). Its acknowledgement fails and is sent again until the
    failover; meanwhile the messages of partitions on the live masters are answered and
    acknowledged, more of them than the shard's in-flight cap, all before the failover.
    (One acknowledgement pipeline for all the masters failed as a whole: the live ones'
    entries stayed counted in flight, and at the cap the shard read nothing more until
    the dead master's replica took over.)"""
    url, ports, pids = (slow_failover_cluster.url, slow_failover_cluster.ports,
                        slow_failover_cluster.pids)
    url_port = int(url.rsplit(":", 1)[1].split("/")[0])
    redis = connect_cluster(url)
    await redis.initialize()  # type: ignore[attr-defined]
    try:
        async with desk(redis, url, redis_cluster=True, partitions=8) as d:
            def port_of(key: str) -> int:
                return int(redis.get_node_from_key(key).port)  # type: ignore[attr-defined]

            # A victim holding none of what answering needs but the partitions' own
            # keys: not the node the URL names, the tenant's keys, the channel's send
            # permits or its routing.
            masters = sorted(int(n.port) for n in redis.get_primaries())  # type: ignore[attr-defined]
            channel, victim = next(
                (ch, m) for ch in ACCOUNTS for m in masters
                if m not in {url_port, port_of(keys.tenant(d.tenant_id)),
                             port_of(keys.rate(ch, ACCOUNTS[ch], 0)),
                             port_of(keys.account(ch, ACCOUNTS[ch]))})

            def partition_port(user: str) -> int:
                conv = d.message("x", user=user, channel=channel).conversation
                return port_of(keys.inbound(partition_of(conv, 8)))

            users = [f"U{i}" for i in range(200)]
            on_victim = next(u for u in users if partition_port(u) == victim)
            live = [u for u in users if partition_port(u) != victim][:4]
            shard = await d.shard(max_inflight=3, ack_batch=2, ack_delay_s=2.0)
            await shard.start()
            await d.push(d.message("before", user=on_victim, channel=channel))
            await eventually(lambda: d.texts_to(on_victim))
            # Its acknowledgement waits for a second one (or 2 s): the master dies first.
            os.kill(pids[ports.index(victim)], signal.SIGKILL)
            for user in live:
                await d.push(d.message("while down", user=user, channel=channel))
            await eventually(lambda: all(d.texts_to(u) for u in live), within=60)
            survivor = next(p for p in masters if p != victim)
            still_down = await asyncio.to_thread(is_master, victim, survivor)
            assert still_down  # answered before the failover, not after it
            await eventually(lambda: shard.handled >= len(live), within=10)
            for user in live:
                conv = d.message("x", user=user, channel=channel).conversation
                stream = keys.inbound(partition_of(conv, 8))
                assert (await redis.xpending(stream, keys.SHARD_GROUP))["pending"] == 0
            assert sorted(len(d.texts_to(u)) for u in live) == [1] * len(live)
    finally:
        await redis.aclose()
