"""The cluster report as operators read it: from Redis, as JSON, in /metrics, and
`mtdesk status` saying plainly when no deployment reports."""

from __future__ import annotations

import time

import pytest

from mtdesk.cli.main import main
from mtdesk.core import cluster
from mtdesk.core.cluster import ActorInfo, ClusterReport, NodeInfo
from mtdesk.core.redis import Redis


def _report() -> ClusterReport:
    return ClusterReport(time=time.time(), placement="spread", nodes=[
        NodeInfo(node_id="a" * 56, alive=True, address="10.0.0.1", actors=[
            ActorInfo(kind="conversation_shard", name="mtdesk-shard-0", partitions=[0, 2],
                      pending=3, lag_ms=120),
            ActorInfo(kind="deletion", name="mtdesk-deleter")]),
        NodeInfo(node_id="b" * 56, alive=False, address="10.0.0.2"),
        NodeInfo(node_id=cluster.UNPLACED, alive=False, address="", actors=[
            ActorInfo(kind="conversation_shard", name="mtdesk-shard-1", partitions=[1, 3],
                      pending=0, lag_ms=0)]),
    ])


async def test_the_published_report_reads_back_and_leaves_out_what_a_kind_has_not(
    redis: Redis,
) -> None:
    assert await cluster.read(redis) is None
    await cluster.publish(redis, _report())
    back = await cluster.read(redis)
    assert back is not None and back.nodes[0].actors[0].lag_ms == 120
    raw = cluster.to_json(back).decode()
    assert '"name":"mtdesk-deleter"}' in raw  # no partitions/pending/lag for a policy actor
    assert 0 < await redis.ttl("mt:cluster") <= 30


def test_metrics_say_which_actors_answer_and_each_shards_backlog() -> None:
    text = cluster.render_metrics(_report()).decode()
    assert 'mtdesk_cluster_nodes{alive="true"} 1.0' in text
    assert 'mtdesk_cluster_nodes{alive="false"} 1.0' in text
    assert f'mtdesk_cluster_actor_up{{kind="conversation_shard",name="mtdesk-shard-0",node_id="{"a" * 56}"}} 1.0' in text
    assert 'mtdesk_cluster_actor_up{kind="conversation_shard",name="mtdesk-shard-1",node_id=""} 0.0' in text
    assert 'mtdesk_cluster_shard_pending{name="mtdesk-shard-0"} 3.0' in text
    assert 'mtdesk_cluster_shard_lag_ms{name="mtdesk-shard-0"} 120.0' in text
    assert cluster.render_metrics(None) == b""


async def test_status_prints_the_nodes_and_says_when_nothing_reports(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    monkeypatch.setenv("MTDESK_REDIS_URL", redis_url)
    assert await asyncio.to_thread(main, ["status"]) == 1
    assert "no cluster report" in capsys.readouterr().err
    await cluster.publish(redis, _report())
    assert await asyncio.to_thread(main, ["status"]) == 0
    out = capsys.readouterr().out
    assert "1 node(s) alive, placement spread" in out
    assert "DEAD" in out and "not answering" in out
    assert "mtdesk-shard-0  partitions 2, pending 3, lag 120 ms" in out


async def test_a_shards_backlog_counts_read_and_unread_entries_and_ages_the_oldest(
    redis: Redis,
) -> None:
    from mtdesk.actors.cluster_report import queue_figures
    from mtdesk.core import keys

    for p in (0, 1, 2):
        await redis.xgroup_create(keys.inbound(p), keys.SHARD_GROUP, id="0", mkstream=True)
    await redis.xadd(keys.inbound(0), {"e": b"x"}, id="1000-0")
    await redis.xadd(keys.inbound(0), {"e": b"y"}, id="3000-0")
    await redis.xreadgroup(keys.SHARD_GROUP, "shard-0", {keys.inbound(0): ">"}, count=1)
    await redis.xadd(keys.inbound(1), {"e": b"z"}, id="4000-0")  # not read yet
    figures = await queue_figures(redis, [0, 1, 2], now_ms=5000)
    assert figures == {0: (2, 4000), 1: (1, 1000), 2: (0, 0)}
