"""``mtdesk shards``: the ownership map and the retrieval shards as an operator reads
them, ``set N [--retrieval M]`` asking the running deployment (and saying plainly when
none runs or a count is out of range), and ``mtdesk status`` showing the epoch and each
shard's partitions."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from mtdesk.cli.main import main
from mtdesk.core import cluster, ownership, retrieval_layout
from mtdesk.core.cluster import ClusterReport
from mtdesk.core.ownership import Ownership
from mtdesk.core.redis import Redis


async def test_set_asks_the_running_deployment_and_show_and_status_print_the_ownership(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MTDESK_REDIS_URL", redis_url)
    monkeypatch.setenv("MTDESK_PARTITIONS", "4")
    assert await asyncio.to_thread(main, ["shards", "set", "3"]) == 1
    assert "no deployment is running" in capsys.readouterr().err
    assert await ownership.read_request(redis) is None

    current = Ownership(epoch=7, owners=[0, 1, 0, 1], epochs=[7, 6, 7, 6], shards=2,
                        target=3, moving=1)
    await ownership.write(redis, current)
    await cluster.publish(redis, ClusterReport(
        time=time.time(), placement="spread", nodes=[],
        ownership=cluster.ownership_summary(current)))
    assert await asyncio.to_thread(main, ["shards", "set", "3"]) == 0
    wanted = await ownership.read_request(redis)
    assert wanted is not None and wanted.conversation == 3

    assert await asyncio.to_thread(main, ["shards", "show"]) == 0
    out = capsys.readouterr().out
    assert "2 conversation shard(s), epoch 7; re-sharding to 3, handing over partition 1" in out
    assert "mtdesk-shard-1     2 partitions: 1 3" in out
    await retrieval_layout.write(redis, retrieval_layout.RetrievalLayout(generation=0, shards=1))
    assert await asyncio.to_thread(main, ["shards", "set", "3", "--retrieval", "2"]) == 0
    assert "asked for 3 conversation shard(s) and 2 retrieval shard(s)" in capsys.readouterr().out
    wanted = await ownership.read_request(redis)
    assert wanted is not None and (wanted.conversation, wanted.retrieval) == (3, 2)
    await retrieval_layout.write(redis, retrieval_layout.RetrievalLayout(
        generation=0, shards=1, target=2))
    assert await asyncio.to_thread(main, ["shards", "show"]) == 0
    assert "1 retrieval shard(s), generation 0; re-sharding to 2" in capsys.readouterr().out
    await retrieval_layout.write(redis, retrieval_layout.RetrievalLayout(generation=1, shards=2))
    assert await asyncio.to_thread(main, ["shards", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["epoch"] == 7 and shown["retrieval"]["generation"] == 1
    assert shown["retrieval"]["shards"] == 2

    assert await asyncio.to_thread(main, ["status"]) == 0
    out = capsys.readouterr().out
    assert "partition ownership: epoch 7, 2 conversation shard(s); re-sharding to 3" in out
    assert "mtdesk-shard-0     0 2" in out
    assert "2 retrieval shard(s), generation 1" in out


@pytest.mark.parametrize("argv", [["shards", "set", "0"], ["shards", "set", "5"],
                                  ["shards", "set", "2", "--retrieval", "0"],
                                  ["shards", "set", "2", "--retrieval", "1025"]])
async def test_a_count_out_of_range_is_refused_naming_the_option(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], argv: list[str],
) -> None:
    monkeypatch.setenv("MTDESK_REDIS_URL", redis_url)
    monkeypatch.setenv("MTDESK_PARTITIONS", "4")
    assert await asyncio.to_thread(main, argv) == 2
    err = capsys.readouterr().err
    assert ("--count" in err) or ("--retrieval" in err), err
    assert await ownership.read_request(redis) is None
