"""Knowledge-base routes of the admin API (tenant key, or operator with ``tenant_id``).

- ``POST /admin/api/v1/knowledge``: ``{"qa": [{"q", "a"}, …], "name"?}``, or
  ``{"url", "crawl"?, "max_pages"?, "max_depth"?, "max_seconds"?}``, or a multipart form
  with a ``file`` part → 202 with the source (status ``queued``); the work runs in the
  background. Bad input → 400 naming the field (a refused URL says why).
- ``GET /admin/api/v1/knowledge`` → ``{"sources": [...]}`` with status and progress.
- ``GET /admin/api/v1/knowledge/{id}``, ``POST …/{id}/resync`` (202), ``DELETE …/{id}``.
- ``GET /admin/api/v1/knowledge/search?q=…&k=5`` → ``{"passages": [...]}``.

The composition root may put a shared :class:`KnowledgeService` and retriever in the app
under :data:`KB_SERVICE` / :data:`KB_RETRIEVER`; otherwise this module makes its own on
first use (background worker started then, stopped at cleanup).

Erasure: from first use, the retriever follows the purge notices (one subscription per
process, so each ``serve --workers`` process keeps its own retriever honest): an erased
account's index leaves memory when the notice arrives, and after any (re)subscription
the tenants erased meanwhile are dropped too (:meth:`KnowledgeRetriever.prune`). A search
costs no Redis read for it. A deleted source's chunks go from the results at once in
every process: passages are read from Redis, where they are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import ForTenant, tenant_scope
from mtdesk.admin.bodies import NewKnowledge
from mtdesk.admin.decode import body_errors, read_body
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.errors import ValidationError
from mtdesk.core.http import json_response
from mtdesk.core.redis import Redis
from mtdesk.core.tenants import Tenants
from mtdesk.policy.erasure.notices import Notice, erased_tenant, listen_for_notices
from mtdesk.retrieval.crawl import CrawlOptions
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.search import KnowledgeRetriever, local_retriever
from mtdesk.retrieval.store import KnowledgeStore

KB_SERVICE = web.AppKey("kb_service", KnowledgeService)
KB_RETRIEVER = web.AppKey("kb_retriever", KnowledgeRetriever)


@dataclass
class _Built:
    """What these routes built for themselves, when the composition root shared none."""

    service: KnowledgeService | None = None
    retriever: KnowledgeRetriever | None = None
    follower: ErasureFollower | None = None


_OWN = web.AppKey("kb_own", _Built)


async def _service(request: web.Request) -> KnowledgeService:
    shared = request.config_dict.get(KB_SERVICE)
    if shared is not None:
        return shared
    own = request.config_dict[_OWN]
    service = own.service
    if service is None:
        store = KnowledgeStore(request.config_dict[REDIS], request.config_dict[CLOCK])
        retriever = _retriever(request)
        service = KnowledgeService(store, request.config_dict[SETTINGS], on_change=retriever.refresh)
        await service.start()
        own.service = service
    return service


def _retriever(request: web.Request) -> KnowledgeRetriever:
    own = request.config_dict[_OWN]
    retriever = request.config_dict.get(KB_RETRIEVER) or own.retriever
    if retriever is None:
        store = KnowledgeStore(request.config_dict[REDIS], request.config_dict[CLOCK])
        retriever = own.retriever = local_retriever(store, request.config_dict[SETTINGS])
    if own.follower is None:
        own.follower = ErasureFollower(request.config_dict[REDIS], retriever)
    return retriever


def own_retriever(admin: web.Application) -> KnowledgeRetriever | None:
    """The retriever these routes built for themselves in this admin app (None before
    first use, or when the composition root shares one)."""
    return admin[_OWN].retriever


class ErasureFollower:
    """Makes ``retriever`` forget erased accounts: a ``tenant`` erasure notice drops the
    tenant at once; once subscribed, and again after any reconnection, the tenants held
    whose knowledge is gone from Redis are dropped (notices sent meanwhile were lost).
    Starts listening when made (inside the event loop); :meth:`stop` ends it."""

    def __init__(self, redis: Redis, retriever: KnowledgeRetriever) -> None:
        self.retriever = retriever
        self._running = True
        self._task = asyncio.create_task(
            listen_for_notices(redis, lambda: self._running, self._notice,
                                on_subscribed=retriever.prune),
            name="admin-knowledge:erasure",
        )

    async def _notice(self, notice: Notice) -> None:
        tenant = erased_tenant(notice)
        if tenant is not None:
            await self.retriever.forget(tenant)

    async def stop(self) -> None:
        self._running = False
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def _tenant(request: web.Request, body: ForTenant | None = None) -> str:
    tid = tenant_scope(request, body)
    await Tenants(request.config_dict[REDIS], request.config_dict[CLOCK]).get(tid)
    return tid


async def add_source(request: web.Request) -> web.Response:
    if request.content_type.startswith("multipart/"):
        return await _add_file(request)
    body = await read_body(request, NewKnowledge)
    tid = await _tenant(request, body)
    service = await _service(request)
    with body_errors(NewKnowledge):
        if body.qa is not None and body.url is not None:
            raise ValidationError("body", "send either qa or url, not both")
        if body.qa is not None:
            pairs = [{"q": item.q if item.q is not None else item.question,
                      "a": item.a if item.a is not None else item.answer} for item in body.qa]
            info = await service.add_qa(tid, pairs, name=body.name)
        elif body.url is not None:
            options = CrawlOptions(
                crawl=body.crawl,
                max_pages=body.max_pages if body.max_pages is not None else (50 if body.crawl else 1),
                max_depth=body.max_depth, max_seconds=float(body.max_seconds),
            )
            info = await service.add_url(tid, body.url, options)
        else:
            raise ValidationError(
                "body", "send {\"qa\": [{\"q\", \"a\"}]}, {\"url\"} or a multipart file")
    return json_response(info, 202)


def upload_name(raw: str | None) -> str:
    """The file name an upload is kept under: the last part of what the client sent
    (``a/b.txt`` → ``b.txt``); ValidationError on ``filename`` for a name that cannot
    be one (control characters such as NUL, ``.``/``..``, not text, too long)."""
    name = (raw or "upload").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name:
        name = "upload"
    if name in (".", ".."):
        raise ValidationError("filename", "must name a file, not '.' or '..'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError("filename", "must not contain control characters (such as NUL)")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("filename", "must be text (UTF-8)") from None
    if len(name) > 255:
        raise ValidationError("filename", "must be at most 255 characters")
    return name


async def _add_file(request: web.Request) -> web.Response:
    tid = await _tenant(request)
    limit = request.config_dict[SETTINGS].kb_max_file_bytes
    try:
        reader = await request.multipart()
    except ValueError:  # aiohttp: "boundary missed for Content-Type: multipart/form-data"
        raise ValidationError("file", "the multipart form has no boundary in its "
                                      "Content-Type") from None
    while True:
        try:
            part = await reader.next()
        except (HttpProcessingError, ValueError):
            # aiohttp refuses a part header with control characters (a NUL in a file
            # name); it is the client's mistake, so a 400, not a crash.
            raise ValidationError(
                "file", "the form's part headers are malformed (control characters such as "
                "NUL in a file name?)") from None
        if part is None:
            raise ValidationError("file", "the form has no file part named 'file'")
        if getattr(part, "name", None) == "file":
            break
    filename = upload_name(getattr(part, "filename", None))  # refused before any is read
    data = bytearray()
    while chunk := await part.read_chunk(65536):  # type: ignore[union-attr]
        data += chunk
        if len(data) > limit:
            raise ValidationError("file", f"is larger than the limit of {limit} bytes")
    ctype = part.headers.get("Content-Type")
    info = await (await _service(request)).add_file(tid, filename, bytes(data), ctype)
    return json_response(info, 202)


async def list_sources(request: web.Request) -> web.Response:
    tid = await _tenant(request)
    return json_response({"sources": await (await _service(request)).list(tid)})


async def get_source(request: web.Request) -> web.Response:
    tid = await _tenant(request)
    return json_response(await (await _service(request)).get(tid, request.match_info["id"]))


async def resync_source(request: web.Request) -> web.Response:
    tid = await _tenant(request)
    return json_response(await (await _service(request)).resync(tid, request.match_info["id"]), 202)


async def delete_source(request: web.Request) -> web.Response:
    tid = await _tenant(request)
    sid = request.match_info["id"]
    removed = await (await _service(request)).delete(tid, sid)
    return json_response({"deleted": sid, "chunks": removed})


async def search(request: web.Request) -> web.Response:
    tid = await _tenant(request)
    query = request.query.get("q", "").strip()
    if not query:
        raise ValidationError("q", "is required")
    try:
        k = int(request.query.get("k", "5"))
    except ValueError:
        raise ValidationError("k", "must be a whole number") from None
    if not 1 <= k <= 50:
        raise ValidationError("k", "must be between 1 and 50")
    passages = await _retriever(request).search(tid, query, k)
    return json_response({"passages": passages})


async def _cleanup(admin: web.Application) -> None:
    service = admin[_OWN].service
    if service is not None:
        await service.stop()
    follower = admin[_OWN].follower
    if follower is not None:
        await follower.stop()


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    admin[_OWN] = _Built()
    base = f"{API_BASE}/knowledge"
    r.add_post(base, add_source)
    r.add_get(base, list_sources)
    r.add_get(f"{base}/search", search)
    r.add_get(base + "/{id}", get_source)
    r.add_post(base + "/{id}/resync", resync_source)
    r.add_delete(base + "/{id}", delete_source)
    admin.on_shutdown.append(_cleanup)
