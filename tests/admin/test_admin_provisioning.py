"""The admin API over real HTTP: provisioning end to end, auth, isolation, secrets."""

from __future__ import annotations

import logging
import sys
import types

import pytest
from admin_harness import OPERATOR, bearer, client_fixture, make_app, op  # noqa: F401
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.core import keys
from mtdesk.core.appkeys import SETTINGS as SETTINGS_KEY
from mtdesk.core.history import MessageStore, StoredMessage
from mtdesk.core.redis import Redis, connect
from mtdesk.core.tenants import channel_token_aad
from mtdesk.policy.vault import TokenVault

PAGE_TOKEN = "EAAJzPageTokenThatMustNeverLeak42"
API = "/admin/api/v1"


async def dump(redis: Redis) -> bytes:
    out: list[bytes] = []
    async for key in redis.scan_iter(count=500):
        kind = (await redis.type(key)).decode()
        out.append(key)
        if kind == "string":
            out.append(await redis.get(key) or b"")
        elif kind == "hash":
            for k, v in (await redis.hgetall(key)).items():
                out += [k, v]
        elif kind in ("set",):
            out += list(await redis.smembers(key))
        elif kind == "zset":
            out += list(await redis.zrange(key, 0, -1))
        elif kind == "stream":
            for _id, fields in await redis.xrange(key):
                out += list(fields.values())
    return b"\n".join(out)


async def new_tenant(client: TestClient, name: str = "Acme") -> tuple[str, str]:
    r = await client.post(f"{API}/tenants", json={"name": name, "email": "o@acme.example"},
                          headers=op())
    assert r.status == 201, await r.text()
    body = await r.json()
    return body["id"], body["api_key"]


async def test_provisioning_end_to_end_tenant_channel_bot(
    client: TestClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tid, key = await new_tenant(client)
    assert key.startswith("mtd_")

    r = await client.post(
        f"{API}/channels",
        json={"channel": "messenger", "account_id": "104857600", "access_token": PAGE_TOKEN},
        headers=bearer(key),
    )
    assert r.status == 201
    created = await r.text()
    cid = (await r.json())["id"]
    assert PAGE_TOKEN not in created

    r = await client.put(
        f"{API}/bot",
        json={"provider": "openai", "model": "gpt-4o-mini", "system_prompt": "Be brief.",
              "temperature": 0.2},
        headers=bearer(key),
    )
    assert r.status == 200
    assert (await r.json())["model"] == "gpt-4o-mini"

    r = await client.get(f"{API}/bot", headers=bearer(key))
    bot = await r.json()
    assert (bot["provider"], bot["system_prompt"], bot["temperature"]) == ("openai", "Be brief.", 0.2)

    r = await client.get(f"{API}/channels", headers=bearer(key))
    listing = await r.text()
    assert PAGE_TOKEN not in listing
    [ch] = (await r.json())["channels"]
    assert (ch["id"], ch["status"], ch["account_id"]) == (cid, "connected", "104857600")

    r = await client.get(f"{API}/tenant", headers=bearer(key))
    assert (await r.json())["id"] == tid

    # The gateway routes the Page to this tenant.
    route = await redis.hgetall(keys.account("messenger", "104857600"))
    assert route[b"tenant"] == tid.encode()

    # Neither the token nor the API key is anywhere in Redis, and not in any log.
    blob = await dump(redis)
    assert PAGE_TOKEN.encode() not in blob
    assert key.encode() not in blob
    assert PAGE_TOKEN not in caplog.text and key not in caplog.text

    # The stored ciphertext opens to the token with the app's key, for this channel only.
    vault = TokenVault(client.app[SETTINGS_KEY].encryption_keys)
    sealed = (await redis.hget(keys.channel(tid, cid), "token")).decode()
    assert vault.decrypt(sealed, channel_token_aad(tid, cid)).reveal() == PAGE_TOKEN

    r = await client.delete(f"{API}/channels/{cid}", headers=bearer(key))
    body = await r.json()
    assert r.status == 200 and body["status"] == "disconnected"
    assert not await redis.exists(keys.account("messenger", "104857600"))
    # Disconnecting schedules the erasure of the channel's data (the 30-day promise).
    job = await client.get(f"{API}/deletions/{body['deletion_job']}", headers=bearer(key))
    assert job.status == 200 and (await job.json())["kind"] == "channel"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic b3A6b3A="},
     {"Authorization": "Bearer "}, {"Authorization": f"Bearer {OPERATOR}x"},
     {"Authorization": "Bearer mtd_notakey"}],
)
async def test_missing_or_wrong_credentials_are_401(
    client: TestClient, headers: dict[str, str]
) -> None:
    for method, path in [("GET", "/tenants"), ("GET", "/channels"), ("PUT", "/bot"),
                         ("POST", "/tenants"), ("GET", "/conversations")]:
        r = await client.request(method, f"{API}{path}", headers=headers, json={})
        assert r.status == 401
        assert (await r.json())["error"]["field"] == "Authorization"


