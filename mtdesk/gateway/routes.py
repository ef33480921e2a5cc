"""The Meta webhook routes, health and metrics: :func:`setup_gateway` adds them to the app.

``POST /webhooks/meta`` answers:

- 413 when the body is larger than ``settings.max_body_bytes``;
- 403 when ``X-Hub-Signature-256`` is missing, malformed or wrong (never 500);
- 503 when Redis cannot take the events (Meta retries; nothing is lost);
- 200 otherwise, and only after the events are durably in their streams: also for
  duplicates, unknown accounts (counted), unknown objects (counted) and signed bodies
  that cannot be decoded (kept in the dead-letter stream, counted).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import get_args

from aiohttp import web
from multidict import istr
from prometheus_client import CollectorRegistry

from mtdesk.channels.webhook import UndecodableBody, parse_webhook
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS, cipher_of
from mtdesk.core.errors import KeyStoreUnavailable, StoreUnavailable
from mtdesk.core.events import Event
from mtdesk.core.http import error_response, read_body
from mtdesk.core.redis import UNAVAILABLE
from mtdesk.gateway.ingest import IngestBatcher, IngestCall, Outcome, build_call, dead_letter
from mtdesk.gateway.metrics import GatewayMetrics, render_metrics
from mtdesk.gateway.sealing import InboundSealer
from mtdesk.gateway.signature import SignatureVerifier

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
"""A readiness check returns when ready and raises when not (the message is shown)."""

BATCHER = web.AppKey("ingest_batcher", IngestBatcher)
SEALER = web.AppKey("inbound_sealer", InboundSealer)
METRICS = web.AppKey("gateway_metrics", GatewayMetrics)
READINESS = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
MetricsSource = Callable[[], Awaitable[bytes]]
"""Returns more prometheus text exposition for ``/metrics``."""
METRIC_SOURCES = web.AppKey("metric_sources", list[MetricsSource])

_OK_BODY = b"EVENT_RECEIVED"
_KIND: dict[type, str] = {t: str(t.__struct_config__.tag) for t in get_args(Event)}
_READY_TIMEOUT_S = 2.0
_ENQUEUED, _UNKNOWN = Outcome.ENQUEUED, Outcome.UNKNOWN
_LABEL: dict[Outcome, str] = {o: o.label for o in Outcome}  # the enum property costs per event


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    """Make ``GET /readyz`` also depend on ``check`` (e.g. the actors). Call before start."""
    app[READINESS][name] = check


def _response(status: int, body: bytes = b"") -> web.Response:
    return web.Response(status=status, body=body, content_type="text/plain")


class _Hot:
    """What every webhook POST needs from the app, read once when the routes are added:
    one lookup per POST instead of five (``app[KEY]`` is a Python-level mapping call)."""

    __slots__ = ("clock", "metrics", "batcher", "sealer", "verify", "limit", "partitions",
                 "max_age_ms")

    def __init__(self, app: web.Application) -> None:
        settings = app[SETTINGS]
        self.clock = app[CLOCK]
        self.metrics = app[METRICS]
        self.batcher = app[BATCHER]
        self.sealer = app[SEALER]
        self.verify = SignatureVerifier(settings.meta_app_secrets).verify
        self.limit = settings.max_body_bytes
        self.partitions = settings.partitions
        self.max_age_ms = settings.max_event_age_s * 1000


HOT = web.AppKey("gateway_hot_path", _Hot)
_SIGNATURE_HEADER = istr("X-Hub-Signature-256")  # case-folded once, not per lookup


async def post_webhook(request: web.Request) -> web.Response:
    started = time.perf_counter()
    app = request.app
    hot = app[HOT]
    metrics = hot.metrics
    try:
        body = await read_body(request, hot.limit)
    except asyncio.IncompleteReadError:
        return _acked(metrics, started, error_response(400, "body", "shorter than its Content-Length"))
    if body is None:
        return _acked(metrics, started, error_response(413, "body", f"larger than {hot.limit} bytes"))
    if not hot.verify(body, request.headers.get(_SIGNATURE_HEADER)):
        metrics.signature_failures.inc()
        return _acked(metrics, started,
                      error_response(403, "X-Hub-Signature-256", "missing or invalid signature"))
    received_ms = int(hot.clock.now() * 1000)
    try:
        parsed = parse_webhook(body)
    except UndecodableBody:
        return _acked(metrics, started, await _dead_letter(app, metrics, body, received_ms, "undecodable"))

    for what in parsed.unknown:
        metrics.unknown.labels(what).inc()
    events = parsed.events
    if events:
        stale_before_ms = received_ms - hot.max_age_ms
        try:
            outcomes, call = await _ingest(hot, events, received_ms, stale_before_ms)
        except StoreUnavailable as exc:
            store = "keystore" if isinstance(exc, KeyStoreUnavailable) else "redis"
            metrics.redis_errors.labels("ingest" if store == "redis" else "keystore").inc()
            log.warning("ingest: %s unavailable (%s), %d events refused with 503", store,
                        exc.__cause__, len(events))
            return _acked(metrics, started, error_response(503, store, "store unavailable, retry later"))
        count = metrics.event
        for i, ev in enumerate(events):
            outcome = outcomes[i]
            if outcome is _ENQUEUED:
                label = "stale" if call.is_stale(i) else "enqueued"
            else:
                label = _LABEL[outcome]
                if outcome is _UNKNOWN:
                    _log_unknown_account(metrics, ev.channel, ev.account_id)
            count(ev.channel, _KIND[type(ev)], label)
    if parsed.malformed:
        return _acked(metrics, started,
                      await _dead_letter(app, metrics, body, received_ms, "malformed_item"))
    metrics.ack(time.perf_counter() - started, 200)
    return _response(200, _OK_BODY)


_REROUTE_ATTEMPTS = 3


async def _ingest(
    hot: _Hot, events: Sequence[Event], received_ms: int, stale_before_ms: int
) -> tuple[list[Outcome], IngestCall]:
    """Seal and enqueue ``events``: one round trip when the accounts' routes and keys
    are in memory. Events the script refused because their account routes elsewhere now
    are sealed again from a fresh read of the routing and sent again."""
    sealer = hot.sealer
    sealing = sealer.cached(events)
    try:
        if sealing is None:
            sealing = await sealer.resolve(events)
        call = build_call(events, partitions=hot.partitions, received_ms=received_ms,
                          stale_before_ms=stale_before_ms, sealing=sealing)
        outcomes = await hot.batcher.submit(call)
        for _attempt in range(_REROUTE_ATTEMPTS):
            again = [i for i, o in enumerate(outcomes) if o is Outcome.REROUTE]
            if not again:
                return outcomes, call
            retry = [events[i] for i in again]
            sealer.invalidate(retry)
            redo = build_call(retry, partitions=hot.partitions, received_ms=received_ms,
                              stale_before_ms=stale_before_ms, sealing=await sealer.resolve(retry))
            for i, outcome in zip(again, await hot.batcher.submit(redo), strict=True):
                outcomes[i] = outcome
    except UNAVAILABLE as exc:
        raise StoreUnavailable("Redis does not answer") from exc
    raise StoreUnavailable("the accounts' routing kept changing")


def _acked(metrics: GatewayMetrics, started: float, response: web.Response) -> web.Response:
    metrics.ack(time.perf_counter() - started, response.status)
    return response


_UNKNOWN_LOG_LIMIT = 1000


def _log_unknown_account(metrics: GatewayMetrics, channel: str, account_id: str) -> None:
    # Once per account and app: an unprovisioned busy Page must not flood the log
    # (the counter has every event).
    key = (channel, account_id)
    seen = metrics.unknown_accounts_logged
    if key in seen or len(seen) >= _UNKNOWN_LOG_LIMIT:
        return
    seen.add(key)
    log.info("ingest: events for an unprovisioned account channel=%s account=%s", channel, account_id)


async def _dead_letter(
    app: web.Application, metrics: GatewayMetrics, body: bytes, received_ms: int, reason: str
) -> web.Response:
    try:
        await dead_letter(app[REDIS], body, received_ms=received_ms, reason=reason)
    except StoreUnavailable:
        metrics.redis_errors.labels("dead_letter").inc()
        return error_response(503, "redis", "store unavailable, retry later")
    metrics.dead_letters.labels(reason).inc()
    log.warning("webhook: signed body kept as dead letter (%s, %d bytes)", reason, len(body))
    return _response(200, _OK_BODY)


async def get_webhook(request: web.Request) -> web.Response:
    """The subscription handshake: echo ``hub.challenge`` when the token is ours."""
    settings = request.app[SETTINGS]
    q = request.query
    token = q.get("hub.verify_token", "")
    expected = settings.meta_verify_token
    challenge = q.get("hub.challenge")
    if (
        q.get("hub.mode") == "subscribe"
        and expected is not None
        and challenge is not None
        and hmac.compare_digest(token.encode("utf-8"), expected.reveal().encode("utf-8"))
    ):
        return web.Response(text=challenge, content_type="text/plain")
    return error_response(403, "hub.verify_token", "handshake refused")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    results: dict[str, str] = {}
    ok = True
    for name, check in request.app[READINESS].items():
        try:
            await asyncio.wait_for(check(), _READY_TIMEOUT_S)
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the name says which
            ok = False
            results[name] = f"{type(exc).__name__}: {exc}"[:200]
    return web.json_response({"ok": ok, "checks": results}, status=200 if ok else 503)


async def metrics_view(request: web.Request) -> web.Response:
    parts = [render_metrics(request.app[METRICS])]
    for source in request.app[METRIC_SOURCES]:
        try:
            parts.append(await asyncio.wait_for(source(), _READY_TIMEOUT_S))
        except Exception:  # one missing source must not hide the gateway's own series
            request.app[METRICS].redis_errors.labels("metrics_source").inc()
    return web.Response(body=b"".join(parts),
                        headers={"Content-Type": "text/plain; version=0.0.4"})


def add_metrics_source(app: web.Application, source: MetricsSource) -> None:
    """Append another exposition (e.g. the shards' snapshots) to ``/metrics``."""
    app[METRIC_SOURCES].append(source)


def _redis_check(app: web.Application) -> ReadinessCheck:
    async def check() -> None:
        try:
            await app[REDIS].ping()
        except UNAVAILABLE as exc:
            raise StoreUnavailable("Redis does not answer") from exc

    return check


async def _batcher_ctx(app: web.Application) -> AsyncIterator[None]:
    batcher = app[BATCHER]
    await batcher.start()
    yield
    await batcher.aclose()


def setup_gateway(
    app: web.Application,
    *,
    registry: CollectorRegistry | None = None,
    multiprocess_dir: str | None = None,
) -> None:
    """Add the webhook, health and metrics routes. Needs app[REDIS], app[SETTINGS], app[CLOCK].

    ``multiprocess_dir``: prometheus-client's multiprocess directory when several worker
    processes serve one port (``/metrics`` then aggregates them all).
    """
    app[METRICS] = GatewayMetrics(registry or CollectorRegistry(), multiprocess_dir=multiprocess_dir)
    settings = app[SETTINGS]
    app[BATCHER] = IngestBatcher(app[REDIS], dedup_ttl_s=settings.dedup_ttl_s,
                                 durability=settings.ack_durability,
                                 ack_timeout_ms=settings.ack_timeout_ms)
    app[SEALER] = InboundSealer(app[REDIS], cipher_of(app))
    app[READINESS] = {"redis": _redis_check(app)}
    app[METRIC_SOURCES] = []
    app[HOT] = _Hot(app)
    app.cleanup_ctx.append(_batcher_ctx)
    app.router.add_get("/webhooks/meta", get_webhook)
    app.router.add_post("/webhooks/meta", post_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
