"""Meta's signed_request: only a correctly signed HMAC-SHA256 payload is accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core.errors import ValidationError
from mtdesk.core.secret import Secret
from mtdesk.policy.signed_request import (
    SignatureMismatch,
    make_signed_request,
    parse_signed_request,
)

SECRETS = (Secret("new-app-secret"), Secret("old-app-secret"))
PAYLOAD = {"algorithm": "HMAC-SHA256", "issued_at": 1_750_000_000, "user_id": "218471"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_raw(payload_json: bytes, secret: str) -> str:
    encoded = b64(payload_json)
    sig = hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).digest()
    return f"{b64(sig)}.{encoded}"


def test_a_request_signed_with_the_current_secret_yields_the_user() -> None:
    req = parse_signed_request(make_signed_request(PAYLOAD, "new-app-secret"), SECRETS)
    assert req.user_id == "218471"
    assert req.issued_at == 1_750_000_000


def test_a_request_signed_with_a_rotated_out_secret_is_still_accepted() -> None:
    req = parse_signed_request(make_signed_request(PAYLOAD, "old-app-secret"), SECRETS)
    assert req.user_id == "218471"


def test_meta_example_format_with_numeric_user_id_is_accepted() -> None:
    raw = json.dumps({"algorithm": "HMAC-SHA256", "issued_at": 1, "user_id": 4242}).encode()
    assert parse_signed_request(sign_raw(raw, "new-app-secret"), SECRETS).user_id == "4242"


@pytest.mark.parametrize("padding", ["sig", "payload", "both"])
def test_padding_added_by_a_tool_does_not_change_the_verdict(padding: str) -> None:
    # A payload whose base64 needs padding (length not a multiple of 3).
    payload = {**PAYLOAD, "user_id": "12345678901"}
    good = make_signed_request(payload, "new-app-secret")
    sig, enc = good.split(".")
    if padding in ("sig", "both"):
        sig += "=" * (-len(sig) % 4)
    if padding in ("payload", "both"):
        enc += "=" * (-len(enc) % 4)
    assert "=" in sig + enc
    assert parse_signed_request(f"{sig}.{enc}", SECRETS).user_id == "12345678901"


def test_a_forged_signature_is_refused_as_forged() -> None:
    forged = make_signed_request(PAYLOAD, "attacker-secret")
    with pytest.raises(SignatureMismatch) as err:
        parse_signed_request(forged, SECRETS)
    assert err.value.field == "signed_request"
    assert "signature" in err.value.problem


def test_a_tampered_payload_is_refused() -> None:
    sig, _ = make_signed_request(PAYLOAD, "new-app-secret").split(".")
    other = b64(json.dumps({**PAYLOAD, "user_id": "999"}).encode())
    with pytest.raises(SignatureMismatch):
        parse_signed_request(f"{sig}.{other}", SECRETS)


def test_the_signature_covers_the_encoded_payload_not_the_json() -> None:
    raw = json.dumps(PAYLOAD).encode()
    sig = hmac.new(b"new-app-secret", raw, hashlib.sha256).digest()  # over the JSON: wrong
    with pytest.raises(SignatureMismatch):
        parse_signed_request(f"{b64(sig)}.{b64(raw)}", SECRETS)


@pytest.mark.parametrize("algorithm", ["HMAC-SHA1", "none", "", None, 7])
def test_a_wrong_algorithm_is_refused_even_when_signed(algorithm: object) -> None:
    raw = json.dumps({**PAYLOAD, "algorithm": algorithm}).encode()
    with pytest.raises(ValidationError) as err:
        parse_signed_request(sign_raw(raw, "new-app-secret"), SECRETS)
    assert not isinstance(err.value, SignatureMismatch)
    assert "algorithm" in err.value.problem


@pytest.mark.parametrize(
    "value, problem",
    [
        ("", "missing"),
        (None, "missing"),
        ("no-dot-here", "two base64url parts"),
        ("a.b.c", "two base64url parts"),
        ("!!!.abcd", "not base64url"),
        ("abcd.%%%", "not base64url"),
        (f"{b64(b'short')}.{b64(b'{}')}", "wrong length"),
        ("x" * 10_000, "too long"),
    ],
)
def test_malformed_values_name_the_problem(value: object, problem: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_signed_request(value, SECRETS)
    assert err.value.field == "signed_request"
    assert problem in err.value.problem
    assert not isinstance(err.value, SignatureMismatch)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"algorithm": "HMAC-SHA256"}).encode(), "user_id"),
        (json.dumps({"algorithm": "HMAC-SHA256", "user_id": ""}).encode(), "user_id"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_signed_but_unusable_payloads_are_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_signed_request(sign_raw(raw, "new-app-secret"), SECRETS)
    assert problem in err.value.problem


def test_without_a_configured_secret_nothing_is_accepted() -> None:
    with pytest.raises(ValidationError):
        parse_signed_request(make_signed_request(PAYLOAD, "new-app-secret"), ())


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_validation_error(value: str) -> None:
    with pytest.raises(ValidationError):
        parse_signed_request(value, SECRETS)


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200))
def test_arbitrary_well_formed_parts_raise_only_validation_error(sig: bytes, body: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_signed_request(f"{b64(sig)}.{b64(body)}", SECRETS)


@given(st.binary(max_size=400))
def test_arbitrary_signed_payloads_parse_or_raise_validation_error(body: bytes) -> None:
    try:
        req = parse_signed_request(sign_raw(body, "old-app-secret"), SECRETS)
    except ValidationError:
        return
    assert req.user_id


NOW = 1_750_000_000.0


@pytest.mark.parametrize(
    ("issued_at", "problem"),
    [
        (None, "issued_at"),
        ("1750000000", "issued_at"),
        (int(NOW) - 2 * 365 * 24 * 3600, "too old"),  # two years: a captured request replayed
        (int(NOW) - 24 * 3600 - 1, "too old"),
        (int(NOW) + 3600, "future"),
    ],
)
def test_a_request_without_a_recent_issued_at_is_refused(issued_at: object, problem: str) -> None:
    payload = {k: v for k, v in PAYLOAD.items() if k != "issued_at"}
    if issued_at is not None:
        payload["issued_at"] = issued_at
    with pytest.raises(ValidationError) as err:
        parse_signed_request(make_signed_request(payload, "new-app-secret"), SECRETS, now=NOW)
    assert err.value.field == "signed_request" and problem in err.value.problem
    assert not isinstance(err.value, SignatureMismatch)


def test_a_recent_request_within_the_age_bound_is_accepted() -> None:
    payload = {**PAYLOAD, "issued_at": int(NOW) - 3600}
    req = parse_signed_request(make_signed_request(payload, "new-app-secret"), SECRETS, now=NOW)
    assert req.issued_at == int(NOW) - 3600


def test_the_digest_names_the_request_whatever_its_padding() -> None:
    from mtdesk.policy.signed_request import request_digest

    value = make_signed_request({**PAYLOAD, "user_id": "12345678901"}, "new-app-secret")
    sig, enc = value.split(".")
    padded = f"{sig}{'=' * (-len(sig) % 4)}.{enc}{'=' * (-len(enc) % 4)}"
    assert request_digest(value) == request_digest(f" {padded} ")
    assert request_digest(value) != request_digest(make_signed_request(PAYLOAD, "new-app-secret"))
