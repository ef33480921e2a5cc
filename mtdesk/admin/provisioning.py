"""Provisioning routes: tenants (operator), channels and the bot (tenant or operator).

Tokens come in once (``POST /channels``) and are stored encrypted; no answer here ever
contains a token or an API key, except the one ``POST /tenants`` answer that hands the
new tenant its key.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes, vault_of
from mtdesk.admin.auth import ForTenant, require_operator, tenant_scope
from mtdesk.admin.bodies import BotChange, NewChannel, NewTenant, TenantStatusChange
from mtdesk.admin.decode import body_errors, read_body
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.http import json_response
from mtdesk.core.ports import BotConfig
from mtdesk.core.tenants import Bots, Channels, Tenants, apply_bot_update
from mtdesk.policy.erasure.jobs import schedule_channel_deletion


def _tenants(request: web.Request) -> Tenants:
    return Tenants(request.config_dict[REDIS], request.config_dict[CLOCK])


async def create_tenant(request: web.Request) -> web.Response:
    require_operator(request)
    body = await read_body(request, NewTenant)
    with body_errors(NewTenant):
        record, api_key = await _tenants(request).create(body.name, body.email)
    out = msgspec.structs.asdict(record) | {"api_key": api_key.reveal()}
    return json_response(out, 201)


async def list_tenants(request: web.Request) -> web.Response:
    require_operator(request)
    return json_response({"tenants": await _tenants(request).list()})


async def get_tenant_by_id(request: web.Request) -> web.Response:
    require_operator(request)
    return json_response(await _tenants(request).get(request.match_info["id"]))


async def patch_tenant(request: web.Request) -> web.Response:
    """Operator: ``{"status": "active" | "suspended"}`` (a suspended key gets 401)."""
    require_operator(request)
    body = await read_body(request, TenantStatusChange)
    tenants = _tenants(request)
    return json_response(await tenants.set_status(request.match_info["id"], body.status))


async def get_tenant(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    return json_response(await _tenants(request).get(tid))


async def _scoped_tenant(request: web.Request, body: ForTenant | None = None) -> str:
    """The tenant acted for, which must exist (404 otherwise)."""
    tid = tenant_scope(request, body)
    await _tenants(request).get(tid)
    return tid


async def create_channel(request: web.Request) -> web.Response:
    body = await read_body(request, NewChannel)
    tid = await _scoped_tenant(request, body)
    channels = Channels(
        request.config_dict[REDIS], request.config_dict[CLOCK], vault_of(request).encrypt
    )
    with body_errors(NewChannel):
        record = await channels.connect(
            tid, body.channel, body.account_id, body.access_token, body.connected_by,
            coexistence=body.coexistence,
        )
    return json_response(record, 201)


def _channels(request: web.Request) -> Channels:
    return Channels(request.config_dict[REDIS], request.config_dict[CLOCK])


async def list_channels(request: web.Request) -> web.Response:
    tid = await _scoped_tenant(request)
    return json_response({"channels": await _channels(request).list(tid)})


async def get_channel(request: web.Request) -> web.Response:
    tid = await _scoped_tenant(request)
    return json_response(await _channels(request).get(tid, request.match_info["id"]))


async def delete_channel(request: web.Request) -> web.Response:
    """Disconnect, then erase the channel's Platform Data: the privacy promise is that a
    disconnected account's data is gone within 30 days (the job takes minutes)."""
    tid = await _scoped_tenant(request)
    cid = request.match_info["id"]
    record = await _channels(request).disconnect(tid, cid)
    job = await schedule_channel_deletion(
        request.config_dict[REDIS], request.config_dict[CLOCK], tid, cid)
    body = msgspec.to_builtins(record)
    body["deletion_job"] = job.id
    return json_response(body)


async def put_bot(request: web.Request) -> web.Response:
    body = await read_body(request, BotChange)
    tid = await _scoped_tenant(request, body)
    providers = request.config_dict[SETTINGS].providers
    # PUT replaces: fields left out take their defaults.
    with body_errors(BotChange):
        config = apply_bot_update(body, providers, BotConfig())
    stored = await Bots(request.config_dict[REDIS]).put(tid, config)
    return json_response(msgspec.structs.asdict(stored))


async def get_bot(request: web.Request) -> web.Response:
    tid = await _scoped_tenant(request)
    config = await Bots(request.config_dict[REDIS]).get(tid)
    # Show every field, defaults included, so the caller sees what is in force.
    return json_response(msgspec.structs.asdict(config))


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_post(f"{API_BASE}/tenants", create_tenant)
    r.add_get(f"{API_BASE}/tenants", list_tenants)
    r.add_get(f"{API_BASE}/tenants/{{id}}", get_tenant_by_id)
    r.add_patch(f"{API_BASE}/tenants/{{id}}", patch_tenant)
    r.add_get(f"{API_BASE}/tenant", get_tenant)
    r.add_post(f"{API_BASE}/channels", create_channel)
    r.add_get(f"{API_BASE}/channels", list_channels)
    r.add_get(f"{API_BASE}/channels/{{id}}", get_channel)
    r.add_delete(f"{API_BASE}/channels/{{id}}", delete_channel)
    r.add_put(f"{API_BASE}/bot", put_bot)
    r.add_get(f"{API_BASE}/bot", get_bot)
