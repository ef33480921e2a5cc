"""Envelope encryption of a tenant's data: one random data key per tenant, stored only
wrapped by the current ``MTDESK_ENCRYPTION_KEYS`` key, and the seal/open of values.

What a caller may rely on:

- :meth:`TenantCipher.key` gives the tenant's :class:`TenantKey` (made on first use: 32
  random bytes, wrapped, ``SET`` only when the tenant has none and its erasure marker is
  absent, so an erased account never gets a new stored key; what is still written for
  it is sealed under a throwaway key, unreadable from the start). Keys are
  cached in the process (bounded, :data:`CACHE_TTL_S` seconds), so the hot path pays no
  Redis round trip per value once a tenant is warm.
- :meth:`TenantKey.seal` ``(family, id, plaintext)`` → bytes; :meth:`TenantKey.open`
  takes them back. AES-256-GCM; the associated data binds tenant, family and id, so a
  value copied under another key, tenant or family does not open
  (:class:`DecryptionError`, never garbage).
- A sealed value starts with the byte ``0xC1``, which msgpack never writes and UTF-8
  never starts with: :func:`is_sealed` tells stored ciphertext from plaintext written
  before encryption existed, and ``open`` returns such plaintext unchanged (the version
  marker; see docs/privacy.md for the migration).
- :meth:`TenantCipher.destroy` deletes the wrapped key (crypto-shredding): every value of
  the tenant sealed anywhere stops opening; ``open`` raises :class:`DecryptionError`.
- Where the wrapped keys live: the main Redis (the default), or the key store
  (``MTDESK_KEYSTORE_URL``): a redis-server of its own holding nothing but wrapped data
  keys and, for an erased account, a tombstone (its erasure marker's name) that keeps a
  new key from being made for it. So a copy of the main Redis (its AOF, snapshots, a
  backup) and of the data directory holds no data key at all; once a key is destroyed
  in the key store, such a copy opens nothing of that tenant with any master key. A key
  found only in the main Redis (written before the key store was configured) is moved
  into the key store when first read (:meth:`TenantCipher.move_to_keystore` moves them
  all). A key store that cannot be reached raises what an unreachable Redis raises
  (``redis.exceptions.ConnectionError``): the gateway answers 503, a shard leaves the
  entry pending; nothing is ever stored in the clear for want of a key.
- Without ``MTDESK_ENCRYPTION_KEYS`` (:meth:`TenantCipher.disabled`: tests and tools that
  build the stores themselves) ``seal`` returns the plaintext. ``mtdesk serve`` refuses
  to start without keys and ``mtdesk demo`` makes one, so a service always seals.

Format: ``0xC1 0x01 nonce(12) ciphertext+tag``. Wrapped key (Redis string
``keys.data_key(tenant)``): ``v1.<key id>.<urlsafe b64(nonce || sealed key)>`` under the
master key named by its id, associated data ``mtdesk-dk\\0<tenant>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence

import msgspec
from cachetools import TTLCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import ResponseError

from mtdesk.core import keys
from mtdesk.core.errors import ConfigError, DecryptionError
from mtdesk.core.redis import Redis, as_bytes_set, as_opt_bytes, connect
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings, parse_encryption_key

log = logging.getLogger(__name__)

# The families of sealed values (part of each value's associated data).
CONTEXT_FAMILY = "context"  # a conversation context's turns and bot state; id: conversation key

MARK = 0xC1  # msgpack's one never-used byte; not a UTF-8 lead byte either
_HEAD = bytes([MARK, 1])
_NONCE = 12
_TAG = 16
WRAP_VERSION = "v1"

CACHE_SIZE = 10_000
CACHE_TTL_S = 60.0
"""How long a process keeps a tenant's data key after reading it. An account deletion
tells every process at once (the erasure notice, :meth:`TenantCipher.forget`); the TTL
bounds what a process that missed it keeps."""

# Make the key only when there is none and the account is not being erased.
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 1 end
return 0
"""
# Crypto-shredding in the key store: the key goes, and a tombstone (named as the erasure
# marker, kept as long) keeps a new one from being made while the account is erased.
_SHRED = """
local n = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return n
"""
# A key of the main Redis moved into the key store (unless the account was erased there).
_ADOPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return 1
"""
_DEL_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
TOMBSTONE_TTL_S = 30 * 24 * 3600
"""How long the key store remembers an erased account (as the erasure marker)."""

_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


KEYSTORE_MAX_CONNECTIONS = 64
"""A process reads the key store only on a tenant's first use within :data:`CACHE_TTL_S`."""


