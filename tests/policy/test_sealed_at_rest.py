"""What customers write is unreadable at rest, and a deleted account's data stays
unreadable in the copies taken before it was deleted.

A realistic run against a redis-server of the test's own with the append-only file on
(fsync on every write): the gateway app takes signed webhooks (a Messenger message, a
WhatsApp message whose contact card names the customer), a conversation shard answers
them with the knowledge base (a Q&A source and an uploaded file) in the model's prompt,
through a fake Graph API and a fake OpenAI-compatible server (real local servers). Then
every Redis value, the AOF files and the data directory are searched for the words.

Then the account is deleted, after a copy of the AOF directory and of the data
directory was taken. The copy is restored into a second redis-server and read with what
remains: the live data keys open none of the deleted tenant's values (another tenant's
still open), and once the master key is rotated (data keys re-wrapped, the old master
key retired) not even the wrapped data key the copy itself holds opens.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "actors"))

from _privacy_world import dump_files, dump_redis  # noqa: E402
from keystore_server import KeyStoreServer  # noqa: E402
from shardkit import ACCOUNTS, desk, eventually  # noqa: E402

from mtdesk.actors.turns import decode_context  # noqa: E402
from mtdesk.cli.compose import build_app  # noqa: E402
from mtdesk.core import keys  # noqa: E402
from mtdesk.core.clock import SystemClock  # noqa: E402
from mtdesk.core.errors import DecryptionError  # noqa: E402
from mtdesk.core.history import MessageStore  # noqa: E402
from mtdesk.core.inbox import Inbox  # noqa: E402
from mtdesk.core.ports import BotConfig  # noqa: E402
from mtdesk.core.redis import Redis, connect  # noqa: E402
from mtdesk.core.sealing import KeyRing, TenantCipher  # noqa: E402
from mtdesk.core.secret import Secret  # noqa: E402
from mtdesk.core.tenants import Bots, Tenants  # noqa: E402
from mtdesk.gateway.signature import sign  # noqa: E402
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker  # noqa: E402
from mtdesk.policy.vault import generate_key  # noqa: E402
from mtdesk.retrieval.ingest import SEALED_FILE, KnowledgeService  # noqa: E402
from mtdesk.retrieval.search import local_retriever  # noqa: E402
from mtdesk.retrieval.store import KnowledgeStore  # noqa: E402

APP_SECRET = "sealed-test-app-secret"
MESSENGER_TEXT = "my locker code is 4471 and I live at 12 Juniper Lane"
WHATSAPP_TEXT = "please deliver to the blue door behind the bakery"
CUSTOMER_NAME = "Ottilie Quartermaine"
COMMENT_TEXT = "does the oat flat white come in a litre jug"
COMMENTER = "ottilie.roasts.beans"
QA_ANSWER = "Members get the Tuesday espresso tasting for free"
FILE_TEXT = "The spare key hangs under the third floor fire extinguisher"
PROMPT = "You are Juniper Coffee's assistant; never mention the supplier Brightbean"
OTHER_PROMPT = "Second tenant's confidential greeting about the Ravensworth merger"
NEEDLES = [MESSENGER_TEXT, WHATSAPP_TEXT, CUSTOMER_NAME, COMMENT_TEXT, COMMENTER, QA_ANSWER, FILE_TEXT, PROMPT,
           OTHER_PROMPT, "locker code", "Juniper Lane", "blue door", "espresso tasting",
           "fire extinguisher", "Brightbean"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server with the append-only file on, fsynced at every write, in ``directory``
    (it loads the AOF it finds there: a restored copy)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            # Listening, and done loading what it found (a restored copy): PONG, not LOADING.
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return proc, port
            time.sleep(0.05)
        except OSError:
            assert proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("redis-server did not listen")


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    directory = tmp_path / "redis"
    directory.mkdir()
    proc, port = _redis_server(directory)
    try:
        yield f"redis://127.0.0.1:{port}/0", directory
    finally:
        proc.terminate()
        proc.wait(10)


def _aof(directory: Path) -> list[tuple[str, bytes]]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert any("aof" in p.name for p in files), "no append-only file was written"
    return [(str(p), p.read_bytes()) for p in files]


def _found(places: list[tuple[str, bytes]], needles: list[str]) -> list[str]:
    return [f"{n!r} in {place}" for place, blob in places for n in needles if n.encode() in blob]


def _messenger(mid: str, text: str) -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({"object": "page", "entry": [{"id": ACCOUNTS["messenger"], "time": now,
        "messaging": [{"sender": {"id": "PSID-77"}, "recipient": {"id": ACCOUNTS["messenger"]},
                       "timestamp": now, "message": {"mid": mid, "text": text}}]}]}).encode()


def _whatsapp(wamid: str, text: str, name: str) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA-1",
        "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001003",
                         "phone_number_id": ACCOUNTS["whatsapp"]},
            "contacts": [{"profile": {"name": name}, "wa_id": "15550009876"}],
            "messages": [{"from": "15550009876", "id": wamid, "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": text}}]}}]}]}).encode()


def _instagram_comment(comment_id: str, text: str, username: str) -> bytes:
    """A comment on the business's post, as Meta's Instagram ``comments`` webhook
    carries it (Webhook notification examples, "Comments payload")."""
    return json.dumps({"object": "instagram", "entry": [{
        "id": ACCOUNTS["instagram"], "time": int(time.time()), "changes": [{
            "field": "comments", "value": {
                "id": comment_id, "from": {"id": "IGSID-31", "username": username},
                "text": text, "media": {"id": "17918195224117851",
                                        "media_product_type": "FEED"}}}]}]}).encode()


async def _post(client: TestClient, body: bytes) -> None:
    response = await client.post("/webhooks/meta", data=body, headers={
        "X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"})
    assert response.status == 200, await response.text()


async def _sealed_values_of(restored: Redis, tenant: str, cipher: TenantCipher) -> list[str]:
    """What of ``tenant`` in ``restored`` opens with ``cipher`` (each kind tried)."""
    opened: list[str] = []
    store = MessageStore(restored, cipher=cipher)
    async for conv in store.iter_conversations(tenant):
        try:
            texts = [m.text for m in await store.read(tenant, conv, join_status=False)]
            opened += [f"history {conv}: {t}" for t in texts if t]
        except DecryptionError:
            pass
        raw = await restored.get(keys.context(tenant, conv))
        if raw is not None:
            try:
                ctx = decode_context(raw, await cipher.key(tenant, create=False), conv)
                opened += [f"context {conv}: {t.content}" for t in ctx.turns]
            except DecryptionError:
                pass
    kb = KnowledgeStore(restored, cipher=cipher)
    try:
        chunk_ids = (await kb.all_chunk_ids(tenant)).tolist()
        opened += [f"chunk: {c.text}" for c in await kb.chunks(tenant, chunk_ids) if c]
    except DecryptionError:
        pass
    try:
        bot = await Bots(restored, cipher).get(tenant)
        if bot.system_prompt:
            opened.append(f"bot: {bot.system_prompt}")
    except DecryptionError:
        pass
    return opened


def _files(directory: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in directory.rglob("*") if p.is_file()]


@pytest.mark.parametrize("keys_in", ["redis", "keystore"])
async def test_nothing_customers_wrote_is_readable_at_rest_and_a_deleted_account_stays_unreadable(
    aof_redis: tuple[str, Path], tmp_path: Path, keys_in: str, request: pytest.FixtureRequest,
) -> None:
    redis_url, redis_dir = aof_redis
    data_dir = tmp_path / "data"
    redis = connect(redis_url)
    bot = BotConfig(provider="openai", model="gpt-test", system_prompt=PROMPT, grounding="general",
                    min_score=0.0)
    keystore: KeyStoreServer | None = None
    if keys_in == "keystore":  # MTDESK_KEYSTORE_URL: a redis-server of its own, AOF on
        keystore = request.getfixturevalue("keystore_server")
    async with desk(redis, redis_url, bot=bot, data_dir=str(data_dir), kb_embedder="lexical",
                    meta_app_secrets=(Secret(APP_SECRET),),
                    keystore_url=keystore.url if keystore else "") as d:
        tid = d.tenant_id
        cipher = d.cipher()
        # A second tenant, whose data must stay readable through all of this.
        other, _key = await Tenants(redis, SystemClock()).create("Ravens Ltd", "ops@ravens.test")
        await Bots(redis, cipher).put(other.id, BotConfig(system_prompt=OTHER_PROMPT))

        # Knowledge: a Q&A pair and an uploaded file, ingested by the real job.
        store = KnowledgeStore(redis, cipher=cipher)
        service = KnowledgeService(store, d.settings)
        await service.start(resume=False)
        try:
            qa = await service.add_qa(tid, [{"q": "Do members get the tasting?", "a": QA_ANSWER}])
            upload = await service.add_file(tid, "keys.txt", (FILE_TEXT + ".\n").encode(), "text/plain")
            for sid in (qa.id, upload.id):
                async def ready(sid: str = sid) -> bool:
                    return (await service.get(tid, sid)).status == "ready"
                await eventually(ready, within=60)
        finally:
            await service.stop()
        retriever = local_retriever(store, d.settings)

        await retriever.refresh(tid)  # its index as the ingest job published it
        shard = await d.shard(retriever=retriever)
        await shard.start()

        app = build_app(d.settings, redis=redis)
        async with TestClient(TestServer(app)) as client:
            await _post(client, _messenger("m.sealed.1", MESSENGER_TEXT + " Do members get the tasting?"))
            await _post(client, _whatsapp("wamid.SEALED1", WHATSAPP_TEXT, CUSTOMER_NAME))
            await _post(client, _instagram_comment("17865799348089931", COMMENT_TEXT, COMMENTER))
            # Both answered: two replies (read marks and typing are sends too, so the
            # count of sends alone can be reached before the second customer's answer).
            await eventually(lambda: len(d.llm.chat_requests) >= 2 and sum(
                1 for s in d.graph.sends if s.action is None and s.status == 200) >= 2, within=30)
        await eventually(lambda: shard.handled == 3)
        # The inbox names the WhatsApp customer (their profile name, written by the shard
        # off the answer's path, sealed on the card), before the shard stops.
        inbox = Inbox(redis, cipher)
        wa_conv = f"whatsapp:{ACCOUNTS['whatsapp']}:15550009876"

        async def named() -> bool:
            card = await inbox.card(tid, wa_conv)
            return card is not None and card.name == CUSTOMER_NAME
        await eventually(named)
        await shard.stop(drain_timeout_s=5)

        # The words did travel: the model saw the message and the knowledge passage, the
        # console (the message store with the key) shows the message.
        prompts = json.dumps([r.messages for r in d.llm.chat_requests])
        assert "locker code" in prompts and QA_ANSWER in prompts and PROMPT in prompts
        conv = f"messenger:{ACCOUNTS['messenger']}:PSID-77"
        shown = await d.store().read(tid, conv)
        assert shown[0].text is not None and MESSENGER_TEXT in shown[0].text
        commented = await d.store().read(tid, f"instagram:{ACCOUNTS['instagram']}:IGSID-31")
        assert [(m.kind, m.user_name, m.text) for m in commented] == [
            ("comment", COMMENTER, COMMENT_TEXT)]
        assert [p.text for p in await retriever.search(tid, "spare key fire extinguisher", 3)]

        # At rest: no value of Redis, no byte of its append-only file, no file of the data
        # directory holds any of it.
        assert _found(await dump_redis(redis), NEEDLES) == []
        assert _found(_aof(redis_dir), NEEDLES) == []
        assert _found(_aof(redis_dir), [tid, "PSID-77"])  # the AOF is there, ids in the clear
        assert _found(dump_files(data_dir), NEEDLES) == []

        # Copies taken before the account is deleted (an operator's backup).
        backup = tmp_path / "backup"
        shutil.copytree(redis_dir, backup / "redis")
        shutil.copytree(data_dir, backup / "data")

        live = d.cipher()  # the service's data keys (in the key store when configured)
        store_of_keys = live.keystore or redis
        wrapped = await store_of_keys.get(keys.data_key(tid))
        assert wrapped is not None
        if keystore is not None:
            # The main Redis, its AOF and the data directory hold no data key at all.
            assert [k async for k in redis.scan_iter(match="*:dk")] == []
            assert _found(_aof(redis_dir) + dump_files(data_dir), [wrapped.decode()]) == []
            assert _found(_files(keystore.directory), [wrapped.decode()])

        scheduled = await DeletionJobs(redis, SystemClock(), cipher=live).schedule_account(tid)
        assert await store_of_keys.get(keys.data_key(tid)) is None  # destroyed before anything else
        worker = DeletionWorker(redis, d.settings, SystemClock(), settle_poll_s=0.05)
        assert await asyncio.wait_for(worker.run_once(), 60) == 1
        assert (await DeletionJobs(redis, SystemClock()).get(scheduled.id)).status == "done"
        if keystore is not None:
            # The key store's own files (its AOF is rewritten after a shredding) no longer
            # hold the destroyed key either.
            assert keystore.directory is not None
            await eventually(lambda: not _found(_files(keystore.directory), [wrapped.decode()]),
                             within=30)

        proc, port = _redis_server(backup / "redis")  # the backup, restored
        restored = connect(f"redis://127.0.0.1:{port}/0")
        try:
            assert await restored.exists(keys.history(tid, conv))  # the copy holds the data
            # With the keys that remain (the live data keys), none of it opens; the other
            # tenant's values in the same copy still do.
            remaining = d.cipher()  # the master key, and the key store, as they are now
            assert await _sealed_values_of(restored, tid, remaining) == []
            assert await _sealed_values_of(restored, other.id, remaining) == [f"bot: {OTHER_PROMPT}"]
            upload_copy = [p for p in (backup / "data").rglob("keys.txt")]
            assert upload_copy and FILE_TEXT.encode() not in upload_copy[0].read_bytes()
            with pytest.raises(DecryptionError):
                await remaining.open(tid, "kb_upload", upload.id,
                                     upload_copy[0].read_bytes().removeprefix(SEALED_FILE))

            old_ring = KeyRing(d.settings.encryption_keys)
            if keystore is not None:
                # The copy holds no data key: with the master key itself, read against
                # the copy alone, nothing of the deleted tenant opens either.
                assert [k async for k in restored.scan_iter(match="*:dk")] == []
                assert await _sealed_values_of(restored, tid, TenantCipher(restored, old_ring)) == []
            else:
                # The copy also holds the tenant's data key, wrapped by the master key: with
                # the master key it opens (the honest limit of a backup without a key store),
                # until the master key that wrapped it is retired: rotate (re-wrap the live
                # data keys under a new master key), then drop the old one.
                assert await _sealed_values_of(restored, tid, TenantCipher(restored, old_ring))
                new_key = Secret(generate_key())
                report = await TenantCipher(redis, KeyRing([new_key, *d.settings.encryption_keys])).rewrap()
                assert report.rewrapped == 1 and report.failed == 0  # the other tenant's key
                new_ring = KeyRing([new_key])
                with pytest.raises(DecryptionError, match="not in MTDESK_ENCRYPTION_KEYS"):
                    await TenantCipher(restored, new_ring).key(tid, create=False)
                assert await _sealed_values_of(restored, tid, TenantCipher(restored, new_ring)) == []
                # The live service reads the other tenant with the new master key alone.
                assert (await Bots(redis, TenantCipher(redis, new_ring)).get(other.id)).system_prompt \
                    == OTHER_PROMPT
        finally:
            await restored.aclose()
            proc.terminate()
            proc.wait(10)
    await redis.aclose()

