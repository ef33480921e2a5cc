"""What is known of a customer's file, and the words the model gets for it: the Graph
API's media answer is read whatever its bytes, a description is always a sentence, and
the store gives back exactly what it was given (sealed at rest)."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.actors.sender import parse_media_info
from mtdesk.core.errors import ConfigError, GraphError
from mtdesk.core.media import FETCHABLE, MediaRecord, MediaStore, describe, human_size
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@given(st.one_of(st.binary(max_size=300), _json.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"url": st.text(max_size=40)},
                                       optional={"mime_type": st.text(max_size=20) | st.none(),
                                                 "file_size": _json}).map(
                     lambda v: json.dumps(v).encode())))
def test_any_media_answer_gives_a_url_or_a_graph_error(payload: bytes) -> None:
    try:
        url, mime = parse_media_info(payload)
    except GraphError as exc:
        assert exc.code == 0 and not exc.retriable
        return
    assert url.startswith(("https://", "http://"))
    assert mime is None or isinstance(mime, str)


def test_a_whatsapp_media_answer_is_read_as_meta_documents_it() -> None:
    body = json.dumps({"messaging_product": "whatsapp", "url": "https://lookaside.fbsbx.com/x",
                       "mime_type": "audio/ogg", "sha256": "ab", "file_size": 7,
                       "id": "123"}).encode()
    assert parse_media_info(body) == ("https://lookaside.fbsbx.com/x", "audio/ogg")


@given(st.builds(
    MediaRecord, index=st.integers(0, 20), type=st.sampled_from(sorted(FETCHABLE)) | st.text(max_size=10),
    mime_type=st.none() | st.text(max_size=30), size=st.integers(-5, 1 << 34),
    status=st.sampled_from(["stored", "failed", "too_large", ""]),
    filename=st.none() | st.text(max_size=30), caption=st.none() | st.text(max_size=30),
    transcript=st.none() | st.text(max_size=30)))
def test_every_record_is_described_in_one_sentence_naming_what_is_known(record: MediaRecord) -> None:
    text = describe(record)
    assert text.startswith("The customer sent ")
    if record.mime_type:
        assert record.mime_type in text
    if record.size > 0:
        assert human_size(record.size) in text
    if record.transcript:
        assert record.transcript in text


def test_descriptions_read_as_a_person_would_say_them() -> None:
    assert describe(MediaRecord(index=0, type="image", mime_type="image/jpeg",
                                size=120 * 1024)) == "The customer sent a picture (image/jpeg, 120 KB)."
    assert describe(MediaRecord(index=0, type="audio", mime_type="audio/ogg", size=3_500_000,
                                status="stored")) == (
        "The customer sent a voice note (audio/ogg, 3.3 MB). It could not be listened to.")
    assert describe(MediaRecord(index=0, type="document", status="too_large",
                                filename="a.pdf")) == (
        'The customer sent a document named "a.pdf". It was too large to download.')


@given(st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_sizes_never_read_smaller_for_more_bytes(a: int, b: int) -> None:
    def value(text: str) -> float:
        number, unit = text.split(" ")
        return float(number) * {"bytes": 1, "KB": 1024, "MB": 1024 * 1024}[unit]
    small, large = sorted((a, b))
    assert value(human_size(small)) <= value(human_size(large)) * 1.0001


async def test_the_store_gives_back_the_bytes_sealed_at_rest(redis: Redis) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    cipher = TenantCipher.from_settings(redis, Settings(encryption_keys=(Secret(key),)))
    store = MediaStore(redis, cipher=cipher)
    content = b"\xff\xd8 a picture of a blue shoe"
    kept = await store.put("t1", "whatsapp:1:u", "wamid.1", 0, content, "image/jpeg", now_ms=5)
    raw = await redis.xrange("mt:t:t1:media:whatsapp:1:u")
    assert b"blue shoe" not in raw[0][1][b"d"]
    got = await store.get("t1", "whatsapp:1:u", kept.ref)
    assert got is not None and got.content == content and got.mime_type == "image/jpeg"
    assert await store.get("t1", "whatsapp:1:u", "not-a-ref") is None
    # Another conversation's ref opens nothing of this one.
    assert await store.get("t1", "whatsapp:1:other", kept.ref) is None
    assert await store.delete_message("t1", "whatsapp:1:u", "wamid.1") == 1
    assert await store.get("t1", "whatsapp:1:u", kept.ref) is None


@pytest.mark.parametrize("value", ["whisper-1", "nosuch:whisper-1", "openai:", ":m"])
def test_a_bad_transcriber_is_refused_naming_its_variable(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"MTDESK_TRANSCRIBER": value}, dotenv=None)
    assert "MTDESK_TRANSCRIBER" in str(err.value)


def test_the_transcriber_names_a_configured_provider_and_its_model() -> None:
    settings = Settings.from_env({"MTDESK_TRANSCRIBER": " OpenAI:whisper-1 "}, dotenv=None)
    assert settings.transcriber == "openai:whisper-1"
    assert Settings.from_env({}, dotenv=None).transcriber == ""
