"""Adding knowledge: sources in, chunks and vectors out, in the background with progress.

:class:`KnowledgeService` is what the admin API and the CLI call. ``add_*`` validate the
input at once (a bad file or a refused URL raises :class:`ValidationError` naming the
field), record the source as ``queued`` and hand it to the background worker; the worker
moves it to ``processing`` (with ``done``/``total`` progress), then ``ready`` (with its
chunk count) or ``failed`` (with the reason). Nothing here runs on the webhook path.

A job whose account is erased meanwhile stops at its next write (the store refuses every
write once the erasure began: :class:`~mtdesk.core.errors.TenantErased`) and writes
nothing more: no key, no status, no upload, no index refresh.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from mtdesk.core.errors import MTDeskError, NotFound, TenantErased, ValidationError
from mtdesk.core.settings import Settings
from mtdesk.retrieval.chunking import Chunk, ChunkingOptions, chunk_document
from mtdesk.retrieval.crawl import CrawlOptions, crawl_site, fetch_page
from mtdesk.retrieval.documents import Document, QAPair
from mtdesk.retrieval.embedders import Embedder, default_spec
from mtdesk.retrieval.extract import kind_of
from mtdesk.retrieval.index_slice import snapshot_name
from mtdesk.retrieval.sandbox import ExtractionSandbox
from mtdesk.retrieval.search import Embedders
from mtdesk.retrieval.store import UPLOAD_FAMILY, KnowledgeStore, SourceInfo
from mtdesk.retrieval.urlpolicy import AddressPolicy

log = logging.getLogger(__name__)

MAX_QA_PAIRS = 5000
JOB_LOCK_S = 900  # one process builds a source at a time; a crashed one frees it after this
RETRY_LOCKED_S = 2.0
EMBED_BATCH = 64
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

OnChange = Callable[[str], Awaitable[None]]
_STOP = ("", "")  # queue item that ends the worker (compared by identity)


class SourceSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How to (re)build a source: kept with it, so a re-sync repeats the same work."""

    kind: str
    qa: tuple[QAPair, ...] = ()
    url: str | None = None
    options: CrawlOptions | None = None
    path: str | None = None  # the stored upload
    filename: str | None = None
    content_type: str | None = None


def parse_qa(items: Any) -> tuple[QAPair, ...]:
    """Validate ``[{"q": …, "a": …}, …]`` (also ``question``/``answer``)."""
    if not isinstance(items, list) or not items:
        raise ValidationError("qa", "must be a non-empty list of {q, a} pairs")
    if len(items) > MAX_QA_PAIRS:
        raise ValidationError("qa", f"at most {MAX_QA_PAIRS} pairs per request")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError(f"qa[{i}]", "must be an object with q and a")
        q = item.get("q", item.get("question"))
        a = item.get("a", item.get("answer"))
        if not isinstance(q, str) or not q.strip():
            raise ValidationError(f"qa[{i}].q", "must be a non-empty string")
        if not isinstance(a, str) or not a.strip():
            raise ValidationError(f"qa[{i}].a", "must be a non-empty string")
        pairs.append(QAPair(q=q.strip(), a=a.strip()))
    return tuple(pairs)


