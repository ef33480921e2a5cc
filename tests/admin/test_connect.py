"""Connect with Meta end to end: our routes, the fake Graph API's dialogs and OAuth
endpoints (real local servers), the real Redis. A person signs up, presses Connect, allows
(or refuses) in Meta's dialog and lands back with channels connected and subscribed."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from connect_harness import (  # noqa: F401 - fixture
    API,
    World,
    browser,
    channels,
    come_back,
    decide,
    signed_up,
    start,
    world_fixture,
)

from mtdesk.core.appkeys import REDIS
from mtdesk.core.clock import SystemClock
from mtdesk.core.secret import Secret
from mtdesk.core.users import Users
from mtdesk.policy.meta_accounts import MESSAGING_FIELDS


async def test_facebook_login_connects_the_shared_pages_and_their_instagram(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mtdesk")
    async with browser(world) as b:
        await signed_up(world, b)
        dialog = await start(world, b, "facebook")
        query = parse_qs(urlsplit(dialog).query)
        assert dialog.startswith(world.graph.root_url + "/v25.0/dialog/oauth?")
        assert query["client_id"] == [world.graph.login.app_id]
        assert query["config_id"] == ["cfg-777"]
        assert query["redirect_uri"] == [world.base + "/admin/connect/facebook/callback"]
        outcome = await come_back(b, await decide(b, dialog))
        assert outcome["connected"] == "2", outcome
        listed = {(c["channel"], c["account_id"]): c for c in await channels(world, b)}
        assert set(listed) == {("messenger", "1010"), ("instagram", "17841400000000001")}
        for channel in listed.values():
            assert channel["status"] == "connected"
            assert channel["token_source"] == "facebook_login"
            assert channel["health"] == "ok"
        assert world.graph.login.subscriptions["1010"] == list(MESSAGING_FIELDS)
    # No token Meta issued (user, 60-day, Page) and no code reached our logs.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mtdesk"))
    issued = list(world.graph.login._tokens) + list(world.graph.login._codes)
    assert len(issued) >= 4 and not [t for t in issued if t in logged]


async def test_a_refused_dialog_connects_nothing(world: World) -> None:
    async with browser(world) as b:
        await signed_up(world, b)
        outcome = await come_back(b, await decide(b, await start(world, b, "facebook"),
                                                  allow=False))
        assert outcome["connected"] == "0"
        assert "refused" in outcome["problem"] and "user_denied" in outcome["problem"]
        assert await channels(world, b) == []


async def test_a_permission_left_out_is_named_and_nothing_is_connected(world: World) -> None:
    async with browser(world) as b:
        await signed_up(world, b)
        dialog = await start(world, b, "facebook")
        outcome = await come_back(b, await decide(b, dialog, untick=("pages_messaging",)))
        assert "pages_messaging" in outcome["problem"] and outcome["connected"] == "0"
        assert await channels(world, b) == []
        assert world.graph.login.subscriptions == {}


async def test_an_expired_code_is_told_and_connects_nothing(world: World) -> None:
    async with browser(world) as b:
        await signed_up(world, b)
        callback = await decide(b, await start(world, b, "facebook"))
        world.graph.login.expire_codes()
        outcome = await come_back(b, callback)
        assert "expired" in outcome["problem"]
        assert await channels(world, b) == []


async def test_a_forged_or_replayed_state_is_refused(world: World) -> None:
    async with browser(world) as victim, browser(world) as attacker:
        await signed_up(world, victim)
        await signed_up(world, attacker, email="eve@else.test")
        # The attacker's own code and state, sent to the victim's browser (login CSRF).
        callback = await decide(attacker, await start(world, attacker, "facebook"))
        outcome = await come_back(victim, callback)
        assert "state does not match" in outcome["problem"]
        assert await channels(world, victim) == []
        # A made-up state, and a state of another flow.
        forged = callback.replace("state=", "state=x")
        assert "state" in (await come_back(attacker, forged))["problem"]
        wa_callback = await decide(attacker, await start(world, attacker, "whatsapp"))
        crossed = wa_callback.replace("/whatsapp/", "/facebook/")
        assert "state" in (await come_back(attacker, crossed))["problem"]
        assert await channels(world, attacker) == []


async def test_the_state_works_once(world: World) -> None:
    async with browser(world) as b:
        await signed_up(world, b)
        callback = await decide(b, await start(world, b, "facebook"))
        assert (await come_back(b, callback))["connected"] == "2"
        again = await come_back(b, callback)
        assert again["connected"] == "0" and "state" in again["problem"]


async def test_instagram_login_connects_an_account_without_a_page(world: World) -> None:
    async with browser(world) as b:
        await signed_up(world, b)
        dialog = await start(world, b, "instagram")
        assert dialog.startswith(world.graph.root_url + "/oauth/authorize?")
        outcome = await come_back(b, await decide(b, dialog))
        assert outcome["connected"] == "1", outcome
        [channel] = await channels(world, b)
        assert channel["channel"] == "instagram"
        assert channel["account_id"] == world.graph.login.instagram_user[0]
        assert channel["token_source"] == "instagram_login"
        assert isinstance(channel["token_expires_ms"], int)
        assert channel["token_expires_ms"] > channel["connected_ms"] + 59 * 86_400_000  # type: ignore[operator]
        assert world.graph.login.instagram_user[0] in world.graph.login.subscriptions


async def test_whatsapp_embedded_signup_connects_the_numbers_of_the_shared_account(
        world: World) -> None:
    async with browser(world) as b:
        await signed_up(world, b)
        outcome = await come_back(b, await decide(b, await start(world, b, "whatsapp")))
        assert outcome["connected"] == "1", outcome
        [channel] = await channels(world, b)
        assert (channel["channel"], channel["account_id"]) == ("whatsapp", "3030")
        assert channel["token_source"] == "embedded_signup"
        assert channel["subscription_id"] == "2020"
        assert "2020" in world.graph.login.subscriptions


async def test_connect_needs_a_signed_in_owner(world: World) -> None:
    async with browser(world) as b:
        resp = await b.get(f"{world.base}/admin/connect/facebook", allow_redirects=False)
        assert resp.status == 303 and "sign+in" in resp.headers["Location"]
        unknown = await b.get(f"{world.base}/admin/connect/myspace", allow_redirects=False)
        assert unknown.status == 404


async def test_an_agent_is_sent_back_without_a_dialog(world: World) -> None:
    async with browser(world) as b:
        await signed_up(world, b)
        redis = world.server.app[REDIS]
        users = Users(redis, SystemClock())
        me = await (await b.get(world.base + API + "/auth/me")).json()
        agent = await users.add(me["tenant_id"], "Bo", "bo@shop.test", "agent",
                                Secret("agent passphrase"))
    async with browser(world) as b:
        resp = await b.post(world.base + API + "/auth/login",
                            json={"email": agent.email, "password": "agent passphrase"})
        assert resp.status == 200
        start_resp = await b.get(f"{world.base}/admin/connect/facebook", allow_redirects=False)
        assert start_resp.status == 303
        assert "only+an+owner" in start_resp.headers["Location"]
        assert world.graph.login.dialogs == []
