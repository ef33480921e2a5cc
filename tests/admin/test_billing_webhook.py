"""POST /webhooks/stripe: only Stripe-signed events change a tenant's plan, each once."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from billing_harness import (
    NOW,
    WEBHOOK_SECRET,
    LiveApp,
    World,
    make_app,
    make_settings,
    world_fixture,  # noqa: F401 - fixture
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis, connect
from mtdesk.core.secret import Secret
from mtdesk.fakes.stripe import build_event, sign_payload
from mtdesk.gateway.stripe_webhook import PATH, SignatureError, verify_stripe_signature


def subscription(sub_id: str, customer: str, *, status: str = "active", price: str = "price_growth",
                 lookup_key: str | None = "growth", tenant: str | None = None,
                 metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": sub_id, "object": "subscription", "customer": customer, "status": status,
        "metadata": {"mtdesk_tenant": tenant} if tenant else {},
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [{
            "id": "si_1", "current_period_end": int(NOW) + 86400 * 30,
            "price": {"id": price, "object": "price", "lookup_key": lookup_key,
                      "metadata": metadata or {}},
        }]},
    }


async def linked_tenant(world: World, customer: str = "cus_A") -> tuple[str, str]:
    """A tenant whose checkout completed with ``customer``."""
    tid, key = await world.tenant()
    session = {"id": "cs_1", "object": "checkout.session", "client_reference_id": tid,
               "customer": customer, "subscription": "sub_1", "mode": "subscription"}
    status, body = await world.post_event(world.signed("checkout.session.completed", session))
    assert (status, body) == (200, {"received": True})
    return tid, key


# --- signatures -------------------------------------------------------------------------------
BODY = json.dumps(build_event("ping.unknown", {"id": "x"}, event_id="evt_sig", created=int(NOW))).encode()


def _v1(body: bytes, ts: int, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


T = int(NOW)
SIGNATURE_CASES: list[tuple[str, bytes, str | None, int, str]] = [
    ("valid", BODY, f"t={T},v1={_v1(BODY, T)}", 200, ""),
    ("valid among several v1 (secret roll)", BODY,
     f"t={T},v1={'0' * 64},v1={_v1(BODY, T)},v0=abc", 200, ""),
    ("valid, 299 s old", BODY, f"t={T - 299},v1={_v1(BODY, T - 299)}", 200, ""),
    ("tampered body", BODY.replace(b"ping", b"pong"), f"t={T},v1={_v1(BODY, T)}", 400,
     "no v1 signature matches"),
    ("signed with another secret", BODY, f"t={T},v1={_v1(BODY, T, 'whsec_other')}", 400,
     "no v1 signature matches"),
    ("timestamp swapped after signing", BODY, f"t={T + 1},v1={_v1(BODY, T)}", 400,
     "no v1 signature matches"),
    ("old timestamp (replay)", BODY, f"t={T - 301},v1={_v1(BODY, T - 301)}", 400,
     "more than 300 s"),
    ("timestamp far in the future", BODY, f"t={T + 3600},v1={_v1(BODY, T + 3600)}", 400,
     "more than 300 s"),
    ("missing header", BODY, None, 400, "missing"),
    ("no timestamp", BODY, f"v1={_v1(BODY, T)}", 400, "no t="),
    ("no v1", BODY, f"t={T},v0={_v1(BODY, T)}", 400, "no v1"),
    ("garbage", BODY, "sha256=deadbeef", 400, "malformed"),
]


@pytest.mark.parametrize(("case", "body", "header", "status", "problem"), SIGNATURE_CASES,
                         ids=[c[0] for c in SIGNATURE_CASES])
async def test_signature_table(world: World, case: str, body: bytes, header: str | None,
                               status: int, problem: str) -> None:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    resp = await world.client.post(PATH, data=body, headers=headers)
    assert resp.status == status, case
    answer = await resp.json()
    if status == 400:
        assert answer["error"]["field"] == "Stripe-Signature"
        assert problem in answer["error"]["message"]
    else:
        assert answer["received"] is True


async def test_billing_off_answers_404_and_changes_nothing(redis: Redis, redis_url: str) -> None:
    app = make_app(make_settings(redis_url, None, billing=False), redis, FakeClock(NOW))
    async with TestClient(TestServer(app)) as client:
        body = json.dumps(build_event("customer.subscription.created",
                                      subscription("sub_1", "cus_A"))).encode()
        resp = await client.post(PATH, data=body, headers={
            "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET, timestamp=int(NOW))})
        assert resp.status == 404
        assert "billing is not configured" in (await resp.json())["error"]["message"]
    assert await redis.dbsize() == 0


async def test_redis_down_answers_503_so_stripe_retries(redis_url: str) -> None:
    down = connect("redis://127.0.0.1:1/0")
    app = make_app(make_settings(redis_url, None), down, FakeClock(NOW))
    try:
        async with TestClient(TestServer(app)) as client:
            resp = await client.post(PATH, data=BODY, headers={
                "Stripe-Signature": sign_payload(BODY, WEBHOOK_SECRET, timestamp=T)})
            assert resp.status == 503
    finally:
        await down.aclose()


# --- lifecycle ----------------------------------------------------------------------------------
async def test_subscription_lifecycle_changes_the_tenants_plan(world: World) -> None:
    tid, key = await linked_tenant(world)
    before = await world.billing(key)
    assert (before["plan"], before["quota"], before["has_customer"]) == ("free", 1000, True)

    status, _ = await world.post_event(world.signed(
        "customer.subscription.created", subscription("sub_1", "cus_A")))
    assert status == 200
    now = await world.billing(key)
    assert (now["plan"], now["status"], now["quota"], now["subscription"]) == (
        "growth", "active", 100_000, "sub_1")

    world.clock.advance(10)
    await world.post_event(world.signed("customer.subscription.updated", subscription(
        "sub_1", "cus_A", price="price_scale", lookup_key=None,
        metadata={"mtdesk_plan": "scale"})))
    assert ((await world.billing(key))["plan"], (await world.billing(key))["quota"]) == ("scale", None)

    world.clock.advance(10)
    failed = {"id": "in_1", "object": "invoice", "customer": "cus_A", "subscription": "sub_1"}
    status, _ = await world.post_event(world.signed("invoice.payment_failed", failed))
    assert status == 200
    assert (await world.billing(key))["status"] == "past_due"

    world.clock.advance(10)
    await world.post_event(world.signed("customer.subscription.deleted",
                                        subscription("sub_1", "cus_A", status="canceled")))
    after = await world.billing(key)
    assert (after["plan"], after["status"], after["quota"]) == ("free", "canceled", 1000)


async def test_subscription_without_customer_index_resolves_by_metadata(world: World) -> None:
    tid, key = await world.tenant()
    status, body = await world.post_event(world.signed(
        "customer.subscription.created", subscription("sub_9", "cus_new", tenant=tid)))
    assert (status, body) == (200, {"received": True})
    assert (await world.billing(key))["plan"] == "growth"
    # ...and the customer is now indexed: a later event without metadata finds the tenant.
    world.clock.advance(5)
    await world.post_event(world.signed("customer.subscription.deleted",
                                        subscription("sub_9", "cus_new", status="canceled")))
    assert (await world.billing(key))["plan"] == "free"


async def test_redelivered_event_is_applied_once(world: World) -> None:
    tid, key = await linked_tenant(world)
    deleted = world.signed("customer.subscription.deleted",
                           subscription("sub_1", "cus_A", status="canceled"), event_id="evt_del")
    assert (await world.post_event(deleted))[0] == 200
    world.clock.advance(60)
    await world.post_event(world.signed("customer.subscription.created",
                                        subscription("sub_2", "cus_A")))
    assert (await world.billing(key))["plan"] == "growth"

    status, body = await world.post_event(deleted)  # Stripe retries the old delivery
    assert (status, body) == (200, {"received": True, "duplicate": True})
    assert (await world.billing(key))["plan"] == "growth"


async def test_events_arriving_out_of_order_do_not_roll_the_plan_back(world: World) -> None:
    tid, key = await linked_tenant(world)
    newer = world.signed("customer.subscription.updated", subscription("sub_1", "cus_A"),
                         created=int(NOW) + 100)
    older = world.signed("customer.subscription.created",
                         subscription("sub_1", "cus_A", status="incomplete"), created=int(NOW))
    await world.post_event(newer)
    status, body = await world.post_event(older)
    assert status == 200 and body["ignored"] == "older than the state"
    assert (await world.billing(key))["status"] == "active"


async def test_ending_an_old_subscription_keeps_the_new_one(world: World) -> None:
    tid, key = await linked_tenant(world)
    await world.post_event(world.signed("customer.subscription.created",
                                        subscription("sub_new", "cus_A")))
    world.clock.advance(5)
    status, body = await world.post_event(world.signed(
        "customer.subscription.deleted", subscription("sub_old", "cus_A", status="canceled")))
    assert body["ignored"] == "other subscription"
    assert (await world.billing(key))["plan"] == "growth"


async def test_unknown_types_and_customers_are_acknowledged_and_counted(world: World) -> None:
    status, body = await world.post_event(world.signed("charge.refunded", {"id": "ch_1"}))
    assert (status, body) == (200, {"received": True, "ignored": "unhandled type"})
    status, body = await world.post_event(world.signed(
        "customer.subscription.updated", subscription("sub_x", "cus_nobody")))
    assert (status, body) == (200, {"received": True, "ignored": "unknown tenant"})
    metrics = await (await world.client.get("/metrics")).text()
    assert 'mtdesk_stripe_events_total{outcome="unhandled_type",type="other"} 1.0' in metrics
    assert ('mtdesk_stripe_events_total{outcome="unknown_tenant",'
            'type="customer.subscription.updated"} 1.0') in metrics


async def test_a_signed_but_unreadable_event_is_400_naming_the_field_and_retryable(world: World) -> None:
    tid, key = await linked_tenant(world)
    bad = world.signed("customer.subscription.updated", {"id": "sub_1", "status": 7},
                       event_id="evt_bad")
    status, body = await world.post_event(bad)
    assert status == 400
    assert "data.object" in body["error"]["field"] and "status" in body["error"]["message"]
    status, _ = await world.post_event(bad)  # not remembered as handled
    assert status == 400


async def test_checkout_in_the_fake_reaches_the_tenant_end_to_end(world: World) -> None:
    tid, key = await world.tenant()
    resp = await world.client.post("/admin/api/v1/billing/checkout", headers={
        "Authorization": f"Bearer {key}"}, json={"price": "price_starter"})
    assert resp.status == 200, await resp.text()
    session_id = (await resp.json())["id"]
    await world.stripe.complete_checkout(session_id)  # the customer pays; Stripe calls us
    assert [s for _, s in world.stripe.deliveries] == [200, 200]
    state = await world.billing(key)
    assert (state["plan"], state["status"], state["quota"]) == ("starter", "active", 10_000)
    sub_id = state["subscription"]

    world.clock.advance(30)
    world.stripe.now = int(world.clock.now())
    await world.stripe.fail_payment(sub_id)
    assert (await world.billing(key))["status"] == "past_due"
    world.clock.advance(30)
    world.stripe.now = int(world.clock.now())
    await world.stripe.cancel_subscription(sub_id)
    assert (await world.billing(key))["plan"] == "free"


# --- fuzz ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live() -> Iterator[LiveApp]:
    # Read like tests/conftest.py does (importing it could pick up a sibling conftest).
    url = os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    with LiveApp(url) as app:
        yield app


def _ensure_fuzz_tenant() -> None:
    """A tenant the fuzzed events can name (other tests flush the database)."""
    import redis as redis_sync

    url = os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    with redis_sync.Redis.from_url(url) as r:
        r.hset(keys.tenant(FUZZ_TENANT), "name", "fuzz")
        r.set(keys.stripe_customer("cus_f"), FUZZ_TENANT)
        for marker in r.scan_iter(match=keys.stripe_event("*").rsplit(":", 1)[0] + ":*"):
            r.delete(marker)  # hypothesis repeats event ids: let each example be handled


FUZZ_TENANT = "t_fuzz"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_types = st.sampled_from([
    "checkout.session.completed", "customer.subscription.created",
    "customer.subscription.updated", "customer.subscription.deleted",
    "invoice.payment_failed", "x.y",
])
_short = st.text(max_size=8)
_price = st.fixed_dictionaries({}, optional={
    "id": _short | _json, "lookup_key": st.none() | st.sampled_from(["starter", "scale"]) | _short,
    "metadata": st.dictionaries(st.sampled_from(["mtdesk_plan", "mtdesk_monthly_messages"]),
                                _short | st.integers().map(str) | _json, max_size=2),
})
_subscription = st.fixed_dictionaries({
    "id": _short,
    "status": st.sampled_from(["active", "past_due", "canceled", "trialing"]) | _short | _json,
}, optional={
    "customer": st.sampled_from(["cus_f", None]) | _short | _json,
    "metadata": st.just({"mtdesk_tenant": FUZZ_TENANT}) | _json,
    "items": st.fixed_dictionaries({"data": st.lists(
        st.fixed_dictionaries({}, optional={"price": _price | _json,
                                            "current_period_end": st.integers() | _json}),
        max_size=2)}) | _json,
    "current_period_end": st.integers() | _json,
    "cancel_at_period_end": st.booleans() | _json,
})
_session = st.fixed_dictionaries({"id": _short}, optional={
    "client_reference_id": st.just(FUZZ_TENANT) | _short | _json,
    "customer": st.sampled_from(["cus_f", None]) | _short | _json,
    "subscription": _short | _json,
})
_invoice = st.fixed_dictionaries({"id": _short}, optional={
    "customer": st.just("cus_f") | _json, "subscription": _short | _json,
    "parent": st.fixed_dictionaries({"subscription_details": st.fixed_dictionaries(
        {"subscription": _short | _json})}) | _json,
})
_typed_objects = st.one_of(
    st.tuples(st.sampled_from(["customer.subscription.created", "customer.subscription.updated",
                               "customer.subscription.deleted"]), _subscription),
    st.tuples(st.just("checkout.session.completed"), _session),
    st.tuples(st.just("invoice.payment_failed"), _invoice),
    st.tuples(_types, _json),  # the wrong shape for the type
)
_events = st.builds(
    lambda eid, typed, created: {"id": eid, "type": typed[0], "data": {"object": typed[1]},
                                 **created},
    st.uuids().map(lambda u: f"evt_{u.hex}") | st.text(min_size=1, max_size=30),
    _typed_objects,
    st.fixed_dictionaries({}, optional={
        "created": st.integers(min_value=-(2**70), max_value=2**70)}),
)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    _events.map(lambda v: json.dumps(v).encode()),
    _events.map(lambda v: json.dumps(v).encode()),  # mostly events: reach the handlers
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_any_signed_body_never_answers_5xx(live: LiveApp, body: bytes) -> None:
    _ensure_fuzz_tenant()
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    try:
        conn.request("POST", PATH, body=body, headers={
            "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET, timestamp=int(live.now))})
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    assert resp.status in (200, 400), (resp.status, answer)
    assert json.loads(answer)  # always a JSON answer


async def test_a_delivery_racing_another_of_the_same_event_is_told_to_retry(world: World) -> None:
    tid, key = await linked_tenant(world)
    signed = world.signed("customer.subscription.created", subscription("sub_1", "cus_A"),
                          event_id="evt_race")
    await world.redis.set(keys.stripe_event("evt_race"), b"processing", ex=60)
    status, body = await world.post_event(signed)
    assert status == 409 and body["error"]["field"] == "id"
    assert (await world.billing(key))["plan"] == "free"
    await world.redis.delete(keys.stripe_event("evt_race"))  # the other delivery died
    assert (await world.post_event(signed))[0] == 200
    assert (await world.billing(key))["plan"] == "growth"


@given(header=st.text(max_size=200) | st.lists(
    st.sampled_from(["t", "v1", "v0", "t ", "", "x"]).flatmap(
        lambda k: st.text(max_size=70).map(lambda v: f"{k}={v}")), max_size=5).map(",".join))
def test_any_signature_header_is_refused_cleanly(header: str) -> None:
    """Whatever the header, verification answers or names the problem; never crashes."""
    try:
        verify_stripe_signature(BODY, header, (Secret(WEBHOOK_SECRET),), now=NOW)
    except SignatureError as exc:
        assert str(exc)
    else:  # only a real signature passes
        assert f"v1={_v1(BODY, T)}" in header
