"""Repositories of tenants, their channels and their bot, over Redis.

What a caller may rely on:

- Every key is named by :mod:`mtdesk.core.keys`. A tenant's own data lives under
  ``mt:t:{tenant}:``; the routing hash ``keys.account(channel, account_id)`` holds
  ``tenant`` and ``channel_id`` (the gateway's ingest reads ``tenant``).
- API keys (``mtd_…``) are returned once by :meth:`Tenants.create` and stored only as
  their SHA-256 (``keys.api_key(hash)`` → tenant id, and ``api_key_hash`` in the tenant).
- Access tokens are stored only as the ciphertext the ``encrypt`` callable returns
  (the token vault's ``encrypt``; core cannot import policy, so it is passed in), bound to
  :func:`channel_token_aad` of the channel. Nothing here logs or returns a token.
- Bad input raises :class:`ValidationError` naming the field; an account another tenant
  holds raises :class:`Conflict`; an unknown tenant or channel raises :class:`NotFound`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import Conflict, NotFound, ValidationError
from mtdesk.core.events import CHANNELS, Channel
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import HashFields, Redis, as_bytes, as_hash, as_opt_bytes
from mtdesk.core.scripts import LuaScript
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.secret import Secret
from mtdesk.core.validation import convert

API_KEY_PREFIX = "mtd_"
TENANT_STATUSES = ("active", "suspended")  # set by operators; deletion sets others
CONNECTED = "connected"
DISCONNECTED = "disconnected"
NEEDS_RECONNECT = "needs_reconnect"

Encrypt = Callable[[Secret, bytes], str]
"""Seals a token for an owner: ``TokenVault.encrypt``."""

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]+$")
_DIGITS = re.compile(r"^[0-9]{1,32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def channel_token_aad(tenant_id: str, channel_id: str) -> bytes:
    """Associated data binding a token ciphertext to its channel (swap → no decrypt)."""
    return f"mtdesk:channel-token:{tenant_id}:{channel_id}".encode()


def new_tenant_id() -> str:
    return "t_" + secrets.token_hex(8)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


# --- validation (shared by the admin API and the CLI) -----------------------------------
def validate_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required (a non-empty string)")
    name = value.strip()
    if len(name) > 200:
        raise ValidationError(field, "must be at most 200 characters")
    if _CONTROL.search(name):
        raise ValidationError(field, "must not contain control characters")
    return name


def validate_email(value: object, field: str = "email") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required (an e-mail address)")
    email = value.strip()
    if len(email) > 254 or not _EMAIL.match(email):
        raise ValidationError(field, "must be an e-mail address like name@example.com")
    return email


def validate_channel(value: object, field: str = "channel") -> Channel:
    if value not in CHANNELS:
        raise ValidationError(field, f"must be one of {', '.join(CHANNELS)}")
    return value


def validate_account_id(value: object, field: str = "account_id") -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not _DIGITS.match(value.strip()):
        raise ValidationError(
            field,
            "must be the numeric Page id, Instagram account id or WhatsApp phone_number_id",
        )
    return value.strip()


def validate_token(value: object, field: str = "access_token") -> Secret:
    if isinstance(value, Secret):
        value = value.reveal()
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required (a non-empty string)")
    token = value.strip()
    if len(token) > 4096 or any(c.isspace() for c in token):
        raise ValidationError(field, "must be a single word of at most 4096 characters")
    return Secret(token)


def validate_app_user(value: object, field: str = "connected_by") -> str | None:
    if value is None or value == "":
        return None
    return validate_account_id(value, field)


# --- records ----------------------------------------------------------------------------
class TenantRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    email: str
    created_ms: int
    status: str = "active"
    retention_days: int | None = None


class ChannelRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A connected account as shown to its tenant: never the token."""

    id: str
    tenant_id: str
    channel: str
    account_id: str
    status: str
    connected_ms: int
    connected_by: str | None = None
    token_kid: str | None = None  # key id the token is encrypted under (rotation status)
    disconnected_ms: int | None = None
    disconnected_reason: str | None = None
    # How the token came (facebook_login | instagram_login | embedded_signup; none: pasted),
    # and what the connection watchdog last found (mtdesk.policy.watchdog).
    token_source: str | None = None
    token_expires_ms: int | None = None
    subscription_id: str | None = None  # the object subscribed to webhooks (WhatsApp: WABA)
    health: str | None = None  # ok | expiring | needs_reconnect
    health_reason: str | None = None
    checked_ms: int | None = None
    # A WhatsApp number also used in the WhatsApp Business app (coexistence): set by its
    # connect, or once the number's Business-app echoes or history arrive.
    coexistence: bool = False


