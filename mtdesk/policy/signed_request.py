"""Meta's ``signed_request``: the proof on data-deletion and deauthorize callbacks.

Format: ``base64url(signature) "." base64url(payload)``, no padding, where ``signature``
is HMAC-SHA256 under the app secret of the *encoded* payload string (the part after the
dot, as received) and the payload is JSON ``{"algorithm": "HMAC-SHA256", "issued_at",
"user_id"}``.

What a caller may rely on: :func:`parse_signed_request` returns a :class:`SignedRequest`
only when the signature matches under one of the configured app secrets (rotation: all
are tried, in constant time, without early exit) and the payload names the HMAC-SHA256
algorithm, a user id and an ``issued_at`` time; given ``now``, also only when that time
is at most ``max_age_s`` old and not more than :data:`MAX_CLOCK_SKEW_S` in the future (a
captured request replayed later is refused). Anything else, whatever the input, raises
:class:`~mtdesk.core.errors.ValidationError` whose ``field`` is ``signed_request`` and
whose ``problem`` says what is wrong; :attr:`SignatureMismatch.forged` tells a wrong
signature (HTTP 403) from a malformed one (HTTP 400). Padding (``=``) is tolerated on
input because some tools add it; it is not part of what is signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence

import msgspec

from mtdesk.core.errors import ValidationError
from mtdesk.core.secret import Secret

FIELD = "signed_request"
ALGORITHM = "HMAC-SHA256"
MAX_AGE_S = 24 * 3600
MAX_CLOCK_SKEW_S = 300  # Meta's clock and ours may disagree a little
_MAX_LEN = 8192  # real ones are ~200 bytes; refuse to hash megabytes
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class SignedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A verified request. ``user_id`` is the app-scoped id of the person."""

    user_id: str
    issued_at: int
    algorithm: str = ALGORITHM


class SignatureMismatch(ValidationError):
    """Well-formed, but not signed with any configured app secret (a forgery)."""

    forged = True


def _b64url_decode(part: str, what: str) -> bytes:
    raw = part.rstrip("=").encode("ascii", "replace")
    if not raw or not _B64URL.issuperset(raw) or len(raw) % 4 == 1:
        raise ValidationError(FIELD, f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ValidationError(FIELD, f"{what} is not base64url") from None


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_signed_request(payload: dict[str, object], secret: Secret | str) -> str:
    """Build what Meta would send (tests, fakes, the demo)."""
    key = secret.reveal() if isinstance(secret, Secret) else secret
    encoded = _b64url_encode(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    sig = hmac.new(key.encode("utf-8"), encoded.encode("ascii"), hashlib.sha256).digest()
    return f"{_b64url_encode(sig)}.{encoded}"


def request_digest(value: str) -> str:
    """A stable name for one signed_request (its SHA-256, hex): the same value sent again
    has the same digest. Padding and surrounding blanks do not count."""
    sig_part, _, payload_part = value.strip().partition(".")
    canonical = f"{sig_part.rstrip('=')}.{payload_part.rstrip('=')}"
    return hashlib.sha256(canonical.encode("ascii", "replace")).hexdigest()


def parse_signed_request(
    value: object, secrets: Sequence[Secret], *, now: float | None = None,
    max_age_s: float = MAX_AGE_S,
) -> SignedRequest:
    """Verify and decode ``value``; raises ValidationError (SignatureMismatch when forged).
    With ``now`` (seconds since the epoch), ``issued_at`` must be recent."""
    if not isinstance(value, str) or not value:
        raise ValidationError(FIELD, "is missing")
    if len(value) > _MAX_LEN:
        raise ValidationError(FIELD, "is too long")
    if not secrets:
        # A configuration problem, but the caller still gets a 4xx naming the field.
        raise ValidationError(FIELD, "cannot be verified: no app secret is configured")
    sig_part, dot, payload_part = value.strip().partition(".")
    if not dot or "." in payload_part:
        raise ValidationError(FIELD, "must be two base64url parts joined by '.'")
    signature = _b64url_decode(sig_part, "signature")
    payload_bytes = _b64url_decode(payload_part, "payload")
    if len(signature) != hashlib.sha256().digest_size:
        raise ValidationError(FIELD, "signature has the wrong length for HMAC-SHA256")

    # The HMAC covers the encoded payload exactly as Meta wrote it (without padding).
    signed = payload_part.strip().rstrip("=").encode("ascii")
    ok = False
    for secret in secrets:
        digest = hmac.new(secret.reveal().encode("utf-8"), signed, hashlib.sha256).digest()
        ok |= hmac.compare_digest(digest, signature)  # no early exit: timing says nothing
    if not ok:
        raise SignatureMismatch(FIELD, "signature does not match the app secret")

    try:
        payload = json.loads(payload_bytes)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationError(FIELD, "payload is not JSON") from None
    if not isinstance(payload, dict):
        raise ValidationError(FIELD, "payload is not a JSON object")
    algorithm = payload.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.upper() != ALGORITHM:
        raise ValidationError(FIELD, f"algorithm must be {ALGORITHM}")
    user_id = payload.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > 128:
        raise ValidationError(FIELD, "payload has no user_id")
    issued_at = payload.get("issued_at")
    if not isinstance(issued_at, int) or isinstance(issued_at, bool) or issued_at <= 0:
        raise ValidationError(FIELD, "payload has no issued_at time")
    if now is not None:
        if issued_at < now - max_age_s:
            raise ValidationError(
                FIELD, f"is too old: issued_at is more than {int(max_age_s)} s ago")
        if issued_at > now + MAX_CLOCK_SKEW_S:
            raise ValidationError(FIELD, "issued_at is in the future")
    return SignedRequest(user_id=user_id.strip(), issued_at=issued_at)
