"""Accounts over the real admin API, a real Redis and a real local SMTP server: a business
signs up, signs in and out, resets its password by mail, invites an agent whose role
keeps it away from channels, keys and the team, and manages API keys for its machines."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from accounts_harness import (  # noqa: F401 - fixtures
    API,
    OPERATOR,
    PASSWORD,
    MailBox,
    account_app,
    account_settings,
    client_fixture,
    mailbox_fixture,
    sign_up,
)
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.core import keys
from mtdesk.core.redis import Redis


@asynccontextmanager
async def browser(client: TestClient) -> AsyncIterator[aiohttp.ClientSession]:
    """Another browser (its own cookies) on the same server."""
    base = str(client.make_url("/"))
    async with aiohttp.ClientSession(base_url=base.rstrip("/"),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


def csrf(data: dict[str, object]) -> dict[str, str]:
    return {"X-CSRF-Token": str(data["csrf_token"])}


async def test_sign_up_creates_the_tenant_and_signs_the_owner_in(client: TestClient) -> None:
    resp = await client.post(f"{API}/auth/signup", json={
        "name": "Ana", "email": "ana@shop.test", "password": PASSWORD, "company": "Ana's Shop"})
    assert resp.status == 201
    data = await resp.json()
    assert data["tenant"]["name"] == "Ana's Shop"
    assert data["user"]["role"] == "owner" and "password" not in data["user"]
    cookie = resp.headers.getall("Set-Cookie")
    session = next(c for c in cookie if c.startswith("mtdesk_session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Path=/admin" in session
    assert "Secure" not in session  # plain http here
    tenant = await client.get(f"{API}/tenant")  # the cookie alone signs the request in
    assert tenant.status == 200
    assert (await tenant.json())["id"] == data["tenant"]["id"]
    me = await (await client.get(f"{API}/auth/me")).json()
    assert me["user"]["email"] == "ana@shop.test" and me["csrf_token"] == data["csrf_token"]


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Ana", "email": "ana@shop.test", "password": PASSWORD}, "company"),
    ({"name": "Ana", "email": "not-an-email", "password": PASSWORD, "company": "S"}, "email"),
    ({"name": "Ana", "email": "ana@shop.test", "password": "short", "company": "S"}, "password"),
    ({"name": "", "email": "ana@shop.test", "password": PASSWORD, "company": "S"}, "name"),
    ({"name": "Ana", "email": "ana@shop.test", "password": PASSWORD, "company": "S",
      "plan": "gold"}, "plan"),
    ({"name": "Ana", "email": 5, "password": PASSWORD, "company": "S"}, "email"),
])
async def test_bad_sign_up_names_the_field_and_creates_nothing(
        client: TestClient, redis: Redis, body: dict[str, object], field: str) -> None:
    resp = await client.post(f"{API}/auth/signup", json=body)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == field
    assert await redis.scard(keys.TENANTS) == 0
    assert not [k async for k in redis.scan_iter(match="mt:*")]


async def test_a_taken_email_is_a_conflict_and_leaves_no_second_tenant(
        client: TestClient, redis: Redis) -> None:
    await sign_up(client)
    resp = await client.post(f"{API}/auth/signup", json={
        "name": "Eve", "email": "ANA@shop.test", "password": PASSWORD, "company": "Other"})
    assert resp.status == 409
    assert (await resp.json())["error"]["field"] == "email"
    assert await redis.scard(keys.TENANTS) == 1


async def test_login_answers_one_body_for_a_wrong_password_and_an_unknown_email(
        client: TestClient) -> None:
    await sign_up(client)
    wrong = await client.post(f"{API}/auth/login",
                              json={"email": "ana@shop.test", "password": "nope nope nope"})
    unknown = await client.post(f"{API}/auth/login",
                                json={"email": "bob@shop.test", "password": "nope nope nope"})
    assert wrong.status == unknown.status == 401
    assert await wrong.read() == await unknown.read()
    async with browser(client) as other:
        ok = await other.post(f"{API}/auth/login",
                              json={"email": "ana@shop.test", "password": PASSWORD})
        assert ok.status == 200
        assert (await other.get(f"{API}/tenant")).status == 200


async def test_repeated_failures_throttle_sign_in_even_with_the_right_password(
        client: TestClient) -> None:
    await sign_up(client)
    for _ in range(3):  # MTDESK_LOGIN_ATTEMPTS=3 in the harness
        resp = await client.post(f"{API}/auth/login",
                                 json={"email": "ana@shop.test", "password": "wrong wrong wrong"})
        assert resp.status == 401
    resp = await client.post(f"{API}/auth/login",
                             json={"email": "ana@shop.test", "password": PASSWORD})
    assert resp.status == 429
    assert "try again" in (await resp.json())["error"]["message"]
    assert int(resp.headers["Retry-After"]) > 0


async def test_a_change_with_the_cookie_needs_this_sessions_csrf_token(
        client: TestClient) -> None:
    owner = await sign_up(client)
    body = {"name": "build server"}
    assert (await client.post(f"{API}/keys", json=body)).status == 403
    async with browser(client) as other:
        theirs = await sign_up(other, email="eve@else.test", company="Else")  # type: ignore[arg-type]
        # A token of another session does not pass.
        assert (await client.post(f"{API}/keys", json=body, headers=csrf(theirs))).status == 403
    made = await client.post(f"{API}/keys", json=body, headers=csrf(owner))
    assert made.status == 201
    # A bearer key needs no CSRF token (browsers never add that header by themselves).
    key = (await made.json())["api_key"]
    async with browser(client) as machine:
        resp = await machine.get(f"{API}/tenant", headers={"Authorization": f"Bearer {key}"})
        assert resp.status == 200


async def test_logout_ends_the_session(client: TestClient) -> None:
    owner = await sign_up(client)
    assert (await client.post(f"{API}/auth/logout")).status == 403  # no CSRF token
    resp = await client.post(f"{API}/auth/logout", headers=csrf(owner))
    assert resp.status == 200
    assert (await client.get(f"{API}/tenant")).status == 401


async def test_password_reset_by_mailed_one_time_link(
        client: TestClient, mailbox: tuple[MailBox, int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mtdesk")
    box, _ = mailbox
    await sign_up(client)
    unknown = await client.post(f"{API}/auth/forgot", json={"email": "nobody@shop.test"})
    known = await client.post(f"{API}/auth/forgot", json={"email": "ana@shop.test"})
    assert unknown.status == known.status == 202
    assert await unknown.read() == await known.read()
    token = await box.next_link("reset")
    again = await client.post(f"{API}/auth/forgot", json={"email": "ana@shop.test"})
    assert again.status == 202  # the same answer, but no second mail within a minute
    assert len(box.messages) == 1 and box.messages[0]["To"] == "ana@shop.test"
    assert "http://desk.test/admin/#reset=" in str(box.messages[0].get_payload())
    short = await client.post(f"{API}/auth/reset", json={"token": token, "password": "short"})
    assert (await short.json())["error"]["field"] == "password"  # the link still works after
    new_password = "a brand new passphrase"
    async with browser(client) as other:
        resp = await other.post(f"{API}/auth/reset", json={"token": token, "password": new_password})
        assert resp.status == 200
        assert (await other.get(f"{API}/tenant")).status == 200
    # The old session ended with the reset; the old password no longer works; the link is spent.
    assert (await client.get(f"{API}/tenant")).status == 401
    old = await client.post(f"{API}/auth/login", json={"email": "ana@shop.test", "password": PASSWORD})
    assert old.status == 401
    new = await client.post(f"{API}/auth/login",
                            json={"email": "ana@shop.test", "password": new_password})
    assert new.status == 200
    again = await client.post(f"{API}/auth/reset", json={"token": token, "password": new_password})
    assert again.status == 400 and (await again.json())["error"]["field"] == "token"
    # Our logs (the test mail server's own debug log prints what it receives).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mtdesk"))
    for secret in (token, PASSWORD, new_password):
        assert secret not in logged


async def test_an_invited_agent_answers_but_cannot_manage_channels_keys_or_team(
        client: TestClient, mailbox: tuple[MailBox, int]) -> None:
    box, _ = mailbox
    owner = await sign_up(client)
    resp = await client.post(f"{API}/team", headers=csrf(owner),
                             json={"name": "Bo", "email": "bo@shop.test", "role": "agent"})
    assert resp.status == 201, await resp.text()
    token = await box.next_link("invite")
    async with browser(client) as agent:
        joined = await agent.post(f"{API}/auth/accept",
                                  json={"token": token, "password": "agent's own secret"})
        assert joined.status == 200
        data = await joined.json()
        assert data["user"]["role"] == "agent"
        assert data["tenant"]["id"] == owner["tenant"]["id"]
        assert (await agent.get(f"{API}/channels")).status == 200
        assert (await agent.get(f"{API}/conversations")).status == 200
        for method, path, body in (
            ("POST", "/channels", {"channel": "messenger", "account_id": "1",
                                   "access_token": "t"}),
            ("GET", "/keys", None), ("POST", "/keys", {"name": "x"}),
            ("GET", "/team", None), ("DELETE", f"/team/{owner['user']['id']}", None),
        ):
            resp = await agent.request(method, API + path, json=body, headers=csrf(data))
            assert resp.status == 403, (method, path)
    team = await (await client.get(f"{API}/team")).json()
    assert sorted(u["role"] for u in team["users"]) == ["agent", "owner"]


async def test_api_keys_are_created_listed_rotated_and_revoked(client: TestClient) -> None:
    owner = await sign_up(client)
    made = await (await client.post(f"{API}/keys", headers=csrf(owner),
                                    json={"name": "crm sync"})).json()
    key = made["api_key"]
    listed = await (await client.get(f"{API}/keys")).json()
    assert [(k["id"], k["name"], k["prefix"]) for k in listed["keys"]] == [
        (made["id"], "crm sync", key[:8])]
    assert key not in str(listed)
    rotated = await (await client.post(f"{API}/keys/{made['id']}/rotate",
                                       headers=csrf(owner))).json()
    async with browser(client) as machine:
        def auth(k: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {k}"}
        assert (await machine.get(f"{API}/tenant", headers=auth(key))).status == 401
        assert (await machine.get(f"{API}/tenant", headers=auth(rotated["api_key"]))).status == 200
        gone = await client.delete(f"{API}/keys/{rotated['id']}", headers=csrf(owner))
        assert gone.status == 200
        assert (await machine.get(f"{API}/tenant", headers=auth(rotated["api_key"]))).status == 401


async def test_the_operator_lists_and_revokes_the_initial_key_of_a_tenant(
        client: TestClient) -> None:
    op = {"Authorization": f"Bearer {OPERATOR}"}
    tenant = await (await client.post(f"{API}/tenants", headers=op,
                                      json={"name": "Acme", "email": "ops@acme.test"})).json()
    listed = await (await client.get(f"{API}/keys", headers=op,
                                     params={"tenant_id": tenant["id"]})).json()
    assert [k["id"] for k in listed["keys"]] == ["initial"]
    resp = await client.delete(f"{API}/keys/initial", headers=op, params={"tenant_id": tenant["id"]})
    assert resp.status == 200
    async with browser(client) as machine:
        got = await machine.get(f"{API}/tenant",
                                headers={"Authorization": f"Bearer {tenant['api_key']}"})
        assert got.status == 401


@pytest.mark.parametrize(("trusted", "proto", "secure"), [
    (True, "https", True), (False, "https", False), (True, "http", False)])
async def test_the_cookie_is_secure_behind_https_only_when_the_proxy_is_trusted(
        redis: Redis, redis_url: str, trusted: bool, proto: str, secure: bool) -> None:
    settings = account_settings(redis_url, None,
                                MTDESK_TRUST_FORWARDED_PROTO="true" if trusted else "false")
    async with TestClient(TestServer(account_app(redis, settings))) as c:
        resp = await c.post(f"{API}/auth/signup", headers={"X-Forwarded-Proto": proto}, json={
            "name": "Ana", "email": "ana@shop.test", "password": PASSWORD, "company": "Shop"})
        assert resp.status == 201
        session = next(h for h in resp.headers.getall("Set-Cookie")
                       if h.startswith("mtdesk_session="))
        assert ("Secure" in session) is secure


async def test_inviting_without_a_mail_server_names_the_setting_and_adds_nobody(
        redis: Redis, redis_url: str) -> None:
    settings = account_settings(redis_url, None)
    async with TestClient(TestServer(account_app(redis, settings))) as c:
        owner = await sign_up(c)
        resp = await c.post(f"{API}/team", headers=csrf(owner),
                            json={"name": "Bo", "email": "bo@shop.test"})
        assert resp.status == 503
        assert (await resp.json())["error"]["field"] == "MTDESK_SMTP_HOST"
        team = await (await c.get(f"{API}/team")).json()
        assert [u["email"] for u in team["users"]] == ["ana@shop.test"]
