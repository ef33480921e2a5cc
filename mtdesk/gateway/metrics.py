"""Prometheus metrics of the gateway, registered on a registry passed in (one per app,
so tests can build many apps; ``mtdesk serve --workers N`` aggregates processes with
prometheus-client's multiprocess mode, see :func:`render_metrics`).

Series (all prefixed ``mtdesk_gateway_``):

- ``events_total{channel, kind, outcome}``: outcome ∈ enqueued, duplicate, unknown
  (account not provisioned), stale (enqueued, marked not to answer);
- ``requests_total{status}``: webhook POSTs by HTTP status;
- ``signature_failures_total``; ``dead_letters_total{reason}``;
- ``redis_errors_total{op}``; ``unknown_total{what}`` (unknown objects, fields, items);
- ``ack_seconds``: histogram of the webhook's time from first byte read to response.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, *, multiprocess_dir: str | None = None) -> None:
        self.registry = registry
        self.multiprocess_dir = multiprocess_dir
        p = "mtdesk_gateway_"
        self.events = Counter(
            p + "events", "Webhook events by channel, kind and outcome",
            ("channel", "kind", "outcome"), registry=registry,
        )
        self.requests = Counter(
            p + "requests", "Webhook POSTs by HTTP status", ("status",), registry=registry
        )
        self.signature_failures = Counter(
            p + "signature_failures", "Webhook POSTs with a missing or wrong signature",
            registry=registry,
        )
        self.dead_letters = Counter(
            p + "dead_letters", "Signed bodies kept in the dead-letter stream", ("reason",),
            registry=registry,
        )
        self.redis_errors = Counter(
            p + "redis_errors", "Redis calls that failed", ("op",), registry=registry
        )
        self.unknown = Counter(
            p + "unknown", "Tolerated but not understood: objects, fields, item kinds",
            ("what",), registry=registry,
        )
        self.ack_seconds = Histogram(
            p + "ack_seconds", "Webhook POST time to answer", buckets=_ACK_BUCKETS,
            registry=registry,
        )
        # Label lookups cost more than increments: cache the children on the hot path.
        self._event_children: dict[tuple[str, str, str], Counter] = {}
        self._request_children: dict[int, Counter] = {}
        self.unknown_accounts_logged: set[tuple[str, str]] = set()  # log throttle (routes)

    def request(self, status: int) -> None:
        child = self._request_children.get(status)
        if child is None:
            child = self._request_children[status] = self.requests.labels(str(status))
        child.inc()

    def event(self, channel: str, kind: str, outcome: str) -> None:
        key = (channel, kind, outcome)
        child = self._event_children.get(key)
        if child is None:
            child = self._event_children[key] = self.events.labels(channel, kind, outcome)
        child.inc()


def render_metrics(metrics: GatewayMetrics) -> bytes:
    """The text exposition: this process's registry, or, in multiprocess mode
    (``mtdesk serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` for prometheus-client
    before the workers start and passes the directory here), all workers aggregated."""
    if metrics.multiprocess_dir:
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=metrics.multiprocess_dir)
        return generate_latest(merged)
    return generate_latest(metrics.registry)
