"""``GET /admin/api/v1/cluster`` (operator token): where every actor runs.

Answers the last report the director published (shape in :mod:`mtdesk.core.cluster`), so
any gateway worker answers it without joining Ray. No report within its TTL (no actors
running, or the director cannot reach Redis) is a 503 saying so.
"""

from __future__ import annotations

from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import require_operator
from mtdesk.core import cluster
from mtdesk.core.appkeys import REDIS
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.http import json_response


async def get_cluster(request: web.Request) -> web.Response:
    require_operator(request)
    report = await cluster.read(request.config_dict[REDIS])
    if report is None:
        raise StoreUnavailable("no cluster report: no actors are running (mtdesk serve "
                               "starts them) or they cannot reach Redis")
    return json_response(report)


def add_routes(admin: web.Application) -> None:
    admin_routes(admin).add_get(f"{API_BASE}/cluster", get_cluster)
