"""``/admin/api/v1/cluster/shards``: an operator asks the running deployment for another
conversation (and retrieval) shard count; bad counts are refused naming the field, and
nothing is asked when no deployment runs."""

from __future__ import annotations

import time

from admin_harness import client_fixture, op  # noqa: F401 - the fixture
from aiohttp.test_utils import TestClient

from mtdesk.core import cluster, ownership, retrieval_layout
from mtdesk.core.cluster import ClusterReport
from mtdesk.core.ownership import Ownership
from mtdesk.core.redis import Redis

API = "/admin/api/v1/cluster/shards"


async def _running(redis: Redis) -> None:
    await cluster.publish(redis, ClusterReport(time=time.time(), placement="spread", nodes=[]))
    await ownership.write(redis, Ownership(epoch=5, owners=[i % 2 for i in range(64)],
                                           epochs=[5] * 64, shards=2))


async def test_an_operator_asks_for_three_shards_and_sees_the_request_and_the_map(
    client: TestClient, redis: Redis,
) -> None:
    await _running(redis)
    resp = await client.post(API, json={"conversation": 3}, headers=op())
    assert resp.status == 202
    body = await resp.json()
    assert body["requested"] == 3 and body["ownership"]["epoch"] == 5
    assert body["ownership"]["partitions"]["mtdesk-shard-1"][:3] == [1, 3, 5]
    wanted = await ownership.read_request(redis)
    assert wanted is not None and wanted.conversation == 3
    shown = await (await client.get(API, headers=op())).json()
    assert shown["requested"] == 3 and shown["ownership"]["shards"] == 2


async def test_an_operator_asks_for_retrieval_shards_and_sees_their_count_and_generation(
    client: TestClient, redis: Redis,
) -> None:
    await _running(redis)
    await retrieval_layout.write(redis, retrieval_layout.RetrievalLayout(generation=0, shards=1))
    resp = await client.post(API, json={"conversation": 2, "retrieval": 3}, headers=op())
    assert resp.status == 202
    body = await resp.json()
    assert body["requested"] == 2 and body["requested_retrieval"] == 3
    assert body["retrieval"]["generation"] == 0 and body["retrieval"]["shards"] == 1
    wanted = await ownership.read_request(redis)
    assert wanted is not None and (wanted.conversation, wanted.retrieval) == (2, 3)
    # A later request for conversation shards alone keeps the retrieval count asked for.
    assert (await client.post(API, json={"conversation": 3}, headers=op())).status == 202
    wanted = await ownership.read_request(redis)
    assert wanted is not None and (wanted.conversation, wanted.retrieval) == (3, 3)
    # As the director shows it while it re-shards, and once done.
    await retrieval_layout.write(redis, retrieval_layout.RetrievalLayout(
        generation=0, shards=1, target=3))
    shown = await (await client.get(API, headers=op())).json()
    assert shown["retrieval"]["target"] == 3 and shown["requested_retrieval"] == 3
    await retrieval_layout.write(redis, retrieval_layout.RetrievalLayout(generation=1, shards=3))
    shown = await (await client.get(API, headers=op())).json()
    assert (shown["retrieval"]["generation"], shown["retrieval"]["shards"]) == (1, 3)
    assert "target" not in shown["retrieval"]


async def test_bad_counts_are_refused_naming_the_field_and_change_nothing(
    client: TestClient, redis: Redis,
) -> None:
    await _running(redis)
    for body, status, field in (({"conversation": 0}, 422, "conversation"),
                                ({"conversation": "3"}, 422, "conversation"),
                                ({"conversation": 65}, 400, "conversation"),
                                ({"shards": 3}, 422, "shards"),
                                ({"conversation": 3, "retrieval": 0}, 422, "retrieval"),
                                ({"conversation": 3, "retrieval": -2}, 422, "retrieval"),
                                ({"conversation": 3, "retrieval": 1025}, 422, "retrieval"),
                                ({"conversation": 3, "retrieval": "2"}, 422, "retrieval")):
        resp = await client.post(API, json=body, headers=op())
        assert resp.status == status, body
        assert (await resp.json())["error"]["field"] == field
    assert await ownership.read_request(redis) is None


async def test_only_the_operator_may_ask_and_no_deployment_means_503(
    client: TestClient, redis: Redis,
) -> None:
    resp = await client.post(API, json={"conversation": 3},
                             headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    resp = await client.post(API, json={"conversation": 3}, headers=op())
    assert resp.status == 503 and "no actors are running" in await resp.text()
    assert await ownership.read_request(redis) is None
