"""The token vault: channel access tokens encrypted at rest, and key rotation.

What a caller may rely on:

- :meth:`TokenVault.encrypt` seals a :class:`Secret` with AES-256-GCM under the *current*
  key (the first of ``MTDESK_ENCRYPTION_KEYS``) and returns a printable string
  ``v1.<kid>.<urlsafe-base64(nonce || ciphertext+tag)>`` (no padding). ``kid`` is the first
  8 hex digits of the SHA-256 of the key bytes, so it names a key without revealing it.
- The ``aad`` (associated data) binds a ciphertext to its owner: the same ``aad`` must be
  given to :meth:`TokenVault.decrypt`. Channel tokens use
  :func:`mtdesk.core.tenants.channel_token_aad` (tenant id + channel id), so a ciphertext
  copied onto another channel does not open.
- :meth:`TokenVault.decrypt` tries the key named by the ciphertext's key id, from *all*
  configured keys. Any failure (unknown key id, malformed text, tampering, wrong ``aad``)
  raises :class:`DecryptionError` with a message saying which; never garbage, never the
  plaintext or key in the message.
- :meth:`TokenVault.rotate` re-encrypts every stored channel token under the current key
  while the service runs. Each write is a compare-and-set (a Lua script), so a token
  written concurrently (a re-connect) is never overwritten with an older value.

Rotation procedure: put the new key FIRST in ``MTDESK_ENCRYPTION_KEYS`` (keep the old one
after it), restart every process, run ``mtdesk keys rotate``; when ``mtdesk keys status``
shows no token under the old key id, remove the old key and restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Sequence

import msgspec
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mtdesk.core import keys
from mtdesk.core.errors import ConfigError, DecryptionError
from mtdesk.core.redis import Redis, as_bytes_set, as_opt_bytes
from mtdesk.core.scripts import LuaScript
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings, parse_encryption_key
from mtdesk.core.tenants import channel_token_aad

log = logging.getLogger(__name__)

VERSION = "v1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_ROTATE_ATTEMPTS = 5

# Replace the token only if it is still the one we read: a concurrent re-connect wins.
_CAS_TOKEN = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


def key_id(key: bytes) -> str:
    """The public id of a raw 32-byte key: first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