def connect_keystore(url: str) -> Redis:
    """A client of the key store (``MTDESK_KEYSTORE_URL``, a single redis-server)."""
    return connect(url, max_connections=KEYSTORE_MAX_CONNECTIONS)


def is_sealed(value: bytes) -> bool:
    """Whether ``value`` is a sealed value (else: plaintext stored before sealing)."""
    return len(value) > 1 and value[0] == MARK


def _aad(tenant: str, family: str, ident: str) -> bytes:
    return b"mtdesk-v1\0" + tenant.encode() + b"\0" + family.encode() + b"\0" + ident.encode()


def master_key_id(raw: bytes) -> str:
    """The public id of a master key: first 8 hex digits of its SHA-256 (as the vault's)."""
    return hashlib.sha256(raw).hexdigest()[:8]


class KeyRing:
    """The master keys of ``MTDESK_ENCRYPTION_KEYS``: the first wraps, all unwrap."""

    def __init__(self, secrets: Sequence[Secret]) -> None:
        if not secrets:
            raise ConfigError("MTDESK_ENCRYPTION_KEYS", "at least one key is required")
        self._aeads: dict[str, AESGCM] = {}
        for secret in secrets:
            raw = parse_encryption_key(secret.reveal())
            self._aeads.setdefault(master_key_id(raw), AESGCM(raw))
        self._order = tuple(self._aeads)
        self.current_kid = self._order[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return self._order

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current_kid!r}, key_ids={list(self._order)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("KeyRing is not picklable; build one per process from settings")

    def wrap(self, tenant: str, data_key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._aeads[self.current_kid].encrypt(nonce, data_key, b"mtdesk-dk\0" + tenant.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=")
        return f"{WRAP_VERSION}.{self.current_kid}.".encode() + body

    def unwrap(self, tenant: str, wrapped: bytes) -> bytes:
        parts = wrapped.split(b".")
        if len(parts) != 3 or parts[0] != WRAP_VERSION.encode():
            raise DecryptionError("not a wrapped data key")
        kid = parts[1].decode("ascii", "replace")
        aead = self._aeads.get(kid)
        if aead is None:
            raise DecryptionError(
                f"data key wrapped under key id {kid!r}, which is not in "
                f"MTDESK_ENCRYPTION_KEYS (configured: {', '.join(self._order)})"
            )
        try:
            blob = base64.urlsafe_b64decode(parts[2] + b"=" * (-len(parts[2]) % 4))
            return aead.decrypt(blob[:_NONCE], blob[_NONCE:], b"mtdesk-dk\0" + tenant.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise DecryptionError(f"wrapped data key under {kid!r} failed authentication") from None


def wrapped_key_id(wrapped: bytes) -> str:
    parts = wrapped.split(b".")
    return parts[1].decode("ascii", "replace") if len(parts) == 3 else "unknown"


class TenantKey:
    """One tenant's data key, ready to seal and open (no I/O). ``None`` key: pass-through."""

    __slots__ = ("tenant", "_aead", "_prefix")

    def __init__(self, tenant: str, raw: bytes | None) -> None:
        self.tenant = tenant
        self._aead = AESGCM(raw) if raw is not None else None
        self._prefix = b"mtdesk-v1\0" + tenant.encode() + b"\0"

    @property
    def enabled(self) -> bool:
        return self._aead is not None

    def __repr__(self) -> str:
        return f"TenantKey(tenant={self.tenant!r}, enabled={self.enabled})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("TenantKey is not picklable")

    def seal(self, family: str, ident: str, plaintext: bytes) -> bytes:
        """``plaintext`` sealed for (this tenant, ``family``, ``ident``)."""
        if self._aead is None:
            return plaintext
        nonce = os.urandom(_NONCE)
        aad = self._prefix + family.encode() + b"\0" + ident.encode()
        return _HEAD + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, family: str, ident: str, value: bytes) -> bytes:
        """The plaintext of a value :meth:`seal` made with the same family and id; a value
        stored before sealing (not :func:`is_sealed`) is returned as it is."""
        if not is_sealed(value):
            return value
        if self._aead is None:
            raise DecryptionError("a sealed value, and no MTDESK_ENCRYPTION_KEYS to open it")
        if value[1] != 1 or len(value) < 2 + _NONCE + _TAG:
            raise DecryptionError("sealed value of an unknown version or truncated")
        aad = self._prefix + family.encode() + b"\0" + ident.encode()
        try:
            return self._aead.decrypt(value[2:2 + _NONCE], value[2 + _NONCE:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"sealed {family} value failed authentication: altered, or stored under "
                "another tenant, family or id"
            ) from None

    def seal_text(self, family: str, ident: str, text: str) -> bytes:
        return self.seal(family, ident, text.encode("utf-8"))

    def open_text(self, family: str, ident: str, value: bytes) -> str:
        return self.open(family, ident, value).decode("utf-8")


class RewrapReport(msgspec.Struct, kw_only=True):
    current_kid: str
    scanned: int = 0
    rewrapped: int = 0
    already_current: int = 0
    failed: int = 0
    failures: list[str] = msgspec.field(default_factory=list)


class TenantCipher:
    """The tenants' data keys of one process: made, cached, destroyed, re-wrapped."""

    def __init__(
        self, redis: Redis | None, ring: KeyRing | None, *,
        cache_size: int = CACHE_SIZE, ttl_s: float = CACHE_TTL_S,
        keystore: Redis | None = None, owns_keystore: bool = False,
    ) -> None:
        self._redis = redis
        self._ring = ring
        # Where the wrapped keys are read and written: the key store, or the main Redis.
        self._store = keystore if keystore is not None else redis
        self._keystore = keystore
        self._owns_keystore = owns_keystore
        self._cache: TTLCache[str, TenantKey] = TTLCache(maxsize=cache_size, ttl=ttl_s)
        self.reads = 0  # data keys read from Redis (cache misses), for tests and benchmarks

    @classmethod
    def disabled(cls) -> TenantCipher:
        """Seals nothing (no MTDESK_ENCRYPTION_KEYS): values are stored as plaintext."""
        return cls(None, None)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> TenantCipher:
        """Sealing with ``MTDESK_ENCRYPTION_KEYS``; :meth:`disabled` when none is set."""
        if not settings.encryption_keys:
            return cls.disabled()
        if settings.keystore_url:
            return cls(redis, KeyRing(settings.encryption_keys),
                       keystore=connect_keystore(settings.keystore_url), owns_keystore=True)
        return cls(redis, KeyRing(settings.encryption_keys))

    @property
    def keystore(self) -> Redis | None:
        """The key store's client (None: the keys live in the main Redis)."""
        return self._keystore

    async def aclose(self) -> None:
        """Close the key store's client when this cipher made it."""
        if self._keystore is not None and self._owns_keystore:
            await self._keystore.aclose()

    @property
    def enabled(self) -> bool:
        return self._ring is not None

    @property
    def ring(self) -> KeyRing | None:
        return self._ring

    def __repr__(self) -> str:
        where = "keystore" if self._keystore is not None else "redis"
        return f"TenantCipher(enabled={self.enabled}, keys_in={where!r}, cached={len(self._cache)})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("TenantCipher is not picklable; build one per process from settings")

    def cached(self, tenant: str) -> TenantKey | None:
        """The tenant's key when this process holds it (no I/O)."""
        if self._ring is None:
            return TenantKey(tenant, None)
        return self._cache.get(tenant)

    async def key(self, tenant: str, *, create: bool = True) -> TenantKey:
        """The tenant's data key (made when it has none and ``create``). A tenant being
        erased (its erasure marker set) gets no new key: a throwaway one that is never
        stored, so nothing written for it can be read. Raises :class:`DecryptionError`
        when it has none and ``create`` is false."""
        found = self.cached(tenant)
        if found is not None:
            return found
        assert self._redis is not None and self._store is not None and self._ring is not None
        name = keys.data_key(tenant)
        for _attempt in range(3):
            self.reads += 1
            wrapped = as_opt_bytes(await self._store.get(name))
            if wrapped is None and self._keystore is not None:
                wrapped = await self._adopt(tenant)
            if wrapped is not None:
                key = TenantKey(tenant, self._ring.unwrap(tenant, wrapped))
                self._cache[tenant] = key
                return key
            if not create:
                raise DecryptionError(f"tenant {tenant!r} has no data key (erased, or never written)")
            made = -1 if (self._keystore is not None
                          and await self._redis.exists(keys.erased(tenant))) else 0
            if made == 0:
                made = int(await self._store.eval(
                    _CREATE, 2, name, keys.erased(tenant), self._ring.wrap(tenant, os.urandom(32))
                ))
            if made == -1:
                # Being erased: what is still written (a reply in flight) is sealed under
                # a key that is never stored, so it is unreadable from the start; the
                # erasure's sweep removes it.
                key = self._cache[tenant] = TenantKey(tenant, os.urandom(32))
                return key
        raise DecryptionError(f"tenant {tenant!r}: its data key kept changing")

    async def keys_of(self, tenants: Sequence[str]) -> dict[str, TenantKey]:
        """Keys of several tenants, the missing ones read in one pipelined round trip
        (tenants with no key yet are made one by one)."""
        out: dict[str, TenantKey] = {}
        missing: list[str] = []
        for t in tenants:
            k = self.cached(t)
            if k is None:
                missing.append(t)
            else:
                out[t] = k
        if missing:
            assert self._store is not None and self._ring is not None
            unique = list(dict.fromkeys(missing))
            pipe = self._store.pipeline(transaction=False)
            for t in unique:
                pipe.get(keys.data_key(t))
            self.reads += 1
            for t, wrapped in zip(unique, await pipe.execute(), strict=True):
                if wrapped is None:
                    out[t] = await self.key(t)
                else:
                    out[t] = self._cache[t] = TenantKey(t, self._ring.unwrap(t, wrapped))
        return out

    async def seal(self, tenant: str, family: str, ident: str, plaintext: bytes) -> bytes:
        """Seal one value for the tenant (see :meth:`TenantKey.seal`)."""
        return (await self.key(tenant)).seal(family, ident, plaintext)

    async def open(self, tenant: str, family: str, ident: str, value: bytes) -> bytes:
        """Open one value (plaintext stored before sealing is returned as it is)."""
        if not is_sealed(value):
            return value
        return (await self.key(tenant, create=False)).open(family, ident, value)

    def forget(self, tenant: str) -> None:
        """Drop the tenant's cached key (its account was erased)."""
        self._cache.pop(tenant, None)

    async def destroy(self, tenant: str) -> bool:
        """Crypto-shredding: delete the tenant's wrapped data key (in the key store first,
        with its tombstone, then any copy left in the main Redis). True when one existed."""
        self._cache.pop(tenant, None)
        if self._redis is None:
            return False
        found = await self.shred_in_keystore(tenant)
        return bool(await self._redis.delete(keys.data_key(tenant))) or bool(found)

    async def shred_in_keystore(self, tenant: str) -> int:
        """Delete the tenant's key in the key store and leave its tombstone there (1 when a
        key was deleted; 0, doing nothing, without a key store). What erases an account
        calls this before anything else."""
        self._cache.pop(tenant, None)
        if self._keystore is None:
            return 0
        return int(await self._keystore.eval(
            _SHRED, 2, keys.data_key(tenant), keys.erased(tenant), TOMBSTONE_TTL_S))

    async def compact_keystore(self, *, wait_s: float = 10.0) -> bool:
        """Have the key store rewrite its files (``BGREWRITEAOF``, or ``BGSAVE`` when its
        append-only file is off), so a key deleted before no longer sits in them. A
        rewrite already running is waited for (it may have started before the delete),
        up to ``wait_s``. False, with a WARNING, when the key store refused (a managed
        Redis may rename the command): its files then hold the key until their next
        rewrite. Nothing to do without a key store."""
        if self._keystore is None:
            return False
        try:
            info = await self._keystore.info("persistence")
        except ResponseError:
            info = {"aof_enabled": 1}  # INFO refused: the likelier setup for a key store
        command = "BGREWRITEAOF" if int(info.get("aof_enabled", 0)) else "BGSAVE"
        deadline = time.monotonic() + wait_s
        while True:
            try:
                await self._keystore.execute_command(command)
                return True
            except ResponseError as exc:
                if "in progress" not in str(exc) or time.monotonic() > deadline:
                    log.warning("key store: %s refused (%s); its files keep deleted keys until "
                                "their next rewrite", command, exc)
                    return False
            await asyncio.sleep(0.1)

    async def _adopt(self, tenant: str) -> bytes | None:
        """A key the main Redis still holds (written before the key store was configured)
        moved into the key store; None when there is none or the account was erased."""
        assert self._redis is not None and self._keystore is not None
        name = keys.data_key(tenant)
        legacy = as_opt_bytes(await self._redis.get(name))
        if legacy is None:
            return None
        if int(await self._keystore.eval(_ADOPT, 2, name, keys.erased(tenant), legacy)) == -1:
            return None
        await self._redis.eval(_DEL_IF, 1, name, legacy)
        return as_opt_bytes(await self._keystore.get(name))

    async def move_to_keystore(self) -> int:
        """Every data key still in the main Redis moved into the key store (and deleted
        from the main Redis). Returns how many were moved."""
        if self._redis is None or self._keystore is None:
            raise ConfigError("MTDESK_KEYSTORE_URL", "is required to move data keys into a key store")
        tenants = sorted(t.decode() for t in as_bytes_set(await self._redis.smembers(keys.TENANTS)))
        moved = 0
        for tenant in tenants:
            if await self._redis.exists(keys.data_key(tenant)):
                moved += await self._adopt(tenant) is not None
        return moved

    async def _wrapped(self) -> AsyncIterator[tuple[str, bytes]]:
        assert self._redis is not None and self._store is not None
        tenants = sorted(t.decode() for t in as_bytes_set(await self._redis.smembers(keys.TENANTS)))
        pipe = self._store.pipeline(transaction=False)
        for t in tenants:
            pipe.get(keys.data_key(t))
        for t, wrapped in zip(tenants, await pipe.execute(), strict=True):
            if wrapped is not None:
                yield t, wrapped

    async def status(self) -> dict[str, int]:
        """Data keys per master key id (where they live: the key store when configured)."""
        counts: dict[str, int] = {}
        if self._redis is None:
            return counts
        async for _t, wrapped in self._wrapped():
            kid = wrapped_key_id(wrapped)
            counts[kid] = counts.get(kid, 0) + 1
        return counts

    async def rewrap(self) -> RewrapReport:
        """Every tenant's data key wrapped again under the current master key (the data
        itself is not touched). Compare-and-set: a key destroyed meanwhile stays gone."""
        if self._store is None or self._ring is None:
            raise ConfigError("MTDESK_ENCRYPTION_KEYS", "is required to re-wrap data keys")
        report = RewrapReport(current_kid=self._ring.current_kid)
        async for tenant, wrapped in self._wrapped():
            report.scanned += 1
            if wrapped_key_id(wrapped) == self._ring.current_kid:
                report.already_current += 1
                continue
            try:
                fresh = self._ring.wrap(tenant, self._ring.unwrap(tenant, wrapped))
            except DecryptionError as exc:
                report.failed += 1
                report.failures.append(f"{tenant}: {exc}")
                continue
            if await self._store.eval(_CAS, 1, keys.data_key(tenant), wrapped, fresh):
                report.rewrapped += 1
        return report
