"""Cardinality through the real process: 100k distinct label values can't blow up /metrics or memory.

A delta counter, a gauge and span names each get 100,000 distinct values (raw OTLP/HTTP protobuf:
the SDK would fold them itself past its own limit of 2000). With the default caps the exposition
keeps at most `max_series_per_metric` series per family plus the `otel_metric_overflow="true"`
series for additive points (totals stay exact), the gauge's extra points are dropped and counted,
and otelpg's RSS stops growing once the caps are reached.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sidecar.config import PrometheusConfig
from tests.e2e.prometheus_helpers import families, post_otlp, scrape, value, values

pytestmark = pytest.mark.e2e

DISTINCT = 100_000
PER_REQUEST = 10_000
PER_METRIC = PrometheusConfig().max_series_per_metric  # 2000, the default cap
TOTAL_CAP = PrometheusConfig().max_series_total
MIB = 1024 * 1024


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def metrics_request(first: int, n: int, start_ns: int, now_ns: int) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend([_kv("service.name", "cardinality"), _kv("service.instance.id", "c-1")])
    sm = rm.scope_metrics.add()
    counter = sm.metrics.add(name="cardinality.requests", unit="{request}")
    counter.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    counter.sum.is_monotonic = True
    gauge = sm.metrics.add(name="cardinality.queue.length")
    for i in range(first, first + n):
        user = [_kv("user.id", f"user-{i:06d}")]
        counter.sum.data_points.add(as_int=1, start_time_unix_nano=start_ns, time_unix_nano=now_ns, attributes=user)
        gauge.gauge.data_points.add(as_double=float(i), time_unix_nano=now_ns, attributes=user)
    return request


def traces_request(first: int, n: int, now_ns: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "cardinality"))
    spans = rs.scope_spans.add().spans
    for i in range(first, first + n):  # a span name with an id in it: the classic cardinality bug
        spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name=f"GET /items/{i:06d}",
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now_ns - 5_000_000,
            end_time_unix_nano=now_ns,
        )
    return request


def _rss(otelpg) -> int:
    return psutil.Process(otelpg.proc.pid).memory_info().rss


@pytest.mark.timeout(240)
def test_100k_distinct_label_values_stay_under_the_caps(otelpg):
    base = otelpg.url("http")
    start_ns = time.time_ns()
    rss = []
    for k, first in enumerate(range(0, DISTINCT, PER_REQUEST)):
        now_ns = time.time_ns()
        assert post_otlp(base, "metrics", metrics_request(first, PER_REQUEST, start_ns, now_ns)) == 200
        assert post_otlp(base, "traces", traces_request(first, PER_REQUEST, now_ns)) == 200
        if k == 1:
            rss.append(_rss(otelpg))  # 20k distinct values in: every cap is reached, the baseline
    rss.append(_rss(otelpg))

    got = scrape(otelpg.url("admin", "/metrics"))
    fams = families(got.text)
    overflow = {"otel_metric_overflow": "true"}

    counter = fams["cardinality_requests"]
    series = values(counter, "cardinality_requests_total")
    assert len(series) <= PER_METRIC + 1
    assert value(counter, "cardinality_requests_total", **overflow) > 0
    assert sum(series) == DISTINCT  # folded, not lost

    gauge = fams["cardinality_queue_length"]  # last values can't be folded: past the cap they are dropped
    assert len(values(gauge)) <= PER_METRIC and not values(gauge, **overflow)

    calls = fams["traces_span_metrics_calls"]
    span_series = values(calls, "traces_span_metrics_calls_total")
    assert len(span_series) <= PER_METRIC + 1
    assert value(calls, "traces_span_metrics_calls_total", **overflow) > 0
    assert sum(span_series) == DISTINCT
    duration = fams["traces_span_metrics_duration_seconds"]
    assert len(values(duration, "traces_span_metrics_duration_seconds_count")) <= PER_METRIC + 1
    assert sum(values(duration, "traces_span_metrics_duration_seconds_count")) == DISTINCT

    active = value(fams["otelpg_prometheus_active_series"])
    assert active <= TOTAL_CAP
    assert active <= 4 * (PER_METRIC + 1) + 10  # the four families above, target_info and log counts
    dropped = fams["otelpg_prometheus_dropped_points"]
    assert value(dropped, "otelpg_prometheus_dropped_points_total", reason="overflow") >= 2 * (DISTINCT - PER_METRIC)
    assert value(dropped, "otelpg_prometheus_dropped_points_total", reason="cardinality_limit") >= DISTINCT - PER_METRIC
    assert len(got.body) < 16 * MIB

    print(
        f"series: counter {len(series)}, gauge {len(values(gauge))}, span calls {len(span_series)}, "
        f"active {active:.0f}; body {len(got.body) / MIB:.1f} MiB; RSS after 20k values {rss[0] / MIB:.0f} MiB, "
        f"after {DISTINCT // 1000}k {rss[1] / MIB:.0f} MiB"
    )
    # Memory: flat once the caps are reached (80k more distinct values), and small overall.
    growth = rss[1] - rss[0]
    assert growth < 40 * MIB, f"RSS grew {growth / MIB:.1f} MiB after the caps were reached"
    assert rss[1] < 300 * MIB, f"RSS {rss[1] / MIB:.0f} MiB"
