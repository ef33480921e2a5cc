"""A tenant's API keys for machines: create, list, revoke, rotate.

What a caller may rely on:

- A key (``mtd_…``) is shown once, when made; Redis keeps its SHA-256 only
  (``keys.api_key(sha256)`` → tenant id, the lookup :meth:`Tenants.authenticate` does)
  and a record in ``keys.api_keys(tenant)``: id, name, the key's first 8 characters (to
  recognise it), created time.
- The key made with an operator-created tenant is listed as id ``initial``.
- Revoking removes the lookup at once (the next call with the key is a 401); rotating
  makes a new key with the same name and revokes the old one in one transaction.
"""

from __future__ import annotations

import secrets

import msgspec
from redis.asyncio.client import Pipeline

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import NotFound, ValidationError
from mtdesk.core.redis import Redis, as_hash, as_opt_bytes
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import API_KEY_PREFIX, hash_api_key, validate_name

INITIAL = "initial"
MAX_KEYS = 50


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    prefix: str
    created_ms: int


class _Stored(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    prefix: str
    created_ms: int
    sha256: str


class ApiKeys:
    def __init__(self, redis: Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def _stored(self, tenant_id: str) -> dict[str, _Stored]:
        raw = as_hash(await self._redis.hgetall(keys.api_keys(tenant_id)))
        out = {k.decode(): msgspec.json.decode(v, type=_Stored) for k, v in raw.items()}
        initial = as_opt_bytes(await self._redis.hget(keys.tenant(tenant_id), "api_key_hash"))
        if initial:
            created = as_opt_bytes(await self._redis.hget(keys.tenant(tenant_id), "created_ms"))
            out[INITIAL] = _Stored(name="created with the tenant", prefix=API_KEY_PREFIX,
                                   created_ms=int(created or 0), sha256=initial.decode())
        return out

    async def list(self, tenant_id: str) -> list[ApiKeyRecord]:
        stored = await self._stored(tenant_id)
        return sorted((ApiKeyRecord(id=k, name=s.name, prefix=s.prefix, created_ms=s.created_ms)
                       for k, s in stored.items()), key=lambda r: (r.created_ms, r.id))

    async def create(self, tenant_id: str, name: object,
                     replacing: str | None = None) -> tuple[ApiKeyRecord, Secret]:
        """A new key (seen only here); ``replacing`` names a key revoked in the same step."""
        clean = validate_name(name)
        stored = await self._stored(tenant_id)
        if replacing is None and len(stored) >= MAX_KEYS:
            raise ValidationError("name", f"a tenant has at most {MAX_KEYS} API keys; "
                                          "revoke one first")
        old = stored.get(replacing) if replacing is not None else None
        if replacing is not None and old is None:
            raise NotFound(f"API key {replacing!r} not found")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        kid = "k_" + secrets.token_hex(6)
        record = _Stored(name=clean, prefix=key[:8], created_ms=now_ms(self._clock),
                         sha256=hash_api_key(key))
        # Listed first, then valid (on a cluster the two run one after the other): a
        # crash between them must not leave a key that works but cannot be revoked.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.api_keys(tenant_id), kid, msgspec.json.encode(record))
            pipe.set(keys.api_key(record.sha256), tenant_id)
            if old is not None and replacing is not None:
                self._drop(pipe, tenant_id, replacing, old)
            await pipe.execute()
        return (ApiKeyRecord(id=kid, name=clean, prefix=record.prefix,
                             created_ms=record.created_ms), Secret(key))

    @staticmethod
    def _drop(pipe: Pipeline, tenant_id: str, key_id: str, stored: _Stored) -> None:
        pipe.delete(keys.api_key(stored.sha256))
        if key_id == INITIAL:
            pipe.hdel(keys.tenant(tenant_id), "api_key_hash")
        else:
            pipe.hdel(keys.api_keys(tenant_id), key_id)

    async def revoke(self, tenant_id: str, key_id: str) -> ApiKeyRecord:
        stored = (await self._stored(tenant_id)).get(key_id)
        if stored is None:
            raise NotFound(f"API key {key_id!r} not found")
        async with self._redis.pipeline(transaction=True) as pipe:
            self._drop(pipe, tenant_id, key_id, stored)
            await pipe.execute()
        return ApiKeyRecord(id=key_id, name=stored.name, prefix=stored.prefix,
                            created_ms=stored.created_ms)

    async def rotate(self, tenant_id: str, key_id: str) -> tuple[ApiKeyRecord, Secret]:
        stored = (await self._stored(tenant_id)).get(key_id)
        if stored is None:
            raise NotFound(f"API key {key_id!r} not found")
        name = stored.name if key_id != INITIAL else "rotated initial key"
        return await self.create(tenant_id, name, replacing=key_id)
