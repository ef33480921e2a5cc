"""Privacy routes of the admin API: export, erasure, restriction, retention, job status.

All under ``/admin/api/v1`` and scoped to the caller's tenant (the operator adds
``?tenant_id=``):

- ``GET /export``: the whole tenant as one JSON document, streamed.
- ``GET /users/{channel}/{user_id}/export``: one end user's conversations.
- ``DELETE /users/{channel}/{user_id}``: erase one end user → 202 with the job.
- ``PUT|DELETE /users/{channel}/{user_id}/restriction``; ``GET /restrictions``.
- ``DELETE /account``: erase the tenant → 202 with the job; its API key answers 401 from
  this moment.
- ``DELETE /channels/{id}/data``: disconnect the channel now (token and routing gone)
  and erase its data → 202 with the job.
- ``GET /deletions/{job_id}``: a job's audit record (only the tenant's own jobs).
- ``GET|PUT /retention`` ``{"days"}``: the tenant's retention period (1..365).

A 202 answer is ``{"job": {…DeletionJob…}, "status_url": …}``; ``status_url`` is the
public status page (no login needed, no personal data), which still works after the
account is gone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from mtdesk.admin.app import admin_routes
from mtdesk.admin.auth import principal, tenant_scope
from mtdesk.admin.billing import cancel_subscription
from mtdesk.admin.bodies import RetentionChange
from mtdesk.admin.decode import body_errors, read_body
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS, cipher_of
from mtdesk.core.http import json_response
from mtdesk.core.tenants import Channels, Tenants
from mtdesk.policy.erasure.jobs import DeletionJob, DeletionJobs
from mtdesk.policy.export import export_tenant, export_user
from mtdesk.policy.restriction import list_restricted, restrict, unrestrict
from mtdesk.policy.retention import get_retention_days, set_retention_days

log = logging.getLogger(__name__)

API = "/api/v1"
STATUS_PAGE = "/webhooks/meta/data-deletion/status/"


def _jobs(request: web.Request) -> DeletionJobs:
    return DeletionJobs(request.config_dict[REDIS], request.config_dict[CLOCK],
                        cipher=cipher_of(request.config_dict))


def _accepted(request: web.Request, job: DeletionJob) -> web.Response:
    base = request.config_dict[SETTINGS].base_url.rstrip("/")
    return json_response({"job": job, "status_url": f"{base}{STATUS_PAGE}{job.id}"}, status=202)


async def _existing_tenant(request: web.Request) -> str:
    tid = tenant_scope(request)
    await Tenants(request.config_dict[REDIS], request.config_dict[CLOCK]).get(tid)
    return tid


async def _stream(
    request: web.Request, chunks: AsyncIterator[bytes], filename: str
) -> web.StreamResponse:
    # The first chunk is read before the headers go out, so "not found" is still a 404.
    first = await chunks.__anext__()
    response = web.StreamResponse(headers={
        "Content-Type": "application/json; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    })
    await response.prepare(request)
    await response.write(first)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except Exception as exc:  # headers are sent: the client sees a truncated document
        log.warning("export interrupted: %s", type(exc).__name__)
        raise
    await response.write_eof()
    return response


async def export_all(request: web.Request) -> web.StreamResponse:
    tid = tenant_scope(request)
    redis, clock = request.config_dict[REDIS], request.config_dict[CLOCK]
    cipher = cipher_of(request.config_dict)
    return await _stream(request, export_tenant(redis, clock, tid, cipher=cipher),
                         f"mtdesk-export-{tid}.json")


async def export_one_user(request: web.Request) -> web.StreamResponse:
    tid = tenant_scope(request)
    channel, user_id = request.match_info["channel"], request.match_info["user_id"]
    redis, clock = request.config_dict[REDIS], request.config_dict[CLOCK]
    return await _stream(
        request, export_user(redis, clock, tid, channel, user_id,
                             cipher=cipher_of(request.config_dict)),
        f"mtdesk-export-{channel}.json"
    )


async def delete_user(request: web.Request) -> web.Response:
    tid = await _existing_tenant(request)
    job = await _jobs(request).schedule_user(
        tid, request.match_info["channel"], request.match_info["user_id"]
    )
    return _accepted(request, job)


async def put_restriction(request: web.Request) -> web.Response:
    tid = await _existing_tenant(request)
    channel, user_id = request.match_info["channel"], request.match_info["user_id"]
    await restrict(request.config_dict[REDIS], tid, channel, user_id)
    return json_response({"channel": channel, "user_id": user_id, "restricted": True})


async def delete_restriction(request: web.Request) -> web.Response:
    tid = await _existing_tenant(request)
    channel, user_id = request.match_info["channel"], request.match_info["user_id"]
    await unrestrict(request.config_dict[REDIS], tid, channel, user_id)
    return json_response({"channel": channel, "user_id": user_id, "restricted": False})


async def get_restrictions(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    return json_response({"restricted": await list_restricted(request.config_dict[REDIS], tid)})


async def delete_account(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    # Stop the charges first: once erased, the Stripe subscription's id is gone with it.
    # Stripe unreachable → 502 and nothing is deleted yet, so the tenant can retry.
    await cancel_subscription(request, tid)
    job = await _jobs(request).schedule_account(tid)
    log.info("account deletion scheduled: job %s", job.id)
    return _accepted(request, job)


async def delete_channel_data(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    cid = request.match_info["id"]
    redis, clock = request.config_dict[REDIS], request.config_dict[CLOCK]
    # Disconnect first: no new message is routed in while the data is erased.
    await Channels(redis, clock).disconnect(tid, cid, reason="data deletion requested")
    return _accepted(request, await _jobs(request).schedule_channel(tid, cid))


async def get_deletion(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    who = principal(request)
    if who.is_operator and "tenant_id" not in request.query:
        return json_response(await _jobs(request).get(job_id))
    tid = tenant_scope(request)
    return json_response(await _jobs(request).get_for_tenant(job_id, tid))


async def get_retention(request: web.Request) -> web.Response:
    tid = await _existing_tenant(request)
    settings = request.config_dict[SETTINGS]
    days = await get_retention_days(request.config_dict[REDIS], settings, tid)
    return json_response({"days": days, "max_days": settings.retention_days})


async def put_retention(request: web.Request) -> web.Response:
    body = await read_body(request, RetentionChange)
    tid = tenant_scope(request, body)
    settings = request.config_dict[SETTINGS]
    with body_errors(RetentionChange):
        days = await set_retention_days(request.config_dict[REDIS], settings, tid, body.days)
    return json_response({"days": days, "max_days": settings.retention_days})


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_get(f"{API}/export", export_all)
    r.add_get(f"{API}/users/{{channel}}/{{user_id}}/export", export_one_user)
    r.add_delete(f"{API}/users/{{channel}}/{{user_id}}", delete_user)
    r.add_put(f"{API}/users/{{channel}}/{{user_id}}/restriction", put_restriction)
    r.add_delete(f"{API}/users/{{channel}}/{{user_id}}/restriction", delete_restriction)
    r.add_get(f"{API}/restrictions", get_restrictions)
    r.add_delete(f"{API}/account", delete_account)
    r.add_delete(f"{API}/channels/{{id}}/data", delete_channel_data)
    r.add_get(f"{API}/deletions/{{job_id}}", get_deletion)
    r.add_get(f"{API}/retention", get_retention)
    r.add_put(f"{API}/retention", put_retention)
