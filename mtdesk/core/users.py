"""People who sign in to a tenant: e-mail + password, a role, one-time links.

What a caller may rely on:

- An e-mail address (compared lower-cased) belongs to at most one user of one tenant;
  ``keys.user_email(sha256(email))`` names them. A user lives under the tenant's prefix
  (``keys.user``), so erasing the tenant erases its users.
- Passwords are stored only as argon2id hashes (argon2-cffi, its RFC 9106 defaults);
  hashing runs in a worker thread so the event loop never waits ~50 ms for it.
  :meth:`Users.verify` costs the same for an unknown e-mail as for a wrong password.
- Roles: ``owner`` (everything the tenant may do) and ``agent`` (no channels, billing,
  team or API keys). The user who signs up is the owner; owners invite agents.
- One-time links (password reset, invitation) are random tokens stored only as their
  SHA-256 with a TTL, and consumed atomically (GETDEL): a link works once.
- Bad input raises :class:`ValidationError` naming the field.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import Conflict, NotFound, ValidationError
from mtdesk.core.redis import Redis, as_bytes, as_hash, as_opt_bytes
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import validate_email, validate_name

Role = Literal["owner", "agent"]
ROLES: tuple[Role, ...] = ("owner", "agent")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
RESET = "reset"
INVITE = "invite"

_HASHER = PasswordHasher()
# Verified against when the e-mail is unknown, so both answers take the same time.
_DUMMY_HASH = _HASHER.hash("mtdesk-no-such-user-" + secrets.token_hex(8))


class UserRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A user as shown to the tenant's owners: never the password hash."""

    id: str
    tenant_id: str
    name: str
    email: str
    role: str
    status: str  # "active" | "invited" (has not set a password yet)
    created_ms: int


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_password(value: object, email: str | None = None, field: str = "password") -> Secret:
    if isinstance(value, Secret):
        value = value.reveal()
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "is required")
    if len(value) < MIN_PASSWORD:
        raise ValidationError(field, f"must be at least {MIN_PASSWORD} characters")
    if len(value) > MAX_PASSWORD:
        raise ValidationError(field, f"must be at most {MAX_PASSWORD} characters")
    if email is not None and value.strip().lower() == email.strip().lower():
        raise ValidationError(field, "must not be the e-mail address")
    return Secret(value)


def validate_role(value: object, field: str = "role") -> Role:
    if value == "owner":
        return "owner"
    if value == "agent":
        return "agent"
    raise ValidationError(field, f"must be one of {', '.join(ROLES)}")


async def hash_password(password: Secret) -> str:
    return await asyncio.to_thread(_HASHER.hash, password.reveal())


