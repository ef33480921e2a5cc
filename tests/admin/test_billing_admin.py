"""The admin billing routes: a tenant sees its plan and usage, and starts Stripe Checkout
or the customer portal through the official SDK (against a FakeStripe server)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from billing_harness import (
    API_KEY,
    NOW,
    WEBHOOK_SECRET,
    World,
    bearer,
    make_app,
    make_settings,
    op,
    world_fixture,  # noqa: F401 - fixture
)

from mtdesk.admin.billing import cancel_subscription
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.fakes.stripe import FakeStripe
from mtdesk.gateway.stripe_webhook import PATH
from mtdesk.policy.quotas import try_consume

CHECKOUT = "/admin/api/v1/billing/checkout"
PORTAL = "/admin/api/v1/billing/portal"


async def test_checkout_through_the_sdk_reaches_stripe_with_the_right_params(world: World) -> None:
    tid, key = await world.tenant("Acme Shoes")
    resp = await world.client.post(CHECKOUT, headers=bearer(key), json={"price": "price_growth"})
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["url"].startswith(world.stripe.base_url) and answer["id"].startswith("cs_test_")

    [customer] = world.stripe.requests_to("/v1/customers")
    assert customer.api_key == API_KEY
    assert customer.params == {"name": "Acme Shoes", "email": "owner@acme.example",
                               "metadata": {"mtdesk_tenant": tid}}
    [checkout] = world.stripe.requests_to("/v1/checkout/sessions")
    assert checkout.api_key == API_KEY
    cus_id = next(iter(world.stripe.customers))
    assert checkout.params == {
        "mode": "subscription",
        "line_items": [{"price": "price_growth", "quantity": "1"}],
        "customer": cus_id,
        "client_reference_id": tid,
        "success_url": "https://desk.example.com/admin/?billing=success",
        "cancel_url": "https://desk.example.com/admin/?billing=cancel",
        "metadata": {"mtdesk_tenant": tid},
        "subscription_data": {"metadata": {"mtdesk_tenant": tid}},
    }
    assert (await world.billing(key))["has_customer"] is True


async def test_a_second_checkout_reuses_the_customer_and_takes_custom_urls(world: World) -> None:
    _, key = await world.tenant()
    for _ in range(2):
        resp = await world.client.post(CHECKOUT, headers=bearer(key), json={
            "price": "price_starter", "success_url": "https://shop.example/ok",
            "cancel_url": "https://shop.example/no"})
        assert resp.status == 200
    assert len(world.stripe.requests_to("/v1/customers")) == 1
    last = world.stripe.requests_to("/v1/checkout/sessions")[-1].params
    assert (last["success_url"], last["cancel_url"]) == ("https://shop.example/ok",
                                                         "https://shop.example/no")


async def test_operator_checks_out_for_a_named_tenant(world: World) -> None:
    tid, _ = await world.tenant()
    resp = await world.client.post(CHECKOUT, headers=op(),
                                   json={"price": "price_starter", "tenant_id": tid})
    assert resp.status == 200
    assert world.stripe.requests_to("/v1/checkout/sessions")[0].params["client_reference_id"] == tid


async def test_bad_checkout_input_is_a_4xx_naming_the_field(world: World) -> None:
    _, key = await world.tenant()
    cases = [  # the body's own shape and values: 422; what Stripe refuses: 400
        ({}, 422, "price"),
        ({"price": ""}, 422, "price"),
        ({"price": "price with spaces"}, 422, "price"),
        ({"price": "price_unknown"}, 400, "price"),  # Stripe: No such price
        ({"price": "price_starter", "success_url": "javascript:alert(1)"}, 422, "success_url"),
        ({"price": "price_starter", "plan": "gold"}, 422, "plan"),
    ]
    for body, status, field in cases:
        resp = await world.client.post(CHECKOUT, headers=bearer(key), json=body)
        assert resp.status == status, body
        assert (await resp.json())["error"]["field"] == field, body
    resp = await world.client.post(CHECKOUT, headers=bearer(key), json={"price": "price_unknown"})
    assert "No such price" in (await resp.json())["error"]["message"]


async def test_a_subscribed_tenant_is_sent_to_the_portal_instead(world: World) -> None:
    _, key = await world.tenant()
    resp = await world.client.post(CHECKOUT, headers=bearer(key), json={"price": "price_starter"})
    await world.stripe.complete_checkout((await resp.json())["id"])
    again = await world.client.post(CHECKOUT, headers=bearer(key), json={"price": "price_growth"})
    assert again.status == 409
    assert "portal" in (await again.json())["error"]["message"]


async def test_portal_needs_a_customer_then_returns_stripes_url(world: World) -> None:
    _, key = await world.tenant()
    resp = await world.client.post(PORTAL, headers=bearer(key))
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "customer"

    await world.client.post(CHECKOUT, headers=bearer(key), json={"price": "price_starter"})
    resp = await world.client.post(PORTAL, headers=bearer(key),
                                   json={"return_url": "https://shop.example/billing"})
    assert resp.status == 200
    assert (await resp.json())["url"].startswith(f"{world.stripe.base_url}/_fake/portal/bps_")
    [portal] = world.stripe.requests_to("/v1/billing_portal/sessions")
    assert portal.params == {"customer": next(iter(world.stripe.customers)),
                             "return_url": "https://shop.example/billing"}


async def test_stripe_outage_is_a_502_and_a_refused_key_a_503(world: World) -> None:
    _, key = await world.tenant()
    world.stripe.fail_next(500, times=10)  # the SDK retries twice: all fail
    resp = await world.client.post(CHECKOUT, headers=bearer(key), json={"price": "price_starter"})
    assert resp.status == 502
    world.stripe._failures.clear()
    world.stripe.fail_next(401, type_="invalid_request_error", message="Invalid API Key")
    resp = await world.client.post(CHECKOUT, headers=bearer(key), json={"price": "price_starter"})
    assert resp.status == 503
    assert (await resp.json())["error"]["field"] == "MTDESK_STRIPE_API_KEY"


async def test_a_tenant_sees_only_its_own_billing(world: World) -> None:
    a, key_a = await world.tenant("A")
    b, _ = await world.tenant("B")
    resp = await world.client.get(f"/admin/api/v1/billing?tenant_id={b}", headers=bearer(key_a))
    assert resp.status == 403
    resp = await world.client.post(CHECKOUT, headers=bearer(key_a),
                                   json={"price": "price_starter", "tenant_id": b})
    assert resp.status == 403
    assert world.stripe.requests == []
    resp = await world.client.get("/admin/api/v1/billing?tenant_id=nope", headers=op())
    assert resp.status == 404
    resp = await world.client.get("/admin/api/v1/billing")
    assert resp.status == 401


async def test_billing_shows_this_months_usage_against_the_plan(world: World) -> None:
    tid, key = await world.tenant()
    for _ in range(3):
        await try_consume(world.redis, tid, now_ms=int(world.clock.now() * 1000))
    state = await world.billing(key)
    assert state | {"tenant_id": None, "resets_at_ms": None} == {
        "tenant_id": None, "billing_enabled": True, "plan": "free", "status": "none",
        "month": "2026-05", "usage": 3, "quota": 1000, "remaining": 997,
        "resets_at_ms": None, "subscription": None, "current_period_end_s": None,
        "cancel_at_period_end": False, "has_customer": False,
    }
    assert state["resets_at_ms"] == 1_780_272_000_000  # 2026-06-01T00:00Z


async def test_billing_off_means_unlimited_and_no_checkout(redis: Redis, redis_url: str) -> None:
    app = make_app(make_settings(redis_url, None, billing=False), redis, FakeClock(NOW))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/admin/api/v1/tenants", headers=op(),
                                 json={"name": "Acme", "email": "a@acme.example"})
        created = await resp.json()
        key = created["api_key"]
        await try_consume(redis, created["id"], 5000, now_ms=int(NOW * 1000), enforce=False)
        state = await (await client.get("/admin/api/v1/billing", headers=bearer(key))).json()
        assert (state["billing_enabled"], state["plan"], state["usage"], state["quota"]) == (
            False, "unlimited", 5000, None)
        for path, body in ((CHECKOUT, {"price": "price_starter"}), (PORTAL, {})):
            resp = await client.post(path, headers=bearer(key), json=body)
            assert resp.status == 409
            error = (await resp.json())["error"]
            assert error["field"] == "billing" and "not configured" in error["message"]


async def test_deleting_an_account_cancels_its_subscription(redis: Redis, redis_url: str) -> None:
    """DELETE /account: Stripe stops charging before the data (and the ids) are erased."""
    clock = FakeClock(NOW)
    async with FakeStripe(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        fake.now = int(NOW)
        fake.add_price("price_starter", lookup_key="starter")
        app = make_app(make_settings(redis_url, fake.base_url), redis, clock)
        async with TestClient(TestServer(app)) as client:
            fake.webhook_url = str(client.make_url(PATH))
            world = World(client, fake, clock, redis)
            tid, key = await world.tenant()
            resp = await client.post(CHECKOUT, headers=bearer(key), json={"price": "price_starter"})
            await fake.complete_checkout((await resp.json())["id"])
            sub_id = (await world.billing(key))["subscription"]
            clock.advance(10)
            fake.now = int(clock.now())

            resp = await client.delete("/admin/api/v1/account", headers=bearer(key))
            assert resp.status == 202
            assert fake.subscriptions[sub_id]["status"] == "canceled"
            assert [r.method for r in fake.requests_to(f"/v1/subscriptions/{sub_id}")] == ["DELETE"]


async def test_cancel_subscription_is_a_no_op_without_one(redis: Redis, redis_url: str) -> None:
    async def cancel(request: web.Request) -> web.Response:
        return web.json_response({"canceled": await cancel_subscription(
            request, request.match_info["tid"])})

    clock = FakeClock(NOW)
    async with FakeStripe(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        app = make_app(make_settings(redis_url, fake.base_url), redis, clock)
        app.router.add_delete("/test/cancel/{tid}", cancel)
        async with TestClient(TestServer(app)) as client:
            fake.webhook_url = str(client.make_url(PATH))
            tid, _ = await World(client, fake, clock, redis).tenant()
            nothing = await client.delete(f"/test/cancel/{tid}")
            assert (await nothing.json()) == {"canceled": None}
            assert not [r for r in fake.requests if r.path.startswith("/v1/subscriptions")]