# Fields of a channel hash about how it was connected and how it is doing: a new connect
# replaces them.
CONNECTION_FIELDS = ("token_source", "token_expires_ms", "subscription_id", "health",
                     "health_reason", "checked_ms")


def _s(raw: Mapping[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return None if value is None else value.decode("utf-8", "replace")


def _i(raw: Mapping[bytes, bytes], name: str) -> int | None:
    value = _s(raw, name)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


# --- tenants ----------------------------------------------------------------------------
class Tenants:
    def __init__(self, redis: Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def create(
        self, name: object, email: object, *, tenant_id: str | None = None
    ) -> tuple[TenantRecord, Secret]:
        """A new tenant and its API key (the only time the key is seen)."""
        record, api_key = await self.create_without_key(name, email, tenant_id=tenant_id,
                                                        with_key=True)
        assert api_key is not None
        return record, api_key

    async def create_without_key(
        self, name: object, email: object, *, tenant_id: str | None = None,
        with_key: bool = False,
    ) -> tuple[TenantRecord, Secret | None]:
        """A new tenant; with ``with_key`` also its first API key (seen only here).
        A tenant made by sign-up has none until an owner creates one."""
        record = TenantRecord(
            id=tenant_id or new_tenant_id(),
            name=validate_name(name),
            email=validate_email(email),
            created_ms=now_ms(self._clock),
        )
        fields: HashFields = {
            "name": record.name,
            "email": record.email,
            "created_ms": record.created_ms,
            "status": record.status,
        }
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32) if with_key else None
        # Listed, then stored, then its key valid (on a cluster these run one after the
        # other): a crash part way leaves a tenant the sweeps find, never a tenant they
        # miss or a key to a tenant not stored.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.TENANTS, record.id)
            if api_key is not None:
                fields["api_key_hash"] = hash_api_key(api_key)
            pipe.hset(keys.tenant(record.id), mapping=fields)
            if api_key is not None:
                pipe.set(keys.api_key(hash_api_key(api_key)), record.id)
            await pipe.execute()
        return record, None if api_key is None else Secret(api_key)

    async def forget(self, tenant_id: str) -> None:
        """Undo a :meth:`create_without_key` whose sign-up failed part way (no key made)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.tenant(tenant_id))
            pipe.srem(keys.TENANTS, tenant_id)
            await pipe.execute()

    async def authenticate(self, api_key: str) -> str | None:
        """The active tenant this API key belongs to, or None."""
        if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > 200:
            return None
        raw = await self._redis.get(keys.api_key(hash_api_key(api_key)))
        if raw is None:
            return None
        tid = as_bytes(raw).decode()
        status = await self._redis.hget(keys.tenant(tid), "status")
        return tid if status == b"active" else None

    async def get(self, tenant_id: str) -> TenantRecord:
        raw = {} if ":" in tenant_id else as_hash(await self._redis.hgetall(keys.tenant(tenant_id)))
        if not raw:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return TenantRecord(
            id=tenant_id,
            name=_s(raw, "name") or "",
            email=_s(raw, "email") or "",
            created_ms=_i(raw, "created_ms") or 0,
            status=_s(raw, "status") or "active",
            retention_days=_i(raw, "retention_days"),
        )

    async def list(self) -> list[TenantRecord]:
        ids = sorted(as_bytes(t).decode() for t in await self._redis.smembers(keys.TENANTS))
        out: list[TenantRecord] = []
        for tid in ids:
            try:
                out.append(await self.get(tid))
            except NotFound:
                continue  # a deletion in progress
        return sorted(out, key=lambda t: (t.created_ms, t.id))

    async def set_status(self, tenant_id: str, status: object) -> TenantRecord:
        """Suspend (API key refused, channels untouched) or re-activate a tenant."""
        if status not in TENANT_STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(TENANT_STATUSES)}")
        current = await self.get(tenant_id)
        if current.status not in TENANT_STATUSES:
            raise Conflict("status", f"tenant is {current.status}; its status cannot change")
        await self._redis.hset(keys.tenant(tenant_id), "status", str(status))
        return await self.get(tenant_id)


# --- channels ---------------------------------------------------------------------------
# An account's routing (keys.account, outside every tenant's slot) is claimed by a script
# of its own before the tenant's channel keys are written, and dropped by one before the
# channel record is marked: on a Redis Cluster no script or transaction may span both
# slots, and the order makes a crash between the two steps harmless (a claim without its
# record is taken back by the next connect; a dropped route with its record still saying
# connected is finished by the next disconnect).
#
# Claim KEYS[1] (the route) for tenant ARGV[1] at ARGV[4] (ms): kept as it is when it is
# already that tenant's; taken with channel id ARGV[2] when nobody holds it, or when it
# is held by ARGV[3] (a holder the caller found holds no such channel) since at least
# ARGV[5] ms (the leftover of a connect that died part way, not one under way).
# Returns {1, channel id} or {0, the holder}.
_CLAIM = """
local held = redis.call('HMGET', KEYS[1], 'tenant', 'channel_id', 'claimed_ms')
local owner, cid = held[1], held[2]
if owner == ARGV[1] and cid then return {1, cid} end
if owner and (owner ~= ARGV[3]
              or tonumber(ARGV[4]) - (tonumber(held[3]) or 0) < tonumber(ARGV[5])) then
  return {0, owner}
end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'channel_id', ARGV[2], 'claimed_ms', ARGV[4])
return {1, ARGV[2]}
"""
# How old a claim without its channel must be before another tenant may take it over.
CLAIM_GRACE_MS = 60_000

# Drop the routing only while it still names this tenant (and this channel, when
# given): the check and the delete in one step, so an account another tenant connects
# in between keeps its routing.
_UNROUTE: Final = LuaScript("""
local route = redis.call('HMGET', KEYS[1], 'tenant', 'channel_id')
if route[1] == ARGV[1] and (ARGV[2] == '' or route[2] == ARGV[2]) then
  return redis.call('DEL', KEYS[1])
end
return 0
""", name="unroute_account")


async def unroute_tenant(redis: Redis, channel: str, account_id: str, tenant_id: str,
                         channel_id: str = "") -> int:
    """Stop routing ``channel``/``account_id`` to ``tenant_id`` (its channel
    ``channel_id``, when given): 1, or 0 leaving the routing of whoever holds it now."""
    return int(await _UNROUTE.run(redis, keys=[keys.account(channel, account_id)],
                                  args=[tenant_id, channel_id]))


class Channels:
    """Connected accounts. ``encrypt`` is needed only to connect."""

    def __init__(self, redis: Redis, clock: Clock, encrypt: Encrypt | None = None) -> None:
        self._redis = redis
        self._clock = clock
        self._encrypt = encrypt
        self._claim = LuaScript(_CLAIM, name="claim_account").bind(redis)

    async def connect(
        self,
        tenant_id: str,
        channel: object,
        account_id: object,
        access_token: object,
        connected_by: object = None,
        *,
        coexistence: bool | None = None,
    ) -> ChannelRecord:
        """Connect (or re-connect, updating the token) an account to a tenant.
        ``coexistence``: the WhatsApp number is also used in the Business app (None: as
        it was)."""
        ch = validate_channel(channel)
        acct = validate_account_id(account_id)
        token = validate_token(access_token)
        asid = validate_app_user(connected_by)
        if self._encrypt is None:
            raise RuntimeError("Channels needs an encrypt callable to connect accounts")
        tenant = await Tenants(self._redis, self._clock).get(tenant_id)
        if tenant.status != "active":
            raise Conflict("tenant_id", f"tenant is {tenant.status}")
        route = keys.account(ch, acct)
        candidate = await self._find(tenant_id, ch, acct) or "ch_" + secrets.token_hex(6)
        stale = ""
        while True:
            won, raw_held = await self._claim(
                keys=[route], args=[tenant_id, candidate, stale, now_ms(self._clock),
                                    CLAIM_GRACE_MS])
            held = as_bytes(raw_held).decode()
            if int(won) == 1:
                cid = held
                break
            # A holder with a record of this account (connected or not: a channel whose
            # token died keeps its routing) keeps it.
            if held == stale or await self._find(held, ch, acct) is not None:
                raise Conflict(
                    "account_id",
                    f"this {ch} account is already connected to another tenant; "
                    "it must be disconnected there first",
                )
            stale = held  # a claim whose channel was never written: taken over
        sealed = self._encrypt(token, channel_token_aad(tenant_id, cid))
        at = now_ms(self._clock)
        ch_key = keys.channel(tenant_id, cid)
        fields: HashFields = {
            "channel": ch,
            "account_id": acct,
            "token": sealed,
            "status": CONNECTED,
            "connected_ms": at,
        }
        if asid is not None:
            fields["connected_by"] = asid
            # The app user's index before the record it finds (another slot on a cluster).
            await self._redis.sadd(keys.app_user(asid), f"{tenant_id}:{cid}")
        if coexistence is not None:
            fields["coexistence"] = "1" if coexistence else "0"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.channels(tenant_id), cid)
            pipe.hset(ch_key, mapping=fields)
            pipe.hdel(ch_key, "disconnected_ms", "disconnected_reason", *CONNECTION_FIELDS)
            await pipe.execute()
        return await self.get(tenant_id, cid)

    async def _find(self, tenant_id: str, channel: str, account_id: str) -> str | None:
        """A channel id this tenant used before for the same account (re-connect)."""
        for raw in await self._redis.smembers(keys.channels(tenant_id)):
            cid = as_bytes(raw).decode()
            found = await self._redis.hmget(keys.channel(tenant_id, cid), "channel", "account_id")
            if found == [channel.encode(), account_id.encode()]:
                return cid
        return None

    async def get(self, tenant_id: str, channel_id: str) -> ChannelRecord:
        if not await self._redis.sismember(keys.channels(tenant_id), channel_id):
            raise NotFound(f"channel {channel_id!r} not found")
        raw = as_hash(await self._redis.hgetall(keys.channel(tenant_id, channel_id)))
        if not raw:
            raise NotFound(f"channel {channel_id!r} not found")
        token = _s(raw, "token")
        kid = token.split(".")[1] if token and token.count(".") == 2 else None
        return ChannelRecord(
            id=channel_id,
            tenant_id=tenant_id,
            channel=_s(raw, "channel") or "",
            account_id=_s(raw, "account_id") or "",
            status=_s(raw, "status") or DISCONNECTED,
            connected_ms=_i(raw, "connected_ms") or 0,
            connected_by=_s(raw, "connected_by"),
            token_kid=kid,
            disconnected_ms=_i(raw, "disconnected_ms"),
            disconnected_reason=_s(raw, "disconnected_reason"),
            token_source=_s(raw, "token_source"),
            token_expires_ms=_i(raw, "token_expires_ms"),
            subscription_id=_s(raw, "subscription_id"),
            health=_s(raw, "health"),
            health_reason=_s(raw, "health_reason"),
            checked_ms=_i(raw, "checked_ms"),
            coexistence=_s(raw, "coexistence") == "1",
        )

    async def store_token(self, tenant_id: str, channel_id: str, token: Secret) -> None:
        """Replace a connected channel's token (a refreshed one), sealed like connect's."""
        if self._encrypt is None:
            raise RuntimeError("Channels needs an encrypt callable to store tokens")
        sealed = self._encrypt(validate_token(token), channel_token_aad(tenant_id, channel_id))
        await self._redis.hset(keys.channel(tenant_id, channel_id), "token", sealed)

    async def set_connection(self, tenant_id: str, channel_id: str,
                             fields: Mapping[str, str | int]) -> None:
        """Record :data:`CONNECTION_FIELDS` (only those) of a channel that exists."""
        if any(name not in CONNECTION_FIELDS for name in fields):
            raise ValueError(f"not a connection field: {sorted(fields)}")
        key = keys.channel(tenant_id, channel_id)
        if fields and await self._redis.exists(key):
            mapping: HashFields = {name: value for name, value in fields.items()}
            await self._redis.hset(key, mapping=mapping)

    async def mark_coexistence(self, channel: str, account_id: str) -> bool:
        """The routed account's number is in coexistence (its Business-app echoes or
        history arrived); True when that was news."""
        route = await self.resolve(channel, account_id)
        if route is None:
            return False
        key = keys.channel(*route)
        if not await self._redis.exists(key):
            return False
        return bool(await self._redis.hsetnx(key, "coexistence", "1"))

    async def list(self, tenant_id: str) -> list[ChannelRecord]:
        out: list[ChannelRecord] = []
        for raw in await self._redis.smembers(keys.channels(tenant_id)):
            try:
                out.append(await self.get(tenant_id, as_bytes(raw).decode()))
            except NotFound:
                continue
        return sorted(out, key=lambda c: (c.connected_ms, c.id))

    async def disconnect(
        self, tenant_id: str, channel_id: str, reason: str = "disconnected by the tenant"
    ) -> ChannelRecord:
        """Stop routing the account to this tenant and drop its token; keep the record."""
        record = await self.get(tenant_id, channel_id)
        # The routing first (no message is routed here from now on), then the record.
        await unroute_tenant(self._redis, record.channel, record.account_id, tenant_id,
                             channel_id)
        key = keys.channel(tenant_id, channel_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": DISCONNECTED, "disconnected_ms": now_ms(self._clock),
                                    "disconnected_reason": reason[:200]})
            pipe.hdel(key, "token")
            await pipe.execute()
        return await self.get(tenant_id, channel_id)

    async def mark_token_invalid(self, tenant_id: str, channel_id: str, reason: str) -> None:
        """Graph said the token is dead: status disconnected, routing kept (inbound recorded);
        health ``needs_reconnect`` with the reason (the console shows it)."""
        await self._redis.hset(
            keys.channel(tenant_id, channel_id),
            mapping={
                "status": DISCONNECTED,
                "health": NEEDS_RECONNECT,
                "health_reason": reason[:200],
                "disconnected_ms": now_ms(self._clock),
                "disconnected_reason": reason[:200],
            },
        )

    async def resolve(self, channel: str, account_id: str) -> tuple[str, str] | None:
        """(tenant id, channel id) routed for an account, or None."""
        tid, cid = await self._redis.hmget(keys.account(channel, account_id), "tenant", "channel_id")
        if tid is None or cid is None:
            return None
        return as_bytes(tid).decode(), as_bytes(cid).decode()

    async def token_ciphertext(self, tenant_id: str, channel_id: str) -> str | None:
        raw = as_opt_bytes(await self._redis.hget(keys.channel(tenant_id, channel_id), "token"))
        return None if raw is None else raw.decode("utf-8", "replace")


# --- bot --------------------------------------------------------------------------------
_GROUNDING = ("knowledge_only", "general")
EXTRACTIVE = "extractive"


class BotUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields of :class:`BotConfig` to set; those left :data:`msgspec.UNSET` keep the base.
    Types and bounds are checked when decoded or converted (not by the constructor)."""

    provider: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    model: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    system_prompt: Annotated[str, Meta(max_length=20_000)] | UnsetType = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType = UNSET
    max_tokens: Annotated[int, Meta(ge=1, le=32_768)] | UnsetType = UNSET
    fallback: Annotated[tuple[Annotated[str, Meta(max_length=200)], ...],
                        Meta(max_length=5)] | UnsetType = UNSET
    grounding: Literal["knowledge_only", "general"] | UnsetType = UNSET
    fallback_message: Annotated[str, Meta(max_length=2_000)] | UnsetType = UNSET
    min_score: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    greeting: Annotated[str, Meta(max_length=2_000)] | None | UnsetType = UNSET
    context_tokens: Annotated[int, Meta(ge=0, le=10_000_000)] | UnsetType = UNSET
    read_receipts: bool | UnsetType = UNSET
    comment_replies: Literal["off", "private"] | UnsetType = UNSET
    vision: bool | UnsetType = UNSET
    voice_reply: Annotated[str, Meta(max_length=2_000)] | UnsetType = UNSET
    suggestions: bool | UnsetType = UNSET


