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

from bisect import bisect_left

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
        # The webhook's hot path counts in plain ints (a labelled child's inc() takes a
        # lock, a histogram observe() walks its buckets: ~1.5 µs per POST together);
        # flush() adds them to the prometheus series, at every scrape, or at once when
        # several worker processes share the series (multiprocess mode).
        self._write_through = multiprocess_dir is not None
        self._event_counts: dict[tuple[str, str, str], int] = {}
        self._request_counts: dict[int, int] = {}
        self._ack_bounds = tuple(_ACK_BUCKETS)
        self._ack_counts = [0] * (len(_ACK_BUCKETS) + 1)  # the last one is +Inf
        self._ack_sum = 0.0
        self.unknown_accounts_logged: set[tuple[str, str]] = set()  # log throttle (routes)

    def ack(self, seconds: float, status: int) -> None:
        """One webhook POST answered with ``status`` after ``seconds``."""
        # bisect_left: the first bound >= seconds, as Histogram.observe's `amount <= bound`.
        self._ack_counts[bisect_left(self._ack_bounds, seconds)] += 1
        self._ack_sum += seconds
        counts = self._request_counts
        counts[status] = counts.get(status, 0) + 1
        if self._write_through:
            self.flush()

    def request(self, status: int) -> None:
        counts = self._request_counts
        counts[status] = counts.get(status, 0) + 1
        if self._write_through:
            self.flush()

    def event(self, channel: str, kind: str, outcome: str) -> None:
        key = (channel, kind, outcome)
        counts = self._event_counts
        counts[key] = counts.get(key, 0) + 1
        if self._write_through:
            self.flush()

    def flush(self) -> None:
        """Add what the hot path counted to the prometheus series (render_metrics calls it)."""
        if self._event_counts:
            events, self._event_counts = self._event_counts, {}
            for (channel, kind, outcome), n in events.items():
                self.events.labels(channel, kind, outcome).inc(n)
        if self._request_counts:
            requests, self._request_counts = self._request_counts, {}
            for status, n in requests.items():
                self.requests.labels(str(status)).inc(n)
        if self._ack_sum or any(self._ack_counts):
            counts, self._ack_counts = self._ack_counts, [0] * len(self._ack_counts)
            total, self._ack_sum = self._ack_sum, 0.0
            # Histogram has no public bulk observe: add to its bucket and sum values (the
            # same objects observe() increments, mmap-backed in multiprocess mode).
            hist = self.ack_seconds
            hist._sum.inc(total)
            for i, n in enumerate(counts):
                if n:
                    hist._buckets[i].inc(n)


def render_metrics(metrics: GatewayMetrics) -> bytes:
    """The text exposition: this process's registry, or, in multiprocess mode
    (``mtdesk serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` for prometheus-client
    before the workers start and passes the directory here), all workers aggregated."""
    metrics.flush()
    if metrics.multiprocess_dir:
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=metrics.multiprocess_dir)
        return generate_latest(merged)
    return generate_latest(metrics.registry)
