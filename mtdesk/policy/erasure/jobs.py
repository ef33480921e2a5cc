"""Deletion jobs: the erasures a tenant, an operator or Meta asks for; durable,
idempotent, audited; run by :class:`DeletionWorker`.

What a caller may rely on:

- ``schedule_*`` writes the job (hash ``keys.deletion_job(id)``) and queues its id on
  the stream ``keys.DELETION_JOBS`` in one transaction, and returns at once with the
  job (status ``queued``). Account deletion also revokes the tenant's API key, marks
  the tenant ``deleting`` (and sets its erasure marker, which refuses knowledge writes)
  and stops routing its accounts *before* returning, so the key answers 401 and no new
  message comes in from then on.
- A job id is 24 random hex digits: it doubles as Meta's ``confirmation_code``.
- The worker reads the stream in the consumer group ``keys.DELETION_GROUP``; a job is
  acknowledged only after it finished, so a crash leaves it pending and the next worker
  (or the same one restarted) resumes it. Erasure is idempotent, so resuming repeats
  nothing harmful. Counts are added as work is done (``HINCRBY``), so a resumed job's
  audit adds up.
- The audit record (:class:`DeletionJob`) holds the kind, status, source, counts per data
  type and the requested/started/finished times — no personal data, not even the tenant
  id (only a keyed digest, to let a tenant read its own jobs). What the worker needs to
  know *whom* to erase (``params``, a :data:`~mtdesk.policy.erasure.params.JobParams`
  Struct) is removed from the record when the job finishes. Its counts are the tenant's
  own: nothing another tenant holds is looked into or counted (see
  :mod:`mtdesk.policy.erasure.sweep`).
- A job reports ``done`` only after the replies of the erased scope that were being
  generated or sent have settled (waited for at most ``Settings.deletion_settle_s``) and
  the scope was swept once more (see :mod:`mtdesk.policy.erasure.sweep`). Replies still in
  flight at the end are counted in the audit's ``in_flight`` and logged at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Mapping

import msgspec
from redis.exceptions import RedisError

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import MTDeskError, NotFound
from mtdesk.core.groups import GroupReader
from mtdesk.core.redis import (
    UNAVAILABLE,
    HashFields,
    Redis,
    as_bytes_set,
    as_hash,
    as_opt_bytes,
    as_opt_bytes_list,
)
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import unroute_tenant
from mtdesk.policy.erasure.params import (
    KINDS,
    AccountErasure,
    AppUserErasure,
    ChannelErasure,
    ChannelTarget,
    JobParams,
    UserErasure,
    decode_params,
    encode_params,
    kind_of,
    validate_end_user,
)
from mtdesk.policy.erasure.sweep import ERASURE_MARK_TTL_S, ErasureSweep

log = logging.getLogger(__name__)

__all__ = ["KINDS", "DeletionJob", "DeletionJobs", "DeletionWorker", "new_job_id", "owner_digest",
           "schedule_channel_deletion", "validate_end_user"]
AUDIT_TTL_S = 400 * 86400  # audit records outlive the 12-month retention, then go
MAX_ATTEMPTS = 5
_COUNT = "c:"  # prefix of count fields in the job hash


class DeletionJob(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The audit view of a job: safe to show anyone holding its id."""

    id: str
    kind: str
    status: str  # queued | running | done | failed
    source: str = "api"  # api | cli | meta
    requested_ms: int = 0
    started_ms: int | None = None
    finished_ms: int | None = None
    attempts: int = 0
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    error: str | None = None
    # Replies of the erased scope still being generated or sent when the job's wait for
    # them (``Settings.deletion_settle_s``) ended; the job swept again anyway. Not 0: one
    # of their shards may still have written after the job (see docs/privacy.md).
    in_flight: int = 0


def owner_digest(tenant_id: str) -> str:
    """A digest naming the owning tenant in the audit without storing its id."""
    return hashlib.blake2b(tenant_id.encode(), digest_size=12, person=b"mtdesk-job").hexdigest()