_BOT_FIELDS = tuple(f.name for f in msgspec.structs.fields(BotConfig))


def parse_bot_config(
    data: object, providers: Collection[str], base: BotConfig | None = None
) -> BotConfig:
    """Validate a bot config body (fields of :class:`BotConfig`) over ``base`` (or defaults);
    :class:`ValidationError` naming the field otherwise (see :func:`apply_bot_update`)."""
    if not isinstance(data, Mapping):
        raise ValidationError("body", "must be a JSON object")
    return apply_bot_update(convert(data, BotUpdate), providers, base)


def apply_bot_update(
    update: BotUpdate, providers: Collection[str], base: BotConfig | None = None
) -> BotConfig:
    """``base`` (or the defaults) with ``update``'s fields set, checked as a whole:
    ``provider`` is "extractive" or a name in ``providers``; a model is required for any
    other provider; ``fallback`` entries are "provider:model" (or "extractive") with
    known providers; the fallback message and a greeting are not blank."""
    changes = {
        name: value for name in _BOT_FIELDS
        if (value := getattr(update, name, UNSET)) is not UNSET
    }
    cfg = msgspec.structs.replace(base or BotConfig(), **changes)
    known = set(providers)
    if cfg.provider != EXTRACTIVE and cfg.provider not in known:
        raise ValidationError(
            "provider", f"must be 'extractive' or one of: {', '.join(sorted(known))}"
        )
    if cfg.provider != EXTRACTIVE and not cfg.model.strip():
        raise ValidationError("model", f"is required for provider {cfg.provider!r}")
    _check_text("fallback_message", cfg.fallback_message, 2_000)
    if cfg.context_tokens and cfg.context_tokens < cfg.max_tokens + 1024:
        raise ValidationError(
            "context_tokens", "must be 0 (known per model) or leave at least 1024 tokens "
            f"for the prompt above max_tokens ({cfg.max_tokens})"
        )
    if cfg.greeting is not None:
        _check_text("greeting", cfg.greeting, 2_000)
    _check_text("voice_reply", cfg.voice_reply, 2_000)
    for entry in cfg.fallback:
        prov, sep, model = entry.partition(":")
        if entry == EXTRACTIVE:
            continue
        if not sep or not model.strip() or prov not in known or len(entry) > 200:
            raise ValidationError(
                "fallback",
                f"entries must be 'provider:model' with a known provider, got {entry[:60]!r}",
            )
    return cfg


def _check_text(field: str, value: str, limit: int, *, allow_empty: bool = False) -> None:
    if not allow_empty and not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters")


BOT_FAMILY = "bot"  # the bot's configuration (system prompt, greeting, fallback …)


class Bots:
    """The bot configuration of each tenant, sealed with its data key (the prompts and
    texts a business writes are its own)."""

    def __init__(self, redis: Redis, cipher: TenantCipher | None = None) -> None:
        self._redis = redis
        self._cipher = cipher or TenantCipher.disabled()

    async def get(self, tenant_id: str) -> BotConfig:
        """The stored config, or the offline default (extractive) when none was set."""
        raw = as_opt_bytes(await self._redis.get(keys.bot(tenant_id)))
        if raw is None:
            return BotConfig()
        return msgspec.json.decode(
            await self._cipher.open(tenant_id, BOT_FAMILY, "", raw), type=BotConfig)

    async def put(self, tenant_id: str, config: BotConfig) -> BotConfig:
        value = await self._cipher.seal(tenant_id, BOT_FAMILY, "", msgspec.json.encode(config))
        await self._redis.set(keys.bot(tenant_id), value)
        return config
