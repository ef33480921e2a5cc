"""Billing routes (tenant key, or operator with ``tenant_id``): plan, usage, Stripe Checkout
and the Stripe customer portal.

- ``GET /admin/api/v1/billing`` → ``{"billing_enabled", "plan", "status", "month",
  "usage", "quota", "remaining", "resets_at_ms", "subscription", "current_period_end_s",
  "cancel_at_period_end", "has_customer"}`` (``quota``/``remaining`` null = unlimited).
  Works with billing off too (plan ``unlimited``).
- ``POST /admin/api/v1/billing/checkout`` ``{"price", "success_url"?, "cancel_url"?}`` →
  ``{"id", "url"}``: a subscription Checkout Session for the tenant (its Stripe customer is
  created on first use, ``client_reference_id`` = tenant id). Open ``url`` in a browser.
- ``POST /admin/api/v1/billing/portal`` ``{"return_url"?}`` → ``{"url"}``: where the tenant
  changes plan, payment method or cancels.

Billing off (``MTDESK_STRIPE_API_KEY`` unset): checkout and portal answer 409 with field
``billing``. Stripe errors: an unknown price → 400 (field ``price``); a refused API key →
503 (field ``MTDESK_STRIPE_API_KEY``); Stripe unreachable → 502. The plan itself changes
only when Stripe's webhook says so (:mod:`mtdesk.gateway.stripe_webhook`).

:func:`cancel_subscription` is for account deletion: the route that deletes an account
calls it so the business is not charged for a service it left.
"""

from __future__ import annotations

import aiohttp
import stripe
from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import ForTenant, tenant_scope
from mtdesk.admin.bodies import NewCheckout, NewPortal
from mtdesk.admin.decode import body_errors, read_body, read_optional_body
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import now_ms
from mtdesk.core.errors import ConfigError, Conflict, ValidationError
from mtdesk.core.http import json_response
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants
from mtdesk.policy import quotas

STRIPE_TIMEOUT_S = 20.0
TENANT_METADATA = "mtdesk_tenant"  # the webhook finds the tenant by it (gateway.stripe_webhook)
_ENDED = frozenset({"canceled", "incomplete_expired"})  # Stripe's final subscription states


class StripeGateway:
    """The one Stripe API client of the admin app (official SDK over aiohttp), made on
    first use and closed with the app."""

    def __init__(self) -> None:
        self._client: stripe.StripeClient | None = None
        self._http: stripe.AIOHTTPClient | None = None

    def client(self, settings: Settings) -> stripe.StripeClient:
        if self._client is None:
            if settings.stripe_api_key is None:
                raise Conflict("billing", "billing is not configured on this server")
            self._http = stripe.AIOHTTPClient(
                timeout=aiohttp.ClientTimeout(total=STRIPE_TIMEOUT_S)
            )
            self._client = stripe.StripeClient(
                settings.stripe_api_key.reveal(),
                base_addresses={"api": settings.stripe_api_base},
                http_client=self._http,
                max_network_retries=2,  # the SDK adds idempotency keys to retried POSTs
            )
        return self._client

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http, self._client = self._http, None, None
            await http.close_async()


STRIPE = web.AppKey("stripe_gateway", StripeGateway)


def _stripe_failure(exc: stripe.StripeError, field: str) -> Exception:
    """A Stripe error as one of ours (or a 502 for the middleware)."""
    message = exc.user_message or "Stripe refused the request"
    if isinstance(exc, stripe.InvalidRequestError):
        param = str(exc.param or "")
        return ValidationError(field if param.startswith(("line_items", field)) or not param
                               else param, message)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ConfigError("MTDESK_STRIPE_API_KEY", "Stripe refused the API key")
    return web.HTTPBadGateway(reason="Stripe is unavailable, retry later")


def _url(value: object, field: str, default: str) -> str:
    if value is None:
        return default
    if (not isinstance(value, str) or not value.startswith(("http://", "https://"))
            or len(value) > 2000 or any(c.isspace() for c in value)):
        raise ValidationError(field, "must be an http(s) URL")
    return value


