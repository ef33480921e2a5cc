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
``{"error": {"field": "signed_request", "message": …}}``; so is one without ``issued_at``
or issued more than ``MTDESK_META_SIGNED_REQUEST_MAX_AGE_S`` ago (a 400). Redis down is a
503 (Meta retries).

Replays: the same ``signed_request`` posted again answers with the same job and
confirmation code (keyed by its digest, kept as long as it could still be accepted), and
a deauthorize only disconnects channels connected before its ``issued_at``, so replaying
one never disconnects a channel the person connected again since.
"""

from __future__ import annotations

import asyncio
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
from mtdesk.core.tenants import CONNECTED, Channels
from mtdesk.policy.erasure.jobs import DeletionJob, DeletionJobs, new_job_id
from mtdesk.policy.signed_request import (
    MAX_CLOCK_SKEW_S,
    SignatureMismatch,
    SignedRequest,
    parse_signed_request,
    request_digest,
)

log = logging.getLogger(__name__)

DELETION_PATH = "/webhooks/meta/data-deletion"
DEAUTHORIZE_PATH = "/webhooks/meta/deauthorize"
STATUS_PATH = "/webhooks/meta/data-deletion/status/{code}"
_MAX_FORM_BYTES = 16 * 1024


def status_url(base_url: str, code: str) -> str:
    return f"{base_url.rstrip('/')}{DELETION_PATH}/status/{code}"


class _Verified:
    def __init__(self, request: SignedRequest, digest: str) -> None:
        self.request = request
        self.digest = digest


async def _verified(request: web.Request) -> _Verified:
    if request.content_length is not None and request.content_length > _MAX_FORM_BYTES:
        raise ValidationError("signed_request", "request body is too large")
    try:
        form = await request.post()
    except (ValueError, LookupError, web.HTTPException, HttpProcessingError):
        # Malformed urlencoded/multipart bodies, unknown charsets, oversized parts.
        raise ValidationError("signed_request", "body must be a form") from None
    value = form.get("signed_request")
    settings = request.app[SETTINGS]
    verified = parse_signed_request(
        value, settings.meta_app_secrets, now=request.app[CLOCK].now(),
        max_age_s=settings.meta_signed_request_max_age_s,
    )
    assert isinstance(value, str)  # parse_signed_request accepts nothing else
    return _Verified(verified, request_digest(value))


async def _guarded(request: web.Request) -> _Verified | web.Response:
    try:
        return await _verified(request)
    except SignatureMismatch as exc:
        log.warning("meta callback %s: forged signed_request", request.path)
        return error_response(403, exc.field, exc.problem)
    except ValidationError as exc:
        return error_response(400, exc.field, exc.problem)


async def _job_for(request: web.Request, kind: str, verified: _Verified) -> DeletionJob:
    """The deletion job of this signed_request: scheduled by the first of its copies to
    claim the digest; the others answer with that same job."""
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    jobs = DeletionJobs(redis, request.app[CLOCK])
    key = keys.meta_callback(kind, verified.digest)
    # Kept while the request could still be accepted: a later copy is refused as too old.
    ttl = settings.meta_signed_request_max_age_s + MAX_CLOCK_SKEW_S + 3600
    mine = new_job_id()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(key, "job", mine)
        pipe.hget(key, "job")
        pipe.expire(key, ttl)
        _, raw, _ = await pipe.execute()
    job_id = as_bytes(raw).decode()
    if job_id != mine:
        # A copy is (or was) handled concurrently: its job appears within moments.
        for _ in range(20):
            job = await jobs.find(job_id)
            if job is not None:
                return job
            await asyncio.sleep(0.05)
        # The first copy died between its claim and its job: finish its work, same id.
    return await jobs.schedule_app_user(verified.request.user_id, source="meta", job_id=job_id)


async def data_deletion(request: web.Request) -> web.Response:
    verified = await _guarded(request)
    if isinstance(verified, web.Response):
        return verified
    try:
        job = await _job_for(request, "deletion", verified)
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
    # Channels connected after Meta issued this request were connected again since the
    # person removed the app: a replay (or a late copy) must leave them alone.
    issued_ms = verified.request.issued_at * 1000 + 999
    disconnected = 0
    try:
        channels = Channels(redis, clock)
        for member in sorted(await redis.smembers(keys.app_user(verified.request.user_id))):
            tid, _, cid = as_bytes(member).decode().partition(":")
            try:
                record = await channels.get(tid, cid)
                if record.status != CONNECTED or record.connected_ms > issued_ms:
                    continue
                await channels.disconnect(tid, cid, reason="app deauthorized on Facebook")
                disconnected += 1
            except NotFound:
                continue  # already gone
        job = await _job_for(request, "deauthorize", verified)
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