def generate_key() -> str:
    """A new key as ``MTDESK_ENCRYPTION_KEYS`` takes it: 32 random bytes, urlsafe base64."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def ciphertext_key_id(ciphertext: str) -> str | None:
    """The key id a ciphertext names, or None when it is not a vault ciphertext."""
    parts = ciphertext.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        return None
    return parts[1]


class RotationReport(msgspec.Struct, kw_only=True):
    """What a rotation did. ``before`` counts tokens per key id as found."""

    current_kid: str
    scanned: int = 0
    rotated: int = 0
    already_current: int = 0
    changed_concurrently: int = 0  # a re-connect wrote a fresh token meanwhile: left as is
    failed: int = 0  # could not be opened with any configured key (see ``failures``)
    before: dict[str, int] = msgspec.field(default_factory=dict)
    failures: list[str] = msgspec.field(default_factory=list)  # "tenant/channel: reason"


class TokenVault:
    """AES-GCM with a list of keys: the first encrypts, all decrypt."""

    def __init__(self, keys: Sequence[Secret]) -> None:
        if not keys:
            raise ConfigError("MTDESK_ENCRYPTION_KEYS", "at least one key is required")
        self._aeads: dict[str, AESGCM] = {}
        order: list[str] = []
        for secret in keys:
            raw = parse_encryption_key(secret.reveal())
            kid = key_id(raw)
            if kid not in self._aeads:
                self._aeads[kid] = AESGCM(raw)
                order.append(kid)
        self._current = order[0]
        self._order = tuple(order)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVault:
        """The vault of ``MTDESK_ENCRYPTION_KEYS``; ConfigError naming it when unset."""
        if not settings.encryption_keys:
            raise ConfigError(
                "MTDESK_ENCRYPTION_KEYS",
                "is required to store access tokens (make one: mtdesk keys generate)",
            )
        return cls(settings.encryption_keys)

    @property
    def current_kid(self) -> str:
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Configured key ids, current first."""
        return self._order

    def __repr__(self) -> str:
        return f"TokenVault(current={self._current!r}, key_ids={list(self._order)!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("TokenVault is not picklable; build one per process from settings")

    def encrypt(self, plaintext: Secret, aad: bytes) -> str:
        """Seal ``plaintext`` under the current key, bound to ``aad``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self._current].encrypt(
            nonce, plaintext.reveal().encode("utf-8"), aad
        )
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{VERSION}.{self._current}.{body}"

    def decrypt(self, ciphertext: str, aad: bytes) -> Secret:
        """Open a ciphertext made by :meth:`encrypt` with the same ``aad``."""
        parts = ciphertext.split(".") if isinstance(ciphertext, str) else []
        if len(parts) != 3 or parts[0] != VERSION:
            raise DecryptionError(
                f"not a vault ciphertext (expected '{VERSION}.<key id>.<data>')"
            )
        kid, body = parts[1], parts[2]
        aead = self._aeads.get(kid)
        if aead is None:
            raise DecryptionError(
                f"encrypted under key id {kid!r}, which is not in MTDESK_ENCRYPTION_KEYS "
                f"(configured key ids: {', '.join(self._order)}); add that key back"
            )
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise DecryptionError("ciphertext is not valid base64") from None
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("ciphertext is truncated")
        try:
            plain = aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"ciphertext under key id {kid!r} failed authentication: it was altered, "
                "or belongs to another owner (tenant/channel)"
            ) from None
        try:
            return Secret(plain.decode("utf-8"))
        except UnicodeDecodeError:
            raise DecryptionError("decrypted token is not UTF-8") from None

    def reencrypt(self, ciphertext: str, aad: bytes) -> str:
        """The same plaintext sealed under the current key (a new nonce)."""
        return self.encrypt(self.decrypt(ciphertext, aad), aad)

    async def status(self, redis: Redis) -> dict[str, int]:
        """Stored channel tokens per key id ("unknown" for non-vault values)."""
        counts: dict[str, int] = {}
        async for _tid, _cid, _key, token in _stored_tokens(redis):
            kid = ciphertext_key_id(token) or "unknown"
            counts[kid] = counts.get(kid, 0) + 1
        return counts

    async def rotate(self, redis: Redis) -> RotationReport:
        """Re-encrypt every stored channel token under the current key, online."""
        report = RotationReport(current_kid=self._current)
        cas = LuaScript(_CAS_TOKEN, name="cas_token").bind(redis)
        async for tid, cid, hkey, token in _stored_tokens(redis):
            report.scanned += 1
            kid = ciphertext_key_id(token) or "unknown"
            report.before[kid] = report.before.get(kid, 0) + 1
            aad = channel_token_aad(tid, cid)
            for _attempt in range(_ROTATE_ATTEMPTS):
                if ciphertext_key_id(token) == self._current:
                    if _attempt == 0:
                        report.already_current += 1
                    else:
                        report.changed_concurrently += 1
                    break
                try:
                    fresh = self.reencrypt(token, aad)
                except DecryptionError as exc:
                    report.failed += 1
                    report.failures.append(f"{tid}/{cid}: {exc}")
                    break
                if await cas(keys=[hkey], args=["token", token, fresh]):
                    report.rotated += 1
                    break
                # Someone wrote the token between our read and our write: read it again.
                raw = as_opt_bytes(await redis.hget(hkey, "token"))
                if raw is None:
                    report.changed_concurrently += 1
                    break
                token = raw.decode("utf-8", "replace")
            else:
                report.failed += 1
                report.failures.append(f"{tid}/{cid}: kept changing, try again")
        log.info(
            "token rotation: scanned=%d rotated=%d current=%d failed=%d kid=%s",
            report.scanned, report.rotated, report.already_current, report.failed,
            self._current,
        )
        return report


async def _stored_tokens(redis: Redis) -> AsyncIterator[tuple[str, str, str, str]]:
    """Yield (tenant id, channel id, channel hash key, token ciphertext) of every channel."""
    tenants = sorted(t.decode() for t in as_bytes_set(await redis.smembers(keys.TENANTS)))
    for tid in tenants:
        cids = sorted(c.decode() for c in as_bytes_set(await redis.smembers(keys.channels(tid))))
        for cid in cids:
            hkey = keys.channel(tid, cid)
            raw = as_opt_bytes(await redis.hget(hkey, "token"))
            if raw:
                yield tid, cid, hkey, raw.decode("utf-8", "replace")


VAULT = web.AppKey("vault", TokenVault)