async def test_tenant_keys_cannot_use_operator_routes(client: TestClient) -> None:
    _, key = await new_tenant(client)
    r = await client.post(f"{API}/tenants", json={"name": "X", "email": "x@x.co"},
                          headers=bearer(key))
    assert r.status == 403
    r = await client.get(f"{API}/tenants", headers=bearer(key))
    assert r.status == 403


async def test_a_tenant_sees_only_its_own_data(client: TestClient, redis: Redis) -> None:
    a_id, a_key = await new_tenant(client, "A")
    _, b_key = await new_tenant(client, "B")
    r = await client.post(f"{API}/channels", headers=bearer(a_key),
                          json={"channel": "whatsapp", "account_id": "1065", "access_token": "t"})
    a_cid = (await r.json())["id"]
    await client.put(f"{API}/bot", headers=bearer(a_key), json={"system_prompt": "A's secret sauce"})
    store = MessageStore(redis)
    await store.append(a_id, StoredMessage(direction="in", message_id="m1", kind="message",
                                           channel="whatsapp", account_id="1065",
                                           user_id="15551234", timestamp_ms=1, text="hi A"),
                       now_ms=1000)
    conv = "whatsapp:1065:15551234"

    assert (await client.get(f"{API}/channels/{a_cid}", headers=bearer(b_key))).status == 404
    assert (await client.delete(f"{API}/channels/{a_cid}", headers=bearer(b_key))).status == 404
    assert (await (await client.get(f"{API}/channels", headers=bearer(b_key))).json()) == {
        "channels": []
    }
    b_bot = await (await client.get(f"{API}/bot", headers=bearer(b_key))).json()
    assert b_bot["system_prompt"] != "A's secret sauce"
    r = await client.get(f"{API}/conversations", headers=bearer(b_key))
    assert (await r.json())["conversations"] == []
    r = await client.get(f"{API}/conversations/{conv}/messages", headers=bearer(b_key))
    assert r.status == 404
    # Asking for another tenant by id with a tenant key is refused.
    r = await client.get(f"{API}/channels?tenant_id={a_id}", headers=bearer(b_key))
    assert r.status == 403
    # A still sees its own.
    r = await client.get(f"{API}/conversations/{conv}/messages", headers=bearer(a_key))
    assert [m["text"] for m in (await r.json())["messages"]] == ["hi A"]
    assert (await client.get(f"{API}/channels/{a_cid}", headers=bearer(a_key))).status == 200


async def test_the_operator_acts_for_a_named_tenant(client: TestClient) -> None:
    tid, _ = await new_tenant(client)
    r = await client.post(f"{API}/channels", headers=op(),
                          json={"tenant_id": tid, "channel": "instagram",
                                "account_id": "17841400", "access_token": "tok"})
    assert r.status == 201
    r = await client.get(f"{API}/channels", headers=op())
    assert r.status == 400 and (await r.json())["error"]["field"] == "tenant_id"
    r = await client.get(f"{API}/channels?tenant_id={tid}", headers=op())
    assert len((await r.json())["channels"]) == 1
    r = await client.get(f"{API}/channels?tenant_id=t_nobody", headers=op())
    assert r.status == 404
    r = await client.get(f"{API}/tenants", headers=op())
    assert [t["id"] for t in (await r.json())["tenants"]] == [tid]
    assert "api_key" not in (await r.text())


async def test_an_account_connected_by_another_tenant_is_409(client: TestClient) -> None:
    _, a_key = await new_tenant(client, "A")
    _, b_key = await new_tenant(client, "B")
    body = {"channel": "messenger", "account_id": "555", "access_token": "t"}
    assert (await client.post(f"{API}/channels", json=body, headers=bearer(a_key))).status == 201
    r = await client.post(f"{API}/channels", json=body, headers=bearer(b_key))
    assert r.status == 409
    err = (await r.json())["error"]
    assert err["field"] == "account_id" and "another tenant" in err["message"]
    # The owner re-connecting just updates the token.
    assert (await client.post(f"{API}/channels", json=body | {"access_token": "t2"},
                              headers=bearer(a_key))).status == 201


