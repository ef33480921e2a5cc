"""The knowledge base in Redis: sources with their status, chunks, vectors and a change log.

Redis is the source of truth; FAISS indexes on the shards are caches of it. Every write
that changes vectors appends to the tenant's change log (``kb:log``), which the shards
read to catch up (see :mod:`mtdesk.retrieval.index_slice`).

Every write is refused (:class:`~mtdesk.core.errors.TenantErased`) once the tenant's
account erasure has begun (its marker :func:`mtdesk.core.keys.erased` exists): each runs
as one transaction that watches the marker, so an ingestion job still running when the
account is erased cannot create a key of the tenant after the erasure swept its keys.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import msgspec
import numpy as np
from redis.exceptions import WatchError

from mtdesk.core import keys
from mtdesk.core.clock import Clock, SystemClock, now_ms
from mtdesk.core.errors import DecryptionError, NotFound, StoreUnavailable, TenantErased
from mtdesk.core.ports import SourceAttachment
from mtdesk.core.redis import (
    UNAVAILABLE,
    HashFields,
    Redis,
    as_bytes,
    as_bytes_list,
    as_bytes_set,
    as_entries,
    as_hash,
    as_opt_bytes,
    as_opt_bytes_list,
    scan_pages,
)
from mtdesk.core.sealing import TenantCipher, TenantKey, is_sealed
from mtdesk.retrieval.chunking import Chunk

# redis-py's asyncio pipeline; untyped here (its stubs type each queued command's reply
# for both client modes), like the pipelines elsewhere.
Pipeline = Any
T = TypeVar("T")

Status = Literal["queued", "processing", "ready", "failed"]
LOG_MAXLEN = 10_000


class SourceInfo(msgspec.Struct, kw_only=True):
    """A knowledge source as the API shows it."""

    id: str
    kind: str  # qa | url | file
    name: str
    status: Status
    chunks: int = 0
    error: str | None = None
    done: int = 0  # progress: units (pages, chunks) done of total
    total: int = 0
    stage: str | None = None
    created_ms: int = 0
    updated_ms: int = 0
    url: str | None = None
    pages: int | None = None
    attachment: SourceAttachment | None = None  # sent with the answers made from it


class ChunkRecord(msgspec.Struct, array_like=True, frozen=True):
    source_id: str
    source_name: str
    text: str
    answer: str | None = None
    context: str = ""


class IndexState(msgspec.Struct, frozen=True):
    """What a search needs to know of a tenant's index before asking the shards."""

    spec: str  # the embedder that built it ("" = never indexed anything)
    max_id: int  # highest chunk id ever given (placement of the blocks)
    chunks: int  # chunks stored now (0 = no knowledge base, e.g. every source deleted)


class LogEntry(msgspec.Struct, frozen=True):
    id: bytes  # stream id
    op: str  # add | del | reset
    ids: np.ndarray


_CHUNK_DECODER = msgspec.msgpack.Decoder(ChunkRecord)
SOURCE_FAMILY = "kb_source"  # a source's spec (Q&A pairs, URL, upload path); id: source id
CHUNK_FAMILY = "kb_chunk"  # a chunk's text, answer and context; id: the chunk id
UPLOAD_FAMILY = "kb_upload"  # an uploaded file's bytes in the data directory; id: source id
_INT_FIELDS = ("chunks", "done", "total", "created_ms", "updated_ms", "pages")


def pack_ids(ids: Iterable[int]) -> bytes:
    return np.fromiter((int(i) for i in ids), dtype=np.int64).tobytes()


def unpack_ids(data: bytes | None) -> np.ndarray:
    return np.frombuffer(data or b"", dtype=np.int64)


