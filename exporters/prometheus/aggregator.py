"""In-memory aggregates behind /metrics, fed after data is committed to PostgreSQL.

`observe_*` run on the event loop after each commit (so a retried request is never counted twice):
no I/O, bounded work per point. `snapshot()` may be called from any thread (the admin server renders
in a worker thread): it takes the lock only to copy references to changed families, and the records
it returns are immutable, so rendering never races with ingestion and never blocks it for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporters.prometheus.config import RESERVED_PREFIXES, SPAN_DURATION_BOUNDS_SECONDS, PrometheusConfig
from exporters.prometheus.labels import LabelBuilder
from exporters.prometheus.log_counts import LogCounts
from exporters.prometheus.otlp_metrics import MetricsTranslator
from exporters.prometheus.series import SeriesStore, Snapshot, Stats
from exporters.prometheus.span_metrics import SpanMetrics
from sidecar.pipeline.signals import LOGS, METRICS, TRACES, Signal
from sidecar.pipeline.span_metrics import SpanKey, SpanMetricsDelta, TraceSummary

# Written by the self-metrics collector on the same registry; client metrics must not take them.
SELF_METRIC_NAMES = (
    "otelpg_prometheus_active_series",
    "otelpg_prometheus_families",
    "otelpg_prometheus_dropped_points",
    "otelpg_prometheus_dropped_points_total",
)


class PrometheusAggregator:
    """State for the Prometheus endpoint: translated OTLP metrics, span RED metrics, log counts.

    `now` arguments are seconds on the `clock` (monotonic by default); tests inject them.
    """

    def __init__(self, config: PrometheusConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config = config or PrometheusConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._store = SeriesStore(
            max_series_per_metric=config.max_series_per_metric,
            max_series_total=config.max_series_total,
            expiry_seconds=config.series_expiry,
            reserved_prefixes=RESERVED_PREFIXES,
        )
        self._store.reserve(*SELF_METRIC_NAMES)
        self._metrics = MetricsTranslator(self._store, LabelBuilder(), config)
        self._spans = SpanMetrics(self._store, SPAN_DURATION_BOUNDS_SECONDS)
        self._logs = LogCounts(self._store)
        # Sweep often enough that expiry is timely without scanning families on every request.
        self._sweep_every = min(1.0, config.series_expiry / 10)
        self._last_sweep = -float("inf")
        self._observers: dict[Signal, Callable[[Any], None]] = {
            TRACES: self.observe_traces,
            METRICS: self.observe_metrics,
            LOGS: self.observe_logs,
        }

    def observe(self, signal: Signal, request: Message) -> None:
        """A committed request of any signal (the exporter's after-commit observer)."""
        self._observers[signal](request)

    def observe_metrics(self, request: ExportMetricsServiceRequest, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        with self._lock:
            self._sweep(now)
            self._metrics.observe(request, now)

    def observe_traces(self, request: ExportTraceServiceRequest | TraceSummary, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        with self._lock:
            self._sweep(now)
            self._spans.observe(request, now)

    def observe_logs(self, request: ExportLogsServiceRequest, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        with self._lock:
            self._sweep(now)
            self._logs.observe(request, now)

    def drain_span_metrics(self) -> dict[SpanKey, SpanMetricsDelta]:
        """Per (service, span name, kind, status), the calls and duration histogram observed since the
        previous drain. Keys past the series cap are folded into `OVERFLOW_SPAN_KEY`."""
        with self._lock:
            return self._spans.drain()

    def snapshot(self, now: float | None = None) -> Snapshot:
        """An immutable view of every family, with expired series removed first."""
        now = self._clock() if now is None else now
        with self._lock:
            self._store.expire(now)
            self._last_sweep = now
            return self._store.snapshot()

    def expire(self, now: float | None = None) -> int:
        """Remove series idle for longer than series_expiry; returns how many."""
        now = self._clock() if now is None else now
        with self._lock:
            self._last_sweep = now
            return self._store.expire(now)

    def stats(self) -> Stats:
        """Active series, non-empty families and dropped points by reason, for self-telemetry."""
        with self._lock:
            return self._store.stats()

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep >= self._sweep_every:
            self._last_sweep = now
            self._store.expire(now)
