"""Export: a tenant's data, or one end user's messages, as one JSON document, streamed.

What a caller may rely on:

- :func:`export_tenant` and :func:`export_user` are async generators of ``bytes`` chunks
  (each at most about ``chunk_bytes``) that concatenate to one valid JSON object. They
  page through Redis (``ZSCAN`` of conversations, ``XRANGE`` of ``batch`` messages), so
  memory stays flat however large the tenant is: write each chunk to an aiohttp
  ``StreamResponse`` or a file as it comes.
- Never exported: access tokens (not even their ciphertext or key id), the API key hash,
  or anything of another tenant. Which key families are exported, and why the others
  are not, is the registry's ``export`` rule (:mod:`mtdesk.core.keys`).

Tenant document::

    {"format": "mtdesk-export/1", "exported_ms": …,
     "tenant": {"id", "name", "email", "created_ms", "status", "retention_days"},
     "channels": [{"id", "channel", "account_id", "status", "connected_ms", …}],
     "bot": {…BotConfig…}, "knowledge": [{"id", "kind", "name", "status", …}],
     "restricted": [{"channel", "user_id"}],
     "users": [{"id", "tenant_id", "name", "email", "role", "status", "created_ms"}],
     "conversations": [{"conversation", "channel", "account_id", "user_id",
                        "last_activity_ms", "messages": [{…StoredMessage…}]}]}

End-user document: ``{"format", "exported_ms", "tenant_id", "channel", "user_id",
"restricted", "conversations": [...]}`` with that person's conversations only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import NotFound
from mtdesk.core.history import MessageStore, StoredMessage
from mtdesk.core.redis import Redis, as_hash
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.tenants import Bots, Channels, Tenants
from mtdesk.core.users import Users
from mtdesk.policy.erasure.params import validate_end_user
from mtdesk.policy.restriction import is_restricted, list_restricted

FORMAT = "mtdesk-export/1"
# The document's sections, in order: those of the key families exported
# (``keys.Export.SECTION``); the conversations section is streamed last.
STREAMED = keys.HISTORY.section
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(
    [f.section for f in keys.FAMILIES if f.export is keys.Export.SECTION and f.section != STREAMED]
    + [STREAMED]
))
# Fields of a channel record never exported (the token's key id says nothing useful).
_CHANNEL_HIDDEN = frozenset({"token", "token_kid", "tenant_id"})
# Knowledge source fields that are internal (binary spec, chunk id lists).
_SOURCE_HIDDEN = frozenset({"spec", "chunks", "chunk_ids", "ids"})

_enc = msgspec.json.Encoder()


class _Chunker:
    """Collects encoded pieces; hands out chunks of about ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._parts: list[bytes] = []
        self._len = 0

    def add(self, piece: bytes) -> bytes | None:
        self._parts.append(piece)
        self._len += len(piece)
        return self.flush() if self._len >= self._size else None

    def flush(self) -> bytes | None:
        if not self._parts:
            return None
        out = b"".join(self._parts)
        self._parts, self._len = [], 0
        return out


def _message_json(message: StoredMessage) -> bytes:
    data = msgspec.to_builtins(message)
    data["id"] = data.pop("entry", "")
    return _enc.encode(data)


async def _conversations(
    redis: Redis, tenant_id: str, want: Callable[[str], bool], out: _Chunker, batch: int,
    cipher: TenantCipher | None,
) -> AsyncIterator[bytes]:
    """Yields chunks of ``[conversation, …]`` (the list brackets included)."""
    store = MessageStore(redis, cipher=cipher)
    first_conv = True
    if (c := out.add(b"[")) is not None:
        yield c
    async for conv in store.iter_conversations(tenant_id, batch=batch):
        if not want(conv):
            continue
        channel, account_id, user_id = (conv.split(":", 2) + ["", ""])[:3]
        score = await redis.zscore(keys.conversations(tenant_id), conv)
        head = _enc.encode({
            "conversation": conv, "channel": channel, "account_id": account_id,
            "user_id": user_id, "last_activity_ms": int(score or 0),
        })
        piece = (b"" if first_conv else b",") + head[:-1] + b',"messages":['
        first_conv = False
        if (c := out.add(piece)) is not None:
            yield c
        first_msg = True
        async for message in store.iter_messages(tenant_id, conv, batch=batch):
            piece = (b"" if first_msg else b",") + _message_json(message)
            first_msg = False
            if (c := out.add(piece)) is not None:
                yield c
        if (c := out.add(b"]}")) is not None:
            yield c
    if (c := out.add(b"]")) is not None:
        yield c


