"""Prometheus exposition of the live figures, with prometheus-client (`/headroom/metrics`).

A custom collector reads `headroom_core.figures.Figures` when scraped: nothing is counted twice
and nothing runs per request (the figures are aggregated in the background batch). Labels are
provider, model and endpoint only, never a session or tenant (cardinality, and privacy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from headroom_core.figures import LATENCY_BUCKETS, Figures, Histogram

LABELS = ["provider", "model", "endpoint"]


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    out, run = [], 0
    for le, c in zip([*map(repr, LATENCY_BUCKETS), "+Inf"], h.counts, strict=True):
        run += c
        out.append((le, run))
    return out


class FiguresCollector:
    def __init__(self, figures: Figures, extra: Callable[[], dict[str, float]] | None = None):
        self.figures = figures
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        rows = self.figures.metric_rows()
        c = {
            "requests": CounterMetricFamily(
                "headroom_requests", "Model requests (and WebSocket responses) Headroom took up.",
                labels=LABELS),
            "errors": CounterMetricFamily(
                "headroom_errors", "Requests that failed: status >= 400, a connection error, or "
                "a stream that errored or was cut.", labels=LABELS),
            "tokens": CounterMetricFamily(
                "headroom_tokens", "Tokens billed by kind: input (uncached), output, cache_read, "
                "cache_write.", labels=[*LABELS, "kind"]),
            "saved": CounterMetricFamily(
                "headroom_saved_tokens", "Tokens kept out of requests by live-zone rewriting "
                "(o200k count).", labels=LABELS),
            "cost": CounterMetricFamily(
                "headroom_cost_dollars", "What the requests cost, from the price table "
                "(priced models only).", labels=LABELS),
            "saved_usd": CounterMetricFamily(
                "headroom_saved_dollars", "What rewriting kept off the bill, priced the way the "
                "bill is (priced models only).", labels=LABELS),
            "store": CounterMetricFamily(
                "headroom_store_results", "Response store results: hit, miss, record, "
                "replay-miss, ...; stored: responses kept.", labels=[*LABELS, "result"]),
            "rewrite": CounterMetricFamily(
                "headroom_rewrite_blocks", "Tool outputs by rewrite outcome (compressed, "
                "replayed, below-threshold, excluded, ...).", labels=[*LABELS, "action"]),
            "streams": CounterMetricFamily(
                "headroom_streams", "Streamed responses by final state (complete, errored, "
                "truncated).", labels=[*LABELS, "state"]),
        }
        upstream = HistogramMetricFamily(
            "headroom_upstream_latency_seconds", "From forwarding the request to the upstream's "
            "response headers.", labels=LABELS)
        duration = HistogramMetricFamily(
            "headroom_request_duration_seconds", "From forwarding the request to the end of the "
            "response (streams included).", labels=LABELS)
        for key, f in rows:
            labels = list(key)
            c["requests"].add_metric(labels, f.requests)
            c["errors"].add_metric(labels, f.errors)
            for kind, v in f.tokens.items():
                c["tokens"].add_metric([*labels, kind], v)
            c["saved"].add_metric(labels, f.tokens_saved)
            c["cost"].add_metric(labels, f.cost_usd)
            c["saved_usd"].add_metric(labels, f.saved_usd)
            for result, v in sorted(f.store.items()):
                c["store"].add_metric([*labels, result], v)
            for action, v in sorted(f.rewrite.items()):
                c["rewrite"].add_metric([*labels, action], v)
            for state, v in sorted(f.streams.items()):
                c["streams"].add_metric([*labels, state], v)
            if f.upstream.count:
                upstream.add_metric(labels, _buckets(f.upstream), f.upstream.sum)
            if f.duration.count:
                duration.add_metric(labels, _buckets(f.duration), f.duration.sum)
        yield from c.values()
        yield upstream
        yield duration
        totals = self.figures.totals()
        g = GaugeMetricFamily("headroom_sessions", "Sessions the dashboard currently tracks.")
        g.add_metric([], totals["sessions"])
        yield g
        for name, (help_, value) in (self.extra() if self.extra else {}).items():
            m = CounterMetricFamily(name, help_)
            m.add_metric([], value)
            yield m


class Metrics:
    def __init__(self, figures: Figures,
                 extra: Callable[[], dict[str, tuple[str, float]]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FiguresCollector(figures, extra))

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) in the classic text format every Prometheus scrapes."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
