"""Meta's data-deletion and deauthorize callbacks, and the public deletion status page.

Routes (mounted by :func:`setup_meta_deletion`):

- ``POST /webhooks/meta/data-deletion`` (form field ``signed_request``): verified with
  the app secret(s); the app-scoped ``user_id`` is looked up in ``keys.app_user`` and a
  deletion job for every channel that person connected is scheduled. Answers
  ``{"url": <base>/webhooks/meta/data-deletion/status/<code>, "confirmation_code": <code>}``.
- ``POST /webhooks/meta/deauthorize``: same verification; the person's channels are
  disconnected at once (tokens deleted, routing dropped) and their data's deletion is
  scheduled. Answers ``{"status": "ok", "confirmation_code", "url", "disconnected"}``.
- ``GET /webhooks/meta/data-deletion/status/{code}``: the job's status as HTML, or JSON
  with ``Accept: application/json`` or ``?format=json``. Holds no personal data.

A malformed ``signed_request`` is a 400 and a forged one a 403, both
``{"error": {"field": "signed_request", "message": …}}``; Redis down is a 503 (Meta retries).
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from redis.exceptions import RedisError

from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.errors import NotFound, ValidationError
from mtdesk.core.http import error_response
from mtdesk.core.redis import UNAVAILABLE, as_bytes
from mtdesk.core.tenants import Channels
from mtdesk.policy.erasure.jobs import DeletionJob, DeletionJobs
from mtdesk.policy.signed_request import SignatureMismatch, SignedRequest, parse_signed_request

log = logging.getLogger(__name__)

DELETION_PATH = "/webhooks/meta/data-deletion"
DEAUTHORIZE_PATH = "/webhooks/meta/deauthorize"
STATUS_PATH = "/webhooks/meta/data-deletion/status/{code}"
_MAX_FORM_BYTES = 16 * 1024


def status_url(base_url: str, code: str) -> str:
    return f"{base_url.rstrip('/')}{DELETION_PATH}/status/{code}"


async def _verified(request: web.Request) -> SignedRequest:
    if request.content_length is not None and request.content_length > _MAX_FORM_BYTES:
        raise ValidationError("signed_request", "request body is too large")
    try:
        form = await request.post()
    except (ValueError, LookupError, web.HTTPException, HttpProcessingError):
        # Malformed urlencoded/multipart bodies, unknown charsets, oversized parts.
        raise ValidationError("signed_request", "body must be a form") from None
    value = form.get("signed_request")
    return parse_signed_request(value, request.app[SETTINGS].meta_app_secrets)


async def _guarded(request: web.Request) -> SignedRequest | web.Response:
    try:
        return await _verified(request)
    except SignatureMismatch as exc:
        log.warning("meta callback %s: forged signed_request", request.path)
        return error_response(403, exc.field, exc.problem)
    except ValidationError as exc:
        return error_response(400, exc.field, exc.problem)


async def data_deletion(request: web.Request) -> web.Response:
    verified = await _guarded(request)
    if isinstance(verified, web.Response):
        return verified
    try:
        job = await DeletionJobs(request.app[REDIS], request.app[CLOCK]).schedule_app_user(
            verified.user_id, source="meta"
        )
    except (RedisError, *UNAVAILABLE):
        return error_response(503, None, "the store is unavailable, retry")
    log.info("meta data-deletion request: job %s", job.id)
    url = status_url(request.app[SETTINGS].base_url, job.id)
    return web.json_response({"url": url, "confirmation_code": job.id})


async def deauthorize(request: web.Request) -> web.Response:
    verified = await _guarded(request)
    if isinstance(verified, web.Response):
        return verified
    redis, clock = request.app[REDIS], request.app[CLOCK]
    disconnected = 0
    try:
        channels = Channels(redis, clock)
        for member in sorted(await redis.smembers(keys.app_user(verified.user_id))):
            tid, _, cid = as_bytes(member).decode().partition(":")
            try:
                await channels.disconnect(tid, cid, reason="app deauthorized on Facebook")
                disconnected += 1
            except NotFound:
                continue  # already gone
        job = await DeletionJobs(redis, clock).schedule_app_user(verified.user_id, source="meta")
    except (RedisError, *UNAVAILABLE):
        return error_response(503, None, "the store is unavailable, retry")
    log.info("meta deauthorize: %d channel(s) disconnected, job %s", disconnected, job.id)
    return web.json_response({
        "status": "ok", "confirmation_code": job.id, "disconnected": disconnected,
        "url": status_url(request.app[SETTINGS].base_url, job.id),
    })


def _when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_STATUS_TEXT = {
    "queued": "Your deletion request was received and is queued.",
    "running": "Your data is being deleted now.",
    "done": "Your data has been deleted.",
    "failed": "Deletion hit a problem; it has been reported to the operator.",
}


def render_status_html(job: DeletionJob) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(job.counts.items())
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data deletion status</title></head>
<body><h1>Data deletion status</h1>
<p>Confirmation code: <code>{html.escape(job.id)}</code></p>
<p><strong>Status: {html.escape(job.status)}</strong> — {html.escape(_STATUS_TEXT.get(job.status, ""))}</p>
<ul><li>Requested: {_when(job.requested_ms)}</li><li>Started: {_when(job.started_ms)}</li>
<li>Finished: {_when(job.finished_ms)}</li></ul>
{"<table><tr><th>data</th><th>items deleted</th></tr>" + rows + "</table>" if rows else ""}
</body></html>
"""


async def deletion_status(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    wants_json = request.query.get("format") == "json" or "application/json" in request.headers.get(
        "Accept", ""
    )
    try:
        job = await DeletionJobs(request.app[REDIS], request.app[CLOCK]).find(code)
    except (RedisError, *UNAVAILABLE):
        return error_response(503, None, "the store is unavailable, retry")
    if job is None:
        if wants_json:
            return error_response(404, "confirmation_code", "no deletion request with this code")
        return web.Response(status=404, text="No deletion request with this confirmation code.\n")
    if wants_json:
        return web.json_response({
            "confirmation_code": job.id, "status": job.status, "kind": job.kind,
            "requested_ms": job.requested_ms, "started_ms": job.started_ms,
            "finished_ms": job.finished_ms, "counts": job.counts,
        })
    return web.Response(text=render_status_html(job), content_type="text/html")


def setup_meta_deletion(app: web.Application) -> None:
    """Add the routes; needs ``app[REDIS]``, ``app[SETTINGS]`` and ``app[CLOCK]``."""
    app.router.add_post(DELETION_PATH, data_deletion)
    app.router.add_post(DEAUTHORIZE_PATH, deauthorize)
    app.router.add_get(STATUS_PATH, deletion_status)