def _job_from_hash(job_id: str, raw: Mapping[bytes, bytes]) -> DeletionJob:
    def s(name: str) -> str | None:
        v = raw.get(name.encode())
        return None if v is None else v.decode("utf-8", "replace")

    def i(name: str) -> int | None:
        v = s(name)
        return int(v) if v is not None and v.lstrip("-").isdigit() else None

    counts = {
        k.decode()[len(_COUNT):]: int(v) for k, v in raw.items() if k.startswith(_COUNT.encode())
    }
    return DeletionJob(
        id=job_id,
        kind=s("kind") or "",
        status=s("status") or "queued",
        source=s("source") or "api",
        requested_ms=i("requested_ms") or 0,
        started_ms=i("started_ms"),
        finished_ms=i("finished_ms"),
        attempts=i("attempts") or 0,
        counts=dict(sorted(counts.items())),
        error=s("error"),
        in_flight=i("in_flight") or 0,
    )


def new_job_id() -> str:
    """A fresh deletion job id (also its public confirmation code)."""
    return secrets.token_hex(12)


def _valid_job_id(job_id: str) -> bool:
    return len(job_id) == 24 and all(c in "0123456789abcdef" for c in job_id)


class DeletionJobs:
    """Schedules jobs and reads their audit records."""

    def __init__(self, redis: Redis, clock: Clock, *, cipher: TenantCipher | None = None) -> None:
        self._redis = redis
        self._clock = clock
        # With a key store (MTDESK_KEYSTORE_URL), an account's key is shredded there first.
        self._cipher = cipher

    async def _schedule(
        self, params: JobParams, *, source: str, owner: str | None,
        job_id: str | None = None,
    ) -> DeletionJob:
        job_id = job_id if job_id is not None and _valid_job_id(job_id) else new_job_id()
        at = now_ms(self._clock)
        kind = kind_of(params)
        fields: HashFields = {
            "kind": kind, "status": "queued", "source": source, "requested_ms": at,
            "params": encode_params(params), "attempts": 0,
        }
        if owner is not None:
            fields["owner"] = owner_digest(owner)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.deletion_job(job_id), mapping=fields)
            pipe.xadd(keys.DELETION_JOBS, {"job": job_id})
            await pipe.execute()
        log.info("deletion job %s scheduled: kind=%s source=%s", job_id, kind, source)
        return await self.get(job_id)

    async def schedule_account(self, tenant_id: str, *, source: str = "api") -> DeletionJob:
        """Everything of a tenant. Revokes its API key now; erasure follows in the job."""
        raw = as_hash(await self._redis.hgetall(keys.tenant(tenant_id)))
        if not raw or ":" in tenant_id:
            raise NotFound(f"tenant {tenant_id!r} not found")
        pending = raw.get(b"deletion_job")
        if pending is not None:
            job = await self.find(pending.decode())
            if job is not None and job.status in ("queued", "running"):
                return job  # asked twice: one job
        accounts: list[tuple[str, str]] = []
        for cid in as_bytes_set(await self._redis.smembers(keys.channels(tenant_id))):
            raw_ch, raw_acct = as_opt_bytes_list(await self._redis.hmget(
                keys.channel(tenant_id, cid.decode()), "channel", "account_id"
            ))
            if raw_ch and raw_acct:
                accounts.append((raw_ch.decode(), raw_acct.decode()))
        if self._cipher is not None:
            # The key store first: once this returns, no copy of anything opens (a key
            # store that cannot be reached fails the request, and nothing is changed).
            await self._cipher.shred_in_keystore(tenant_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.tenant(tenant_id), "status", "deleting")
            # No knowledge is written for it from now on (not only once the job runs).
            pipe.set(keys.erased(tenant_id), b"1", ex=ERASURE_MARK_TTL_S)
            # Crypto-shredding: with its data key gone, nothing the tenant's customers
            # wrote opens anywhere any more (Redis, its AOF and snapshots, backups); the
            # job's sweep that follows is clean-up.
            pipe.delete(keys.data_key(tenant_id))
            if raw.get(b"api_key_hash"):
                pipe.delete(keys.api_key(raw[b"api_key_hash"].decode()))
            await pipe.execute()
        # Stop routing its accounts now, so no new message arrives while the job runs.
        for ch, acct in accounts:
            await unroute_tenant(self._redis, ch, acct, tenant_id)
        job = await self._schedule(
            AccountErasure(tenant=tenant_id, accounts=tuple(sorted(accounts))),
            source=source, owner=tenant_id,
        )
        await self._redis.hset(keys.tenant(tenant_id), "deletion_job", job.id)
        return job

    async def schedule_channel(
        self, tenant_id: str, channel_id: str, *, source: str = "api"
    ) -> DeletionJob:
        """All Platform Data of one of the tenant's channels (connected or not)."""
        ch, acct = as_opt_bytes_list(await self._redis.hmget(
            keys.channel(tenant_id, channel_id), "channel", "account_id"
        ))
        if not ch or not acct or ":" in tenant_id:
            raise NotFound(f"channel {channel_id!r} not found")
        return await self._schedule(
            ChannelErasure(tenant=tenant_id, channel_id=channel_id, channel=ch.decode(),
                           account_id=acct.decode()),
            source=source, owner=tenant_id,
        )

    async def schedule_user(
        self, tenant_id: str, channel: str, user_id: str, *, source: str = "api"
    ) -> DeletionJob:
        """One end user (PSID, IGSID, WhatsApp user id or wa_id) on one channel type."""
        channel, user_id = validate_end_user(channel, user_id)
        return await self._schedule(
            UserErasure(tenant=tenant_id, channel=channel, user_id=user_id),
            source=source, owner=tenant_id,
        )

    async def schedule_app_user(
        self, app_scoped_user_id: str, *, source: str = "meta", job_id: str | None = None
    ) -> DeletionJob:
        """Meta's data-deletion request: every channel this Facebook user connected.
        ``job_id`` (from :func:`new_job_id`) lets a caller name the job before it exists."""
        # Resolved now: a resumed job must find accounts whose records it already erased.
        targets: list[ChannelTarget] = []
        for member in as_bytes_set(await self._redis.smembers(keys.app_user(app_scoped_user_id))):
            tid, _, cid = member.decode().partition(":")
            ch, acct = as_opt_bytes_list(
                await self._redis.hmget(keys.channel(tid, cid), "channel", "account_id")
            )
            if ch and acct:
                targets.append(ChannelTarget(tid, cid, ch.decode(), acct.decode()))
        targets.sort(key=lambda t: (t.tenant, t.channel_id, t.channel, t.account_id))
        return await self._schedule(
            AppUserErasure(app_user=app_scoped_user_id, targets=tuple(targets)),
            source=source, owner=None, job_id=job_id,
        )

    async def find(self, job_id: str) -> DeletionJob | None:
        if not _valid_job_id(job_id):
            return None
        raw = as_hash(await self._redis.hgetall(keys.deletion_job(job_id)))
        return _job_from_hash(job_id, raw) if raw else None

    async def get(self, job_id: str) -> DeletionJob:
        job = await self.find(job_id)
        if job is None:
            raise NotFound(f"deletion job {job_id[:40]!r} not found")
        return job

    async def get_for_tenant(self, job_id: str, tenant_id: str) -> DeletionJob:
        """The job, only when ``tenant_id`` scheduled it (else NotFound, not 403)."""
        if _valid_job_id(job_id):
            owner = as_opt_bytes(await self._redis.hget(keys.deletion_job(job_id), "owner"))
            if owner is not None and owner.decode() == owner_digest(tenant_id):
                return await self.get(job_id)
        raise NotFound(f"deletion job {job_id[:40]!r} not found")


