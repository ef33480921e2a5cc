"""The privacy interfaces over HTTP: Meta's deletion/deauthorize callbacks with their
status page, and the admin API's erasure, export, restriction and retention routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _privacy_world import World, build_world, make_settings, where_found
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mtdesk.admin.app import setup_admin
from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels
from mtdesk.gateway.meta_deletion import setup_meta_deletion
from mtdesk.policy.erasure.jobs import DeletionWorker
from mtdesk.policy.signed_request import make_signed_request
from mtdesk.policy.vault import TokenVault

OPERATOR = "operator-token-for-privacy-tests"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, admin_token=Secret(OPERATOR))


@pytest.fixture
async def world(redis: Redis, settings: Settings) -> World:
    return await build_world(redis, settings, FakeClock())


@pytest.fixture
async def client(redis: Redis, settings: Settings) -> AsyncIterator[TestClient]:
    app = web.Application()
    app[REDIS], app[SETTINGS], app[CLOCK] = redis, settings, FakeClock()
    setup_meta_deletion(app)
    setup_admin(app)
    async with TestClient(TestServer(app)) as c:
        yield c


async def drain(redis: Redis, settings: Settings) -> None:
    worker = DeletionWorker(redis, settings, FakeClock())
    while await worker.run_once():
        pass


def signed(user_id: str, secret: str = "app-secret-now", **extra: object) -> dict[str, str]:
    payload = {"algorithm": "HMAC-SHA256", "issued_at": 1_750_000_000, "user_id": user_id}
    payload.update(extra)
    return {"signed_request": make_signed_request(payload, secret)}


def bearer(key: Secret | str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.reveal() if isinstance(key, Secret) else key}"}


# --- Meta callbacks ----------------------------------------------------------------------
async def test_meta_data_deletion_answers_url_and_code_and_the_page_shows_completion(
    client: TestClient, redis: Redis, world: World, settings: Settings
) -> None:
    w = world
    resp = await client.post("/webhooks/meta/data-deletion", data=signed(w.asid))
    assert resp.status == 200
    body = await resp.json()
    code = body["confirmation_code"]
    assert body["url"] == f"https://desk.example.com/webhooks/meta/data-deletion/status/{code}"
    path = body["url"].removeprefix("https://desk.example.com")

    page = await client.get(path, headers={"Accept": "application/json"})
    assert (await page.json())["status"] == "queued"

    await drain(redis, settings)
    page = await client.get(path, headers={"Accept": "application/json"})
    status = await page.json()
    assert status["status"] == "done" and status["finished_ms"] and status["counts"]["messages"] == 6
    html = await (await client.get(path)).text()
    assert "Your data has been deleted." in html and code in html
    for secret in (w.asid, w.a.id, "1110001", w.alice.user_id):
        assert secret not in html and secret not in json.dumps(status)
    # The Page this person connected is gone with its conversations; the rest stays.
    gone = ["1110001", w.tokens["1110001"], w.asid, *w.alice.identifiers(), *w.carol.identifiers()]
    assert await where_found(redis, w.data_dir, gone) == []
    assert await where_found(redis, w.data_dir, [w.bob.text, w.dave.text])


@pytest.mark.parametrize("form, status, problem", [
    ({"signed_request": make_signed_request(
        {"algorithm": "HMAC-SHA256", "user_id": "7770001"}, "not-our-secret")}, 403, "signature"),
    ({"signed_request": "garbage"}, 400, "two base64url parts"),
    ({}, 400, "missing"),
    ({"signed_request": make_signed_request(
        {"algorithm": "HMAC-SHA1", "user_id": "7770001"}, "app-secret-now")}, 400, "algorithm"),
])
async def test_meta_callbacks_refuse_bad_signed_requests(
    client: TestClient, redis: Redis, world: World, form: dict[str, str], status: int, problem: str
) -> None:
    for path in ("/webhooks/meta/data-deletion", "/webhooks/meta/deauthorize"):
        resp = await client.post(path, data=form)
        assert resp.status == status
        err = (await resp.json())["error"]
        assert err["field"] == "signed_request" and problem in err["message"]
    assert await redis.xlen(keys.DELETION_JOBS) == 0
    assert await redis.hget(keys.channel(world.a.id, world.a.channels["1110001"]), "token")


async def test_a_request_signed_with_the_previous_app_secret_is_accepted(
    client: TestClient, world: World
) -> None:
    resp = await client.post("/webhooks/meta/data-deletion",
                             data=signed(world.asid, "app-secret-before"))
    assert resp.status == 200


async def test_deauthorize_revokes_tokens_at_once_then_erases(
    client: TestClient, redis: Redis, world: World, settings: Settings
) -> None:
    w = world
    cid = w.a.channels["1110001"]
    resp = await client.post("/webhooks/meta/deauthorize", data=signed(w.asid))
    assert resp.status == 200
    assert (await resp.json())["disconnected"] == 1
    # Before any worker ran: no token, no routing, channel marked disconnected.
    assert await redis.hget(keys.channel(w.a.id, cid), "token") is None
    assert await redis.hget(keys.channel(w.a.id, cid), "status") == b"disconnected"
    assert not await redis.exists(keys.account("messenger", "1110001"))
    await drain(redis, settings)
    assert await where_found(redis, w.data_dir, ["1110001", *w.alice.identifiers()]) == []


@pytest.mark.parametrize("issued_at, problem", [
    (None, "issued_at"),
    (1_750_000_000 - 2 * 365 * 24 * 3600, "too old"),  # two years old: a captured request
])
async def test_meta_callbacks_refuse_a_signed_request_that_is_not_recent(
    client: TestClient, redis: Redis, world: World, issued_at: int | None, problem: str
) -> None:
    payload: dict[str, object] = {"algorithm": "HMAC-SHA256", "user_id": world.asid}
    if issued_at is not None:
        payload["issued_at"] = issued_at
    form = {"signed_request": make_signed_request(payload, "app-secret-now")}
    for path in ("/webhooks/meta/data-deletion", "/webhooks/meta/deauthorize"):
        resp = await client.post(path, data=form)
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["field"] == "signed_request" and problem in err["message"]
    assert await redis.xlen(keys.DELETION_JOBS) == 0
    assert await redis.hget(keys.channel(world.a.id, world.a.channels["1110001"]), "status") == b"connected"


@pytest.mark.parametrize("path", ["/webhooks/meta/data-deletion", "/webhooks/meta/deauthorize"])
async def test_the_same_signed_request_posted_three_times_makes_one_job(
    client: TestClient, redis: Redis, world: World, path: str
) -> None:
    form = signed(world.asid)
    codes = []
    for _ in range(3):
        resp = await client.post(path, data=form)
        assert resp.status == 200
        codes.append((await resp.json())["confirmation_code"])
    assert len(set(codes)) == 1
    assert await redis.xlen(keys.DELETION_JOBS) == 1
    # Another request (a later one) is another job.
    other = await client.post(path, data=signed(world.asid, issued_at=1_750_000_060))
    assert (await other.json())["confirmation_code"] != codes[0]


async def test_a_replayed_deauthorize_leaves_a_channel_connected_again_since(
    client: TestClient, redis: Redis, world: World, settings: Settings
) -> None:
    w = world
    form = signed(w.asid)
    first = await client.post("/webhooks/meta/deauthorize", data=form)
    assert (await first.json())["disconnected"] == 1
    # The person adds the app again ten minutes later and reconnects the Page.
    later = FakeClock(1_750_000_600)
    channels = Channels(redis, later, TokenVault.from_settings(settings).encrypt)
    await channels.connect(w.a.id, "messenger", "1110001", "EAAG-new-page-token", connected_by=w.asid)
    replay = await client.post("/webhooks/meta/deauthorize", data=form)
    assert replay.status == 200
    assert (await replay.json())["disconnected"] == 0
    assert (await replay.json())["confirmation_code"] == (await first.json())["confirmation_code"]
    cid = w.a.channels["1110001"]
    assert await redis.hget(keys.channel(w.a.id, cid), "status") == b"connected"
    assert await redis.exists(keys.account("messenger", "1110001"))


async def test_an_unknown_confirmation_code_is_a_404(client: TestClient) -> None:
    resp = await client.get("/webhooks/meta/data-deletion/status/0123456789abcdef01234567")
    assert resp.status == 404
    resp = await client.get("/webhooks/meta/data-deletion/status/x?format=json")
    assert resp.status == 404


# --- admin API ---------------------------------------------------------------------------
async def test_account_deletion_answers_202_and_the_key_stops_working(
    client: TestClient, redis: Redis, world: World, settings: Settings
) -> None:
    w = world
    key = bearer(w.a.api_key)
    assert (await client.get("/admin/api/v1/tenant", headers=key)).status == 200
    resp = await client.delete("/admin/api/v1/account", headers=key)
    assert resp.status == 202
    body = await resp.json()
    assert body["job"]["kind"] == "account" and body["job"]["status"] == "queued"
    assert (await client.get("/admin/api/v1/tenant", headers=key)).status == 401
    assert (await client.get("/admin/api/v1/export", headers=key)).status == 401
    await drain(redis, settings)
    page = await client.get(body["status_url"].removeprefix("https://desk.example.com"),
                            params={"format": "json"})
    assert (await page.json())["status"] == "done"
    op = await client.get(f"/admin/api/v1/deletions/{body['job']['id']}", headers=bearer(OPERATOR))
    assert (await op.json())["status"] == "done"
    assert await where_found(redis, w.data_dir, [w.a.id, w.alice.text]) == []
    assert (await client.get("/admin/api/v1/tenant", headers=bearer(w.b.api_key))).status == 200


async def test_end_user_erasure_over_the_api_and_its_job_is_private_to_the_tenant(
    client: TestClient, redis: Redis, world: World, settings: Settings
) -> None:
    w = world
    resp = await client.delete(f"/admin/api/v1/users/messenger/{w.alice.user_id}",
                               headers=bearer(w.a.api_key))
    assert resp.status == 202
    job_id = (await resp.json())["job"]["id"]
    await drain(redis, settings)
    mine = await client.get(f"/admin/api/v1/deletions/{job_id}", headers=bearer(w.a.api_key))
    assert mine.status == 200 and (await mine.json())["status"] == "done"
    theirs = await client.get(f"/admin/api/v1/deletions/{job_id}", headers=bearer(w.b.api_key))
    assert theirs.status == 404
    assert await where_found(redis, w.data_dir, w.alice.identifiers()) == []
    bad = await client.delete("/admin/api/v1/users/telegram/1", headers=bearer(w.a.api_key))
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "channel"


async def test_channel_data_deletion_disconnects_now_and_erases(
    client: TestClient, redis: Redis, world: World, settings: Settings
) -> None:
    w = world
    cid = w.a.channels["2220002"]
    resp = await client.delete(f"/admin/api/v1/channels/{cid}/data", headers=bearer(w.a.api_key))
    assert resp.status == 202
    assert await redis.hget(keys.channel(w.a.id, cid), "token") is None
    await drain(redis, settings)
    assert await where_found(redis, w.data_dir, ["2220002", *w.bob.identifiers()]) == []
    missing = await client.delete("/admin/api/v1/channels/ch_nope/data", headers=bearer(w.a.api_key))
    assert missing.status == 404


async def test_export_streams_json_without_tokens(client: TestClient, world: World) -> None:
    w = world
    resp = await client.get("/admin/api/v1/export", headers=bearer(w.a.api_key))
    assert resp.status == 200
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    raw = await resp.read()
    doc = json.loads(raw)
    assert len(doc["conversations"]) == 3
    for token in w.tokens.values():
        assert token.encode() not in raw
    one = await client.get(f"/admin/api/v1/users/whatsapp/{w.bob.user_id}/export",
                           headers=bearer(w.a.api_key))
    assert [c["conversation"] for c in (await one.json())["conversations"]] == [w.bob.conv]
    missing = await client.get("/admin/api/v1/export", headers=bearer(OPERATOR),
                               params={"tenant_id": "t_nobody"})
    assert missing.status == 404


async def test_restriction_routes_set_the_flag_the_shard_reads(
    client: TestClient, redis: Redis, world: World
) -> None:
    w = world
    path = f"/admin/api/v1/users/messenger/{w.carol.user_id}/restriction"
    resp = await client.put(path, headers=bearer(w.a.api_key))
    assert resp.status == 200 and (await resp.json())["restricted"] is True
    assert await redis.sismember(keys.restricted(w.a.id), f"messenger:{w.carol.user_id}")
    listed = await (await client.get("/admin/api/v1/restrictions", headers=bearer(w.a.api_key))).json()
    assert {"channel": "messenger", "user_id": w.carol.user_id} in listed["restricted"]
    resp = await client.delete(path, headers=bearer(w.a.api_key))
    assert (await resp.json())["restricted"] is False
    assert not await redis.sismember(keys.restricted(w.a.id), f"messenger:{w.carol.user_id}")


async def test_retention_route_accepts_one_to_365_days(
    client: TestClient, redis: Redis, world: World
) -> None:
    w = world
    resp = await client.put("/admin/api/v1/retention", json={"days": 30}, headers=bearer(w.a.api_key))
    assert resp.status == 200 and (await resp.json())["days"] == 30
    assert await redis.hget(keys.tenant(w.a.id), "retention_days") == b"30"
    got = await client.get("/admin/api/v1/retention", headers=bearer(w.a.api_key))
    assert await got.json() == {"days": 30, "max_days": 365}
    for bad in ({"days": 400}, {"days": "30"}, {}, {"days": 30, "extra": 1}):
        resp = await client.put("/admin/api/v1/retention", json=bad, headers=bearer(w.a.api_key))
        assert resp.status == 422
        assert (await resp.json())["error"]["field"] in ("days", "extra")


@pytest.mark.parametrize("body, headers", [
    (b'{"signed_request": "x.y"}', {"Content-Type": "application/json"}),
    (b"\xff\xfe\x00garbage", {"Content-Type": "application/x-www-form-urlencoded"}),
    (b"signed_request=" + b"A" * 20_000, {"Content-Type": "application/x-www-form-urlencoded"}),
    (b"signed_request=%ZZ", {"Content-Type": "application/x-www-form-urlencoded"}),
    (b"--b\r\nbroken multipart", {"Content-Type": "multipart/form-data; boundary=b"}),
    (b"", {}),
])
async def test_odd_bodies_get_a_4xx_naming_the_field_never_a_500(
    client: TestClient, body: bytes, headers: dict[str, str]
) -> None:
    for path in ("/webhooks/meta/data-deletion", "/webhooks/meta/deauthorize"):
        resp = await client.post(path, data=body, headers=headers)
        assert 400 <= resp.status < 500
        assert (await resp.json())["error"]["field"] == "signed_request"


@hypothesis_settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=200), content_type=st.sampled_from(
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=zz", "text/plain"]))
async def test_fuzzed_callbacks_are_refused_with_a_4xx(
    client: TestClient, value: str, content_type: str
) -> None:
    body = ("signed_request=" + value).encode("utf-8", "surrogatepass")
    resp = await client.post("/webhooks/meta/data-deletion", data=body,
                             headers={"Content-Type": content_type})
    assert resp.status in (400, 403)
