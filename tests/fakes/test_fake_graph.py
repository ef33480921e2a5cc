"""The fake Graph API behaves like the real one where our sender relies on it."""

from __future__ import annotations

import json
import urllib.request

import aiohttp

from mtdesk.fakes.graph import FakeGraphAPI, spawn_graph


async def _post(session: aiohttp.ClientSession, url: str, token: str, body: dict) -> tuple[int, dict]:
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def test_messenger_send_is_recorded_and_answered_with_a_message_id() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        g.register("PAGE1", "tok", channel="messenger")
        status, data = await _post(s, f"{g.base_url}/PAGE1/messages", "tok", {
            "recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE",
            "message": {"text": "hello", "metadata": "mtdesk:e1"}})
        assert status == 200
        assert data["recipient_id"] == "PSID1" and data["message_id"].startswith("m_")
        assert [(x.account_id, x.text, x.token) for x in g.sends] == [("PAGE1", "hello", "tok")]
        assert g.sends[0].message_id == data["message_id"]


async def test_whatsapp_send_answers_wamid_for_wa_id_and_business_scoped_user() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        body = {"messaging_product": "whatsapp", "type": "text", "text": {"body": "hi"}}
        status, data = await _post(s, f"{g.base_url}/PN1/messages", "t", {**body, "to": "4477"})
        assert status == 200 and data["messages"][0]["id"].startswith("wamid.")
        assert data["contacts"][0]["wa_id"] == "4477"
        status, data = await _post(s, f"{g.base_url}/PN1/messages", "t",
                                   {**body, "recipient": "US.123"})
        assert status == 200 and data["contacts"][0]["user_id"] == "US.123"
        assert len(g.sends) == 2


async def test_wrong_token_answers_190_with_graph_error_json() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        g.register("PAGE1", "right")
        status, data = await _post(s, f"{g.base_url}/PAGE1/messages", "wrong", {
            "recipient": {"id": "u"}, "message": {"text": "x"}})
        assert status == 401
        assert data["error"]["code"] == 190 and "fbtrace_id" in data["error"]
        assert g.sends == [] and len(g.attempts) == 1


async def test_injected_errors_are_answered_the_given_number_of_times() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        g.fail_next("PAGE1", 613, subcode=2018022, http_status=400, times=2)
        body = {"recipient": {"id": "u"}, "message": {"text": "x"}}
        first = await _post(s, f"{g.base_url}/PAGE1/messages", "t", body)
        second = await _post(s, f"{g.base_url}/PAGE1/messages", "t", body)
        third = await _post(s, f"{g.base_url}/PAGE1/messages", "t", body)
        assert first[0] == second[0] == 400
        assert first[1]["error"]["code"] == 613 and first[1]["error"]["error_subcode"] == 2018022
        assert third[0] == 200 and len(g.sends) == 1 and len(g.attempts) == 3


async def test_text_over_the_channel_limit_is_refused_with_100() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        g.register("IG1", "t", channel="instagram")
        status, data = await _post(s, f"{g.base_url}/IG1/messages", "t", {
            "recipient": {"id": "u"}, "message": {"text": "é" * 501}})  # 1,002 bytes
        assert status == 400 and data["error"]["code"] == 100
        status, _ = await _post(s, f"{g.base_url}/IG1/messages", "t", {
            "recipient": {"id": "u"}, "message": {"text": "é" * 500}})
        assert status == 200


async def test_media_metadata_then_download_need_the_token() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        g.register("PN1", "t", channel="whatsapp")
        g.add_media("MEDIA1", b"\x89PNG...", "image/png", account_id="PN1")
        auth = {"Authorization": "Bearer t"}
        async with s.get(f"{g.base_url}/MEDIA1", headers=auth) as r:
            meta = await r.json()
        assert meta["mime_type"] == "image/png" and meta["file_size"] == 7
        async with s.get(meta["url"], headers=auth) as r:
            assert await r.read() == b"\x89PNG..."
        async with s.get(meta["url"], headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401


def test_runs_as_its_own_process_and_reports_sends_over_http() -> None:
    with spawn_graph() as proc:
        base = proc.root_url + "/v25.0"
        req = urllib.request.Request(
            f"{base}/PAGE9/messages",
            data=json.dumps({"recipient": {"id": "u"}, "message": {"text": "ping"}}).encode(),
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 200
        with urllib.request.urlopen(proc.root_url + "/_fake/sends") as r:
            sends = json.loads(r.read())
        assert [(x["account_id"], x["body"]["message"]["text"]) for x in sends] == [("PAGE9", "ping")]


async def test_on_send_sees_each_accepted_send_and_since_skips_old_ones() -> None:
    seen: list[str | None] = []
    async with FakeGraphAPI(on_send=lambda s: seen.append(s.text)) as g, aiohttp.ClientSession() as s:
        g.fail_next("P", 1)
        for text in ("a", "b", "c"):
            await _post(s, f"{g.base_url}/P/messages", "t", {"recipient": {"id": "u"}, "message": {"text": text}})
        async with s.get(f"{g.root_url}/_fake/sends?since=1") as r:
            later = [x["body"]["message"]["text"] for x in await r.json()]
    assert seen == ["b", "c"] and later == ["c"]


async def test_attachment_urls_serve_real_bytes_until_they_expire() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as session:
        fresh = g.add_attachment(b"\xff\xd8 picture", "image/jpeg", expires_s=60)
        stale = g.add_attachment(b"\xff\xd8 old", "image/jpeg", expires_s=-1)
        async with session.get(fresh) as r:  # no token: the signed address is enough
            assert r.status == 200 and await r.read() == b"\xff\xd8 picture"
            assert r.headers["Content-Type"] == "image/jpeg"
        async with session.get(stale) as r:
            assert r.status == 403 and "expired" in await r.text()
        g.fail_next_download(times=1, status=503)
        async with session.get(fresh) as r:
            assert r.status == 503
        async with session.get(fresh) as r:
            assert r.status == 200
        assert len(g.downloads) == 2
