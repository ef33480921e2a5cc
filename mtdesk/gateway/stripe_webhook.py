"""``POST /webhooks/stripe``: Stripe's billing events change a tenant's plan and status.

Answers (JSON; errors are ``{"error": {"field", "message"}}``):

- 404 when billing is off (``MTDESK_STRIPE_API_KEY`` unset);
- 503 when ``MTDESK_STRIPE_WEBHOOK_SECRET`` is unset or Redis cannot be reached (Stripe
  retries for days: nothing is lost);
- 413 for a body over 1 MiB;
- 400 naming the problem when ``Stripe-Signature`` is missing, malformed, matches no
  ``v1`` signature over the RAW body, or its timestamp is more than 300 s from our clock;
  400 naming the field when a signed body is not a Stripe event we can read;
- 200 otherwise: ``{"received": true}`` plus ``"duplicate": true`` for an event id already
  handled (Redis SET NX, kept 7 days), ``"ignored": <why>`` for an event that changes
  nothing (unknown type, unknown customer, older than the state);
- 409 while another delivery of the same event is being handled (Stripe retries later).
  An event that failed (400/503) is forgotten, so Stripe's retry is handled afresh.

Handled events: ``checkout.session.completed`` (links the Stripe customer and
subscription to the tenant named by ``client_reference_id``),
``customer.subscription.created|updated|deleted`` (plan, status, period end; the tenant
is found by ``metadata.mtdesk_tenant`` or the customer index), ``invoice.payment_failed``
(status ``past_due``). Counted in ``mtdesk_stripe_events_total{type, outcome}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Final, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import now_ms
from mtdesk.core.errors import StoreUnavailable, ValidationError
from mtdesk.core.http import error_response, read_body
from mtdesk.core.redis import UNAVAILABLE, Redis
from mtdesk.core.secret import Secret
from mtdesk.gateway.routes import METRICS
from mtdesk.policy import quotas

log = logging.getLogger(__name__)

PATH: Final = "/webhooks/stripe"
TOLERANCE_S: Final = 300
MAX_BODY_BYTES: Final = 1024 * 1024
EVENT_TTL_S: Final = 7 * 24 * 3600  # Stripe retries a failed delivery for up to 3 days
_PROCESSING: Final = b"processing"
_DONE: Final = b"done"
_PROCESSING_TTL_S: Final = 60
TENANT_METADATA: Final = "mtdesk_tenant"  # set on customers, sessions and subscriptions we create
HANDLED: Final = frozenset({
    "checkout.session.completed", "customer.subscription.created",
    "customer.subscription.updated", "customer.subscription.deleted", "invoice.payment_failed",
})


# --- signature ---------------------------------------------------------------------------------
class SignatureError(Exception):
    """Why a ``Stripe-Signature`` header is refused (the message is safe to answer)."""


def verify_stripe_signature(
    body: bytes, header: str | None, secrets: tuple[Secret, ...], *, now: float,
    tolerance_s: int = TOLERANCE_S,
) -> int:
    """Check ``header`` as Stripe defines it: ``t=<unix ts>,v1=<hex>[,v1=<hex>…]`` where a
    v1 is HMAC-SHA256 of ``"<t>.<raw body>"`` with a webhook secret. Any v1 may match any
    secret (constant-time compares); ``t`` must be within ``tolerance_s`` of ``now``.
    Returns ``t``; raises :class:`SignatureError` naming the problem."""
    if not header:
        raise SignatureError("missing")
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value.strip().encode("ascii", "replace"))
    if timestamp is None:
        raise SignatureError("malformed: no t=<timestamp> (expected t=...,v1=...)")
    if not candidates:
        raise SignatureError("malformed: no v1 signature (expected t=...,v1=...)")
    signed = f"{timestamp}.".encode() + body
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.reveal().encode(), signed, hashlib.sha256).hexdigest().encode()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no v1 signature matches the body")
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp is more than {tolerance_s} s from the server's time")
    return timestamp


def webhook_secrets(secret: Secret | None) -> tuple[Secret, ...]:
    """The configured secret(s): comma-separated, so a rolled secret can overlap the old."""
    if secret is None:
        return ()
    return tuple(Secret(s.strip()) for s in secret.reveal().split(",") if s.strip())


# --- wire types (decode only what we use; tolerate the rest) ----------------------------------
class _Data(msgspec.Struct):
    object: msgspec.Raw


class StripeEvent(msgspec.Struct):
    id: str
    type: str
    data: _Data
    created: int = 0


class _Price(msgspec.Struct):
    id: str = ""
    lookup_key: str | None = None
    metadata: dict[str, str] = {}


class _Item(msgspec.Struct):
    price: _Price | None = None
    current_period_end: int | None = None


class _Items(msgspec.Struct):
    data: list[_Item] = []


class _Subscription(msgspec.Struct):
    id: str
    status: str
    customer: str | None = None
    items: _Items = msgspec.field(default_factory=_Items)
    metadata: dict[str, str] = {}
    current_period_end: int | None = None  # before API 2025-03: on the subscription
    cancel_at_period_end: bool = False


class _CheckoutSession(msgspec.Struct):
    id: str
    client_reference_id: str | None = None
    customer: str | None = None
    subscription: str | None = None
    metadata: dict[str, str] = {}


class _SubscriptionDetails(msgspec.Struct):
    subscription: str | None = None


class _InvoiceParent(msgspec.Struct):
    subscription_details: _SubscriptionDetails | None = None


class _Invoice(msgspec.Struct):
    id: str
    customer: str | None = None
    subscription: str | None = None  # before API 2025-03
    parent: _InvoiceParent | None = None


_EVENT = msgspec.json.Decoder(StripeEvent)
_T = TypeVar("_T")


def _decode(raw: bytes, kind: type[_T], where: str) -> _T:
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        # msgspec names the path: "Expected `str`, got `int` - at `$.customer`"
        raise ValidationError(where, str(exc).replace("`$", f"`{where}")) from None
    except msgspec.DecodeError:
        raise ValidationError(where, "is not valid JSON") from None


# --- handling -------------------------------------------------------------------------------------
class StripeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "mtdesk_stripe_events", "Stripe webhook events by type and outcome",
            ("type", "outcome"), registry=registry,
        )

    def count(self, type_: str, outcome: str) -> None:
        self.events.labels(type_ if type_ in HANDLED else "other", outcome).inc()


STRIPE_METRICS = web.AppKey("stripe_metrics", StripeMetrics)


async def _tenant_exists(redis: Redis, tenant_id: str) -> bool:
    return bool(tenant_id) and bool(await redis.exists(keys.tenant(tenant_id)))


async def _resolve(redis: Redis, named: str | None, customer: str | None) -> str | None:
    """The tenant an event is about: the one it names, else its customer's."""
    if named and await _tenant_exists(redis, named):
        return named
    if customer:
        tenant = await quotas.tenant_of_customer(redis, customer)
        if tenant and await _tenant_exists(redis, tenant):
            return tenant
    return None


