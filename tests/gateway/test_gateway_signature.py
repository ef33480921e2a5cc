"""X-Hub-Signature-256 is checked over the raw bytes, constant time, any configured secret."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from mtdesk.core.secret import Secret
from mtdesk.gateway.signature import sign, verify_signature

SECRETS = (Secret("current-secret"), Secret("previous-secret"))

# As Meta sends it: non-ASCII escaped as lowercase \uXXXX and "/" as "\/".
ESCAPED_BODY = (
    b'{"object":"page","entry":[{"id":"112233445566778","time":1717171717171,"messaging":'
    b'[{"sender":{"id":"6543210987654321"},"recipient":{"id":"112233445566778"},'
    b'"timestamp":1717171716990,"message":{"mid":"m_caf\\u00e9","text":"Caf\\u00e9 \\u00e0 '
    b'19h\\/20h ? \\ud83d\\ude00 \\u4f60\\u597d"}}]}]}'
)


def test_every_fixture_verifies_with_the_current_secret(fixtures_dir: Path) -> None:
    files = sorted(fixtures_dir.glob("*.json"))
    assert len(files) >= 10
    for f in files:
        body = f.read_bytes()
        assert verify_signature(body, sign(body, "current-secret"), SECRETS), f.name


def test_the_previous_secret_is_accepted_during_rotation() -> None:
    assert verify_signature(ESCAPED_BODY, sign(ESCAPED_BODY, "previous-secret"), SECRETS)


def test_an_unknown_secret_is_refused() -> None:
    assert not verify_signature(ESCAPED_BODY, sign(ESCAPED_BODY, "someone-else"), SECRETS)


def test_no_configured_secret_refuses_everything() -> None:
    assert not verify_signature(ESCAPED_BODY, sign(ESCAPED_BODY, "current-secret"), ())


def test_escaped_body_verifies_but_its_reserialization_does_not() -> None:
    header = sign(ESCAPED_BODY, "current-secret")
    assert verify_signature(ESCAPED_BODY, header, SECRETS)
    parsed = json.loads(ESCAPED_BODY)
    assert parsed["entry"][0]["messaging"][0]["message"]["text"].startswith("Café à 19h/20h")
    for reserialized in (
        json.dumps(parsed).encode(),
        json.dumps(parsed, ensure_ascii=False).encode("utf-8"),
        json.dumps(parsed, separators=(",", ":")).encode(),
        json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
    ):
        assert not verify_signature(reserialized, header, SECRETS)


def test_a_tampered_body_is_refused(fixtures_dir: Path) -> None:
    body = (fixtures_dir / "messenger_text.json").read_bytes()
    header = sign(body, "current-secret")
    assert not verify_signature(body.replace(b"Canada", b"Mexico"), header, SECRETS)
    assert not verify_signature(body + b" ", header, SECRETS)
    assert not verify_signature(body[:-1], header, SECRETS)


def test_uppercase_hex_digest_is_accepted() -> None:
    header = sign(ESCAPED_BODY, "current-secret")
    assert verify_signature(ESCAPED_BODY, "sha256=" + header[7:].upper(), SECRETS)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256",
        "sha1=" + hmac.new(b"current-secret", ESCAPED_BODY, hashlib.sha1).hexdigest(),
        "SHA256=" + "0" * 64,
        "sha256=" + "g" * 64,  # not hex
        "sha256=" + "é" * 64,  # non-ASCII
        "sha256=ü" + "0" * 63,
        "sha256=" + "0" * 63,  # wrong length
        "sha256=" + "0" * 65,
        "sha512=" + "0" * 128,
        "sha256=" + "0" * 64,  # well-formed but wrong
    ],
)
def test_bad_headers_are_refused_without_raising(header: str | None) -> None:
    assert verify_signature(ESCAPED_BODY, header, SECRETS) is False


def test_the_sha1_signature_is_refused_even_when_it_is_correct() -> None:
    good_sha1 = hmac.new(b"current-secret", ESCAPED_BODY, hashlib.sha1).hexdigest()
    assert not verify_signature(ESCAPED_BODY, f"sha1={good_sha1}", SECRETS)
