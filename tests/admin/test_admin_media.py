"""The files customers sent, as the inbox reads them: the conversation's messages name
each file (and a voice note's transcript), the file downloads for its own tenant only,
and nothing a customer sent runs in the console's origin."""

from __future__ import annotations

from admin_harness import bearer, client_fixture, op  # noqa: F401
from aiohttp.test_utils import TestClient

from mtdesk.core.appkeys import SETTINGS
from mtdesk.core.history import MEDIA_KIND, MessageStore, StoredMessage
from mtdesk.core.media import MediaRecord, MediaStore
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher

API = "/admin/api/v1"
CONV = "whatsapp:1065:15551234"


async def tenant(client: TestClient, name: str) -> tuple[str, str]:
    r = await client.post(f"{API}/tenants", json={"name": name, "email": f"o@{name}.example"},
                          headers=op())
    body = await r.json()
    return body["id"], body["api_key"]


async def sent(client: TestClient, redis: Redis, tid: str, content: bytes, mime: str,
               kind: str, transcript: str | None = None) -> str:
    settings = client.server.app[SETTINGS]
    store = MediaStore(redis, cipher=TenantCipher.from_settings(redis, settings))
    kept = await store.put(tid, CONV, "wamid.1", 0, content, mime, now_ms=1000)
    await MessageStore(redis).append(tid, StoredMessage(
        direction="in", message_id="media:wamid.1", kind=MEDIA_KIND, channel="whatsapp",
        account_id="1065", user_id="15551234", timestamp_ms=1, reply_to="wamid.1",
        text=transcript, status="recorded",
        media=(MediaRecord(index=0, type=kind, mime_type=mime, size=kept.size,
                           sha256=kept.sha256, ref=kept.ref, transcript=transcript),)),
        now_ms=1000)
    return kept.ref


async def test_the_inbox_reads_the_transcript_and_downloads_the_file(
    client: TestClient, redis: Redis
) -> None:
    a_id, a_key = await tenant(client, "a")
    _b_id, b_key = await tenant(client, "b")
    voice = b"OggS where is my parcel"
    ref = await sent(client, redis, a_id, voice, "audio/ogg; codecs=opus", "audio",
                     transcript="where is my parcel")
    r = await client.get(f"{API}/conversations/{CONV}/messages", headers=bearer(a_key))
    [message] = (await r.json())["messages"]
    assert message["kind"] == "media" and message["text"] == "where is my parcel"
    assert message["media"][0]["ref"] == ref and message["media"][0]["size"] == len(voice)

    r = await client.get(f"{API}/conversations/{CONV}/media/{ref}", headers=bearer(a_key))
    assert r.status == 200 and await r.read() == voice
    # Not a picture: a download, never shown or sniffed by the browser.
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    # Another tenant's key finds nothing; a malformed ref is named.
    r = await client.get(f"{API}/conversations/{CONV}/media/{ref}", headers=bearer(b_key))
    assert r.status == 404
    r = await client.get(f"{API}/conversations/{CONV}/media/x", headers=bearer(a_key))
    assert r.status == 400 and "ref" in await r.text()


async def test_pictures_show_inline_but_html_never_does(client: TestClient, redis: Redis) -> None:
    a_id, a_key = await tenant(client, "a")
    ref = await sent(client, redis, a_id, b"\xff\xd8\xff picture", "image/jpeg", "image")
    r = await client.get(f"{API}/conversations/{CONV}/media/{ref}", headers=bearer(a_key))
    assert r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["Content-Disposition"] == "inline"
    c_id, c_key = await tenant(client, "c")
    ref = await sent(client, redis, c_id, b"<script>alert(1)</script>", "text/html", "document")
    r = await client.get(f"{API}/conversations/{CONV}/media/{ref}", headers=bearer(c_key))
    assert r.headers["Content-Type"] == "application/octet-stream"