async def test_a_whatsapp_number_shared_with_the_business_app_says_so(client: TestClient) -> None:
    _, key = await new_tenant(client)
    body = {"channel": "whatsapp", "account_id": "1065", "access_token": "t", "coexistence": True}
    r = await client.post(f"{API}/channels", json=body, headers=bearer(key))
    assert r.status == 201 and (await r.json())["coexistence"] is True
    # Connected again without saying: it stays as it was; saying false turns it off.
    r = await client.post(f"{API}/channels", json=body | {"coexistence": None}, headers=bearer(key))
    assert (await r.json())["coexistence"] is True
    r = await client.post(f"{API}/channels", json=body | {"coexistence": False}, headers=bearer(key))
    assert "coexistence" not in await r.json()
    r = await client.post(f"{API}/channels", json=body | {"coexistence": "yes"}, headers=bearer(key))
    assert r.status == 422 and (await r.json())["error"]["field"] == "coexistence"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        # Not JSON at all: 400. JSON of the wrong shape or value: 422 naming the field.
        ("POST", "/tenants", b"{not json", 400, "body"),
        ("POST", "/tenants", b"", 400, "body"),
        ("POST", "/tenants", b"[1, 2]", 422, "body"),
        ("POST", "/tenants", b'{"email": "a@b.co"}', 422, "name"),
        ("POST", "/tenants", b'{"name": "A", "email": "nope"}', 422, "email"),
        ("POST", "/tenants", b'{"name": "A", "email": "a@b.co", "plan": 1}', 422, "plan"),
        ("POST", "/tenants", b'{"name": 7, "email": "a@b.co"}', 422, "name"),
    ],
)
async def test_operator_validation_errors_name_the_field(
    client: TestClient, method: str, path: str, body: bytes, status: int, field: str
) -> None:
    r = await client.request(method, f"{API}{path}", data=body, headers=op())
    assert r.status == status
    assert (await r.json())["error"]["field"] == field
    assert (await client.get(f"{API}/tenants", headers=op())).status == 200
    assert (await (await client.get(f"{API}/tenants", headers=op())).json())["tenants"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/channels", {"channel": "sms", "account_id": "1", "access_token": "t"}, "channel"),
        ("POST", "/channels", {"channel": "messenger", "account_id": "x1", "access_token": "t"},
         "account_id"),
        ("POST", "/channels", {"channel": "messenger", "account_id": "1"}, "access_token"),
        ("PUT", "/bot", {"provider": "skynet"}, "provider"),
        ("PUT", "/bot", {"provider": "openai"}, "model"),
        ("PUT", "/bot", {"temperature": 3}, "temperature"),
        ("PUT", "/bot", {"fallback": ["nobody:m"]}, "fallback"),
    ],
)
async def test_tenant_validation_errors_name_the_field(
    client: TestClient, method: str, path: str, body: dict[str, object], field: str
) -> None:
    _, key = await new_tenant(client)
    r = await client.request(method, f"{API}{path}", json=body, headers=bearer(key))
    assert r.status == 422
    assert (await r.json())["error"]["field"] == field


async def test_conversations_page_newest_first(client: TestClient, redis: Redis) -> None:
    tid, key = await new_tenant(client)
    store = MessageStore(redis)
    for i in range(5):
        await store.append(tid, StoredMessage(direction="in", message_id=f"m{i}", kind="message",
                                              channel="messenger", account_id="9",
                                              user_id=f"u{i}", timestamp_ms=i, text=f"hello {i}"),
                           now_ms=1000 + i)
    r = await client.get(f"{API}/conversations?limit=3", headers=bearer(key))
    page = await r.json()
    assert [c["conversation"] for c in page["conversations"]] == [
        "messenger:9:u4", "messenger:9:u3", "messenger:9:u2"]
    r = await client.get(f"{API}/conversations?limit=3&before={page['next']}", headers=bearer(key))
    page2 = await r.json()
    assert [c["conversation"] for c in page2["conversations"]] == ["messenger:9:u1", "messenger:9:u0"]
    assert page2["next"] is None
    r = await client.get(f"{API}/conversations?limit=0", headers=bearer(key))
    assert r.status == 400 and (await r.json())["error"]["field"] == "limit"
    r = await client.get(f"{API}/conversations?before=yesterday", headers=bearer(key))
    assert r.status == 400 and (await r.json())["error"]["field"] == "before"


async def test_connecting_without_an_encryption_key_is_503_naming_it(redis: Redis) -> None:
    async with TestClient(TestServer(make_app(redis, keys=()))) as c:
        _, key = await new_tenant(c)
        r = await c.post(f"{API}/channels", headers=bearer(key),
                         json={"channel": "messenger", "account_id": "1", "access_token": "t"})
        assert r.status == 503
        assert (await r.json())["error"]["field"] == "MTDESK_ENCRYPTION_KEYS"


