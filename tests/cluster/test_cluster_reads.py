"""A conversation shard's reads on a real Redis Cluster: one partition stream per slot,
read in one pipeline, sent straight to each stream's master."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mtdesk.core.groups import GroupReader
from mtdesk.core.pipelined import PipelinedCluster, connect_shared
from mtdesk.core.redis import Redis, on_server, primaries

STREAMS = [f"in:{{{p}}}" for p in range(6)]


@pytest.fixture(params=["cluster client", "shards' client"])
async def cluster(request: pytest.FixtureRequest, cluster_redis: Redis,
                  redis_cluster: object) -> AsyncIterator[Redis]:
    """redis-py's cluster client (pipelines), and the shards' (each master's shared
    connection)."""
    if request.param == "cluster client":
        yield cluster_redis
        return
    client = connect_shared(redis_cluster.url, cluster=True)  # type: ignore[attr-defined]
    await client.initialize()  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.aclose()


async def _getkeys_calls(redis: Redis) -> int:
    total = 0
    for node in primaries(redis):
        stats = await on_server(redis, node, "INFO", "commandstats")
        if isinstance(stats, dict) and len(stats) == 1:  # keyed by the node answering
            stats = next(iter(stats.values()))
        assert "cmdstat_xreadgroup" in stats or "cmdstat_info" in stats, stats
        total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total


async def test_partitions_on_every_master_are_read_without_asking_where_their_keys_are(
    cluster: Redis,
) -> None:
    """Every partition's new entries come back in one read, and resolving where each
    stream lives costs the masters no COMMAND GETKEYS per poll (it used to: one per
    stream per read, doubling what an idle shard asks of the cluster)."""
    owners = {str(cluster.get_node_from_key(s)) for s in STREAMS}  # type: ignore[attr-defined]
    assert len(owners) == 3  # the partitions are spread over all three masters
    reader = GroupReader(cluster, "g", "c1", STREAMS)
    await reader.ensure_groups()
    added = {s: [await cluster.xadd(s, {"n": str(i)}) for i in range(2)] for s in STREAMS}
    before = await _getkeys_calls(cluster)
    got: dict[str, list[str]] = {}
    for _ in range(3):
        for stream, entries in await reader.read_new(count=10):
            got.setdefault(stream, []).extend(e for e, _ in entries)
    assert got == {s: [i.decode() for i in ids] for s, ids in added.items()}
    assert await _getkeys_calls(cluster) == before
    if isinstance(cluster, PipelinedCluster):  # on each master's shared connection
        assert all(link.writes > 0 for link in cluster.links.made.values())


async def test_a_read_sent_to_a_master_that_no_longer_holds_the_slot_follows_it(
    cluster: Redis,
) -> None:
    """A stale slot map (a failover or a migration not yet seen) sends the read to the
    wrong master; its MOVED answer re-routes the read and nothing is missed."""
    reader = GroupReader(cluster, "g", "c1", STREAMS[:2])
    await reader.ensure_groups()
    entry = (await cluster.xadd(STREAMS[0], {"n": "1"})).decode()
    slot = cluster.keyslot(STREAMS[0])  # type: ignore[attr-defined]
    right = cluster.get_node_from_key(STREAMS[0])  # type: ignore[attr-defined]
    wrong = next(n for n in primaries(cluster) if n.name != right.name)
    cluster.nodes_manager.slots_cache[slot] = [wrong]  # type: ignore[attr-defined]
    got = [e for _, entries in await reader.read_new(count=10) for e, _ in entries]
    assert got == [entry]
    assert cluster.get_node_from_key(STREAMS[0]).name == right.name  # type: ignore[attr-defined]


async def test_a_partition_stream_deleted_wholesale_gets_its_group_back_and_the_others_read_on(
    cluster: Redis,
) -> None:
    """An operator deletes one partition's stream (its group goes with it): that read
    answers NOGROUP, the other partitions' entries, on the same master too, are handed
    out in the same read, and the group is made again so the partition is read on."""
    reader = GroupReader(cluster, "g", "c1", STREAMS)
    await reader.ensure_groups()
    doomed = STREAMS[0]
    await cluster.delete(doomed)
    added = {s: (await cluster.xadd(s, {"n": "1"})).decode() for s in STREAMS[1:]}
    got = {s: [e for e, _ in entries] for s, entries in await reader.read_new(count=10)}
    assert got == {s: [i] for s, i in added.items()}
    later = (await cluster.xadd(doomed, {"n": "2"})).decode()
    assert [(s, [e for e, _ in entries]) for s, entries in await reader.read_new(count=10)] \
        == [(doomed, [later])]


async def test_acknowledgements_on_every_master_are_fenced_and_follow_a_moved_slot(
    cluster: Redis,
) -> None:
    """A flush acknowledges the partitions of every master, refuses the one handed over
    (its owner key holds another epoch), and one whose slot the client's map places on
    the wrong master is acknowledged where it is."""
    reader = GroupReader(cluster, "g", "c1", STREAMS)
    await reader.ensure_groups()
    ids = {s: (await cluster.xadd(s, {"n": "1"})).decode() for s in STREAMS}
    await reader.read_new(count=10)
    for s in STREAMS:
        await cluster.set(f"own:{s}", "7")
    await cluster.set(f"own:{STREAMS[1]}", "8")  # handed over to epoch 8
    slot = cluster.keyslot(STREAMS[2])  # type: ignore[attr-defined]
    right = cluster.get_node_from_key(STREAMS[2])  # type: ignore[attr-defined]
    wrong = next(n for n in primaries(cluster) if n.name != right.name)
    cluster.nodes_manager.slots_cache[slot] = [wrong]  # type: ignore[attr-defined]
    outcome = await reader.ack_fenced({s: (f"own:{s}", "7", [ids[s]]) for s in STREAMS})
    assert outcome.refused == [STREAMS[1]] and outcome.failed == []
    pending = [(await cluster.xpending(s, "g"))["pending"] for s in STREAMS]
    assert pending == [0, 1, 0, 0, 0, 0]
