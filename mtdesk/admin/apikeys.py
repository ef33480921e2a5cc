"""API keys for machines (owners only; an agent gets 403):

- ``GET /keys`` → ``{"keys": [{id, name, prefix, created_ms}]}`` (never a key);
- ``POST /keys`` ``{name}`` → 201 ``{…, "api_key": "mtd_…"}`` (the only time it is shown);
- ``POST /keys/{id}/rotate`` → 201 a new key of the same name; the old one stops at once;
- ``DELETE /keys/{id}`` revokes (the next call with it is a 401).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from mtdesk.admin.accounts import decode_body
from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import ForTenant, require_owner, tenant_scope
from mtdesk.core.apikeys import ApiKeys
from mtdesk.core.appkeys import CLOCK, REDIS
from mtdesk.core.http import json_response
from mtdesk.core.tenants import Tenants


class NewKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    tenant_id: str | None = None


def _keys(request: web.Request) -> ApiKeys:
    return ApiKeys(request.config_dict[REDIS], request.config_dict[CLOCK])


async def _tenant(request: web.Request, body: ForTenant | None = None) -> str:
    require_owner(request)
    tid = tenant_scope(request, body)
    await Tenants(request.config_dict[REDIS], request.config_dict[CLOCK]).get(tid)
    return tid


async def list_keys(request: web.Request) -> web.Response:
    return json_response({"keys": await _keys(request).list(await _tenant(request))})


async def create_key(request: web.Request) -> web.Response:
    body = await decode_body(request, NewKeyBody)
    record, key = await _keys(request).create(await _tenant(request, body), body.name)
    return json_response(msgspec.structs.asdict(record) | {"api_key": key.reveal()}, 201)


async def rotate_key(request: web.Request) -> web.Response:
    record, key = await _keys(request).rotate(await _tenant(request), request.match_info["id"])
    return json_response(msgspec.structs.asdict(record) | {"api_key": key.reveal()}, 201)


async def revoke_key(request: web.Request) -> web.Response:
    tid = await _tenant(request)
    return json_response(await _keys(request).revoke(tid, request.match_info["id"]))


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_get(f"{API_BASE}/keys", list_keys)
    r.add_post(f"{API_BASE}/keys", create_key)
    r.add_post(f"{API_BASE}/keys/{{id}}/rotate", rotate_key)
    r.add_delete(f"{API_BASE}/keys/{{id}}", revoke_key)
