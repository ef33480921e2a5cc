"""Media a customer sent: what is known of it (:class:`MediaRecord`), where its bytes are
kept (:class:`MediaStore`) and how it is put in words for a model (:func:`describe`).

What a caller may rely on:

- :class:`MediaStore` is the one place media bytes are written, read and deleted:
  ``put`` / ``get`` / ``delete`` / ``delete_message``. Bytes live in one Redis stream per
  conversation (``keys.media(tenant, conversation)``), one entry per attachment, fields
  ``d`` (the bytes, sealed with the tenant's data key when a
  :class:`~mtdesk.core.sealing.TenantCipher` is given) and ``m`` (msgpack
  :class:`StoredMedia` without the bytes). The entry id's milliseconds are the store
  time, so retention trims the stream like the history (``XTRIM MINID``) and erasing
  the conversation deletes the stream (``docs/privacy.md``). A ``ref`` is the entry id.
- :class:`MediaRecord` is what the history keeps of an attachment (a reference, never
  the bytes): its position, type, MIME type, size, SHA-256, the ``ref`` of its stored
  bytes (``""`` when not stored), ``status`` (``stored`` | ``failed`` | ``too_large``)
  and, for a voice note, the ``transcript``. Exports carry these references.
- The retry index (``keys.media_retries(tenant)``, a hash) names the downloads being
  retried, one field ``{conversation} {message id} {index}`` each, the value (what to
  fetch) sealed like the bytes: ``note_retry`` / ``retry_done`` / ``drop_retries`` /
  ``retries``. It expires :data:`RETRY_INDEX_TTL_S` after its last write; erasing a
  conversation removes its fields.
- :func:`describe` is the sentence the model gets instead of the file ("The customer
  sent a picture (image/jpeg, 120 KB)."); pure, never raises.
"""

from __future__ import annotations

import hashlib

import msgspec

from mtdesk.core import keys
from mtdesk.core.errors import DecryptionError
from mtdesk.core.redis import Redis, as_bytes, as_entries
from mtdesk.core.scripts import LuaScript
from mtdesk.core.sealing import TenantCipher

# KEYS: a conversation's media stream; ARGV: entry ids. The entries deleted, and the
# stream with them when nothing is left (no empty key outlives an erased conversation).
_DROP = LuaScript("""
local n = redis.call('XDEL', KEYS[1], unpack(ARGV))
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return n
""", name="media_drop")

# What the Graph API can give us bytes for; the other attachment types (location, share,
# fallback links, templates, story mentions…) carry their content in the event itself.
FETCHABLE: frozenset[str] = frozenset({"image", "audio", "video", "file", "document",
                                       "sticker"})
# The words for each type in a description.
_NOUNS: dict[str, str] = {
    "image": "a picture", "sticker": "a sticker", "audio": "a voice note",
    "video": "a video", "file": "a document", "document": "a document",
}
SEAL_FAMILY = "media"
RETRY_INDEX_TTL_S = 86_400  # a download still listed a day after its last try is dropped


class MediaRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One attachment of a message as the history keeps it (see the module docstring)."""

    index: int  # position among the message's attachments
    type: str
    mime_type: str | None = None
    size: int = 0
    sha256: str = ""
    ref: str = ""  # the media stream entry holding the bytes; "" when not stored
    status: str = "stored"  # stored | failed | too_large
    reason: str = ""
    filename: str | None = None
    caption: str | None = None
    transcript: str | None = None


class StoredMedia(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An attachment's bytes with what identifies them (field ``m`` holds all but
    ``content`` and ``ref``)."""

    message_id: str
    index: int
    mime_type: str
    size: int
    sha256: str
    stored_ms: int
    content: bytes = b""
    ref: str = ""


_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(StoredMedia)