def _price(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("price", "is required (a Stripe price id, e.g. price_123)")
    price = value.strip()
    if len(price) > 255 or any(c.isspace() or ord(c) < 32 for c in price):
        raise ValidationError("price", "must be a Stripe price id, e.g. price_123")
    return price


async def _tenant(request: web.Request, body: ForTenant | None = None) -> tuple[str, str, str]:
    """(id, name, email) of the tenant acted for; 404 if it does not exist."""
    tid = tenant_scope(request, body)
    record = await Tenants(request.config_dict[REDIS], request.config_dict[CLOCK]).get(tid)
    return tid, record.name, record.email


def _require_billing(settings: Settings) -> None:
    if not settings.billing_enabled:
        raise Conflict("billing", "billing is not configured on this server "
                                  "(MTDESK_STRIPE_API_KEY is unset): every tenant is unlimited")


async def get_billing(request: web.Request) -> web.Response:
    tid, _, _ = await _tenant(request)
    settings = request.config_dict[SETTINGS]
    redis = request.config_dict[REDIS]
    at = now_ms(request.config_dict[CLOCK])
    account = await quotas.load_account(redis, tid)
    used = await quotas.read_usage(redis, tid, now_ms=at, enforce=settings.billing_enabled)
    on = settings.billing_enabled
    return json_response({
        "tenant_id": tid,
        "billing_enabled": on,
        "plan": account.plan if on else quotas.UNBILLED.name,
        "status": account.status or "none",
        "month": f"{used.month[:4]}-{used.month[4:]}",
        "usage": used.used,
        "quota": used.limit,
        "remaining": used.remaining,
        "resets_at_ms": used.resets_at_ms,
        "subscription": account.subscription or None,
        "current_period_end_s": account.current_period_end_s or None,
        "cancel_at_period_end": account.cancel_at_period_end,
        "has_customer": bool(account.customer),
    })


async def _customer(request: web.Request, client: stripe.StripeClient, tid: str,
                    name: str, email: str) -> str:
    """The tenant's Stripe customer, created (once, even under concurrent calls) if none."""
    redis = request.config_dict[REDIS]
    account = await quotas.load_account(redis, tid)
    if account.customer:
        return account.customer
    try:
        customer = await client.v1.customers.create_async(
            {"name": name, "email": email, "metadata": {TENANT_METADATA: tid}},
            {"idempotency_key": f"mtdesk-customer-{tid}"},
        )
    except stripe.StripeError as exc:
        raise _stripe_failure(exc, "customer") from exc
    await quotas.link_customer(redis, tid, customer.id, now_ms=now_ms(request.config_dict[CLOCK]))
    return customer.id


async def create_checkout(request: web.Request) -> web.Response:
    body = await read_body(request, NewCheckout)
    tid, name, email = await _tenant(request, body)
    settings = request.config_dict[SETTINGS]
    _require_billing(settings)
    base = settings.base_url
    with body_errors(NewCheckout):
        price = _price(body.price)
        success = _url(body.success_url, "success_url", f"{base}/admin/?billing=success")
        cancel = _url(body.cancel_url, "cancel_url", f"{base}/admin/?billing=cancel")
    account = await quotas.load_account(request.config_dict[REDIS], tid)
    if account.subscribed:
        raise Conflict("price", "the tenant already has a subscription; change or cancel it "
                                "in the billing portal (POST /admin/api/v1/billing/portal)")
    client = request.config_dict[STRIPE].client(settings)
    customer = await _customer(request, client, tid, name, email)
    try:
        session = await client.v1.checkout.sessions.create_async({
            "mode": "subscription",
            "line_items": [{"price": price, "quantity": 1}],
            "customer": customer,
            "client_reference_id": tid,
            "success_url": success,
            "cancel_url": cancel,
            "metadata": {TENANT_METADATA: tid},
            "subscription_data": {"metadata": {TENANT_METADATA: tid}},
        })
    except stripe.StripeError as exc:
        raise _stripe_failure(exc, "price") from exc
    return json_response({"id": session.id, "url": session.url})


async def create_portal(request: web.Request) -> web.Response:
    body = await read_optional_body(request, NewPortal)
    tid, _, _ = await _tenant(request, body)
    settings = request.config_dict[SETTINGS]
    _require_billing(settings)
    with body_errors(NewPortal):
        return_url = _url(body.return_url, "return_url", f"{settings.base_url}/admin/")
    account = await quotas.load_account(request.config_dict[REDIS], tid)
    if not account.customer:
        raise Conflict("customer", "the tenant has no Stripe customer yet; start a checkout "
                                   "first (POST /admin/api/v1/billing/checkout)")
    client = request.config_dict[STRIPE].client(settings)
    try:
        portal = await client.v1.billing_portal.sessions.create_async(
            {"customer": account.customer, "return_url": return_url}
        )
    except stripe.StripeError as exc:
        raise _stripe_failure(exc, "customer") from exc
    return json_response({"url": portal.url})


async def cancel_subscription(request: web.Request, tenant_id: str) -> str | None:
    """Cancel the tenant's Stripe subscription now, so a deleted account is never charged
    again. Returns the canceled subscription id; None when billing is off or there is
    nothing to cancel (also when Stripe no longer knows it). Stripe failures raise like
    the routes' (ConfigError for a refused key, a 502 HTTPException when unreachable).
    The plan changes when Stripe's ``customer.subscription.deleted`` event arrives."""
    settings = request.config_dict[SETTINGS]
    if not settings.billing_enabled:
        return None
    account = await quotas.load_account(request.config_dict[REDIS], tenant_id)
    if not account.subscription or account.status in _ENDED:
        return None
    gateway = request.config_dict.get(STRIPE)
    own = gateway is None
    gateway = gateway or StripeGateway()
    try:
        await gateway.client(settings).v1.subscriptions.cancel_async(account.subscription)
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing":
            return None
        raise _stripe_failure(exc, "subscription") from exc
    except stripe.StripeError as exc:
        raise _stripe_failure(exc, "subscription") from exc
    finally:
        if own:
            await gateway.aclose()
    return account.subscription


async def _close_stripe(admin: web.Application) -> None:
    await admin[STRIPE].aclose()


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    admin[STRIPE] = StripeGateway()
    admin.on_cleanup.append(_close_stripe)
    r.add_get(f"{API_BASE}/billing", get_billing)
    r.add_post(f"{API_BASE}/billing/checkout", create_checkout)
    r.add_post(f"{API_BASE}/billing/portal", create_portal)