def _check(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _s(raw: dict[bytes, bytes], name: str) -> str:
    return raw.get(name.encode(), b"").decode("utf-8", "replace")


class Users:
    def __init__(self, redis: Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def claim_email(self, email: str, tenant_id: str, user_id: str) -> None:
        """Reserve ``email`` for a new user (Conflict naming ``email`` when taken)."""
        if not await self._redis.set(keys.user_email(email_hash(email)), f"{tenant_id}:{user_id}",
                                     nx=True):
            raise Conflict("email", "an account with this e-mail address exists; sign in "
                                    "or reset the password")

    async def release_email(self, email: str) -> None:
        await self._redis.delete(keys.user_email(email_hash(email)))

    async def add(
        self, tenant_id: str, name: object, email: object, role: Role,
        password: Secret | None,
    ) -> UserRecord:
        """A new user of ``tenant_id``; ``password`` None makes an invited user."""
        clean_name = validate_name(name)
        clean_email = validate_email(email)
        uid = "u_" + secrets.token_hex(8)
        digest = await hash_password(password) if password is not None else ""
        await self.claim_email(clean_email, tenant_id, uid)
        record = UserRecord(
            id=uid, tenant_id=tenant_id, name=clean_name, email=clean_email, role=role,
            status="active" if password is not None else "invited",
            created_ms=now_ms(self._clock),
        )
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.user(tenant_id, uid), mapping={
                    "name": record.name, "email": record.email, "role": record.role,
                    "status": record.status, "created_ms": record.created_ms,
                    "password": digest,
                })
                pipe.sadd(keys.users(tenant_id), uid)
                await pipe.execute()
        except BaseException:
            await self.release_email(clean_email)
            raise
        return record

    async def get(self, tenant_id: str, user_id: str) -> UserRecord:
        raw = as_hash(await self._redis.hgetall(keys.user(tenant_id, user_id)))
        if not raw:
            raise NotFound(f"user {user_id!r} not found")
        return UserRecord(
            id=user_id, tenant_id=tenant_id, name=_s(raw, "name"), email=_s(raw, "email"),
            role=_s(raw, "role") or "agent", status=_s(raw, "status") or "active",
            created_ms=int(_s(raw, "created_ms") or 0),
        )

    async def list(self, tenant_id: str) -> list[UserRecord]:
        out: list[UserRecord] = []
        for raw in await self._redis.smembers(keys.users(tenant_id)):
            try:
                out.append(await self.get(tenant_id, as_bytes(raw).decode()))
            except NotFound:
                continue
        return sorted(out, key=lambda u: (u.created_ms, u.id))

    async def find(self, email: str) -> tuple[str, str] | None:
        """(tenant id, user id) of the user with this e-mail, or None."""
        raw = as_opt_bytes(await self._redis.get(keys.user_email(email_hash(email))))
        if raw is None:
            return None
        tid, _, uid = raw.decode().partition(":")
        return (tid, uid) if uid else None

    async def verify(self, email: str, password: str) -> UserRecord | None:
        """The active user whose e-mail and password these are, or None (same cost)."""
        found = await self.find(email) if len(email) <= 254 else None
        stored = None
        if found is not None:
            raw = as_opt_bytes(await self._redis.hget(keys.user(*found), "password"))
            stored = raw.decode() if raw else None
        ok = await asyncio.to_thread(_check, stored or _DUMMY_HASH, password[:MAX_PASSWORD])
        if not ok or found is None or not stored:
            return None
        record = await self.get(*found)
        tenant_status = as_opt_bytes(await self._redis.hget(keys.tenant(found[0]), "status"))
        if record.status != "active" or tenant_status != b"active":
            return None
        return record

    async def set_password(self, tenant_id: str, user_id: str, password: Secret) -> None:
        """New password (an invited user becomes active); every session of the user ends."""
        digest = await hash_password(password)
        await self._redis.hset(keys.user(tenant_id, user_id),
                               mapping={"password": digest, "status": "active"})
        await self.end_sessions(tenant_id, user_id)

    async def end_sessions(self, tenant_id: str, user_id: str) -> None:
        held = keys.user_sessions(tenant_id, user_id)
        hashes = [as_bytes(h).decode() for h in await self._redis.smembers(held)]
        async with self._redis.pipeline(transaction=True) as pipe:
            for h in hashes:
                pipe.delete(keys.session(h))
            pipe.delete(held)
            await pipe.execute()

    async def remove(self, tenant_id: str, user_id: str) -> UserRecord:
        """Remove a user (their sessions end, their e-mail is free again)."""
        record = await self.get(tenant_id, user_id)
        if record.role == "owner":
            owners = [u for u in await self.list(tenant_id) if u.role == "owner"]
            if len(owners) <= 1:
                raise Conflict("user_id", "the last owner cannot be removed")
        await self.end_sessions(tenant_id, user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.user(tenant_id, user_id))
            pipe.srem(keys.users(tenant_id), user_id)
            pipe.delete(keys.user_email(email_hash(record.email)))
            await pipe.execute()
        return record

    async def remove_unchecked(self, tenant_id: str, record: UserRecord) -> None:
        """Undo :meth:`add` (a sign-up or invitation that failed after it)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.user(tenant_id, record.id))
            pipe.srem(keys.users(tenant_id), record.id)
            pipe.delete(keys.user_email(email_hash(record.email)))
            await pipe.execute()

    async def rename(self, tenant_id: str, user_id: str, name: str) -> None:
        await self._redis.hset(keys.user(tenant_id, user_id), "name", validate_name(name))

    # --- one-time links ---------------------------------------------------------------
    async def issue_link(self, purpose: str, tenant_id: str, user_id: str, ttl_s: int) -> Secret:
        token = secrets.token_urlsafe(32)
        await self._redis.set(keys.one_time_link(purpose, token_hash(token)),
                              f"{tenant_id}:{user_id}", ex=ttl_s)
        return Secret(token)

    async def consume_link(self, purpose: str, token: str) -> tuple[str, str] | None:
        """(tenant id, user id) of a valid link, which is used up; None otherwise."""
        if not token or len(token) > 200:
            return None
        raw = as_opt_bytes(await self._redis.getdel(keys.one_time_link(purpose, token_hash(token))))
        if raw is None:
            return None
        tid, _, uid = raw.decode().partition(":")
        return (tid, uid) if uid else None
