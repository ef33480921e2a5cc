"""Whatever Meta (or anyone) posts, the webhook never answers 5xx while Redis is up."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from gateway_support import APP_SECRET, make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtdesk.cli.compose import build_app
from mtdesk.gateway.signature import sign


class LiveGateway:
    """The gateway on a real port, in its own thread and loop (hypothesis tests are sync)."""

    def __init__(self, redis_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, args=(redis_url,), daemon=True)
        self.port = 0

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        assert self._ready.wait(10), "gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self, redis_url: str) -> None:
        self._loop.run_until_complete(self._serve(redis_url))
        self._loop.close()

    async def _serve(self, redis_url: str) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(build_app(make_settings(redis_url)), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


@pytest.fixture
def conn(redis_url: str) -> Iterator[http.client.HTTPConnection]:
    with LiveGateway(redis_url) as gw:
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        yield c
        c.close()


def post(conn: http.client.HTTPConnection, body: bytes, signature: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    conn.request("POST", "/webhooks/meta", body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    return resp.status


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["id", "time", "messaging", "changes", "sender", "recipient", "timestamp", "message",
          "mid", "text", "attachments", "type", "payload", "is_echo", "app_id", "reaction", "read",
          "delivery", "postback", "field", "value", "messages", "statuses", "contacts", "from",
          "from_user_id", "wa_id", "user_id", "metadata", "phone_number_id", "errors", "interactive",
          "image", "location", "latitude", "context", "status", "recipient_id", "is_deleted", "url"]
meta_like: st.SearchStrategy[Any] = st.recursive(
    json_values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=6),
    max_leaves=40,
)
envelopes = st.fixed_dictionaries(
    {"object": st.sampled_from(["page", "instagram", "whatsapp_business_account", "user", ""]),
     "entry": st.lists(meta_like, max_size=3)}
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.binary(max_size=2000), signed=st.booleans())
def test_arbitrary_bytes_never_5xx(conn: http.client.HTTPConnection, body: bytes, signed: bool) -> None:
    status = post(conn, body, sign(body, APP_SECRET) if signed else None)
    assert status == (200 if signed else 403)


@FUZZ
@given(value=json_values | envelopes)
def test_arbitrary_signed_json_is_acknowledged(conn: http.client.HTTPConnection, value: Any) -> None:
    body = json.dumps(value).encode()
    assert post(conn, body, sign(body, APP_SECRET)) == 200


@FUZZ
@given(header=st.text(max_size=80))
def test_arbitrary_signature_headers_are_refused(conn: http.client.HTTPConnection, header: str) -> None:
    body = b'{"object":"page","entry":[]}'
    # A non-ASCII header arrives as its UTF-8 bytes; CR/LF/NUL cannot be sent at all.
    raw = header.encode("utf-8").decode("latin-1")
    raw = "x" + raw.replace("\r", "").replace("\n", "").replace("\x00", "").strip()
    status = post(conn, body, raw)
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in raw):
        assert status == 400  # aiohttp's parser refuses control characters before we see them
    else:
        assert status == 403


def test_a_tab_inside_the_header_is_a_plain_refusal(conn: http.client.HTTPConnection) -> None:
    assert post(conn, b"{}", "sha256=\t" + "0" * 64) == 403
