"""A fake OpenAI-compatible provider: a real aiohttp server the openai SDK can talk to.

Endpoints (under ``/v1``, so ``base_url`` is ``http://127.0.0.1:PORT/v1``):

- ``POST /v1/chat/completions`` — non-streaming, or ``"stream": true`` as SSE chunks
  ending in ``data: [DONE]``. The reply is deterministic and shows what it received:
  ``"[<model>] You said: <last user message>"``, followed by
  ``" Source: \"<passage>\""`` when a system message holds a numbered passage
  (a line starting ``[1]``; ``[1] (source: NAME) text`` quotes ``text``).
- ``POST /v1/embeddings`` — deterministic vectors: each lower-cased word is hashed to
  a few signed positions, summed and L2-normalized; the same text always gives the same
  vector and texts sharing words are close. Dimension: constructor, or ``dimensions``.
- ``POST /v1/audio/transcriptions`` — multipart ``file`` and ``model``, as the openai SDK
  sends them; answers ``{"text": …}``: the words the file's bytes spell when read as
  UTF-8 (a test's "audio" is the sentence it wants heard), else ``"(N bytes of audio)"``.
- ``GET /v1/models``.

Chat messages may be OpenAI content parts (``[{"type": "text", …}, {"type": "image_url",
"image_url": {"url": "data:image/jpeg;base64,…"}}]``): the reply then says what it saw,
``… You said: <text> [saw 1 image: image/jpeg, 1234 bytes]``, and the request's
``images`` lists each picture's MIME type, size and SHA-256.

A model's context window can be set (``context_tokens``, per model name, or one size for
all): a chat call whose messages (counted as a provider would roughly: one token per four
characters, at least one per word) plus its ``max_tokens`` exceed it is refused with 400
``context_length_exceeded``, as OpenAI words it.

Knobs: ``latency_s`` (0 by default; the benchmark uses 0.3), and :meth:`FakeLLM.fail_next`
for the next N calls: ``status`` (429/500/503 with an OpenAI-style error body), ``"hang"``
(never answers until the client gives up) or ``"malformed"`` (200 with a body that is not
JSON). :meth:`FakeLLM.hold` keeps calls waiting, unanswered, until :meth:`FakeLLM.release`
(``waiting`` counts them), so a test can act while a caller is mid-call. Every request is recorded in ``requests`` (model, messages, stream, api key), and
``GET /_fake/requests[?since=N]`` returns them for a fake in another process
(``python -m mtdesk.fakes.llm --port N --latency-ms 300``); ``POST /_fake/fail``
``{"mode", "times", "model"?}`` and ``POST /_fake/latency`` ``{"ms"}`` drive it remotely.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from mtdesk.fakes._server import FakeProcess, FakeServer, process_arguments, spawn_fake

_WORD = re.compile(r"\w+", re.UNICODE)
_PASSAGE = re.compile(r"^\[1\]\s*(?:\(source:[^)]*\)\s*)?(.+)$", re.MULTILINE)
HANG_S = 3600.0  # "hang": longer than any client timeout; cancelled when the client leaves


@dataclass
class RecordedRequest:
    path: str
    model: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    stream: bool = False
    input: list[str] = field(default_factory=list)  # embeddings input
    api_key: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, …
    time: float = 0.0
    outcome: str = "ok"  # "ok" | "429" | "500" | ... | "hang" | "malformed"
    images: list[dict[str, Any]] = field(default_factory=list)  # {mime_type, size, sha256}

    def prompt_text(self) -> str:
        """Everything the model was shown, joined (to assert what reached the prompt)."""
        return "\n".join(content_text(m.get("content", "")) for m in self.messages)


@dataclass
class _Failure:
    mode: str  # an HTTP status as text, "hang" or "malformed"
    remaining: int
    model: str | None


def content_text(content: object) -> str:
    """The text of a message's content: a string, or the ``text`` of its parts."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def content_images(content: object) -> list[dict[str, Any]]:
    """Each ``image_url`` part's picture: MIME type, size and SHA-256 of a ``data:`` URL
    (a plain URL is reported as such)."""
    found: list[dict[str, Any]] = []
    if not isinstance(content, list):
        return found
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "image_url":
            continue
        image = part.get("image_url")
        url = str(image.get("url", "")) if isinstance(image, dict) else ""
        head, sep, data = url.partition(",")
        if url.startswith("data:") and sep and head.endswith(";base64"):
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                found.append({"mime_type": "invalid", "size": 0, "sha256": ""})
                continue
            found.append({"mime_type": head[5:-7], "size": len(raw),
                          "sha256": hashlib.sha256(raw).hexdigest()})
        else:
            found.append({"mime_type": "url", "size": 0, "sha256": "", "url": url})
    return found


