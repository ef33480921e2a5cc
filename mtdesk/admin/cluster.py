"""``GET /admin/api/v1/cluster`` (operator token): where every actor runs; and
``GET``/``POST /admin/api/v1/cluster/shards``: the conversation shard count and the
partition ownership, the retrieval shard count and generation, and a request for other
counts (live re-sharding).

The cluster answers the last report the director published (shape in
:mod:`mtdesk.core.cluster`), so any gateway worker answers it without joining Ray. No
report within its TTL (no actors running, or the director cannot reach Redis) is a 503
saying so. A re-sharding request is written to Redis (:mod:`mtdesk.core.ownership`); the
director follows it within a second and hands the partitions over one at a time: the
answer is 202 with the count asked for and the map as it is now; ``GET …/shards`` shows
the progress (``target``, ``moving``, ``epoch``). A ``retrieval`` count starts a new
generation of retrieval shards beside the old one (core/retrieval_layout.py):
``retrieval`` in the answer shows its ``generation``, ``shards`` and ``target``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import require_operator
from mtdesk.admin.bodies import ShardCounts
from mtdesk.admin.decode import read_body
from mtdesk.core import cluster, ownership, retrieval_layout
from mtdesk.core.appkeys import REDIS, SETTINGS
from mtdesk.core.errors import StoreUnavailable, ValidationError
from mtdesk.core.http import json_response

NO_REPORT = ("no cluster report: no actors are running (mtdesk serve starts them) or they "
             "cannot reach Redis")


async def get_cluster(request: web.Request) -> web.Response:
    require_operator(request)
    report = await cluster.read(request.config_dict[REDIS])
    if report is None:
        raise StoreUnavailable(NO_REPORT)
    return json_response(report)


async def _state(request: web.Request) -> dict[str, Any]:
    redis = request.config_dict[REDIS]
    current = await ownership.read(redis)
    wanted = await ownership.read_request(redis)
    layout = await retrieval_layout.read(redis)
    return {"ownership": cluster.ownership_summary(current),
            "requested": wanted.conversation if wanted is not None else None,
            "retrieval": layout,
            "requested_retrieval": wanted.retrieval if wanted is not None else None}


async def get_shards(request: web.Request) -> web.Response:
    require_operator(request)
    return json_response(await _state(request))


async def set_shards(request: web.Request) -> web.Response:
    require_operator(request)
    body = await read_body(request, ShardCounts)
    settings = request.config_dict[SETTINGS]
    if body.conversation > settings.partitions:
        raise ValidationError("conversation", f"at most MTDESK_PARTITIONS "
                              f"({settings.partitions}) shards: a shard owns partitions")
    redis = request.config_dict[REDIS]
    if await cluster.read(redis) is None:
        raise StoreUnavailable(NO_REPORT)
    await ownership.request(redis, body.conversation, body.retrieval)
    return json_response(await _state(request), status=202)


def add_routes(admin: web.Application) -> None:
    routes = admin_routes(admin)
    routes.add_get(f"{API_BASE}/cluster", get_cluster)
    routes.add_get(f"{API_BASE}/cluster/shards", get_shards)
    routes.add_post(f"{API_BASE}/cluster/shards", set_shards)
