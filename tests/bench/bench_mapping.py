"""Micro-benchmark of the OTLP → row mapping (no database): prints rows/s, for spans with the C
attribute converter (given the request bytes, as the receivers do) and with the pure-Python path.

/work/venv/bin/python tests/bench/bench_mapping.py [--spans N] [--points N] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.trace.v1 import trace_pb2 as t

from exporters.postgres.mapping import map_metrics, map_traces
from exporters.postgres.mapping.common import FAST_AVAILABLE, Mapper

NOW = 1_700_000_000_000_000_000


def kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def resource_attrs() -> list[KeyValue]:
    return [
        kv("service.name", "checkout"), kv("service.version", "1.4.2"),
        kv("service.instance.id", "7f3c1a2b"), kv("k8s.namespace.name", "shop"),
        kv("k8s.pod.name", "checkout-7f9c-abcde"), kv("host.name", "node-12"),
        kv("telemetry.sdk.language", "python"), kv("telemetry.sdk.name", "opentelemetry"),
    ]  # fmt: skip


def span_attrs(i: int) -> list[KeyValue]:
    """15 attributes, the mix an HTTP server span carries."""
    return [
        kv("http.request.method", "GET"), kv("http.route", "/api/orders/{id}"),
        kv("url.path", f"/api/orders/{i}"), kv("url.scheme", "https"),
        kv("http.response.status_code", 200), kv("server.address", "checkout.shop.svc"),
        kv("server.port", 8080), kv("client.address", "10.1.2.3"),
        kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
        kv("network.protocol.version", "1.1"), kv("http.request.body.size", 512 + i % 100),
        kv("http.response.body.size", 2048), kv("enduser.id", f"user-{i % 1000}"),
        kv("app.cache_hit", i % 2 == 0), kv("app.ratio", 0.25),
    ]  # fmt: skip


def traces_request(n: int) -> ExportTraceServiceRequest:
    spans = []
    for i in range(n):
        spans.append(t.Span(
            trace_id=(i // 4 + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
            parent_span_id=(i // 4 * 4 + 1).to_bytes(8, "big") if i % 4 else b"",
            name="GET /api/orders/{id}", kind=t.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=NOW + i * 1000, end_time_unix_nano=NOW + i * 1000 + 2_500_000,
            attributes=span_attrs(i), flags=0x100,
            status=t.Status(code=t.Status.STATUS_CODE_ERROR if i % 50 == 0 else 0),
        ))  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource={"attributes": resource_attrs()},
        scope_spans=[t.ScopeSpans(scope={"name": "opentelemetry.instrumentation.flask", "version": "0.48b0"},
                                  spans=spans)],
    )])  # fmt: skip


def metrics_request(n: int) -> ExportMetricsServiceRequest:
    """n points: 40% sums (int), 30% gauges (double), 20% histograms, 10% exponential histograms."""
    metrics = []
    per_metric = 10
    for j in range(n // per_metric):
        name = f"app.metric.{j}"
        pts_attrs = [[kv("http.route", f"/r/{p}"), kv("http.response.status_code", 200 + p)]
                     for p in range(per_metric)]  # fmt: skip
        common = {"start_time_unix_nano": NOW - 60_000_000_000, "time_unix_nano": NOW}
        r = j % 10
        if r < 4:
            metric = m.Metric(name=name, unit="{request}", description="requests", sum=m.Sum(
                aggregation_temporality=2, is_monotonic=True,
                data_points=[m.NumberDataPoint(attributes=a, as_int=1000 + p, **common)
                             for p, a in enumerate(pts_attrs)]))  # fmt: skip
        elif r < 7:
            metric = m.Metric(name=name, unit="By", description="memory", gauge=m.Gauge(
                data_points=[m.NumberDataPoint(attributes=a, as_double=1.5e9 + p, **common)
                             for p, a in enumerate(pts_attrs)]))  # fmt: skip
        elif r < 9:
            bounds = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000]
            metric = m.Metric(name=name, unit="ms", description="latency", histogram=m.Histogram(
                aggregation_temporality=2,
                data_points=[m.HistogramDataPoint(
                    attributes=a, count=160, sum=4321.5, min=0.5, max=9000.0,
                    explicit_bounds=bounds, bucket_counts=[10] * (len(bounds) + 1), **common)
                    for a in pts_attrs]))  # fmt: skip
        else:
            metric = m.Metric(name=name, unit="s", exponential_histogram=m.ExponentialHistogram(
                aggregation_temporality=1,
                data_points=[m.ExponentialHistogramDataPoint(
                    attributes=a, count=100, sum=12.5, scale=3, zero_count=2,
                    positive={"offset": -20, "bucket_counts": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20]},
                    **common) for a in pts_attrs]))  # fmt: skip
        metrics.append(metric)
    return ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
        resource={"attributes": resource_attrs()},
        scope_metrics=[m.ScopeMetrics(scope={"name": "app", "version": "1.0"}, metrics=metrics)],
    )])  # fmt: skip


def bench(label: str, fn, request, repeat: int, unit: str, items: int, fast: bool = FAST_AVAILABLE, **kw) -> float:
    """Map a freshly decoded copy of `request` `repeat` times (decoding not timed) with one Mapper
    (C converter used if `fast`); return the best time."""
    raw = request.SerializeToString()
    decode = type(request).FromString
    kw = {k: raw for k in kw}  # raw=...: hand the mapper the request bytes, as the receivers do
    kw["mapper"] = Mapper(fast=fast)
    fn(decode(raw), NOW, **kw)  # warm-up (resource memo, caches)
    times = []
    for _ in range(repeat):
        req = decode(raw)
        t0 = time.perf_counter()
        mapped = fn(req, NOW, **kw)
        times.append(time.perf_counter() - t0)
    best, median = min(times), statistics.median(times)
    rows = sum(len(r) for r in mapped.rows.values())
    print(
        f"{label:12s} {items / best:>9,.0f} {unit}/s best, {items / median:>9,.0f} median  "
        f"({items} {unit} -> {rows} rows, {best / rows * 1e6:.2f} us/row best of {repeat})"
    )
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=5000)
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    spans = traces_request(args.spans)
    if FAST_AVAILABLE:
        fast = bench("map_traces", map_traces, spans, args.repeat, "spans", args.spans, raw=True)
        slow = bench("  (Python)", map_traces, spans, args.repeat, "spans", args.spans, fast=False)
        print(f"{'':12s} C attribute converter: {slow / fast:.2f}x the pure-Python path")
    else:
        bench("map_traces", map_traces, spans, args.repeat, "spans", args.spans)
        print("(the C attribute converter is not built: pure-Python path only)")
    bench("map_metrics", map_metrics, metrics_request(args.points), args.repeat, "points", args.points)


if __name__ == "__main__":
    main()
