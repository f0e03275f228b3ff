"""otelpg's own metrics, in the Collector's vocabulary, on an explicitly created registry."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from sidecar import __version__

ITEMS = ("spans", "metric_points", "log_records")
COPY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    """Every self-metric otelpg exports. Components get this object and count through it.

    Two more self-telemetry collectors sit on the same registry: the Prometheus aggregator's
    `otelpg_prometheus_active_series` and `otelpg_prometheus_dropped_points_total{reason}`
    (exporters.prometheus.collector), and the `otelpg_database_*` utilization gauges
    (exporters.postgres.database_metrics).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        build = Gauge("otelpg_build_info", "otelpg build information.", ["version", "python"], registry=registry)
        build.labels(__version__, platform.python_version()).set(1)

        self.accepted = {
            item: Counter(
                f"otelpg_receiver_accepted_{item}",
                f"OTLP {item} received and stored.",
                ["transport"],
                registry=registry,
            )
            for item in ITEMS
        }
        self.refused = {
            item: Counter(
                f"otelpg_receiver_refused_{item}",
                f"OTLP {item} not stored: refused requests and partial-success rejects.",
                ["transport", "reason"],
                registry=registry,
            )
            for item in ITEMS
        }
        self.refused_requests = Counter(
            "otelpg_receiver_refused_requests",
            "OTLP requests answered with an error, by reason.",
            ["transport", "reason"],
            registry=registry,
        )
        self.sent_rows = Counter(
            "otelpg_exporter_sent_rows", "Rows committed to PostgreSQL.", ["table"], registry=registry
        )
        self.send_failed_rows = Counter(
            "otelpg_exporter_send_failed_rows",
            "Rows whose COPY failed.",
            ["table", "error_type"],
            registry=registry,
        )
        self.retries = Counter(
            "otelpg_exporter_retries", "Batch writes retried after a transient database error.", registry=registry
        )
        self.spool_bytes = Gauge("otelpg_spool_bytes", "Bytes in the durable spool.", registry=registry)
        self.spool_capacity = Gauge("otelpg_spool_capacity_bytes", "Size limit of the spool.", registry=registry)
        self.spooled_requests = Counter(
            "otelpg_spool_appended_requests",
            "Acknowledged requests written to the spool.",
            ["signal"],
            registry=registry,
        )
        self.spool_replayed_rows = Counter(
            "otelpg_spool_replayed_rows", "Rows committed to PostgreSQL from the spool.", registry=registry
        )
        self.copy_duration = Histogram(
            "otelpg_copy_duration_seconds",
            "Duration of one batch write (COPY of every table + commit).",
            buckets=COPY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "otelpg_batch_rows",
            "Rows per committed batch.",
            buckets=(10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
            registry=registry,
        )
        self.queue_size = Gauge("otelpg_exporter_queue_size", "Rows waiting to be written.", registry=registry)
        self.inflight_bytes = Gauge(
            "otelpg_receiver_inflight_bytes",
            "Decompressed request bytes being handled (admission control).",
            registry=registry,
        )
        self.inflight_capacity = Gauge(
            "otelpg_receiver_inflight_capacity_bytes",
            "Request bytes handled at once before 503 / UNAVAILABLE.",
            registry=registry,
        )
        self.queue_capacity = Gauge(
            "otelpg_exporter_queue_capacity", "Rows the queue holds before backpressure.", registry=registry
        )
        self.database_up = Gauge(
            "otelpg_database_up", "1 when PostgreSQL answered the last health check.", registry=registry
        )
        self.pool_size = Gauge("otelpg_database_pool_size", "Open connections in the pool.", registry=registry)
        self.pool_in_use = Gauge("otelpg_database_pool_in_use", "Connections in use.", registry=registry)
        self.pool_capacity = Gauge(
            "otelpg_database_pool_capacity", "Most connections the pool opens.", registry=registry
        )

    def bind_truncations(self, *counts: dict[str, int]) -> None:
        """Export truncation counts as one counter family: the sum of dicts that their owners
        increment (one per thread that maps: a dict is only ever written from one thread)."""

        def total() -> dict[str, int]:
            out: dict[str, int] = {}
            for d in counts:
                for key, value in list(d.items()):
                    out[key] = out.get(key, 0) + value
            return out

        self.registry.register(
            _DictCounter(
                "otelpg_mapping_truncated",
                "Attributes dropped, values truncated, and indexed names and keys cut, at the configured limits.",
                "what",
                total,
            )
        )

    def bind_counter(
        self,
        name: str,
        documentation: str,
        read: Callable[[], dict[str, int]] | Callable[[], int],
        label: str | None = None,
    ) -> None:
        """A counter read at scrape time from a component's running total (`read()` an int), or a
        family of them by `label` (`read()` a dict)."""
        self.registry.register(_DictCounter(name, documentation, label, read))

    def bind_dead_letter(self, entries: Callable[[], float], size: Callable[[], float]) -> None:
        Gauge(
            "otelpg_dead_letter_entries",
            "Requests (or parts) PostgreSQL refused for good, kept in the dead-letter file.",
            registry=self.registry,
        ).set_function(entries)
        Gauge("otelpg_dead_letter_bytes", "Size of the dead-letter file.", registry=self.registry).set_function(size)

    def bind_queue(self, size: Callable[[], float], capacity: float) -> None:
        self.queue_size.set_function(size)
        self.queue_capacity.set(capacity)

    def bind_inflight(self, size: Callable[[], float], capacity: float) -> None:
        self.inflight_bytes.set_function(size)
        self.inflight_capacity.set(capacity)

    def bind_pool(self, size: Callable[[], float], in_use: Callable[[], float], capacity: float = 0) -> None:
        self.pool_size.set_function(size)
        self.pool_in_use.set_function(in_use)
        self.pool_capacity.set(capacity)


class _DictCounter:
    """A counter family read from a dict of running totals at scrape time."""

    def __init__(self, name: str, documentation: str, label: str | None, read: Callable[[], Any]) -> None:
        self._args = (name, documentation)
        self._label = label
        self._read = read

    def collect(self) -> Iterator[Metric]:
        if self._label is None:
            yield CounterMetricFamily(*self._args, value=self._read())
            return
        family = CounterMetricFamily(*self._args, labels=[self._label])
        for key, value in list(self._read().items()):
            family.add_metric([key], value)
        yield family