def fake_reply(model: str, messages: list[dict[str, Any]]) -> str:
    """The deterministic answer the fake gives to ``messages``."""
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    last_user = content_text(last.get("content", ""))
    reply = f"[{model}] You said: {last_user}"
    images = content_images(last.get("content"))
    if images:
        seen = "; ".join(f"{i['mime_type']}, {i['size']} bytes" for i in images)
        reply += f" [saw {len(images)} image{'s' if len(images) > 1 else ''}: {seen}]"
    for m in messages:
        if m.get("role") == "system":
            found = _PASSAGE.search(str(m.get("content", "")))
            if found:
                reply += f' Source: "{found.group(1).strip()}"'
                break
    return reply


def fake_transcript(audio: bytes) -> str:
    """What the fake hears in ``audio``: the words its bytes spell as UTF-8, else its size."""
    words = _WORD.findall(audio.decode("utf-8", "ignore"))
    return " ".join(words) if words else f"({len(audio)} bytes of audio)"


def fake_embedding(text: str, dimension: int) -> list[float]:
    """Hash each word to 4 signed positions, sum, normalize (zero text → unit e0)."""
    vector = [0.0] * dimension
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=16).digest()
        for i in range(4):
            chunk = int.from_bytes(digest[4 * i:4 * i + 4], "little")
            vector[chunk % dimension] += 1.0 if (chunk >> 31) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


def _tokens(text: str) -> int:
    return len(_WORD.findall(text))


def provider_tokens(messages: list[dict[str, Any]]) -> int:
    """Roughly what a BPE tokenizer counts for ``messages``: four characters a token
    (at least one a word), plus a few per message for the chat format."""
    total = 0
    for m in messages:
        text = content_text(m.get("content", ""))
        total += max(math.ceil(len(text) / 4), _tokens(text)) + 4
        total += 85 * len(content_images(m.get("content")))  # a low-detail picture
    return total