async def _knowledge(redis: Redis, tenant_id: str) -> list[dict[str, str]]:
    sources: list[dict[str, str]] = []
    async for sid, _score in redis.zscan_iter(keys.kb_sources(tenant_id), count=500):
        raw = as_hash(await redis.hgetall(keys.kb_source(tenant_id, sid.decode())))
        item: dict[str, str] = {"id": sid.decode()}
        for k, v in raw.items():
            name = k.decode("utf-8", "replace")
            if name in _SOURCE_HIDDEN:
                continue
            try:
                item[name] = v.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary internals
        sources.append(item)
    return sorted(sources, key=lambda s: s["id"])


async def export_tenant(
    redis: Redis, clock: Clock, tenant_id: str, *, batch: int = 500, chunk_bytes: int = 65536,
    cipher: TenantCipher | None = None,
) -> AsyncIterator[bytes]:
    """The whole tenant as JSON chunks, sealed text opened with ``cipher`` (the tenant's
    data key). Raises NotFound before the first chunk."""
    tenant = await Tenants(redis, clock).get(tenant_id)
    channels = []
    for record in await Channels(redis, clock).list(tenant_id):
        data = msgspec.to_builtins(record)
        channels.append({k: v for k, v in data.items() if k not in _CHANNEL_HIDDEN})
    bot = msgspec.to_builtins(await Bots(redis, cipher).get(tenant_id))
    sections: dict[str, object] = {
        "tenant": msgspec.to_builtins(tenant),
        "channels": channels,
        "bot": bot,
        "knowledge": await _knowledge(redis, tenant_id),
        "restricted": await list_restricted(redis, tenant_id),
        # The people who sign in to the console (never their password hash).
        "users": [msgspec.to_builtins(u) for u in await Users(redis, clock).list(tenant_id)],
    }
    # One section per exported key family (conversations are streamed after the rest):
    # a family registered as exported without its section here fails right away.
    head: dict[str, object] = {"format": FORMAT, "exported_ms": now_ms(clock)}
    for section in SECTIONS:
        if section != STREAMED:
            head[section] = sections[section]
    out = _Chunker(chunk_bytes)
    yield _enc.encode(head)[:-1] + b',"%s":' % STREAMED.encode()
    async for chunk in _conversations(redis, tenant_id, lambda _c: True, out, batch, cipher):
        yield chunk
    out.add(b"}")
    tail = out.flush()
    if tail:
        yield tail


async def export_user(
    redis: Redis, clock: Clock, tenant_id: str, channel: object, user_id: object, *,
    batch: int = 500, chunk_bytes: int = 65536, cipher: TenantCipher | None = None,
) -> AsyncIterator[bytes]:
    """One end user's conversations (on any of the tenant's accounts of ``channel``)."""
    ch, uid = validate_end_user(channel, user_id)
    if ":" in tenant_id or not await redis.exists(keys.tenant(tenant_id)):
        raise NotFound(f"tenant {tenant_id!r} not found")

    def mine(conv: str) -> bool:
        parts = conv.split(":", 2)
        return len(parts) == 3 and parts[0] == ch and parts[2] == uid

    head = {
        "format": FORMAT, "exported_ms": now_ms(clock), "tenant_id": tenant_id,
        "channel": ch, "user_id": uid,
        "restricted": await is_restricted(redis, tenant_id, ch, uid),
    }
    out = _Chunker(chunk_bytes)
    yield _enc.encode(head)[:-1] + b',"conversations":'
    async for chunk in _conversations(redis, tenant_id, mine, out, batch, cipher):
        yield chunk
    out.add(b"}")
    tail = out.flush()
    if tail:
        yield tail