class KnowledgeService:
    def __init__(
        self, store: KnowledgeStore, settings: Settings, *, embedders: Embedders | None = None,
        on_change: OnChange | None = None, policy: AddressPolicy | None = None,
        chunking: ChunkingOptions | None = None, retry_locked_s: float = RETRY_LOCKED_S,
        sandbox: ExtractionSandbox | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.embedders = embedders or Embedders(settings)
        self.on_change = on_change
        self.policy = policy or AddressPolicy(allow_private=settings.kb_allow_private_urls)
        self.chunking = chunking or ChunkingOptions()
        self.retry_locked_s = retry_locked_s
        # Files are read in a child process: no upload can exhaust the serving process.
        self.sandbox = sandbox or ExtractionSandbox(
            memory_bytes=settings.kb_extract_memory_mb * 1024 * 1024,
            timeout_s=settings.kb_extract_timeout_s,
        )
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._docs: dict[tuple[str, str], Document] = {}  # extracted at upload, used once

    # -- background worker -----------------------------------------------------------------
    async def start(self, *, resume: bool = True) -> None:
        """Start the worker; with ``resume``, also re-run the jobs a previous process left
        unfinished (the server does; a one-shot CLI command leaves them to the server)."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="kb-ingest")
            if resume:
                for tenant, sid in await self.store.pending():
                    self._queue.put_nowait((tenant, sid))

    async def stop(self) -> None:
        """Stop the worker after the job in hand (cancelled if it takes over 5 s; its source
        stays pending and is resumed by the next start)."""
        worker, self._worker = self._worker, None
        if worker is None or worker.done():
            return
        self._queue.put_nowait(_STOP)
        done, _ = await asyncio.wait({worker}, timeout=5.0)
        if not done:
            worker.cancel()
            await asyncio.wait({worker}, timeout=5.0)

    async def drain(self) -> None:
        """Wait until every queued job has run (tests, CLI)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                self._queue.task_done()
                return
            tenant, sid = item
            try:
                try:
                    locked = await self.store.lock_source(tenant, sid, JOB_LOCK_S)
                except TenantErased:  # the account was erased before the job began
                    self._docs.pop((tenant, sid), None)
                    await self.store.forget_pending(tenant, sid)
                    continue
                if not locked:
                    # Another process is building this source: try again when it may be done
                    # (a re-sync asked for meanwhile must still happen).
                    asyncio.get_running_loop().call_later(self.retry_locked_s, self._submit, tenant, sid)
                    continue
                try:
                    await self.run(tenant, sid)
                finally:
                    await self.store.unlock_source(tenant, sid)
            except Exception:  # the job is marked failed in run(); keep the worker alive
                log.exception("kb ingestion crashed", extra={"tenant": tenant, "source": sid})
            finally:
                self._queue.task_done()

    def _submit(self, tenant: str, sid: str) -> None:
        self._queue.put_nowait((tenant, sid))

    # -- adding sources --------------------------------------------------------------------
    async def add_qa(self, tenant: str, items: Any, *, name: str | None = None) -> SourceInfo:
        pairs = parse_qa(items)
        spec = SourceSpec(kind="qa", qa=pairs)
        info = await self.store.create_source(
            tenant, kind="qa", name=(name or "Q&A").strip()[:200], spec=msgspec.msgpack.encode(spec)
        )
        self._submit(tenant, info.id)
        return info

    async def add_url(self, tenant: str, url: str, options: CrawlOptions | None = None) -> SourceInfo:
        if not isinstance(url, str) or not url.strip():
            raise ValidationError("url", "must be a non-empty string")
        url = url.strip()
        options = (options or CrawlOptions()).validated()
        await self.policy.check(url)  # refuse private addresses now, with a 4xx that says why
        spec = SourceSpec(kind="url", url=url, options=options)
        info = await self.store.create_source(
            tenant, kind="url", name=url[:500], spec=msgspec.msgpack.encode(spec), url=url
        )
        self._submit(tenant, info.id)
        return info

    async def add_file(
        self, tenant: str, filename: str, data: bytes, content_type: str | None = None
    ) -> SourceInfo:
        filename = Path(filename or "upload").name
        kind_of(filename, content_type)
        doc = await self.sandbox.extract(
            data, filename, content_type, max_bytes=self.settings.kb_max_file_bytes
        )
        safe = _SAFE_NAME.sub("_", filename)[:120] or "upload"
        info = await self.store.create_source(tenant, kind="file", name=filename, spec=b"")
        folder = Path(self.settings.data_dir) / "uploads" / _SAFE_NAME.sub("_", tenant)
        path = folder / info.id / safe
        sealer = await self.store.sealer(tenant)
        stored = SEALED_FILE + sealer.seal(UPLOAD_FAMILY, info.id, data) if sealer.enabled else data
        await asyncio.to_thread(_write, path, stored)
        spec = SourceSpec(kind="file", path=str(path), filename=filename, content_type=content_type)
        try:
            await self.store.update_source(tenant, info.id, spec=msgspec.msgpack.encode(spec))
        except NotFound as exc:
            # Deleted, or the account erased, since it was created (the erasure may have
            # swept the data directory before this file was written): keep no copy.
            gone = folder if isinstance(exc, TenantErased) else folder / info.id
            await asyncio.to_thread(_rmtree, gone)
            raise
        self._docs[(tenant, info.id)] = doc
        self._submit(tenant, info.id)
        return info

    async def resync(self, tenant: str, sid: str) -> SourceInfo:
        await self.store.get_source(tenant, sid)
        await self.store.update_source(tenant, sid, status="queued", error=None, done=0, total=0, stage=None)
        await self.store.mark_pending(tenant, sid)
        self._submit(tenant, sid)
        return await self.store.get_source(tenant, sid)

    async def delete(self, tenant: str, sid: str) -> int:
        info = await self.store.get_source(tenant, sid)
        removed = await self.store.delete_source(tenant, sid)
        if info.kind == "file":
            folder = Path(self.settings.data_dir) / "uploads" / _SAFE_NAME.sub("_", tenant) / sid
            await asyncio.to_thread(_rmtree, folder)
        await self._changed(tenant)
        return removed

    async def purge_tenant(self, tenant: str) -> None:
        """Erase a tenant's knowledge everywhere: Redis keys, stored uploads, and the index
        snapshots of every shard in the data directory (account deletion). Running shards
        drop their in-memory copy when they next look at the tenant's (now empty) log."""
        await self.store.drop_tenant(tenant)
        root = Path(self.settings.data_dir)
        await asyncio.to_thread(_rmtree, root / "uploads" / _SAFE_NAME.sub("_", tenant))
        name = snapshot_name(tenant)

        def unlink_snapshots() -> None:
            for p in root.glob(f"kb/shard-*/{name}"):
                p.unlink(missing_ok=True)

        await asyncio.to_thread(unlink_snapshots)
        await self._changed(tenant)

    async def list(self, tenant: str) -> list[SourceInfo]:
        return await self.store.list_sources(tenant)

    async def get(self, tenant: str, sid: str) -> SourceInfo:
        return await self.store.get_source(tenant, sid)

    # -- the job ---------------------------------------------------------------------------
    async def run(self, tenant: str, sid: str) -> SourceInfo:
        """Build (or rebuild) one source now. Marks it ready or failed; returns its state."""
        try:
            return await self._run(tenant, sid)
        finally:
            # An upload's extracted text is used once; a later run reads the stored file.
            self._docs.pop((tenant, sid), None)

    async def _run(self, tenant: str, sid: str) -> SourceInfo:
        try:
            spec = msgspec.msgpack.decode(await self.store.source_spec(tenant, sid), type=SourceSpec)
            info = await self.store.get_source(tenant, sid)
        except (NotFound, msgspec.DecodeError):
            await self.store.forget_pending(tenant, sid)  # e.g. the account was erased meanwhile
            return SourceInfo(id=sid, kind="?", name="?", status="failed", error="source is gone")
        try:
            await self.store.update_source(tenant, sid, status="processing", stage="reading", error=None)
            pieces = await self._read(tenant, sid, spec, info)
            chunks = [(name, c) for name, doc in pieces for c in chunk_document(doc, self.chunking)]
            if not chunks:
                raise ValidationError("source", "has no text to learn from")
            embedder = await self._embedder(tenant)
            await self.store.update_source(tenant, sid, stage="embedding", done=0, total=len(chunks))
            vectors = await self._embed(tenant, sid, embedder, [c.embed_text for _, c in chunks])
            await self._store_chunks(tenant, sid, chunks, vectors)
            await self._publish(tenant, sid)
            await self.store.update_source(
                tenant, sid, status="ready", stage=None, chunks=len(chunks), done=len(chunks)
            )
            return await self.store.get_source(tenant, sid)
        except NotFound as exc:  # the source was deleted, or the account erased: stop here
            return SourceInfo(id=sid, kind=info.kind, name=info.name, status="failed", error=_gone(exc))
        except Exception as exc:  # any failure ends as a visible status, never a stuck job
            if isinstance(exc, ValidationError):
                reason = exc.problem
            elif isinstance(exc, MTDeskError):
                reason = str(exc)
            else:
                reason = f"internal error ({type(exc).__name__})"
                log.exception("kb ingestion crashed", extra={"tenant": tenant, "source": sid})
            log.info("kb source failed", extra={"tenant": tenant, "source": sid, "error": type(exc).__name__})
            try:
                await self.store.update_source(tenant, sid, status="failed", stage=None, error=reason[:500])
            except TenantErased as gone:
                return SourceInfo(id=sid, kind=info.kind, name=info.name, status="failed", error=_gone(gone))
            except NotFound:
                pass
        await self._changed(tenant)
        try:
            return await self.store.get_source(tenant, sid)
        except NotFound:
            return SourceInfo(id=sid, kind=info.kind, name=info.name, status="failed", error="source was deleted")

    async def _publish(self, tenant: str, sid: str) -> None:
        """Read-your-writes for ``ready``: the index refreshed here, then every reader
        that may still answer from the state before this write (conversation shards,
        retrieval shards in other processes; they mark their reads) has re-read it."""
        await self.store.update_source(tenant, sid, stage="publishing")
        await self._changed(tenant)
        wait_ms = await self.store.reading_ms(tenant)
        if wait_ms:
            await asyncio.sleep(wait_ms / 1000)

    # ``builtins.list`` in annotations: the method ``list`` above shadows it in this class.
    async def _read(
        self, tenant: str, sid: str, spec: SourceSpec, info: SourceInfo
    ) -> builtins.list[tuple[str, Document]]:
        if spec.kind == "qa":
            return [(info.name, Document(title="", qa=spec.qa))]
        if spec.kind == "file":
            doc = self._docs.pop((tenant, sid), None)
            if doc is None:
                if not spec.path or not await asyncio.to_thread(Path(spec.path).is_file):
                    raise ValidationError("file", "the uploaded file is no longer stored; upload it again")
                data = await asyncio.to_thread(Path(spec.path).read_bytes)
                if data.startswith(SEALED_FILE):  # a file customers' words are in: sealed
                    data = (await self.store.cipher.key(tenant, create=False)).open(
                        UPLOAD_FAMILY, sid, data[len(SEALED_FILE):])
                doc = await self.sandbox.extract(
                    data, spec.filename or "upload", spec.content_type,
                    max_bytes=self.settings.kb_max_file_bytes,
                )
            return [(info.name, doc)]
        if spec.kind == "url" and spec.url:
            opts = spec.options or CrawlOptions()
            if not opts.crawl:
                page = await fetch_page(spec.url, self.policy, opts)
                return [(page.document.title or page.url, page.document)]

            async def progress(done: int, total: int) -> None:
                await self.store.update_source(tenant, sid, stage="crawling", done=done, total=total)

            docs, problems = await crawl_site(spec.url, self.policy, opts, progress)
            await self.store.update_source(
                tenant, sid, pages=len(docs), error=("; ".join(problems)[:500] if problems else None)
            )
            return [(d.document.title or d.url, d.document) for d in docs]
        raise ValidationError("source", f"unknown source kind {spec.kind!r}")

    async def _embed(self, tenant: str, sid: str, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), EMBED_BATCH):
            parts.append(await embedder.embed(texts[start : start + EMBED_BATCH]))
            await self.store.update_source(tenant, sid, done=min(len(texts), start + EMBED_BATCH))
        return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)

    async def _store_chunks(
        self, tenant: str, sid: str, chunks: builtins.list[tuple[str, Chunk]], vectors: np.ndarray
    ) -> None:
        # Chunks of one source may carry different names (the pages of a crawl): group them.
        old = await self.store.source_chunk_ids(tenant, sid)
        by_name: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(chunks):
            by_name.setdefault(name, []).append(i)
        parts = []
        for name, rows in by_name.items():
            parts.append(await self.store.add_chunks(tenant, sid, name, [chunks[i][1] for i in rows], vectors[rows]))
        ids = np.concatenate(parts)
        if not await self.store.attach_chunk_ids(tenant, sid, ids):
            # Deleted while we worked: take back what we added, and the old ids are gone too.
            await self.store.remove_chunks(tenant, ids)
            raise NotFound(f"knowledge source {sid!r} was deleted")
        await self.store.remove_chunks(tenant, old)

    # -- embedder bookkeeping --------------------------------------------------------------
    async def _embedder(self, tenant: str) -> Embedder:
        """The configured embedder; when the tenant's index was made by another, re-embed."""
        spec = default_spec(self.settings)
        embedder = self.embedders.get(spec)
        meta = await self.store.meta(tenant)
        if meta.get("spec") != spec:
            await self.reembed(tenant, spec)
        return embedder

    async def reembed(self, tenant: str, spec: str | None = None) -> int:
        """Embed every chunk of the tenant again with ``spec`` (default: the configured one)."""
        spec = spec or default_spec(self.settings)
        embedder = self.embedders.get(spec)
        ids = await self.store.all_chunk_ids(tenant)
        dim = embedder.dim
        for start in range(0, len(ids), 256):
            batch = ids[start : start + 256].tolist()
            records = await self.store.chunks(tenant, batch)
            pairs = [(i, r) for i, r in zip(batch, records, strict=True) if r is not None]
            texts = [Chunk(text=r.text, answer=r.answer, context=r.context).embed_text for _, r in pairs]
            vecs = await embedder.embed(texts)
            dim = vecs.shape[1] if len(vecs) else dim
            await self.store.put_vectors(tenant, [i for i, _ in pairs], vecs)
        await self.store.set_meta(tenant, spec=spec, embedder=embedder.name, dim=str(dim))
        if len(ids):
            await self.store.log(tenant, "reset")
        await self._changed(tenant)
        return len(ids)

    async def _changed(self, tenant: str) -> None:
        if self.on_change is not None:
            try:
                await self.on_change(tenant)
            except MTDeskError:
                log.warning("kb index refresh failed; shards catch up on their own", extra={"tenant": tenant})


def _gone(exc: NotFound) -> str:
    return "the account was erased" if isinstance(exc, TenantErased) else "source was deleted"


# An uploaded file written sealed starts with this header (an upload itself never does by
# chance; a file stored before sealing, or without keys, has none and is read as it is).
SEALED_FILE = b"\xc1mtdesk-sealed-upload\x00"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
