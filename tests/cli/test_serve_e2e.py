"""`mtdesk serve` as an operator runs it: Ray and the actors, then the HTTP server. A
business provisioned through the admin API gets its customer answered once, and the
whole process group stopping (systemd, Ctrl-C) ends it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp
import pytest
from cryptography.fernet import Fernet

from mtdesk.fakes.graph import FakeGraphAPI
from mtdesk.fakes.meta import meta_json, sign, text_payload

SECRET = "serve-e2e-secret"
PAGE = "112233445566778"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_serve(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`mtdesk serve` in a process group of its own, its output in a file."""
    log = open(cwd / "serve.log", "wb")  # noqa: SIM115 - the test closes it
    proc = subprocess.Popen([sys.executable, "-m", "mtdesk", "serve"], env=env, cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


async def _until(check, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


@pytest.mark.ray
async def test_serve_answers_a_provisioned_page_once_and_stops_on_sigterm(
    redis_url: str, redis, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    async with FakeGraphAPI() as graph, aiohttp.ClientSession() as http:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
        env.update(
            MTDESK_REDIS_URL=redis_url, MTDESK_PORT=str(port), MTDESK_META_APP_SECRET=SECRET,
            MTDESK_META_VERIFY_TOKEN="vt", MTDESK_ADMIN_TOKEN="operator-token-of-at-least-32-characters",
            MTDESK_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
            MTDESK_GRAPH_API_BASE=graph.base_url, MTDESK_DATA_DIR=str(tmp_path / "data"),
            MTDESK_SHARDS="2", MTDESK_PARTITIONS="8", MTDESK_KB_EMBEDDER="lexical",
        )
        proc, log = _start_serve(env, tmp_path)
        try:
            async def ready() -> bool:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    async with http.get(f"{base}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await _until(ready)
            op = {"Authorization": "Bearer operator-token-of-at-least-32-characters"}
            await _sees_where_every_actor_runs(http, base, op, env, tmp_path)
            async with http.post(f"{base}/admin/api/v1/tenants", headers=op,
                                 json={"name": "Shop", "email": "s@shop.test"}) as r:
                key = (await r.json())["api_key"]
            tenant = {"Authorization": f"Bearer {key}"}
            graph.register(PAGE, "page-token", channel="messenger")
            async with http.post(f"{base}/admin/api/v1/channels", headers=tenant, json={
                    "channel": "messenger", "account_id": PAGE, "access_token": "page-token"}) as r:
                assert r.status == 201
            async with http.post(f"{base}/admin/api/v1/knowledge", headers=tenant, json={
                    "qa": [{"q": "When are you open?", "a": "Daily from 9 to 5."}]}) as r:
                assert r.status in (200, 201, 202)

            async def kb_ready() -> bool:
                async with http.get(f"{base}/admin/api/v1/knowledge", headers=tenant) as r:
                    return all(s["status"] == "ready" for s in (await r.json())["sources"])

            await _until(kb_ready)
            body = meta_json(text_payload("messenger", PAGE, "6543210987654321",
                                          "when are you open?",
                                          timestamp_ms=int(time.time() * 1000)))
            headers = {"X-Hub-Signature-256": sign(body, SECRET)}
            for _ in range(3):  # Meta retries: answered once all the same
                async with http.post(f"{base}/webhooks/meta", data=body, headers=headers) as r:
                    assert r.status == 200

            async def answered() -> bool:
                return len(graph.sends) >= 1

            await _until(answered)
            await asyncio.sleep(1.0)
            assert len(graph.sends) == 1
            assert "Daily from 9 to 5." in (graph.sends[0].text or "")
            await _reshards_retrieval_live(http, base, op, graph)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the whole group, as systemd does
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError("serve did not stop within 60 s of SIGTERM") from None
            finally:
                log.close()
        assert code in (0, -signal.SIGTERM), code


async def _reshards_retrieval_live(http, base, op, graph) -> None:  # type: ignore[no-untyped-def]
    """An operator asks for 2 retrieval shards: a new generation serves, the old actor is
    stopped, and the next customer is answered from the knowledge as before."""
    api = f"{base}/admin/api/v1/cluster/shards"
    async with http.post(api, headers=op, json={"conversation": 2, "retrieval": 2}) as r:
        assert r.status == 202, await r.text()
        body = await r.json()
    assert body["requested_retrieval"] == 2
    assert (body["retrieval"]["generation"], body["retrieval"]["shards"]) == (0, 1)

    async def switched() -> bool:
        async with http.get(api, headers=op) as r:
            layout = (await r.json())["retrieval"]
        return (layout["generation"], layout["shards"]) == (1, 2)

    await _until(switched)

    async def reported() -> bool:
        async with http.get(f"{base}/admin/api/v1/cluster", headers=op) as r:
            report = await r.json()
        names = sorted(a["name"] for n in report["nodes"] for a in n["actors"]
                       if a["kind"] == "retrieval_shard")
        return names == ["mtdesk-retrieval-g1-0", "mtdesk-retrieval-g1-1"]

    await _until(reported)
    await asyncio.sleep(11.0)  # the old generation's grace period: it is gone now
    body = meta_json(text_payload("messenger", PAGE, "6543210987654322", "when are you open?",
                                  timestamp_ms=int(time.time() * 1000)))
    async with http.post(f"{base}/webhooks/meta", data=body,
                         headers={"X-Hub-Signature-256": sign(body, SECRET)}) as r:
        assert r.status == 200

    async def answered_again() -> bool:
        return len(graph.sends) >= 2

    await _until(answered_again)
    assert "Daily from 9 to 5." in (graph.sends[1].text or "")


async def _sees_where_every_actor_runs(http, base, op, env, cwd) -> None:  # type: ignore[no-untyped-def]
    """The operator's view of the running deployment: the API, /metrics, `mtdesk status`."""
    async with http.get(f"{base}/admin/api/v1/cluster", headers=op) as r:
        assert r.status == 200
        report = await r.json()
    (node,) = [n for n in report["nodes"] if n["actors"]]  # one local Ray node
    assert node["alive"] and node["node_id"] and node["address"]
    kinds = sorted(a["kind"] for a in node["actors"])
    assert kinds == ["conversation_shard", "conversation_shard", "deletion", "retention",
                     "retrieval_shard"]
    shards = [a for a in node["actors"] if a["kind"] == "conversation_shard"]
    assert sorted(p for a in shards for p in a["partitions"]) == list(range(8))
    assert all(a["pending"] >= 0 and a["lag_ms"] >= 0 for a in shards)
    async with http.get(f"{base}/admin/api/v1/cluster") as r:
        assert r.status == 401
    async with http.get(f"{base}/metrics") as r:
        metrics = await r.text()
    assert 'mtdesk_cluster_actor_up{kind="conversation_shard",name="mtdesk-shard-1"' in metrics
    assert 'mtdesk_cluster_nodes{alive="true"} 1.0' in metrics
    # In a thread, so this test's event loop (its HTTP session) is not blocked meanwhile.
    status = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "mtdesk", "status"], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "1 node(s) alive" in status.stdout and "mtdesk-shard-0" in status.stdout
    assert "mtdesk-retrieval-0" in status.stdout and "mtdesk-deleter" in status.stdout