def human_size(size: int) -> str:
    """``120 KB``, ``3.4 MB``, ``812 bytes``."""
    if size < 1024:
        return f"{max(0, size)} bytes"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def describe(record: MediaRecord) -> str:
    """What the model is told instead of the file itself."""
    noun = _NOUNS.get(record.type, f"a {record.type or 'file'}")
    facts = [f for f in (record.mime_type, human_size(record.size) if record.size else None)
             if f]
    text = f"The customer sent {noun}"
    if record.filename:
        text += f' named "{record.filename}"'
    if facts:
        text += f" ({', '.join(facts)})"
    text += "."
    if record.transcript:
        text += f' It says: "{record.transcript}"'
    elif record.type == "audio":
        text += " It could not be listened to."
    elif record.status == "too_large":
        text += " It was too large to download."
    elif record.status not in ("stored", ""):
        text += " It could not be downloaded."
    if record.caption:
        text += f' Caption: "{record.caption}"'
    return text


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class MediaStore:
    """Media bytes of a tenant's conversations (see the module docstring). Sealing wraps
    every value when ``cipher`` seals (``TenantCipher.disabled()``: stored as given)."""

    def __init__(self, redis: Redis, *, cipher: TenantCipher | None = None) -> None:
        self._redis = redis
        self._cipher = cipher or TenantCipher.disabled()

    @staticmethod
    def _ident(conversation: str, message_id: str, index: int) -> str:
        return f"{conversation}\x00{message_id}\x00{index}"

    async def put(
        self, tenant_id: str, conversation: str, message_id: str, index: int,
        content: bytes, mime_type: str, *, now_ms: int,
    ) -> StoredMedia:
        """Store one attachment's bytes; the answer's ``ref`` names them."""
        meta = StoredMedia(message_id=message_id, index=index, mime_type=mime_type,
                           size=len(content), sha256=sha256_hex(content), stored_ms=now_ms)
        sealed = await self._cipher.seal(tenant_id, SEAL_FAMILY,
                                         self._ident(conversation, message_id, index), content)
        ref = await self._redis.xadd(keys.media(tenant_id, conversation),
                                     {b"d": sealed, b"m": _meta_encoder.encode(meta)})
        text = ref.decode() if isinstance(ref, bytes) else str(ref)
        return msgspec.structs.replace(meta, ref=text)

    async def get(self, tenant_id: str, conversation: str, ref: str) -> StoredMedia | None:
        """The attachment stored as ``ref`` with its bytes, or None (gone: erased,
        expired or unsent)."""
        if not _is_entry_id(ref):  # a malformed ref names nothing
            return None
        rows = as_entries(await self._redis.xrange(
            keys.media(tenant_id, conversation), ref, ref, count=1))
        if not rows:
            return None
        entry, fields = rows[0]
        meta = _meta_decoder.decode(fields[b"m"])
        content = await self._cipher.open(
            tenant_id, SEAL_FAMILY, self._ident(conversation, meta.message_id, meta.index),
            fields[b"d"])
        return msgspec.structs.replace(meta, content=content, ref=entry.decode())

    async def delete(self, tenant_id: str, conversation: str, refs: list[str]) -> int:
        good = [r for r in refs if _is_entry_id(r)]
        if not good:
            return 0
        return int(await self._redis.xdel(keys.media(tenant_id, conversation), *good))

    async def drop(self, tenant_id: str, conversation: str, ref: str) -> int:
        """One stored file removed, and the stream when it held nothing else."""
        if not _is_entry_id(ref):
            return 0
        return int(await _DROP.bind(self._redis)(keys=[keys.media(tenant_id, conversation)],
                                                 args=[ref]))

    async def delete_message(
        self, tenant_id: str, conversation: str, message_id: str, *, scan: int = 1000
    ) -> int:
        """Every attachment of ``message_id`` among the conversation's last ``scan``
        (an unsent message)."""
        name = keys.media(tenant_id, conversation)
        rows = as_entries(await self._redis.xrevrange(name, count=scan))
        doomed = []
        for entry, fields in rows:
            try:
                if _meta_decoder.decode(fields[b"m"]).message_id == message_id:
                    doomed.append(entry)
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                continue
        return int(await self._redis.xdel(name, *doomed)) if doomed else 0

    async def refs(self, tenant_id: str, conversation: str) -> list[StoredMedia]:
        """What is stored for a conversation (without the bytes), oldest first."""
        rows = as_entries(await self._redis.xrange(keys.media(tenant_id, conversation)))
        out = []
        for entry, fields in rows:
            meta = _meta_decoder.decode(fields[b"m"])
            out.append(msgspec.structs.replace(meta, ref=entry.decode()))
        return out


    # --- the retry index ---------------------------------------------------------------
    @staticmethod
    def retry_field(conversation: str, message_id: str, index: int) -> str:
        return f"{conversation} {message_id} {index}"

    async def note_retry(self, tenant_id: str, conversation: str, message_id: str,
                         index: int, value: bytes) -> bool:
        """List (or update) a download being retried; True when the field was new."""
        field = self.retry_field(conversation, message_id, index)
        sealed = await self._cipher.seal(tenant_id, SEAL_FAMILY, f"retry\x00{field}", value)
        name = keys.media_retries(tenant_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(name, field, sealed)
        pipe.expire(name, RETRY_INDEX_TTL_S)
        added, _ = await pipe.execute()
        return bool(added)

    async def retry_done(self, tenant_id: str, conversation: str, message_id: str,
                         index: int) -> bool:
        """Unlist a download; True when this call removed it (it was still listed)."""
        field = self.retry_field(conversation, message_id, index)
        return bool(await self._redis.hdel(keys.media_retries(tenant_id), field))

    async def drop_retries(self, tenant_id: str, conversation: str, message_id: str) -> int:
        """Unlist every download of ``message_id`` (an unsent message)."""
        name = keys.media_retries(tenant_id)
        prefix = f"{conversation} {message_id} ".encode()
        doomed = [f for f in await self._redis.hkeys(name) if as_bytes(f).startswith(prefix)]
        return int(await self._redis.hdel(name, *doomed)) if doomed else 0

    async def listing(self, tenants: list[str], *, page: int = 500) -> list[str]:
        """Those of ``tenants`` with downloads listed (pipelined, ``page`` at a time)."""
        found: list[str] = []
        for start in range(0, len(tenants), page):
            chunk = tenants[start:start + page]
            pipe = self._redis.pipeline(transaction=False)
            for tenant in chunk:
                pipe.exists(keys.media_retries(tenant))
            found += [t for t, n in zip(chunk, await pipe.execute(), strict=True) if n]
        return found

    async def retries(self, tenant_id: str) -> list[tuple[str, str, int, bytes]]:
        """The tenant's listed downloads: (conversation, message id, index, value)."""
        out = []
        for raw, sealed in (await self._redis.hgetall(keys.media_retries(tenant_id))).items():
            field = as_bytes(raw).decode()
            parts = field.rsplit(" ", 2)
            if len(parts) != 3 or not parts[2].isdigit():
                continue
            conversation, message_id, index = parts
            try:
                value = await self._cipher.open(tenant_id, SEAL_FAMILY, f"retry\x00{field}",
                                                as_bytes(sealed))
            except DecryptionError:
                continue
            out.append((conversation, message_id, int(index), value))
        return out

    async def has(self, tenant_id: str, conversation: str, message_id: str, index: int, *,
                  scan: int = 1000) -> bool:
        """Whether the bytes of attachment ``index`` of ``message_id`` are stored (among
        the conversation's last ``scan``)."""
        rows = as_entries(await self._redis.xrevrange(keys.media(tenant_id, conversation),
                                                      count=scan))
        for _entry, fields in rows:
            try:
                meta = _meta_decoder.decode(fields[b"m"])
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                continue
            if meta.message_id == message_id and meta.index == index:
                return True
        return False


def _is_entry_id(ref: str) -> bool:
    ms, sep, seq = ref.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit() and len(ref) <= 41
