"""A real Redis Cluster for the session: three masters with a replica each, on free
ports (``mtdesk.cli.localredis.local_cluster``), torn down by pid at the end. Each test
gets a cluster client on it with every master flushed first."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mtdesk.cli.localredis import local_cluster
from mtdesk.core.redis import Redis, connect_cluster, on_server, primaries

# The harnesses of the single-Redis tests, driven here against the cluster.
for _folder in ("actors", "gateway", "policy"):
    _path = str(Path(__file__).resolve().parent.parent / _folder)
    if _path not in sys.path:
        sys.path.append(_path)


class ClusterInfo:
    def __init__(self, url: str, ports: list[int], pids: list[int]) -> None:
        self.url = url
        self.ports = ports
        self.pids = pids


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterInfo]:
    with tempfile.TemporaryDirectory(prefix="mtdesk-cluster-") as workdir:
        pids: list[int] = []
        with local_cluster(workdir, pid_out=pids, who="tests") as (url, ports):
            yield ClusterInfo(url, ports, pids)


@pytest.fixture
async def cluster_redis(redis_cluster: ClusterInfo) -> AsyncIterator[Redis]:
    client = connect_cluster(redis_cluster.url)
    await client.initialize()  # type: ignore[attr-defined]
    for node in primaries(client):
        await on_server(client, node, "FLUSHALL")
    try:
        yield client
    finally:
        await client.aclose()