class FakeLLM(FakeServer):
    """The fake provider. ``base_url`` is what ``MTDESK_<PROVIDER>_BASE_URL`` should be."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        dimension: int = 64,
        models: tuple[str, ...] = ("fake-chat", "fake-embed"),
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        context_tokens: int | dict[str, int] | None = None,
    ) -> None:
        super().__init__(host=host, port=port, latency_s=latency_s)
        self.context_tokens = context_tokens  # None: any prompt fits
        self.dimension = dimension
        self.models = models
        self.api_key = api_key  # when set, other keys answer 401
        self.requests: list[RecordedRequest] = []
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._gate: asyncio.Event | None = None
        self.waiting = 0  # calls held by hold(), not answered yet

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def fail_next(self, mode: int | str = 500, times: int = 1, *, model: str | None = None) -> None:
        """The next ``times`` chat/embedding calls (for ``model``, or any) fail this way.

        ``mode``: an HTTP status (429, 500, 503, …), ``"hang"`` or ``"malformed"``.
        """
        self._failures.append(_Failure(str(mode), times, model))

    def hold(self) -> None:
        """From now on, calls are recorded but not answered until :meth:`release`."""
        if self._gate is None:
            self._gate = asyncio.Event()

    def release(self) -> None:
        """Answer the held calls (and stop holding new ones)."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def reset(self) -> None:
        self.requests.clear()
        self._failures.clear()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._h_chat)
        app.router.add_post("/v1/embeddings", self._h_embeddings)
        app.router.add_post("/v1/audio/transcriptions", self._h_transcriptions)
        app.router.add_get("/v1/models", self._h_models)
        app.router.add_get("/_fake/requests", self._h_requests)
        app.router.add_post("/_fake/fail", self._h_fail)
        self.add_control_routes(app)
        return app

    # --- shared steps ---------------------------------------------------------------
    def _take_failure(self, model: str | None) -> _Failure | None:
        for failure in self._failures:
            if failure.remaining > 0 and (failure.model is None or failure.model == model):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _key(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        return header[len("Bearer "):] if header.startswith("Bearer ") else None

    async def _begin(self, request: web.Request, record: RecordedRequest) -> web.Response | None:
        """Record, wait, apply injected failures; a Response means "answer this instead"."""
        self.requests.append(record)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        gate = self._gate
        if gate is not None:
            self.waiting += 1
            try:
                await gate.wait()
            finally:
                self.waiting -= 1
        if self.api_key is not None and record.api_key != self.api_key:
            record.outcome = "401"
            return _error(401, "Incorrect API key provided", "invalid_api_key")
        failure = self._take_failure(record.model)
        if failure is None:
            return None
        record.outcome = failure.mode
        if failure.mode == "hang":
            await asyncio.sleep(HANG_S)
            return web.Response(status=504)
        if failure.mode == "malformed":
            return web.Response(status=200, body=b'{"id": "chatcmpl-x", "choices": [',
                                content_type="application/json")
        status = int(failure.mode)
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return _error(status, f"injected failure {status}", kind)

    def _over_context(
        self, model: str, messages: list[dict[str, Any]], max_tokens: object
    ) -> web.Response | None:
        window = self.context_tokens
        if isinstance(window, dict):
            window = window.get(model)
        if window is None:
            return None
        prompt = provider_tokens(messages)
        completion = max_tokens if isinstance(max_tokens, int) else 0
        if prompt + completion <= window:
            return None
        return _error(
            400,
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the "
            "completion). Please reduce the length of the messages or completion.",
            "context_length_exceeded",
        )

    # --- handlers -------------------------------------------------------------------
    async def _h_chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
            messages = list(body["messages"])
            model = str(body["model"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "messages and model are required", "invalid_request_error")
        stream = bool(body.get("stream"))
        params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        record = RecordedRequest(path=request.path, model=model, messages=messages,
                                 stream=stream, api_key=self._key(request), params=params,
                                 time=time.time(),
                                 images=[i for m in messages if isinstance(m, dict)
                                         for i in content_images(m.get("content"))])
        early = await self._begin(request, record)
        if early is not None:
            return early
        too_long = self._over_context(model, messages, body.get("max_tokens"))
        if too_long is not None:
            record.outcome = "400"
            return too_long
        text = fake_reply(model, messages)
        created = int(time.time())
        cid = f"chatcmpl-fake{next(self._ids)}"
        prompt_tokens = sum(_tokens(content_text(m.get("content", ""))) for m in messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(text),
                 "total_tokens": prompt_tokens + _tokens(text)}
        if not stream:
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage,
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        await response.write(chunk({"role": "assistant", "content": ""}, None))
        for piece in re.findall(r"\S+\s*", text):
            await response.write(chunk({"content": piece}, None))
        await response.write(chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _h_embeddings(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            raw = body["input"]
            model = str(body.get("model", "fake-embed"))
        except (ValueError, KeyError, TypeError):
            return _error(400, "input is required", "invalid_request_error")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw]
        dimension = int(body.get("dimensions") or self.dimension)
        record = RecordedRequest(path=request.path, model=model, input=inputs,
                                 api_key=self._key(request), time=time.time())
        early = await self._begin(request, record)
        if early is not None:
            return early
        data = [{"object": "embedding", "index": i, "embedding": fake_embedding(t, dimension)}
                for i, t in enumerate(inputs)]
        tokens = sum(_tokens(t) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _h_transcriptions(self, request: web.Request) -> web.Response:
        model: str | None = None
        audio: bytes | None = None
        filename = ""
        mime = ""
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "model":
                    model = (await part.text()).strip()
                elif part.name == "file":
                    filename = part.filename or ""
                    mime = part.headers.get("Content-Type", "")
                    audio = bytes(await part.read())
        except (ValueError, KeyError, AssertionError):
            return _error(400, "a multipart body with file and model is required",
                          "invalid_request_error")
        if not model or audio is None:
            return _error(400, "file and model are required", "invalid_request_error")
        text = fake_transcript(audio)
        record = RecordedRequest(path=request.path, model=model, input=[text],
                                 api_key=self._key(request), time=time.time(),
                                 params={"filename": filename, "mime_type": mime,
                                         "size": len(audio)})
        early = await self._begin(request, record)
        if early is not None:
            return early
        return web.json_response({"text": text})

    @property
    def transcription_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/audio/transcriptions")]

    async def _h_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "mtdesk-fake"}
            for m in self.models]})

    async def _h_requests(self, request: web.Request) -> web.Response:
        try:
            since = max(0, int(request.query.get("since", "0")))
        except ValueError:
            since = 0
        return web.json_response([asdict(r) for r in self.requests[since:]])

    async def _h_fail(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.fail_next(data.get("mode", 500), int(data.get("times", 1)), model=data.get("model"))
        return web.json_response({"ok": True})



def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": kind}},
        status=status,
    )


def spawn_llm(*, latency_ms: float = 300.0, dimension: int = 64) -> FakeProcess:
    """Run the fake LLM in a child process; its base URL is ``root_url + '/v1'``."""
    return spawn_fake("mtdesk.fakes.llm", "--latency-ms", str(latency_ms),
                      "--dimension", str(dimension))


def main(argv: list[str] | None = None) -> None:
    parser = process_arguments("Fake OpenAI-compatible LLM (chat, streaming, embeddings)")
    parser.add_argument("--dimension", type=int, default=64, help="embedding dimension")
    args = parser.parse_args(argv)
    fake = FakeLLM(latency_s=args.latency_ms / 1000.0, dimension=args.dimension,
                   host=args.host, port=args.port)
    asyncio.run(fake.serve_forever())


if __name__ == "__main__":
    main()