async def schedule_channel_deletion(
    redis: Redis, clock: Clock, tenant_id: str, channel_id: str, *, source: str = "api"
) -> DeletionJob:
    """For the channel routes: queue the erasure of a (disconnected) channel's data."""
    return await DeletionJobs(redis, clock).schedule_channel(tenant_id, channel_id, source=source)


class DeletionWorker:
    """Consumes ``keys.DELETION_JOBS``; one or more may run (consumer names differ)."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        clock: Clock,
        *,
        consumer: str = "deleter-1",
        claim_idle_ms: int = 60_000,
        batch: int = 500,
        lease_ms: int = 30_000,
        retry_s: float = 0.5,
        settle_poll_s: float = 0.5,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._clock = clock
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._batch = batch
        self._lease_ms = lease_ms
        self._retry_s = retry_s
        self._settle_poll_s = settle_poll_s
        self._cipher: TenantCipher | None = None  # one per worker (a key store's client)
        self._reader = GroupReader(redis, keys.DELETION_GROUP, consumer, [keys.DELETION_JOBS])
        self.processed = 0

    @property
    def cipher(self) -> TenantCipher:
        """The data keys the jobs destroy (made on first use, then kept)."""
        if self._cipher is None:
            self._cipher = TenantCipher.from_settings(self._redis, self._settings)
        return self._cipher

    async def ensure_group(self) -> None:
        await self._reader.ensure_groups()

    async def run_once(self, block_ms: int | None = None) -> int:
        """Process what is due: stale jobs of crashed workers, own pending, then new."""
        await self.ensure_group()
        reader, jobs = self._reader, keys.DELETION_JOBS
        _, entries = await reader.claim_idle(jobs, min_idle_ms=self._claim_idle_ms, count=10)
        entries.extend((await reader.own_pending(jobs, count=10))[1])
        if not entries:
            for _stream, rows in await reader.read_new(count=10, block_ms=block_ms):
                entries.extend(rows)
        seen: set[str] = set()
        finished = 0
        for entry_id, fields in entries:
            if entry_id in seen:
                continue
            seen.add(entry_id)
            finished += await self._handle(entry_id, fields.get(b"job", b"").decode())
        if seen and not finished:
            # Leased by another worker, or to be retried: don't spin on it.
            await asyncio.sleep(self._retry_s)
        return finished

    async def run(self, stop: asyncio.Event | None = None, *, block_ms: int = 1000) -> None:
        """Loop until ``stop`` is set; Redis outages are waited out, not fatal."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.run_once(block_ms=block_ms)
            except (RedisError, *UNAVAILABLE) as exc:
                log.warning("deletion worker: Redis unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _handle(self, entry_id: str, job_id: str) -> int:
        """1 when the entry is finished and acknowledged, 0 when left pending."""
        done = True
        if _valid_job_id(job_id):
            # Redis errors propagate: not acknowledged, resumed when Redis is back.
            done = await self._execute(job_id)
        if not done:
            return 0
        await self._reader.ack({keys.DELETION_JOBS: [entry_id]}, transaction=True)
        return 1

    async def execute(self, job_id: str, *, wait_s: float = 600.0) -> DeletionJob:
        """Run one job now (the CLI's inline mode); idempotent, safe beside a worker: if
        another worker holds it, wait (up to ``wait_s``) for that one to finish it."""
        jobs = DeletionJobs(self._redis, self._clock)
        for _ in range(max(1, int(wait_s / self._retry_s))):
            if await self._execute(job_id):
                break
            await asyncio.sleep(self._retry_s)  # polling: the holder is another process
        return await jobs.get(job_id)

    async def _execute(self, job_id: str) -> bool:
        """True when the job is finished (done or given up), False to retry later."""
        key = keys.deletion_job(job_id)
        raw = as_hash(await self._redis.hgetall(key))
        if not raw or raw.get(b"status") in (b"done", b"failed"):
            return True
        # One worker at a time per job (a CLI run beside the service's worker): a lease
        # renewed at every step, so a crashed holder's job is free again within seconds.
        lease = keys.deletion_lease(job_id)
        me = self._consumer.encode()
        if not await self._redis.set(lease, me, nx=True, px=self._lease_ms):
            if await self._redis.get(lease) != me:
                return False
        renew = asyncio.create_task(self._renew(lease), name=f"lease:{job_id}")
        try:
            return await self._execute_leased(job_id, key, raw)
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            if await self._redis.get(lease) == me:
                await self._redis.delete(lease)

    async def _renew(self, lease: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            with contextlib.suppress(RedisError, *UNAVAILABLE):
                await self._redis.pexpire(lease, self._lease_ms)

    async def _execute_leased(
        self, job_id: str, key: str, raw: Mapping[bytes, bytes]
    ) -> bool:
        kind = raw.get(b"kind", b"").decode()
        attempts = int(await self._redis.hincrby(key, "attempts", 1))
        await self._redis.hset(key, "status", "running")
        await self._redis.hsetnx(key, "started_ms", now_ms(self._clock))

        async def progress(counts: dict[str, int]) -> None:
            pipe = self._redis.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(key, _COUNT + name, n)
            await pipe.execute()

        # Replies in flight in the erased scope are waited for (bounded), then the scope
        # is swept again: what they wrote after the first sweep goes too.
        sweep = ErasureSweep(
            self._redis, partitions=self._settings.partitions,
            data_dir=self._settings.data_dir, progress=progress, batch=self._batch,
            settle_s=self._settings.deletion_settle_s, settle_poll_s=self._settle_poll_s,
            cipher=self.cipher,
        )
        try:
            await self._run(sweep, decode_params(raw.get(b"params", b"{}"), kind))
        except (RedisError, *UNAVAILABLE):
            raise
        except (MTDeskError, ValueError, KeyError, TypeError, OSError) as exc:
            # The message may name ids; the audit keeps only the type.
            log.warning("deletion job %s attempt %d failed: %s", job_id, attempts, type(exc).__name__)
            if attempts < MAX_ATTEMPTS:
                await self._redis.hset(key, mapping={"status": "queued", "error": type(exc).__name__})
                return False
            await self._finish(key, "failed", error=type(exc).__name__)
            return True
        if sweep.in_flight_left:
            # Ids and counts only: the job id is no one's data.
            log.warning(
                "deletion job %s: %d replies still in flight after %.0f s; swept again "
                "anyway", job_id, sweep.in_flight_left, self._settings.deletion_settle_s,
            )
        await self._finish(key, "done", in_flight=sweep.in_flight_left)
        self.processed += 1
        log.info("deletion job %s done (kind=%s)", job_id, kind)
        return True

    async def _finish(
        self, key: str, status: str, *, error: str | None = None, in_flight: int = 0
    ) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": status, "finished_ms": now_ms(self._clock)})
            if in_flight:
                pipe.hset(key, "in_flight", in_flight)
            else:
                pipe.hdel(key, "in_flight")
            if error is None:
                pipe.hdel(key, "error", "params")
            else:
                pipe.hset(key, "error", error)
                pipe.hdel(key, "params")
            pipe.expire(key, AUDIT_TTL_S)
            await pipe.execute()

    async def _run(self, sweep: ErasureSweep, params: JobParams) -> None:
        match params:
            case AccountErasure(tenant=tenant, accounts=accounts):
                await sweep.erase_tenant(tenant, accounts)
            case ChannelErasure(tenant=tenant, channel_id=cid, channel=ch, account_id=acct):
                await sweep.erase_channel(tenant, cid, ch, acct)
            case UserErasure(tenant=tenant, channel=ch, user_id=uid):
                await sweep.erase_user(tenant, ch, uid)
            case AppUserErasure(app_user=app_user, targets=targets):
                for t in targets:
                    await sweep.erase_channel(t.tenant, t.channel_id, t.channel, t.account_id)
                await self._redis.delete(keys.app_user(app_user))