async def handle_event(redis: Redis, event: StripeEvent, *, now_ms: int) -> str:
    """Apply one verified event. Returns '' when it changed state, else why not.
    Raises ValidationError (unreadable object) or a Redis error."""
    raw = bytes(event.data.object)
    if event.type == "checkout.session.completed":
        session = _decode(raw, _CheckoutSession, "data.object")
        tenant = await _resolve(
            redis, session.client_reference_id or session.metadata.get(TENANT_METADATA),
            session.customer,
        )
        if tenant is None:
            return "unknown tenant"
        if not session.customer:
            return "no customer"
        await quotas.link_customer(redis, tenant, session.customer, now_ms=now_ms,
                                   subscription=session.subscription or "")
        return ""
    if event.type.startswith("customer.subscription."):
        sub = _decode(raw, _Subscription, "data.object")
        tenant = await _resolve(redis, sub.metadata.get(TENANT_METADATA), sub.customer)
        if tenant is None:
            return "unknown tenant"
        item = sub.items.data[0] if sub.items.data else _Item()
        price = item.price or _Price()
        change = quotas.SubscriptionChange(
            subscription=sub.id, customer=sub.customer or "", status=sub.status,
            plan=quotas.resolve_plan(price.id, price.lookup_key, price.metadata),
            price=price.id,
            current_period_end_s=item.current_period_end or sub.current_period_end or 0,
            cancel_at_period_end=sub.cancel_at_period_end,
            event_created=event.created, deleted=event.type.endswith(".deleted"),
        )
        return await quotas.apply_subscription(redis, tenant, change, now_ms=now_ms)
    if event.type == "invoice.payment_failed":
        invoice = _decode(raw, _Invoice, "data.object")
        tenant = await _resolve(redis, None, invoice.customer)
        if tenant is None:
            return "unknown tenant"
        details = invoice.parent.subscription_details if invoice.parent else None
        subscription = invoice.subscription or (details.subscription if details else None) or ""
        return await quotas.mark_past_due(redis, tenant, subscription, now_ms=now_ms)
    return "unhandled type"


