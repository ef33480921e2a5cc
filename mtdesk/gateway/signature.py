"""Meta's webhook signature: ``X-Hub-Signature-256: sha256=<hex>`` over the raw body.

Callers may rely on :func:`verify_signature` never raising: anything but a correct
``sha256=`` signature under one of the configured app secrets is ``False`` (the route
answers 403). The digest is computed over the exact bytes received, never over
re-serialized JSON: Meta escapes ``/`` and non-ASCII before signing, so a parsed and
re-encoded body would not match.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from mtdesk.core.secret import Secret

_PREFIX = b"sha256="
_HEX_LEN = 64  # SHA-256 is 32 bytes
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_PREFIX_S = "sha256="
_PREFIX_LEN = len(_PREFIX_S)
_HEADER_LEN = _PREFIX_LEN + _HEX_LEN
_DIGEST_LEN = 32


def parse_signature_header(header: str | None) -> bytes | None:
    """The lowercase hex digest of a well-formed ``sha256=<64 hex>`` header, else None."""
    if not header:
        return None
    try:
        raw = header.strip().encode("ascii")
    except UnicodeEncodeError:
        return None
    if not raw.startswith(_PREFIX):
        return None  # sha1= and anything else: the algorithm is ours to choose, not the header's
    digest = raw[len(_PREFIX):]
    if len(digest) != _HEX_LEN or not _HEXDIGITS.issuperset(digest):
        return None
    return digest.lower()


def sign(body: bytes, secret: Secret | str) -> str:
    """The header value Meta would send for ``body`` (used by tests, fakes and benchmarks)."""
    key = secret.reveal() if isinstance(secret, Secret) else secret
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secrets: Sequence[Secret]) -> bool:
    """True when ``header`` is ``sha256=<hex>`` of ``body`` under any of ``secrets``.

    Every configured secret is tried (rotation: the new one first, old ones still
    accepted) and compared in constant time on bytes.
    """
    return _check(body, header, [_keyed(secret.reveal()) for secret in secrets])


class SignatureVerifier:
    """:func:`verify_signature` for a fixed set of secrets, keyed once (the webhook's)."""

    __slots__ = ("_states",)

    def __init__(self, secrets: Sequence[Secret]) -> None:
        self._states = [hmac.new(s.reveal().encode("utf-8"), digestmod=hashlib.sha256) for s in secrets]

    def __repr__(self) -> str:
        return f"SignatureVerifier({len(self._states)} secrets)"  # never the keys

    def verify(self, body: bytes, header: str | None) -> bool:
        return _check(body, header, self._states)


def _check(body: bytes, header: str | None, states: Sequence[hmac.HMAC]) -> bool:
    # The hot path of every webhook POST: the header's hex is turned into the 32 raw bytes
    # once (bytes.fromhex rejects what is not hex; a length check catches the spaces it
    # would skip) and compared with HMACs copied from a keyed state; the same headers are
    # refused as by parse_signature_header.
    if not header:
        return False
    header = header.strip()
    if len(header) != _HEADER_LEN or not header.startswith(_PREFIX_S):
        return False
    try:
        expected = bytes.fromhex(header[_PREFIX_LEN:])
    except ValueError:  # not hex, non-ASCII
        return False
    if len(expected) != _DIGEST_LEN:
        return False
    ok = False
    for state in states:
        digest = state.copy()
        digest.update(body)
        # No early exit: the time taken does not tell which secret matched.
        ok |= hmac.compare_digest(digest.digest(), expected)
    return ok


_KEYED: dict[str, hmac.HMAC] = {}
_KEYED_MAX = 16  # a few secrets during a rotation; tests make many


def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 state with ``secret``'s key already absorbed: a copy of it skips
    the key set-up (two SHA-256 blocks) that hmac.digest redoes on every POST."""
    state = _KEYED.get(secret)
    if state is None:
        if len(_KEYED) >= _KEYED_MAX:
            _KEYED.clear()
        state = _KEYED[secret] = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    return state
