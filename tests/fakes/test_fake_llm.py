"""The fake LLM speaks the OpenAI wire format well enough for the real SDK."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request

import openai
import pytest
from openai import AsyncOpenAI

from mtdesk.fakes.llm import FakeLLM, spawn_llm


def _client(llm: FakeLLM, timeout: float = 5.0) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0, timeout=timeout)


async def test_chat_answer_shows_last_user_message_and_first_passage() -> None:
    async with FakeLLM() as llm:
        client = _client(llm)
        r = await client.chat.completions.create(model="m1", messages=[
            {"role": "system", "content": "Be nice.\n[1] (source: faq.md) Opening hours are 9-5.\n[2] x"},
            {"role": "user", "content": "when are you open?"}])
        await client.close()
        text = r.choices[0].message.content
        assert text == '[m1] You said: when are you open? Source: "Opening hours are 9-5."'
        assert llm.requests[0].model == "m1"
        assert "Opening hours" in llm.requests[0].prompt_text()


async def test_streaming_chunks_rebuild_the_same_answer() -> None:
    async with FakeLLM() as llm:
        client = _client(llm)
        stream = await client.chat.completions.create(
            model="m1", stream=True, messages=[{"role": "user", "content": "hello there"}])
        parts = [c.choices[0].delta.content or "" async for c in stream]
        await client.close()
        assert "".join(parts) == "[m1] You said: hello there"
        assert llm.requests[0].stream is True


async def test_embeddings_are_deterministic_normalized_and_sized() -> None:
    async with FakeLLM(dimension=32) as llm:
        client = _client(llm)
        a = await client.embeddings.create(model="e", input=["refund policy", "refund policy"])
        b = await client.embeddings.create(model="e", input="shipping times", dimensions=16)
        await client.close()
        v1, v2 = a.data[0].embedding, a.data[1].embedding
        assert v1 == v2 and len(v1) == 32
        assert math.isclose(sum(x * x for x in v1), 1.0, rel_tol=1e-6)
        assert len(b.data[0].embedding) == 16


@pytest.mark.parametrize("status, error", [(429, openai.RateLimitError),
                                           (500, openai.InternalServerError),
                                           (503, openai.InternalServerError)])
async def test_injected_status_failures_then_recovery(status: int, error: type) -> None:
    async with FakeLLM() as llm:
        llm.fail_next(status, times=1)
        client = _client(llm)
        with pytest.raises(error):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        ok = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        await client.close()
        assert ok.choices[0].message.content == "[m] You said: x"


async def test_hang_exceeds_the_client_timeout_and_malformed_body_fails() -> None:
    async with FakeLLM() as llm:
        llm.fail_next("hang")
        llm.fail_next("malformed")
        client = _client(llm, timeout=0.3)
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(Exception):  # noqa: B017 - the SDK raises a JSON decode error
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        await client.close()


async def test_held_calls_wait_unanswered_until_released() -> None:
    async with FakeLLM() as llm:
        client = _client(llm)
        llm.hold()
        call = asyncio.create_task(client.embeddings.create(model="e", input="refund policy"))
        for _ in range(250):
            if llm.waiting == 1:
                break
            await asyncio.sleep(0.02)
        assert llm.waiting == 1 and not call.done()
        llm.release()
        answer = await asyncio.wait_for(call, 5)
        await client.close()
        assert len(answer.data[0].embedding) == 64 and llm.waiting == 0


async def test_models_are_listed() -> None:
    async with FakeLLM(models=("a", "b")) as llm:
        client = _client(llm)
        ids = [m.id async for m in client.models.list()]
        await client.close()
        assert ids == ["a", "b"]


def test_runs_as_its_own_process_and_reports_requests() -> None:
    with spawn_llm(latency_ms=0) as proc:
        req = urllib.request.Request(
            proc.root_url + "/v1/chat/completions",
            data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "yo"}]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            answer = json.loads(r.read())
        assert answer["choices"][0]["message"]["content"] == "[m] You said: yo"
        with urllib.request.urlopen(proc.root_url + "/_fake/requests") as r:
            recorded = json.loads(r.read())
        assert recorded[0]["messages"][0]["content"] == "yo"


async def test_multimodal_chat_reports_the_picture_it_was_shown() -> None:
    import base64
    import hashlib

    picture = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100
    url = "data:image/png;base64," + base64.b64encode(picture).decode()
    async with FakeLLM() as llm:
        client = _client(llm)
        r = await client.chat.completions.create(model="m1", messages=[
            {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}])
        await client.close()
    assert r.choices[0].message.content == (
        f"[m1] You said: what is this? [saw 1 image: image/png, {len(picture)} bytes]")
    assert llm.requests[0].images == [{"mime_type": "image/png", "size": len(picture),
                                       "sha256": hashlib.sha256(picture).hexdigest()}]
    assert llm.requests[0].prompt_text() == "what is this?"


async def test_audio_transcriptions_hear_the_words_the_bytes_spell() -> None:
    async with FakeLLM() as llm:
        client = _client(llm)
        heard = await client.audio.transcriptions.create(
            model="whisper-1", file=("voice.ogg", b"OggS\x00\x01 hello there", "audio/ogg"))
        silence = await client.audio.transcriptions.create(
            model="whisper-1", file=("voice.ogg", b"\x00\x01\x02", "audio/ogg"))
        llm.fail_next(503)
        with pytest.raises(openai.InternalServerError):
            await client.audio.transcriptions.create(
                model="whisper-1", file=("voice.ogg", b"x", "audio/ogg"))
        await client.close()
    assert heard.text == "OggS hello there"
    assert silence.text == "(3 bytes of audio)"
    first = llm.transcription_requests[0]
    assert first.model == "whisper-1" and first.params["filename"] == "voice.ogg"
    assert first.params["size"] == len(b"OggS\x00\x01 hello there")