async def test_the_api_reference_page_lists_the_api(client: TestClient) -> None:
    r = await client.get("/admin/api")
    assert r.status == 200 and r.content_type == "text/html"
    page = await r.text()
    for path in ("/admin/api/v1/tenants", "/admin/api/v1/channels", "/admin/api/v1/bot",
                 "/admin/api/v1/conversations"):
        assert path in page


async def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    r = await client.get(f"{API}/nothing-here", headers=op())
    assert r.status == 404 and "error" in await r.json()
    r = await client.patch(f"{API}/tenants", headers=op())
    assert r.status == 405 and "error" in await r.json()
    assert set(r.headers["Allow"].split(",")) >= {"GET", "POST"}
    # authentication comes first, as for every admin API path
    r = await client.get(f"{API}/nothing-here")
    assert r.status == 401 and (await r.json())["error"]["field"] == "Authorization"


def test_an_admin_route_added_without_its_guard_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtdesk.admin.app import ROUTE_MODULES, build_admin

    async def open_door(request: web.Request) -> web.Response:
        return web.Response(text="no token needed?")

    def add_routes(admin: web.Application) -> None:
        admin.router.add_get("/api/v1/open", open_door)

    module = types.ModuleType("mtdesk_test_unguarded")
    module.add_routes = add_routes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mtdesk_test_unguarded", module)
    with pytest.raises(RuntimeError, match="/api/v1/open"):
        build_admin((*ROUTE_MODULES, "mtdesk_test_unguarded"))


async def test_a_suspended_tenant_is_locked_out_until_reactivated(client: TestClient) -> None:
    tid, key = await new_tenant(client)
    r = await client.patch(f"{API}/tenants/{tid}", json={"status": "suspended"}, headers=op())
    assert r.status == 200 and (await r.json())["status"] == "suspended"
    assert (await client.get(f"{API}/channels", headers=bearer(key))).status == 401
    r = await client.patch(f"{API}/tenants/{tid}", json={"status": "gone"}, headers=op())
    assert r.status == 422 and (await r.json())["error"]["field"] == "status"
    r = await client.patch(f"{API}/tenants/{tid}", json={"status": "active"}, headers=bearer(key))
    assert r.status == 401
    await client.patch(f"{API}/tenants/{tid}", json={"status": "active"}, headers=op())
    assert (await client.get(f"{API}/channels", headers=bearer(key))).status == 200
    assert (await client.get(f"{API}/tenants/t_nobody", headers=op())).status == 404


async def test_redis_down_is_503_not_500() -> None:
    unreachable = connect("redis://127.0.0.1:1/0")
    async with TestClient(TestServer(make_app(unreachable))) as c:
        r = await c.post(f"{API}/tenants", json={"name": "A", "email": "a@a.example"},
                         headers=op())
        assert r.status == 503 and "error" in await r.json()
        r = await c.get(f"{API}/channels", headers=bearer("mtd_whatever"))
        assert r.status == 503
    await unreachable.aclose()


async def test_read_receipts_can_be_turned_off_and_a_wrong_type_names_the_field(
    client: TestClient,
) -> None:
    _, key = await new_tenant(client)
    r = await client.put(f"{API}/bot", json={"read_receipts": False}, headers=bearer(key))
    assert r.status == 200 and (await r.json())["read_receipts"] is False
    r = await client.get(f"{API}/bot", headers=bearer(key))
    assert (await r.json())["read_receipts"] is False
    r = await client.put(f"{API}/bot", json={"read_receipts": "nope"}, headers=bearer(key))
    assert r.status == 422 and (await r.json())["error"]["field"] == "read_receipts"


async def test_comment_replies_are_off_until_the_bot_enables_private_ones(
    client: TestClient,
) -> None:
    _, key = await new_tenant(client)
    r = await client.get(f"{API}/bot", headers=bearer(key))
    assert (await r.json()).get("comment_replies", "off") == "off"
    r = await client.put(f"{API}/bot", json={"comment_replies": "private"}, headers=bearer(key))
    assert r.status == 200 and (await r.json())["comment_replies"] == "private"
    r = await client.get(f"{API}/bot", headers=bearer(key))
    assert (await r.json())["comment_replies"] == "private"
    r = await client.put(f"{API}/bot", json={"comment_replies": "public"}, headers=bearer(key))
    assert r.status == 422 and (await r.json())["error"]["field"] == "comment_replies"