async def post_stripe_webhook(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    if not settings.billing_enabled:
        return error_response(404, None, "billing is not configured on this server")
    secrets = webhook_secrets(settings.stripe_webhook_secret)
    if not secrets:
        log.error("stripe webhook: MTDESK_STRIPE_WEBHOOK_SECRET is unset; refusing events")
        return error_response(503, "MTDESK_STRIPE_WEBHOOK_SECRET", "is not configured on this server")
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except asyncio.IncompleteReadError:
        return error_response(400, "body", "shorter than its Content-Length")
    if body is None:
        return error_response(413, "body", f"larger than {MAX_BODY_BYTES} bytes")
    metrics = app[STRIPE_METRICS]
    clock = app[CLOCK]
    try:
        verify_stripe_signature(body, request.headers.get("Stripe-Signature"), secrets,
                                now=clock.now())
    except SignatureError as exc:
        metrics.count("", "bad_signature")
        return error_response(400, "Stripe-Signature", str(exc))
    try:
        event = _EVENT.decode(body)
    except msgspec.ValidationError as exc:
        return error_response(400, "body", f"not a Stripe event: {exc}")
    except msgspec.DecodeError:
        return error_response(400, "body", "not a Stripe event: invalid JSON")

    redis = app[REDIS]
    marker = keys.stripe_event(event.id)
    try:
        # "processing" expires soon: if we die mid-way, Stripe's retry is handled anew.
        fresh = await redis.set(marker, _PROCESSING, nx=True, ex=_PROCESSING_TTL_S)
        state = None if fresh else await redis.get(marker)
    except UNAVAILABLE:
        return error_response(503, "redis", "store unavailable, retry later")
    if not fresh:
        if state == _PROCESSING:  # a concurrent delivery of the same event: let Stripe retry
            return error_response(409, "id", "this event is being processed; retry later")
        metrics.count(event.type, "duplicate")
        return web.json_response({"received": True, "duplicate": True})
    try:
        ignored = await handle_event(redis, event, now_ms=now_ms(clock))
        await redis.set(marker, _DONE, ex=EVENT_TTL_S)
    except ValidationError as exc:
        await _forget(redis, marker)
        metrics.count(event.type, "unreadable")
        log.warning("stripe webhook: unreadable %s %s (%s)", event.type, event.id, exc.field)
        return error_response(400, exc.field, exc.problem)
    except (StoreUnavailable, *UNAVAILABLE):
        await _forget(redis, marker)
        return error_response(503, "redis", "store unavailable, retry later")
    outcome = "applied" if not ignored else ignored.replace(" ", "_")
    metrics.count(event.type, outcome)
    if ignored:
        level = logging.INFO if ignored == "unhandled type" else logging.WARNING
        log.log(level, "stripe webhook: %s %s ignored: %s", event.type, event.id, ignored)
        return web.json_response({"received": True, "ignored": ignored})
    log.info("stripe webhook: %s %s applied", event.type, event.id)
    return web.json_response({"received": True})


async def _forget(redis: Redis, marker: str) -> None:
    """The event did not take effect: let Stripe's retry handle it afresh."""
    try:
        await redis.delete(marker)
    except UNAVAILABLE:
        pass  # the "processing" marker expires within _PROCESSING_TTL_S anyway


def setup_stripe_webhook(app: web.Application) -> None:
    """Add ``POST /webhooks/stripe``. Needs app[REDIS], app[SETTINGS], app[CLOCK]; counts
    on the gateway's metrics registry when :func:`setup_gateway` ran first."""
    registry = app[METRICS].registry if METRICS in app else CollectorRegistry()
    app[STRIPE_METRICS] = StripeMetrics(registry)
    app.router.add_post(PATH, post_stripe_webhook)
