"""FakeStripe speaks Stripe's wire format well enough for the official SDK, and signs
webhook events the way Stripe's own verifier accepts."""

from __future__ import annotations

import json

import aiohttp
import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.fakes.stripe import FakeStripe, build_event, decode_form, sign_event, sign_payload

KEY = "sk_test_fake"


def sdk(fake: FakeStripe) -> tuple[stripe.StripeClient, stripe.AIOHTTPClient]:
    http = stripe.AIOHTTPClient()
    return stripe.StripeClient(KEY, base_addresses={"api": fake.base_url}, http_client=http,
                               max_network_retries=0), http


async def test_the_sdk_creates_customers_checkouts_and_portals() -> None:
    async with FakeStripe(api_key=KEY) as fake:
        fake.add_price("price_1", lookup_key="starter")
        client, http = sdk(fake)
        try:
            customer = await client.v1.customers.create_async(
                {"email": "a@b.example", "metadata": {"mtdesk_tenant": "t1"}})
            session = await client.v1.checkout.sessions.create_async({
                "mode": "subscription", "line_items": [{"price": "price_1", "quantity": 1}],
                "customer": customer.id, "client_reference_id": "t1",
                "success_url": "https://x.example/ok", "cancel_url": "https://x.example/no",
            })
            portal = await client.v1.billing_portal.sessions.create_async(
                {"customer": customer.id, "return_url": "https://x.example/"})
        finally:
            await http.close_async()
        assert customer.metadata["mtdesk_tenant"] == "t1"
        assert session.client_reference_id == "t1" and session.url.startswith(fake.base_url)
        assert portal.customer == customer.id
        paths = [r.path for r in fake.requests]
        assert paths == ["/v1/customers", "/v1/checkout/sessions", "/v1/billing_portal/sessions"]
        assert fake.requests[1].params["line_items"] == [{"price": "price_1", "quantity": "1"}]
        assert all(r.api_key == KEY and r.stripe_version for r in fake.requests)


async def test_errors_have_stripes_shape_and_become_sdk_exceptions() -> None:
    async with FakeStripe(api_key=KEY) as fake:
        client, http = sdk(fake)
        try:
            with pytest.raises(stripe.InvalidRequestError) as missing:
                await client.v1.checkout.sessions.create_async({
                    "mode": "subscription", "line_items": [{"price": "price_nope"}],
                    "success_url": "https://x.example"})
            fake.fail_next(429, type_="invalid_request_error", code="rate_limit")
            with pytest.raises(stripe.RateLimitError):
                await client.v1.customers.create_async({})
        finally:
            await http.close_async()
        assert (missing.value.code, missing.value.param) == ("resource_missing",
                                                             "line_items[0][price]")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{fake.base_url}/v1/customers") as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["type"] == "invalid_request_error"
            async with session.post(f"{fake.base_url}/v1/customers",
                                    headers={"Authorization": "Bearer sk_live_wrong"}) as resp:
                assert resp.status == 401


def test_signatures_verify_with_stripes_own_verifier() -> None:
    event = build_event("customer.subscription.updated", {"id": "sub_1"}, created=1_700_000_000)
    signed = sign_event(event, "whsec_abc", timestamp=1_700_000_000)
    assert stripe.WebhookSignature.verify_header(
        signed.body.decode(), signed.signature, "whsec_abc", tolerance=None)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            signed.body.decode(), signed.signature, "whsec_other", tolerance=None)
    assert json.loads(signed.body)["type"] == "customer.subscription.updated"


def test_extra_v1_signatures_are_listed_after_the_real_one() -> None:
    header = sign_payload(b"{}", "whsec_abc", timestamp=5, extra_v1=("ff" * 32,))
    parts = header.split(",")
    assert parts[0] == "t=5" and [p[:3] for p in parts[1:]] == ["v1=", "v1="]


async def test_completing_a_checkout_delivers_signed_events() -> None:
    received: list[tuple[str, str]] = []

    async def hook(request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.read()
        stripe.WebhookSignature.verify_header(
            body.decode(), request.headers["Stripe-Signature"], "whsec_abc", tolerance=None)
        received.append((json.loads(body)["type"], request.headers["Stripe-Signature"][:2]))
        return aiohttp.web.json_response({"received": True})

    app = aiohttp.web.Application()
    app.router.add_post("/hook", hook)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with FakeStripe(webhook_secret="whsec_abc",
                              webhook_url=f"http://127.0.0.1:{port}/hook") as fake:
            fake.add_price("price_1")
            client, http = sdk(fake)
            try:
                session = await client.v1.checkout.sessions.create_async({
                    "mode": "subscription", "line_items": [{"price": "price_1", "quantity": 1}],
                    "client_reference_id": "t1", "success_url": "https://x.example/ok"})
            finally:
                await http.close_async()
            async with aiohttp.ClientSession() as browser:  # "paying" = opening the URL
                async with browser.get(session.url, allow_redirects=False) as resp:
                    assert resp.status == 302
                    assert resp.headers["Location"] == "https://x.example/ok"
            sub_id = next(iter(fake.subscriptions))
            await fake.cancel_subscription(sub_id)
    finally:
        await runner.cleanup()
    assert [t for t, _ in received] == ["customer.subscription.created",
                                        "checkout.session.completed",
                                        "customer.subscription.deleted"]
    assert fake.deliveries == [(t, 200) for t, _ in received]


@given(st.dictionaries(
    st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10) | st.dictionaries(
        st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(max_size=5), max_size=3),
    max_size=4,
))
def test_form_decoding_inverts_the_sdks_encoding(params: dict[str, object]) -> None:
    from stripe._encode import _api_encode

    pairs = list(_api_encode(params))  # the exact encoder the SDK sends with
    decoded = decode_form([(k, str(v)) for k, v in pairs])
    expected = {k: v for k, v in params.items() if v != {}}  # empty dicts send nothing
    assert decoded == expected
