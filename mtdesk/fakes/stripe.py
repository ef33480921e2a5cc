"""A fake Stripe: a real aiohttp server speaking enough of Stripe's REST wire format for
MT Desk's billing, and a signer of webhook events exactly as Stripe signs them.

Wire format (what the official ``stripe`` SDK sends and expects): form-encoded request
bodies with bracketed keys (``line_items[0][price]=…``, ``metadata[k]=v``),
``Authorization: Bearer sk_test_…``, JSON answers, and errors as
``{"error": {"type", "message", "code", "param"}}`` with Stripe's HTTP statuses.

Endpoints (``base_url`` = ``root_url``; point ``MTDESK_STRIPE_API_BASE`` at it):

- ``POST /v1/customers`` → a ``customer``;
- ``POST /v1/checkout/sessions`` (``mode=subscription`` needs ``line_items[0][price]`` of a
  price added with :meth:`FakeStripe.add_price`, ``success_url``) → a ``checkout.session``
  with ``url`` (``GET`` on that URL completes the checkout, like paying would);
- ``POST /v1/billing_portal/sessions`` (``customer`` known) → ``{"id", "url", …}``;
- ``DELETE /v1/subscriptions/{id}`` → the canceled ``subscription`` (and its
  ``customer.subscription.deleted`` event).

Every request is recorded in :attr:`FakeStripe.requests` (path, decoded params, API key,
idempotency key). :meth:`FakeStripe.fail_next` injects Stripe errors.

Webhooks: :func:`build_event` and :func:`sign_payload` make the body and the
``Stripe-Signature`` header (``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``). The
lifecycle helpers (:meth:`complete_checkout`, :meth:`update_subscription`,
:meth:`cancel_subscription`, :meth:`fail_payment`) change the fake's state, build the
events Stripe would send, sign them with ``webhook_secret`` and, when ``webhook_url`` is
set, deliver them (the answers' statuses are kept in :attr:`deliveries`).

As a process: ``python -m mtdesk.fakes.stripe --port 0 --price price_1=starter
--webhook-url http://127.0.0.1:8080/webhooks/stripe --webhook-secret whsec_…`` (or
:func:`spawn_stripe`); opening a checkout ``url`` then "pays" and delivers the events.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from mtdesk.fakes._server import FakeProcess, FakeServer, process_arguments, spawn_fake

API_VERSION = "2026-10-28.endive"
_KEY_PART = re.compile(r"\[([^\]]*)\]")


@dataclass
class StripeRequest:
    method: str
    path: str
    params: dict[str, Any]
    api_key: str | None
    idempotency_key: str | None
    stripe_version: str | None


@dataclass
class SignedEvent:
    """A webhook body as Stripe sends it, with its signature header."""

    event: dict[str, Any]
    body: bytes
    signature: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Stripe-Signature": self.signature, "Content-Type": "application/json"}


@dataclass
class _Failure:
    status: int
    type: str
    code: str | None
    message: str
    remaining: int


@dataclass
class _Price:
    id: str
    lookup_key: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    unit_amount: int = 1000


# --- wire helpers ---------------------------------------------------------------------------
def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracketed form keys → nested dicts; dicts keyed 0..n-1 become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *_KEY_PART.findall("[" + rest)] if rest else [head]
        node = root
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def stripe_error(status: int, type_: str, message: str, *, code: str | None = None,
                 param: str | None = None) -> web.Response:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return web.json_response({"error": error}, status=status,
                             headers={"Request-Id": f"req_fake{time.monotonic_ns()}"})


def sign_payload(body: bytes, secret: str, *, timestamp: int, extra_v1: tuple[str, ...] = ()) -> str:
    """The ``Stripe-Signature`` header Stripe would send for ``body``: ``t=…,v1=…`` (and
    any ``extra_v1`` signatures, as during a secret roll)."""
    signed = f"{timestamp}.".encode() + body
    v1 = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return ",".join([f"t={timestamp}", f"v1={v1}", *(f"v1={s}" for s in extra_v1)])


def build_event(type_: str, obj: dict[str, Any], *, event_id: str | None = None,
                created: int | None = None) -> dict[str, Any]:
    """A Stripe ``event`` object around ``obj`` (what the webhook body holds)."""
    return {
        "id": event_id or f"evt_fake{next(_ids)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def sign_event(event: dict[str, Any], secret: str, *, timestamp: int | None = None) -> SignedEvent:
    body = json.dumps(event, separators=(",", ":")).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    return SignedEvent(event, body, sign_payload(body, secret, timestamp=ts))


_ids = itertools.count(1)


# --- the server -----------------------------------------------------------------------------
class FakeStripe(FakeServer):
    """The fake Stripe API (see the module docstring)."""

    def __init__(self, *, api_key: str | None = None, webhook_secret: str = "whsec_fake",
                 webhook_url: str | None = None, latency_s: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port, latency_s=latency_s)
        self.api_key = api_key  # None: any sk_test_… key is accepted
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.requests: list[StripeRequest] = []
        self.deliveries: list[tuple[str, int]] = []  # (event type, HTTP status)
        self.prices: dict[str, _Price] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self._failures: list[_Failure] = []
        self._seq = itertools.count(1)
        self.now: int | None = None  # event times; None = real time

    @property
    def base_url(self) -> str:
        return self.root_url

    def add_price(self, price_id: str, *, lookup_key: str | None = None,
                  metadata: dict[str, str] | None = None, unit_amount: int = 1000) -> None:
        self.prices[price_id] = _Price(price_id, lookup_key, dict(metadata or {}), unit_amount)

    def fail_next(self, status: int = 500, *, type_: str = "api_error", code: str | None = None,
                  message: str = "injected failure", times: int = 1) -> None:
        """The next ``times`` API calls answer this Stripe error."""
        self._failures.append(_Failure(status, type_, code, message, times))

    def requests_to(self, path: str) -> list[StripeRequest]:
        return [r for r in self.requests if r.path == path]

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/customers", self._h_customers)
        app.router.add_post("/v1/checkout/sessions", self._h_checkout)
        app.router.add_post("/v1/billing_portal/sessions", self._h_portal)
        app.router.add_delete("/v1/subscriptions/{id}", self._h_cancel)
        app.router.add_get("/_fake/checkout/{id}", self._h_pay)
        app.router.add_get("/_fake/portal/{id}", self._h_portal_page)
        app.router.add_route("*", "/v1/{tail:.*}", self._h_unknown)
        return app

    # --- request plumbing -------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._seq)}"

    def _time(self) -> int:
        return int(time.time()) if self.now is None else self.now

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        pairs = list((await request.post()).items()) if request.body_exists else []
        params = decode_form([(k, str(v)) for k, v in pairs])
        header = request.headers.get("Authorization", "")
        key = header[7:] if header.startswith("Bearer ") else None
        self.requests.append(StripeRequest(
            request.method, request.path, params, key,
            request.headers.get("Idempotency-Key"), request.headers.get("Stripe-Version"),
        ))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if key is None:
            return params, stripe_error(401, "invalid_request_error",
                                        "You did not provide an API key.")
        if (self.api_key is not None and key != self.api_key) or not key.startswith("sk_test_"):
            return params, stripe_error(401, "invalid_request_error",
                                        "Invalid API Key provided: sk_****", code="api_key_invalid")
        for failure in self._failures:
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.remove(failure)
            return params, stripe_error(failure.status, failure.type, failure.message,
                                        code=failure.code)
        return params, None

    @staticmethod
    def _missing(param: str) -> web.Response:
        return stripe_error(400, "invalid_request_error", f"Missing required param: {param}.",
                            code="parameter_missing", param=param)

    # --- API ----------------------------------------------------------------------------
    async def _h_customers(self, request: web.Request) -> web.Response:
        params, early = await self._begin(request)
        if early is not None:
            return early
        customer: dict[str, Any] = {
            "id": self._id("cus"), "object": "customer", "created": self._time(),
            "email": params.get("email"), "name": params.get("name"),
            "metadata": params.get("metadata") or {}, "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return web.json_response(customer)

    async def _h_checkout(self, request: web.Request) -> web.Response:
        params, early = await self._begin(request)
        if early is not None:
            return early
        mode = params.get("mode")
        if mode not in ("payment", "setup", "subscription"):
            return self._missing("mode")
        items = params.get("line_items")
        if mode == "subscription" and (not isinstance(items, list) or not items
                                       or not isinstance(items[0], dict)
                                       or not items[0].get("price")):
            return self._missing("line_items[0][price]")
        price_id = items[0]["price"] if isinstance(items, list) else None
        if price_id is not None and price_id not in self.prices:
            return stripe_error(400, "invalid_request_error", f"No such price: '{price_id}'",
                                code="resource_missing", param="line_items[0][price]")
        if not params.get("success_url"):
            return self._missing("success_url")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            return stripe_error(400, "invalid_request_error", f"No such customer: '{customer}'",
                                code="resource_missing", param="customer")
        sid = self._id("cs_test")
        session = {
            "id": sid, "object": "checkout.session", "mode": mode, "status": "open",
            "url": f"{self.root_url}/_fake/checkout/{sid}",
            "customer": customer, "client_reference_id": params.get("client_reference_id"),
            "success_url": params["success_url"], "cancel_url": params.get("cancel_url"),
            "metadata": params.get("metadata") or {}, "subscription": None,
            "created": self._time(), "livemode": False, "payment_status": "unpaid",
            "_price": price_id,
            "_subscription_metadata": (params.get("subscription_data") or {}).get("metadata") or {},
        }
        self.sessions[sid] = session
        return web.json_response({k: v for k, v in session.items() if not k.startswith("_")})

    async def _h_portal(self, request: web.Request) -> web.Response:
        params, early = await self._begin(request)
        if early is not None:
            return early
        customer = params.get("customer")
        if not customer:
            return self._missing("customer")
        if customer not in self.customers:
            return stripe_error(400, "invalid_request_error", f"No such customer: '{customer}'",
                                code="resource_missing", param="customer")
        pid = self._id("bps")
        return web.json_response({
            "id": pid, "object": "billing_portal.session", "customer": customer,
            "return_url": params.get("return_url"), "created": self._time(),
            "url": f"{self.root_url}/_fake/portal/{pid}", "livemode": False,
        })

    async def _h_cancel(self, request: web.Request) -> web.Response:
        _, early = await self._begin(request)
        if early is not None:
            return early
        sub_id = request.match_info["id"]
        if sub_id not in self.subscriptions:
            return stripe_error(404, "invalid_request_error", f"No such subscription: '{sub_id}'",
                                code="resource_missing", param="id")
        signed = await self.cancel_subscription(sub_id)
        return web.json_response(signed.event["data"]["object"])

    async def _h_unknown(self, request: web.Request) -> web.Response:
        await self._begin(request)
        return stripe_error(404, "invalid_request_error",
                            f"Unrecognized request URL ({request.method}: {request.path}).")

    async def _h_pay(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in self.sessions:
            raise web.HTTPNotFound()
        await self.complete_checkout(sid)
        raise web.HTTPFound(self.sessions[sid]["success_url"])

    async def _h_portal_page(self, request: web.Request) -> web.Response:
        return web.Response(text="Fake Stripe customer portal", content_type="text/html")

    # --- lifecycle (events as Stripe sends them) ----------------------------------------
    def _subscription_object(self, sub: dict[str, Any]) -> dict[str, Any]:
        price = self.prices[sub["price"]]
        return {
            "id": sub["id"], "object": "subscription", "customer": sub["customer"],
            "status": sub["status"], "metadata": sub["metadata"], "created": sub["created"],
            "cancel_at_period_end": sub["cancel_at_period_end"],
            "items": {"object": "list", "data": [{
                "id": f"si_{sub['id']}", "object": "subscription_item",
                "current_period_end": sub["current_period_end"],
                "price": {"id": price.id, "object": "price", "lookup_key": price.lookup_key,
                          "metadata": price.metadata, "unit_amount": price.unit_amount},
            }]},
            "current_period_end": sub["current_period_end"],
        }

    async def emit(self, type_: str, obj: dict[str, Any]) -> SignedEvent:
        """Build, sign and (with ``webhook_url``) deliver one event."""
        signed = sign_event(build_event(type_, obj, created=self._time()), self.webhook_secret,
                            timestamp=self._time())
        if self.webhook_url is not None:
            await self.deliver(signed)
        return signed

    async def deliver(self, signed: SignedEvent) -> int:
        assert self.webhook_url is not None
        async with aiohttp.ClientSession() as session, session.post(
            self.webhook_url, data=signed.body, headers=signed.headers
        ) as resp:
            await resp.read()
            self.deliveries.append((signed.event["type"], resp.status))
            return resp.status

    async def complete_checkout(self, session_id: str, *, status: str = "active") -> list[SignedEvent]:
        """The customer paid: a subscription exists; events customer.subscription.created
        then checkout.session.completed (Stripe does not promise this order either)."""
        session = self.sessions[session_id]
        customer = session["customer"] or self._id("cus")
        self.customers.setdefault(customer, {"id": customer, "object": "customer", "metadata": {}})
        sub = {
            "id": self._id("sub"), "customer": customer, "price": session["_price"],
            "status": status, "metadata": session["_subscription_metadata"],
            "created": self._time(), "cancel_at_period_end": False,
            "current_period_end": self._time() + 30 * 86400,
        }
        self.subscriptions[sub["id"]] = sub
        session.update(status="complete", payment_status="paid", customer=customer,
                       subscription=sub["id"])
        created = await self.emit("customer.subscription.created", self._subscription_object(sub))
        public = {k: v for k, v in session.items() if not k.startswith("_")}
        completed = await self.emit("checkout.session.completed", public)
        return [created, completed]

    async def update_subscription(self, sub_id: str, *, status: str | None = None,
                                  price: str | None = None,
                                  cancel_at_period_end: bool | None = None) -> SignedEvent:
        sub = self.subscriptions[sub_id]
        if status is not None:
            sub["status"] = status
        if price is not None:
            sub["price"] = price
        if cancel_at_period_end is not None:
            sub["cancel_at_period_end"] = cancel_at_period_end
        return await self.emit("customer.subscription.updated", self._subscription_object(sub))

    async def cancel_subscription(self, sub_id: str) -> SignedEvent:
        sub = self.subscriptions[sub_id]
        sub["status"] = "canceled"
        return await self.emit("customer.subscription.deleted", self._subscription_object(sub))

    async def fail_payment(self, sub_id: str) -> SignedEvent:
        sub = self.subscriptions[sub_id]
        invoice = {
            "id": self._id("in"), "object": "invoice", "customer": sub["customer"],
            "status": "open", "attempt_count": 1, "billing_reason": "subscription_cycle",
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": sub_id}},
        }
        return await self.emit("invoice.payment_failed", invoice)


def spawn_stripe(*, webhook_url: str | None = None, webhook_secret: str = "whsec_fake",
                 prices: tuple[str, ...] = ()) -> FakeProcess:
    """Run the fake Stripe in a child process (``prices``: ``ID`` or ``ID=PLAN``)."""
    args = ["--webhook-secret", webhook_secret]
    if webhook_url:
        args += ["--webhook-url", webhook_url]
    for price in prices:
        args += ["--price", price]
    return spawn_fake("mtdesk.fakes.stripe", *args)


def main(argv: list[str] | None = None) -> None:
    parser = process_arguments("Fake Stripe API (customers, checkout, portal; signed webhooks)")
    parser.add_argument("--webhook-url", default=None, help="where completed checkouts are sent")
    parser.add_argument("--webhook-secret", default="whsec_fake")
    parser.add_argument("--price", action="append", default=[],
                        help="price id to accept, as ID or ID=PLAN (repeatable)")
    args = parser.parse_args(argv)
    fake = FakeStripe(webhook_secret=args.webhook_secret, webhook_url=args.webhook_url,
                      latency_s=args.latency_ms / 1000.0, host=args.host, port=args.port)
    for spec in args.price:
        pid, _, plan = spec.partition("=")
        fake.add_price(pid, lookup_key=plan or None)
    asyncio.run(fake.serve_forever())


if __name__ == "__main__":
    main()