class KnowledgeStore:
    """Typed access to one Redis for all tenants' knowledge. Raises StoreUnavailable."""

    def __init__(
        self, redis: Redis, clock: Clock | None = None, cipher: TenantCipher | None = None,
    ) -> None:
        self.redis = redis
        self.clock = clock or SystemClock()
        # Source specs (Q&A text, upload paths), chunk text and uploaded files are sealed
        # with the tenant's data key; vectors, ids and counts stay in the clear (search).
        self.cipher = cipher or TenantCipher.disabled()

    async def sealer(self, tenant: str) -> TenantKey:
        """The tenant's data key (for what ingestion keeps outside Redis: uploads)."""
        return self.cipher.cached(tenant) or await self.cipher.key(tenant)

    # -- sources ---------------------------------------------------------------------------
    async def create_source(
        self, tenant: str, *, kind: str, name: str, spec: bytes, url: str | None = None
    ) -> SourceInfo:
        sid = secrets.token_hex(6)
        now = now_ms(self.clock)
        info = SourceInfo(id=sid, kind=kind, name=name, status="queued", created_ms=now, updated_ms=now, url=url)
        fields = _to_fields(info)
        fields["spec"] = (await self.sealer(tenant)).seal(SOURCE_FAMILY, sid, spec)
        await self._apply(
            tenant,
            lambda pipe: pipe.hset(keys.kb_source(tenant, sid), mapping=fields),
            lambda pipe: pipe.zadd(keys.kb_sources(tenant), {sid: now}),
            lambda pipe: pipe.sadd(keys.KB_PENDING, f"{tenant}:{sid}"),
        )
        return info

    async def get_source(self, tenant: str, sid: str) -> SourceInfo:
        raw = await self._hgetall(keys.kb_source(tenant, sid))
        if not raw:
            raise NotFound(f"knowledge source {sid!r} not found")
        return _from_fields(raw)

    async def set_attachment(self, tenant: str, sid: str,
                             attachment: SourceAttachment | None) -> SourceInfo:
        """The picture or document sent with answers from the source (None: none)."""
        name = keys.kb_source(tenant, sid)

        async def write(pipe: Pipeline) -> None:
            if not await pipe.exists(name):
                raise NotFound(f"knowledge source {sid!r} not found")
            pipe.multi()
            if attachment is None:
                pipe.hdel(name, "attachment")
            else:
                pipe.hset(name, "attachment", msgspec.json.encode(attachment))
            await pipe.execute()

        await self._write(tenant, write, name)
        return await self.get_source(tenant, sid)

    async def source_spec(self, tenant: str, sid: str) -> bytes:
        spec = as_opt_bytes(await self.redis.hget(keys.kb_source(tenant, sid), "spec"))
        if spec is None:
            raise NotFound(f"knowledge source {sid!r} not found")
        if is_sealed(spec):
            try:
                return (await self.cipher.key(tenant, create=False)).open(SOURCE_FAMILY, sid, spec)
            except DecryptionError as exc:  # its data key is gone: the account was erased
                raise NotFound(f"knowledge source {sid!r} not found") from exc
        return bytes(spec)

    async def list_sources(self, tenant: str) -> list[SourceInfo]:
        sids = as_bytes_list(await self.redis.zrange(keys.kb_sources(tenant), 0, -1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(keys.kb_source(tenant, sid.decode()))
            rows = await pipe.execute()
        return [_from_fields(r) for r in rows if r]

    async def update_source(self, tenant: str, sid: str, **fields: object) -> None:
        """Set status/progress fields (None deletes a field); ``finished`` status clears pending."""
        key = keys.kb_source(tenant, sid)
        sets: HashFields = {k: _enc(v) for k, v in fields.items() if v is not None}
        if isinstance(fields.get("spec"), bytes):
            sets["spec"] = (await self.sealer(tenant)).seal(SOURCE_FAMILY, sid, sets["spec"])  # type: ignore[arg-type]
        dels = [k for k, v in fields.items() if v is None]
        sets["updated_ms"] = str(now_ms(self.clock)).encode()

        async def write(pipe: Pipeline) -> None:
            if not await pipe.exists(key):  # deleted while we worked: do not resurrect it
                raise NotFound(f"knowledge source {sid!r} was deleted")
            pipe.multi()
            pipe.hset(key, mapping=sets)
            if dels:
                pipe.hdel(key, *dels)
            if fields.get("status") in ("ready", "failed"):
                pipe.srem(keys.KB_PENDING, f"{tenant}:{sid}")
            await pipe.execute()

        await self._write(tenant, write, key)

    async def mark_pending(self, tenant: str, sid: str) -> None:
        await self._apply(tenant, lambda pipe: pipe.sadd(keys.KB_PENDING, f"{tenant}:{sid}"))

    async def forget_pending(self, tenant: str, sid: str) -> None:
        await self.redis.srem(keys.KB_PENDING, f"{tenant}:{sid}")

    async def pending(self) -> list[tuple[str, str]]:
        out = []
        for member in as_bytes_set(await self.redis.smembers(keys.KB_PENDING)):
            tenant, _, sid = member.decode().rpartition(":")
            out.append((tenant, sid))
        return out

    async def source_chunk_ids(self, tenant: str, sid: str) -> np.ndarray:
        return unpack_ids(as_opt_bytes(await self.redis.hget(keys.kb_source(tenant, sid), "ids")))

    async def delete_source(self, tenant: str, sid: str) -> int:
        """Delete a source, its chunks and vectors. Returns how many chunks went.

        The source record goes first (atomically with reading its chunk ids), so a job
        still working on it cannot attach new chunks afterwards (see attach_chunk_ids).
        """
        key = keys.kb_source(tenant, sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.hget(key, "ids")
            pipe.delete(key)
            pipe.zrem(keys.kb_sources(tenant), sid)
            pipe.srem(keys.KB_PENDING, f"{tenant}:{sid}")
            existed, raw, *_ = await pipe.execute()
        if not existed:
            raise NotFound(f"knowledge source {sid!r} not found")
        ids = unpack_ids(raw)
        await self.remove_chunks(tenant, ids)
        return len(ids)

    async def lock_source(self, tenant: str, sid: str, ttl_s: int) -> bool:
        """Take the build lock of a source (across processes); False when someone has it."""
        lock = keys.knowledge(tenant, f"lock:{sid}")
        return bool((await self._apply(tenant, lambda pipe: pipe.set(lock, b"1", nx=True, ex=ttl_s)))[0])

    async def unlock_source(self, tenant: str, sid: str) -> None:
        await self.redis.delete(keys.knowledge(tenant, f"lock:{sid}"))

    async def attach_chunk_ids(self, tenant: str, sid: str, ids: np.ndarray) -> bool:
        """Record ``ids`` as the source's chunks, only if the source still exists."""
        key = keys.kb_source(tenant, sid)

        async def write(pipe: Pipeline) -> bool:
            if not await pipe.exists(key):
                return False
            pipe.multi()
            pipe.hset(key, "ids", pack_ids(ids))
            await pipe.execute()
            return True

        return await self._write(tenant, write, key)

    # -- chunks and vectors ----------------------------------------------------------------
    async def add_chunks(
        self, tenant: str, sid: str, name: str, chunks: Sequence[Chunk], vectors: np.ndarray
    ) -> np.ndarray:
        """Store chunks + vectors under new ids and log the add; returns the ids.
        The caller records them on the source (:meth:`attach_chunk_ids`)."""
        if not chunks:
            return np.zeros(0, np.int64)
        enc = msgspec.msgpack.Encoder()
        records = [enc.encode(ChunkRecord(sid, name, c.text, c.answer, c.context)) for c in chunks]
        sealer = await self.sealer(tenant)
        vec16 = np.asarray(vectors, dtype=np.float16)
        seq = keys.kb_seq(tenant)

        async def write(pipe: Pipeline) -> np.ndarray:
            # The counter is watched: another writer taking ids meanwhile runs this again.
            last = int(await pipe.get(seq) or 0) + len(chunks)
            ids = np.arange(last - len(chunks) + 1, last + 1, dtype=np.int64)
            pipe.multi()
            pipe.set(seq, last)
            pipe.hset(keys.kb_chunks(tenant), mapping={
                str(i): sealer.seal(CHUNK_FAMILY, str(i), r)
                for i, r in zip(ids.tolist(), records, strict=True)})
            pipe.hset(keys.kb_vectors(tenant),
                      mapping={str(i): vec16[j].tobytes() for j, i in enumerate(ids.tolist())})
            _queue_log(pipe, tenant, "add", ids)
            await pipe.execute()
            return ids

        return await self._write(tenant, write, seq)

    async def remove_chunks(self, tenant: str, ids: np.ndarray) -> None:
        if not len(ids):
            return
        fields = [str(int(i)) for i in ids]
        await self._apply(
            tenant,
            lambda pipe: pipe.hdel(keys.kb_chunks(tenant), *fields),
            lambda pipe: pipe.hdel(keys.kb_vectors(tenant), *fields),
            lambda pipe: _queue_log(pipe, tenant, "del", ids),
        )

    async def chunks(self, tenant: str, ids: Sequence[int]) -> list[ChunkRecord | None]:
        if not ids:
            return []
        names = [str(int(i)) for i in ids]
        raw = as_opt_bytes_list(await self.redis.hmget(keys.kb_chunks(tenant), names))
        if any(r is not None and is_sealed(r) for r in raw):
            # Passages are opened only here: when retrieved for a prompt or shown.
            sealer = await self.cipher.key(tenant, create=False)
            raw = [sealer.open(CHUNK_FAMILY, n, r) if r is not None else None
                   for n, r in zip(names, raw, strict=True)]
        return [_CHUNK_DECODER.decode(r) if r is not None else None for r in raw]

    async def all_chunk_ids(self, tenant: str) -> np.ndarray:
        fields = await self.redis.hkeys(keys.kb_chunks(tenant))
        return np.array(sorted(int(f) for f in fields), dtype=np.int64)

    async def vectors(self, tenant: str, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, float32 vectors) for ``ids``; missing ids are left out."""
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        raw = as_opt_bytes_list(
            await self.redis.hmget(keys.kb_vectors(tenant), [str(int(i)) for i in ids])
        )
        found = [(int(i), r) for i, r in zip(ids, raw, strict=True) if r is not None]
        return _stack(found)

    async def put_vectors(self, tenant: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Overwrite stored vectors (re-embedding); the caller logs a reset."""
        if not len(ids):
            return
        vec16 = np.asarray(vectors, dtype=np.float16)
        mapping: HashFields = {str(int(i)): vec16[j].tobytes() for j, i in enumerate(ids)}
        await self._apply(tenant, lambda pipe: pipe.hset(keys.kb_vectors(tenant), mapping=mapping))

    async def scan_vectors(self, tenant: str, batch: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector of a tenant (for rebuilding an index)."""
        found: list[tuple[int, bytes]] = []
        async for field, value in self.redis.hscan_iter(keys.kb_vectors(tenant), count=batch):
            found.append((int(field), value))
        return _stack(found)

    async def meta(self, tenant: str) -> dict[str, str]:
        raw = await self._hgetall(keys.kb_meta(tenant))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def set_meta(self, tenant: str, **fields: str) -> None:
        mapping: HashFields = {k: v for k, v in fields.items()}  # redis-py's exact key type
        await self._apply(tenant, lambda pipe: pipe.hset(keys.kb_meta(tenant), mapping=mapping))

    async def seq(self, tenant: str) -> int:
        raw = await self.redis.get(keys.kb_seq(tenant))
        return int(raw or 0)

    async def index_state(self, tenant: str, *, reader_ms: int = 0) -> IndexState:
        """The embedder spec, the highest chunk id and the chunk count, in one round trip.
        ``reader_ms``: also mark the tenant as read (``keys.kb_reading``) for that long,
        by a reader that may answer from this state until then."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(keys.kb_meta(tenant), "spec")
                pipe.get(keys.kb_seq(tenant))
                pipe.hlen(keys.kb_chunks(tenant))
                if reader_ms > 0:
                    pipe.set(keys.kb_reading(tenant), b"1", px=reader_ms)
                spec, seq, chunks, *_ = await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable("redis unreachable") from exc
        return IndexState(spec=spec.decode() if spec else "", max_id=int(seq or 0),
                          chunks=int(chunks or 0))

    async def tenants_with_knowledge(self) -> list[str]:
        """Every tenant with a knowledge base (index metadata) in Redis, sorted: what a new
        set of retrieval shards loads before it serves searches. A SCAN over the key space
        (every master of a cluster): for the director, never on a search path."""
        found: set[str] = set()
        try:
            async for page in scan_pages(self.redis, match=keys.kb_meta("*"), type_="hash"):
                for name in page:
                    ref = keys.parse(name)  # keys.kb_meta: the "meta" part of KNOWLEDGE
                    if ref is not None and ref.family is keys.KNOWLEDGE and ref.part == "meta":
                        found.add(ref.tenant)
        except UNAVAILABLE as exc:
            raise StoreUnavailable("redis unreachable") from exc
        return sorted(found)

    async def without_knowledge(self, tenants: Iterable[str]) -> list[str]:
        """Those of ``tenants`` whose account erasure has begun or that have no knowledge
        base in Redis at all (no index metadata, vectors or change log): what a process
        holding them in memory must drop. One pipelined round trip per 500 tenants."""
        names = list(tenants)
        gone: list[str] = []
        for start in range(0, len(names), 500):
            page = names[start : start + 500]
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for t in page:
                        pipe.exists(keys.erased(t))
                        pipe.exists(keys.kb_meta(t), keys.kb_vectors(t), keys.kb_log(t))
                    found = await pipe.execute()
            except UNAVAILABLE as exc:
                raise StoreUnavailable("redis unreachable") from exc
            gone += [t for i, t in enumerate(page) if found[2 * i] or not found[2 * i + 1]]
        return gone

    # -- change log ------------------------------------------------------------------------
    async def log(self, tenant: str, op: str, ids: np.ndarray | None = None) -> bytes:
        entry = (await self._apply(tenant, lambda pipe: _queue_log(pipe, tenant, op, ids)))[0]
        return bytes(as_bytes(entry))

    async def log_since(self, tenant: str, after: bytes | None) -> list[LogEntry] | None:
        """Entries after stream id ``after``; None when ``after`` was trimmed away (rebuild)."""
        key = keys.kb_log(tenant)
        start = b"(" + after if after else b"-"
        if after:
            first = as_entries(await self.redis.xrange(key, min=b"-", max=b"+", count=1))
            if not first or _sid(first[0][0]) > _sid(after):
                return None  # what we saw was trimmed away (or the log was dropped)
        rows = as_entries(await self.redis.xrange(key, min=start, max=b"+"))
        return [LogEntry(bytes(eid), f[b"op"].decode(), unpack_ids(f.get(b"ids"))) for eid, f in rows]

    async def log_head(self, tenant: str) -> bytes | None:
        rows = as_entries(await self.redis.xrevrange(keys.kb_log(tenant), count=1))
        return bytes(rows[0][0]) if rows else None

    async def reading_ms(self, tenant: str) -> int:
        """How long readers may still answer from an index state read before now (ms)."""
        try:
            left = int(await self.redis.pttl(keys.kb_reading(tenant)))
        except UNAVAILABLE as exc:
            raise StoreUnavailable("redis unreachable") from exc
        return max(0, left)

    async def drop_tenant(self, tenant: str) -> None:
        """Remove all knowledge keys of a tenant (account deletion uses the prefix anyway)."""
        async for found in scan_pages(self.redis, match=keys.knowledge(tenant, "*")):
            await self.redis.delete(*found)
        stale = [m async for m in self.redis.sscan_iter(keys.KB_PENDING, match=f"{tenant}:*")]
        if stale:
            await self.redis.srem(keys.KB_PENDING, *stale)

    async def _write(self, tenant: str, body: Callable[[Pipeline], Awaitable[T]], *watch: str) -> T:
        """Run ``body`` as one transaction for the tenant, unless its account erasure has
        begun (then TenantErased). ``body`` gets the pipeline with the erasure marker and
        ``watch`` watched: it may read, then calls ``multi()``, queues its writes and
        executes them; a watched key changed meanwhile runs it again from the start."""
        mark = keys.erased(tenant)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(mark, *watch)
                        if await pipe.exists(mark):
                            raise TenantErased("the account is being erased")
                        return await body(pipe)
                    except WatchError:
                        continue
        except UNAVAILABLE as exc:
            raise StoreUnavailable("redis unreachable") from exc

    async def _apply(self, tenant: str, *commands: Callable[[Pipeline], object]) -> list[Any]:
        """Queue ``commands`` in one transaction for the tenant (see :meth:`_write`);
        returns their replies."""

        async def write(pipe: Pipeline) -> list[Any]:
            pipe.multi()
            for queue in commands:
                queue(pipe)
            return list(await pipe.execute())

        return await self._write(tenant, write)

    async def _hgetall(self, key: str) -> dict[bytes, bytes]:
        try:
            return as_hash(await self.redis.hgetall(key))
        except UNAVAILABLE as exc:
            raise StoreUnavailable("redis unreachable") from exc


def _queue_log(pipe: Pipeline, tenant: str, op: str, ids: np.ndarray | None) -> object:
    return pipe.xadd(keys.kb_log(tenant), {"op": op, "ids": pack_ids(ids if ids is not None else [])},
                     maxlen=LOG_MAXLEN, approximate=True)


def _sid(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq or 0)


def _stack(found: list[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    if not found:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.array([i for i, _ in found], dtype=np.int64)
    vecs = np.stack([np.frombuffer(v, dtype=np.float16) for _, v in found]).astype(np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return ids, np.ascontiguousarray(vecs / norms, dtype=np.float32)


def _enc(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _to_fields(info: SourceInfo) -> HashFields:
    out: HashFields = {}
    for name in info.__struct_fields__:
        value = getattr(info, name)
        if value is not None:
            out[name] = _enc(value)
    return out


def _from_fields(raw: dict[bytes, bytes]) -> SourceInfo:
    data: dict[str, object] = {}
    for k, v in raw.items():
        name = k.decode()
        if name in ("spec", "ids"):
            continue
        if name == "attachment":
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                data[name] = msgspec.json.decode(v, type=SourceAttachment)
        elif name in SourceInfo.__struct_fields__:
            data[name] = int(v) if name in _INT_FIELDS else v.decode()
    return msgspec.convert(data, SourceInfo)
