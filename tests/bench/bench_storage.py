"""Storage benchmark: what each telemetry item costs PostgreSQL, in bytes and in CPU, against its
OTLP protobuf size.

Starts PostgreSQL (--database-url, else an embedded one in a temporary directory) and, per stream,
a fresh schema and an `otelpg run` migrating it; sends the stream's pre-built OTLP/HTTP protobuf
requests from a load-generator process (4 in flight) and, once every request is acknowledged
(acknowledged = committed), prints per item:

- OTLP protobuf bytes (the exact request bodies sent, divided by the items in them);
- PostgreSQL bytes: the growth of pg_total_relation_size summed over every table of the schema
  (heap + TOAST + free-space/visibility maps + indexes; partitions counted as their leaves),
  measured as ingested (no VACUUM, no CHECKPOINT in between), with a breakdown per top-level
  table (heap, TOAST+FSM/VM, indexes, rows per item) and the WAL written;
- PostgreSQL CPU: user+sys of the postmaster's whole process tree over the send phase (backends,
  WAL writer, checkpointer, autovacuum; backends that exited included through the postmaster's
  reaped-children times), and otelpg's own CPU.

It knows no table names: it sums whatever the schema holds, so it compares schemas as they change.
Streams: spans; metric points of each type on its own (gauge, sum, histogram,
exponential_histogram, summary); log records. Each stream gets its own schema and otelpg process.

    python -m tests.bench.bench_storage [--spans 100000] [--points 20000] [--logs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import psutil  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.logs.v1 import logs_pb2 as lg  # noqa: E402
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m  # noqa: E402
from opentelemetry.proto.trace.v1 import trace_pb2 as t  # noqa: E402

from tests.bench import _pg  # noqa: E402
from tests.bench._loadgen import ClientResult, ClientSpec, client_main  # noqa: E402
from tests.bench._otlp_gen import Template, kv  # noqa: E402
from tests.bench.bench_ingest import (  # noqa: E402
    Out,
    _c_converter,
    machine_busy,
    scrape,
    source_version,
    start_otelpg,
    wait_quiet,
)

MiB = 1024 * 1024
METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
STREAMS = ("spans", *METRIC_KINDS, "logs")
SIGNAL_OF = {"spans": "traces", "logs": "logs", **{k: "metrics" for k in METRIC_KINDS}}
ITEM_OF = {"spans": "span", "logs": "log record", **{k: "point" for k in METRIC_KINDS}}

# --------------------------------------------------------------------------- request bodies

SERVICES = ("checkout", "cart", "payments", "catalog")
SCOPE = {"name": "opentelemetry.instrumentation.flask", "version": "0.48b0"}
SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
BROWSER_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.71 Mobile "
    "Safari/537.36",
)
ROUTES = (
    "/api/orders/{id}",
    "/api/cart",
    "/api/products/{id}",
    "/api/checkout",
    "/api/users/{id}/profile",
    "/api/search",
    "/api/payments/{id}/capture",
    "/api/shipping/quote",
)
METHODS = ("GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE")
STATUSES = (200, 200, 200, 200, 200, 201, 204, 304, 400, 404)
PEERS = ("payments", "inventory", "pricing", "shipping")
INTERNAL_NAMES = ("validate_cart", "load_user", "compute_price", "check_inventory", "render_template", "serialize")
EXCEPTIONS = (
    ("requests.exceptions.ConnectionError", "Connection aborted: RemoteDisconnected('Remote end closed connection')"),
    ("psycopg.errors.QueryCanceled", "canceling statement due to statement timeout"),
    ("ValueError", "invalid literal for int() with base 10: 'undefined'"),
    ("shop.payments.PaymentDeclinedError", "card declined by issuer (code 05)"),
)


def resource(service: str) -> dict:
    """One SDK process on Kubernetes: service.name and 9 more attributes, the same on every request."""
    rng = random.Random(f"resource-{service}")
    pod = f"{service}-{rng.randrange(16**10):010x}-{rng.randrange(16**5):05x}"
    return {"attributes": [
        kv("service.name", service), kv("service.version", f"2.{rng.randrange(40)}.{rng.randrange(10)}"),
        kv("service.instance.id", str(uuid.UUID(int=rng.getrandbits(128)))), kv("host.name", pod),
        kv("k8s.pod.name", pod), kv("k8s.namespace.name", "shop"), kv("k8s.deployment.name", service),
        kv("telemetry.sdk.name", "opentelemetry"), kv("telemetry.sdk.language", "python"),
        kv("telemetry.sdk.version", "1.27.0"),
    ]}  # fmt: skip


def _span_attrs(method: str, route: str, path: str, status: int, host: str, port: int, scheme: str, ua: str,
                proto: str, client: str) -> list:  # fmt: skip
    return [
        kv("http.request.method", method), kv("http.route", route), kv("url.path", path),
        kv("http.response.status_code", status), kv("server.address", host), kv("server.port", port),
        kv("user_agent.original", ua), kv("network.protocol.version", proto), kv("client.address", client),
        kv("url.scheme", scheme),
    ]  # fmt: skip


def span_requests(total: int, per_request: int, seed: int, now_ns: int) -> list[bytes]:
    """`total` spans, `per_request` a request, in traces of 6-14 spans (a SERVER root; CLIENT and
    INTERNAL children); 10 attributes each; an exception event on 1 span in 25, status ERROR on 1 in 20."""
    rng = random.Random(seed)
    n_requests = math.ceil(total / per_request)
    step = 100_000_000_000 // max(n_requests, 1)  # the requests spread over the last ~2 minutes
    base = now_ns - 120_000_000_000
    bodies = []
    j = 0  # spans made
    for r in range(n_requests):
        n = min(per_request, total - r * per_request)
        spans: list[t.Span] = []
        t_req = base + r * step
        while len(spans) < n:
            size = min(rng.randint(6, 14), n - len(spans))
            trace_id = rng.randbytes(16)
            method, route = rng.choice(METHODS), rng.choice(ROUTES)
            path = route.replace("{id}", str(rng.randrange(1, 10**6)))
            ua = rng.choice(BROWSER_UAS)
            proto = rng.choice(("1.1", "2"))
            client = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            t0 = t_req + rng.randrange(step)
            root_dur = rng.randrange(5_000_000, 800_000_000)
            parents: list[bytes] = []
            for s in range(size):
                span_id = rng.randbytes(8)
                error = j % 20 == 19
                status = rng.choice(STATUSES) if not error else rng.choice((500, 502, 503))
                if s == 0:
                    kind, name, parent = t.Span.SPAN_KIND_SERVER, f"{method} {route}", b""
                    start, end = t0, t0 + root_dur
                    attrs = _span_attrs(method, route, path, status, "shop.example.com", 443, "https", ua, proto,
                                        client)  # fmt: skip
                else:
                    parent = rng.choice(parents)
                    start = t0 + rng.randrange(root_dur // 2)
                    end = start + rng.randrange(100_000, root_dur // 2)
                    if rng.random() < 0.6:
                        peer = rng.choice(PEERS)
                        kind, name = t.Span.SPAN_KIND_CLIENT, "POST"
                        call = f"/api/v1/{peer}/{rng.randrange(10**6)}"
                        attrs = _span_attrs("POST", f"/api/v1/{peer}", call, status, f"{peer}.shop.svc", 8080,
                                            "http", ua, "1.1", "10.42.0.17")  # fmt: skip
                    else:
                        kind, name = t.Span.SPAN_KIND_INTERNAL, rng.choice(INTERNAL_NAMES)
                        attrs = _span_attrs(method, route, path, status, "shop.example.com", 443, "https", ua, proto,
                                            client)  # fmt: skip
                events = []
                if j % 25 == 12:
                    exc_type, exc_message = rng.choice(EXCEPTIONS)
                    events.append(t.Span.Event(name="exception", time_unix_nano=start + (end - start) // 2, attributes=[
                        kv("exception.type", exc_type), kv("exception.message", exc_message)]))  # fmt: skip
                status_msg = t.Status()
                if error:
                    status_msg = t.Status(code=t.Status.STATUS_CODE_ERROR, message=f"HTTP {status}: upstream failed")
                spans.append(t.Span(
                    trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                    start_time_unix_nano=start, end_time_unix_nano=end, attributes=attrs, events=events,
                    status=status_msg, flags=0x100,
                ))  # fmt: skip
                if kind != t.Span.SPAN_KIND_CLIENT:
                    parents.append(span_id)
                j += 1
        request = ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
            resource=resource(SERVICES[r % len(SERVICES)]), schema_url=SCHEMA_URL,
            scope_spans=[t.ScopeSpans(scope=SCOPE, spans=spans)],
        )])  # fmt: skip
        bodies.append(request.SerializeToString())
    return bodies


METRICS = {
    "gauge": (
        ("http.server.inflight.last", "{request}", "Requests being served when the gauge was read."),
        ("http.server.queue.latency", "s", "Time the last request waited in the worker queue."),
        ("http.server.cpu.utilization", "1", "Share of a CPU the route's handlers used over the last interval."),
        ("http.server.memory.usage", "By", "Memory attributed to the route's handlers at collection time."),
        ("http.server.cache.hit_ratio", "1", "Share of the route's cache lookups that hit, last interval."),
    ),
    "sum": (
        ("http.server.request.count", "{request}", "Number of HTTP requests served since the process started."),
        ("http.server.request.body.bytes", "By", "Bytes of request bodies received since the process started."),
        ("http.server.response.body.bytes", "By", "Bytes of response bodies sent since the process started."),
        ("http.server.errors", "{error}", "Requests that ended in an unhandled exception."),
        ("http.server.retries", "{retry}", "Requests retried by the client, as told by its resend count header."),
    ),
    "histogram": (
        ("http.server.request.duration", "s", "Duration of HTTP server requests."),
        ("http.server.handler.duration", "s", "Time spent in the route's handler, excluding middleware."),
        ("db.client.operation.duration", "s", "Duration of database client operations made by the route."),
        ("http.client.request.duration", "s", "Duration of outgoing HTTP requests made by the route."),
        ("http.server.queue.duration", "s", "Time requests waited for a worker."),
    ),
    "exponential_histogram": (
        ("rpc.server.duration", "ms", "Duration of inbound RPCs."),
        ("rpc.client.duration", "ms", "Duration of outbound RPCs."),
        ("http.server.ttfb", "ms", "Time to the first byte of the response."),
        ("db.client.query.duration", "ms", "Duration of database queries."),
        ("cache.client.duration", "ms", "Duration of cache operations."),
    ),
    "summary": (
        ("legacy.request.latency", "s", "Request latency from the legacy Prometheus client, as a summary."),
        ("legacy.db.latency", "s", "Database call latency from the legacy Prometheus client."),
        ("legacy.render.latency", "s", "Template rendering latency from the legacy Prometheus client."),
        ("legacy.auth.latency", "s", "Authentication latency from the legacy Prometheus client."),
        ("legacy.queue.latency", "s", "Queue wait from the legacy Prometheus client."),
    ),
}
HTTP_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0]
QUANTILES = (0.5, 0.9, 0.99)


def series_attributes(n: int) -> list[list]:
    """n distinct attribute sets of 3 or 4 attributes (http.route, method, status code, server.address)."""
    out = []
    for p in range(n):
        attrs = [
            kv("http.route", ROUTES[p % 8]),
            kv("http.request.method", ("GET", "POST", "PUT", "DELETE")[p // 8 % 4]),
            kv("http.response.status_code", (200, 201, 404, 500)[p // 32 % 4]),
        ]
        if p % 2 == 0 or p >= 128:
            attrs.append(kv("server.address", f"shop-{p // 128}.example.com"))
        out.append(attrs)
    return out


def metric_requests(
    kind: str, total: int, series: int, metrics_per_request: int, interval_s: float, seed: int, now_ns: int
) -> list[bytes]:
    """`total` points of one type: each request is one service's collection of `metrics_per_request`
    metrics x `series` points; the 4 services collect every `interval_s` seconds from hh:00:05 of the
    previous clock hour, so that the per-minute and per-hour rollups get the same rows whenever it runs
    (collections of an hour at most with the defaults: 10 a service)."""
    rng = random.Random(seed)
    per_request = series * metrics_per_request
    n_requests = math.ceil(total / per_request)
    interval_ns = int(interval_s * 1e9)
    hour_ns = 3_600_000_000_000
    first = (now_ns // hour_ns - 1) * hour_ns + 5_000_000_000
    start_ns = first - hour_ns  # the processes started an hour before the first collection
    attr_sets = series_attributes(series)
    specs = METRICS[kind]
    state: dict[tuple, list] = {}  # cumulative values per (service, metric, series)
    bodies = []
    left = total
    for r in range(n_requests):
        service = SERVICES[r % len(SERVICES)]
        c = r // len(SERVICES)
        now = first + c * interval_ns
        metrics = []
        for k in range(metrics_per_request):
            if left <= 0:
                break
            name, unit, description = specs[k % len(specs)]
            if k >= len(specs):
                name = f"{name}.{k // len(specs)}"
            points = []
            for p in range(min(series, left)):
                attrs = attr_sets[p]
                key = (service, name, p)
                if kind == "gauge":
                    points.append(m.NumberDataPoint(attributes=attrs, time_unix_nano=now,
                                                    as_double=round(rng.uniform(0, 100), 3)))  # fmt: skip
                elif kind == "sum":
                    total_now = state.setdefault(key, [rng.randrange(10**6)])
                    total_now[0] += rng.randrange(0, 5000)
                    points.append(m.NumberDataPoint(attributes=attrs, start_time_unix_nano=start_ns,
                                                    time_unix_nano=now, as_int=total_now[0]))  # fmt: skip
                elif kind == "histogram":
                    counts = state.setdefault(key, [0] * (len(HTTP_BOUNDS) + 1))
                    for b in range(len(counts)):
                        counts[b] += rng.randrange(0, 40 if b < 10 else 4)
                    n_obs = sum(counts)
                    points.append(m.HistogramDataPoint(
                        attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=now, count=n_obs,
                        sum=round(n_obs * rng.uniform(0.05, 0.4), 6), bucket_counts=counts,
                        explicit_bounds=HTTP_BOUNDS, min=0.0012, max=round(rng.uniform(2, 25), 4),
                    ))  # fmt: skip
                elif kind == "exponential_histogram":
                    st = state.setdefault(key, [rng.randrange(30, 50), 0, [0] * 20])
                    st[1] += rng.randrange(0, 3)
                    for b in range(20):
                        st[2][b] += rng.randrange(0, 30)
                    n_obs = sum(st[2]) + st[1]
                    points.append(m.ExponentialHistogramDataPoint(
                        attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=now, count=n_obs,
                        sum=round(n_obs * rng.uniform(20, 200), 3), scale=3, zero_count=st[1],
                        positive={"offset": st[0], "bucket_counts": st[2]}, min=0.0,
                        max=round(rng.uniform(500, 3000), 2),
                    ))  # fmt: skip
                else:
                    st = state.setdefault(key, [0, 0.0])
                    st[0] += rng.randrange(100, 5000)
                    st[1] += rng.uniform(10, 900)
                    q = sorted(round(rng.uniform(0.005, 3.0), 4) for _ in QUANTILES)
                    points.append(m.SummaryDataPoint(
                        attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=now, count=st[0],
                        sum=round(st[1], 3),
                        quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=qq, value=v)
                                         for qq, v in zip(QUANTILES, q, strict=True)],
                    ))  # fmt: skip
            left -= len(points)
            metric = m.Metric(name=name, unit=unit, description=description)
            if kind == "gauge":
                metric.gauge.data_points.extend(points)
            elif kind == "sum":
                metric.sum.CopyFrom(m.Sum(data_points=points, aggregation_temporality=2, is_monotonic=True))
            elif kind == "histogram":
                metric.histogram.CopyFrom(m.Histogram(data_points=points, aggregation_temporality=2))
            elif kind == "exponential_histogram":
                metric.exponential_histogram.CopyFrom(
                    m.ExponentialHistogram(data_points=points, aggregation_temporality=2)
                )
            else:
                metric.summary.data_points.extend(points)
            metrics.append(metric)
        request = ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
            resource=resource(service), schema_url=SCHEMA_URL,
            scope_metrics=[m.ScopeMetrics(scope=SCOPE, metrics=metrics)],
        )])  # fmt: skip
        bodies.append(request.SerializeToString())
    return bodies


LOG_LINES = (
    "Order {order} placed by customer {cust}: {n} items, total {amt} EUR, payment by card, standard shipping",
    "Cache miss for cart:{order} in region eu-west-1, loading {n} line items from the orders database",
    "Payment capture for order {order} succeeded after {ms} ms (provider adyen, 3-D Secure not required)",
    "GET /api/products/SKU-{sku} answered 200 in {ms} ms for customer {cust} (cache hit, {n} variants)",
    "Retrying call to inventory.shop.svc:8080 after ConnectionResetError (attempt {n} of 5, backoff {ms} ms)",
    "Slow query ({ms} ms): SELECT id, status, total FROM orders WHERE customer_id = $1 ORDER BY created_at",
    "Session for customer {cust} refreshed; token expires in 3600 s, {n} active devices, last seen eu-west-1",
    "Price for SKU-{sku} recomputed: {amt} EUR after {n} promotions, currency rates dated today 06:00 UTC",
)
SEVERITIES = ((9, "INFO"),) * 17 + ((13, "WARN"),) * 2 + ((17, "ERROR"),)  # 85% INFO, 10% WARN, 5% ERROR
LOG_SCOPE = {"name": "shop.service", "version": "2.14.1"}


def log_requests(total: int, per_request: int, seed: int, now_ns: int) -> list[bytes]:
    """`total` log records, `per_request` a request: string bodies of 80-120 characters, 4-5 attributes,
    trace and span ids on half of them, mostly INFO, some WARN and ERROR."""
    rng = random.Random(seed)
    n_requests = math.ceil(total / per_request)
    base = now_ns - 120_000_000_000
    step = 100_000_000_000 // max(total, 1)
    bodies = []
    i = 0
    for r in range(n_requests):
        records = []
        for _ in range(min(per_request, total - r * per_request)):
            number, text = rng.choice(SEVERITIES)
            body = rng.choice(LOG_LINES).format(
                order=rng.randrange(10**7), cust=f"C{rng.randrange(10**6):06d}", n=rng.randrange(1, 9),
                amt=f"{rng.uniform(5, 900):.2f}", ms=rng.randrange(2, 3000), sku=rng.randrange(10**5),
            )  # fmt: skip
            attrs = [
                kv("code.function.name", rng.choice(("place_order", "capture", "get_cart", "search", "refresh"))),
                kv("code.file.path", rng.choice(("/app/shop/service.py", "/app/shop/payments.py"))),
                kv("code.line.number", rng.randrange(1, 900)),
                kv("thread.name", f"worker-{rng.randrange(8)}"),
            ]
            if i % 2 == 0:
                attrs.append(kv("http.route", rng.choice(ROUTES)))
            ts = base + i * step + rng.randrange(max(step, 1))
            record = lg.LogRecord(time_unix_nano=ts, observed_time_unix_nano=ts + 250_000, severity_number=number,
                                  severity_text=text, body={"string_value": body}, attributes=attrs)  # fmt: skip
            if i % 2 == 1:
                record.trace_id = rng.randbytes(16)
                record.span_id = rng.randbytes(8)
                record.flags = 1
            records.append(record)
            i += 1
        request = ExportLogsServiceRequest(resource_logs=[lg.ResourceLogs(
            resource=resource(SERVICES[r % len(SERVICES)]), schema_url=SCHEMA_URL,
            scope_logs=[lg.ScopeLogs(scope=LOG_SCOPE, log_records=records)],
        )])  # fmt: skip
        bodies.append(request.SerializeToString())
    return bodies


def build_stream(args: argparse.Namespace, stream: str, now_ns: int) -> tuple[list[bytes], int]:
    """(request bodies, items) of one stream."""
    if stream == "spans":
        return span_requests(args.spans, args.spans_per_request, 1, now_ns), args.spans
    if stream == "logs":
        return log_requests(args.logs, args.logs_per_request, 3, now_ns), args.logs
    bodies = metric_requests(
        stream, args.points, args.series, args.metrics_per_request, args.metric_interval, 2, now_ns
    )
    return bodies, args.points


# --------------------------------------------------------------------------- PostgreSQL side

TOTAL_SQL = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')
"""
# Leaf tables grouped by their top-level table (pg_partition_root; a table that is not a partition
# is its own root). heap: main fork; toast: TOAST (with its index) + free-space and visibility maps.
BREAKDOWN_SQL = """
SELECT r.relname AS root, r.relkind AS root_kind, count(*) AS leaves,
       sum(pg_relation_size(c.oid))::bigint AS heap,
       sum(pg_table_size(c.oid) - pg_relation_size(c.oid))::bigint AS toast,
       sum(pg_indexes_size(c.oid))::bigint AS index,
       sum(pg_total_relation_size(c.oid))::bigint AS total
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = coalesce(pg_partition_root(c.oid), c.oid)
WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')
GROUP BY r.relname, r.relkind
"""


@dataclass
class TableSize:
    leaves: int
    heap: int
    toast: int
    index: int
    total: int
    rows: int


@dataclass
class Snapshot:
    total: int
    tables: dict[str, TableSize]
    wal_lsn: int  # bytes of WAL since 0/0


async def snapshot(dsn: str, schema: str) -> Snapshot:
    conn = await asyncpg.connect(dsn)
    try:
        total = await conn.fetchval(TOTAL_SQL, schema)
        tables = {}
        for r in await conn.fetch(BREAKDOWN_SQL, schema):
            ident = f'"{schema}"."{r["root"]}"'
            rows = await conn.fetchval(f"SELECT count(*) FROM {ident}")
            tables[r["root"]] = TableSize(r["leaves"], r["heap"], r["toast"], r["index"], r["total"], rows)
        lsn = int(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
        return Snapshot(total, tables, lsn)
    finally:
        await conn.close()


async def migrations(dsn: str, schema: str) -> str:
    """Which migrations otelpg applied (a label only: no such table is no error)."""
    conn = await asyncpg.connect(dsn)
    try:
        table = f'"{schema}".schema_migrations'
        if await conn.fetchval("SELECT to_regclass($1) IS NULL", table):
            return "no schema_migrations table"
        versions = await conn.fetchval(f"SELECT string_agg(version::text, ', ' ORDER BY version) FROM {table}")
        return f"migrations {versions}"
    finally:
        await conn.close()


def pg_cpu_seconds(server: _pg.Server) -> float:
    """user+sys of every PostgreSQL process, live or exited: the live processes' own times plus the
    postmaster's reaped-children times (a backend's whole CPU moves there when it exits)."""
    procs = server.processes()
    pids = {p.pid for p in procs}
    total = 0.0
    for p in procs:
        try:
            c = p.cpu_times()
            total += c.user + c.system
            if p.ppid() not in pids:  # a postmaster: its children report to it
                total += c.children_user + c.children_system
        except psutil.Error:
            pass
    return total


def proc_cpu_seconds(proc: psutil.Process) -> float:
    try:
        c = proc.cpu_times()
        return c.user + c.system + c.children_user + c.children_system
    except psutil.Error:
        return 0.0


# --------------------------------------------------------------------------- one stream


@dataclass
class StreamResult:
    stream: str
    items: int
    requests: int
    requests_ok: int
    items_ok: int
    otlp_bytes: int
    otlp_gzip_bytes: int
    seconds: float
    pg_bytes: int  # after otelpg's graceful stop
    pg_bytes_acked: int  # when the last request was acknowledged
    wal: int
    pg_cpu_s: float
    otelpg_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    window_s: float  # wall time between the CPU samples
    tables: dict[str, tuple[TableSize, TableSize]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def otelpg_settings(args: argparse.Namespace) -> argparse.Namespace:
    """What bench_ingest.start_otelpg reads: otelpg's defaults (a user's configuration)."""
    from exporters.postgres.config import BatchConfig, DatabaseConfig, QueueConfig

    return argparse.Namespace(
        db_pool_size=DatabaseConfig.pool_max_size, batch_max_rows=BatchConfig.max_rows,
        batch_max_delay=BatchConfig.max_delay, batch_writers=BatchConfig.writers,
        queue_max_rows=QueueConfig.max_rows, queue_max_bytes=QueueConfig.max_bytes, no_rollups=args.no_rollups,
    )  # fmt: skip


def send(otelpg, stream: str, bodies: list[bytes], items_per_body: list[int], concurrency: int):
    """Start a load-generator process holding the bodies; returns (process, pipe) once it is ready."""
    templates = [
        Template(SIGNAL_OF[stream], b, n, ("gap",), f"<{len(b)}s", 0)
        for b, n in zip(bodies, items_per_body, strict=True)
    ]
    spec = ClientSpec(
        transport="http", target=otelpg.url("http"), signal=SIGNAL_OF[stream], templates=templates, client=0,
        clients=1, id_base=0, concurrency=concurrency, requests=len(bodies), pool=len(bodies), timeout=60.0,
    )  # fmt: skip
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=client_main, args=(spec, child_end), daemon=True, name=f"loadgen-{stream}")
    proc.start()
    if not parent_end.poll(300) or parent_end.recv() != "ready":
        raise RuntimeError("load generator did not get ready")
    return proc, parent_end


def items_in(stream: str, body: bytes) -> int:
    if stream == "spans":
        msg = ExportTraceServiceRequest.FromString(body)
        return sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    if stream == "logs":
        msg = ExportLogsServiceRequest.FromString(body)
        return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
    msg = ExportMetricsServiceRequest.FromString(body)
    return sum(
        len(getattr(metric, metric.WhichOneof("data")).data_points)
        for rm in msg.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


def run_stream(args: argparse.Namespace, server: _pg.Server, stream: str, workdir: Path) -> StreamResult:
    t0 = time.perf_counter()
    bodies, items = build_stream(args, stream, time.time_ns())
    counts = [items_in(stream, b) for b in bodies]
    assert sum(counts) == items, (stream, sum(counts), items)
    otlp = sum(len(b) for b in bodies)
    gz = sum(len(zlib.compress(b, 6)) for b in bodies)
    build_s = time.perf_counter() - t0

    schema_dsn = asyncio.run(_pg.fresh_schema(server.dsn, f"bench_storage_{stream}", migrated=False))
    schema = dict(parse_qsl(urlsplit(schema_dsn).query))["search_path"]
    sub = workdir / stream
    sub.mkdir()
    otelpg = None
    loadgen = None
    try:
        if args.wait_quiet:  # before otelpg starts: its first span-metrics flush is a minute after the start
            wait_quiet(Out(as_json=False), args.wait_quiet)
        otelpg, _ = start_otelpg(otelpg_settings(args), schema_dsn, sub)
        otelpg_ps = psutil.Process(otelpg.proc.pid)
        print(
            f"== {stream}: {items:,} {ITEM_OF[stream]}s in {len(bodies)} requests (built in {build_s:.1f} s), "
            f"{args.concurrency} in flight, schema {schema} ({asyncio.run(migrations(server.dsn, schema))})",
            flush=True,
        )
        asyncio.run(_pg.checkpoint(server.dsn))  # every stream starts with no WAL of another one to flush
        loadgen, pipe = send(otelpg, stream, bodies, counts, args.concurrency)
        loadgen_ps = psutil.Process(loadgen.pid)
        before = asyncio.run(snapshot(server.dsn, schema))
        metrics0 = scrape(otelpg.url("admin", "/metrics"))

        s0, busy0, pg0, ot0 = time.monotonic(), machine_busy(), pg_cpu_seconds(server), proc_cpu_seconds(otelpg_ps)
        cl0 = proc_cpu_seconds(loadgen_ps)
        pipe.send((time.monotonic(), None))
        if not pipe.poll(1800):
            raise RuntimeError("load generator did not report")
        result: ClientResult = pipe.recv()
        # Every request is answered: acknowledged means committed (or spooled: checked below).
        pg1, ot1 = pg_cpu_seconds(server), proc_cpu_seconds(otelpg_ps)
        cl1, busy1, s1 = proc_cpu_seconds(loadgen_ps), machine_busy(), time.monotonic()
        seconds = max(result.done) - result.first_send if len(result.done) else 0.0
        loadgen.join(30)

        metrics1 = scrape(otelpg.url("admin", "/metrics"))
        acked = asyncio.run(snapshot(server.dsn, schema))
        # A graceful stop writes what otelpg keeps in memory for a while (the span-derived aggregates it
        # otherwise flushes every minute, agent_states): once, whatever the timing, so it is counted.
        code = otelpg.stop()
        if code != 0:
            print(f"  otelpg exited with {code}; log tail:\n{otelpg.log[-2000:]}")
        after = asyncio.run(snapshot(server.dsn, schema))
    finally:
        if loadgen is not None and loadgen.is_alive():
            loadgen.kill()
        if otelpg is not None and otelpg.proc is not None and otelpg.proc.poll() is None:
            otelpg.stop()
        if not args.keep:
            asyncio.run(_pg.drop_schema(server.dsn, schema_dsn))

    ok = sum(1 for x in result.ok if x)
    items_ok = sum(n for n, good in zip(result.items, result.ok, strict=True) if good)
    statuses: dict[str, int] = {}
    for s in result.status:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    res = StreamResult(
        stream=stream, items=items, requests=len(bodies), requests_ok=ok, items_ok=items_ok, otlp_bytes=otlp,
        otlp_gzip_bytes=gz, seconds=seconds, pg_bytes=after.total - before.total,
        pg_bytes_acked=acked.total - before.total, wal=after.wal_lsn - before.wal_lsn,
        pg_cpu_s=pg1 - pg0, otelpg_cpu_s=ot1 - ot0, client_cpu_s=cl1 - cl0,
        other_cpu_s=max(0.0, (busy1 - busy0) - (pg1 - pg0) - (ot1 - ot0) - (cl1 - cl0)), window_s=s1 - s0,
        statuses=statuses,
    )  # fmt: skip
    empty = TableSize(0, 0, 0, 0, 0, 0)
    for name in sorted(set(before.tables) | set(after.tables)):
        res.tables[name] = (before.tables.get(name, empty), after.tables.get(name, empty))
    if ok < len(bodies):
        res.notes.append(
            f"{len(bodies) - ok} requests not acknowledged ({statuses}): figures are per acknowledged item"
        )
    spooled = metrics1.get("otelpg_spool_appended_requests_total", 0) - metrics0.get(
        "otelpg_spool_appended_requests_total", 0
    )
    if spooled:
        res.notes.append(f"{spooled:.0f} requests went to the spool (acknowledged before commit): sizes may be short")
    failed = metrics1.get("otelpg_exporter_send_failed_rows_total", 0) - metrics0.get(
        "otelpg_exporter_send_failed_rows_total", 0
    )
    if failed:
        res.notes.append(f"{failed:.0f} rows failed to COPY")
    return res


# --------------------------------------------------------------------------- output


def per_item(res: StreamResult) -> int:
    return max(res.items_ok, 1)


def print_stream(res: StreamResult) -> None:
    n = per_item(res)
    item = ITEM_OF[res.stream]
    print(
        f"  sent       {res.requests_ok}/{res.requests} requests acknowledged in {res.seconds:.1f} s "
        f"({res.items_ok / max(res.seconds, 1e-9):,.0f} {item}s/s)"
    )
    print(
        f"  OTLP       {res.otlp_bytes / MiB:.1f} MiB protobuf = {res.otlp_bytes / res.items:,.0f} B/{item} "
        f"(gzip level 6: {res.otlp_gzip_bytes / res.items:,.0f} B/{item})"
    )
    print(
        f"  postgres   +{res.pg_bytes / MiB:.1f} MiB = {res.pg_bytes / n:,.0f} B/{item} "
        f"= {res.pg_bytes / n / (res.otlp_bytes / res.items):.2f}x OTLP; WAL {res.wal / MiB:.1f} MiB = "
        f"{res.wal / n:,.0f} B/{item}"
    )
    if res.pg_bytes != res.pg_bytes_acked:
        print(
            f"             of which {(res.pg_bytes - res.pg_bytes_acked) / n:,.1f} B/{item} written after the last "
            f"acknowledgement, at otelpg's graceful stop (span-derived aggregates, agent_states)"
        )
    print(
        f"  cpu        postgres {res.pg_cpu_s:.2f} s = {res.pg_cpu_s / n * 1e6:.1f} µs/{item} | "
        f"otelpg {res.otelpg_cpu_s:.2f} s = {res.otelpg_cpu_s / n * 1e6:.1f} µs/{item} | "
        f"load generator {res.client_cpu_s:.2f} s | other processes {res.other_cpu_s:.2f} s "
        f"= {res.other_cpu_s / max(res.window_s, 1e-9):.2f} cores"
    )
    print(f"  by table   growth per {item}, top-level tables (leaf partitions summed):")
    print(
        f"    {'table (leaf tables)':<36} {'rows':>7} {'heap B':>9} {'toast+maps B':>13} {'index B':>9} "
        f"{'total B':>9} {'total MiB':>10}"
    )
    grown = [(name, b, a) for name, (b, a) in res.tables.items() if a.total != b.total or a.rows != b.rows]
    grown.sort(key=lambda x: -(x[2].total - x[1].total))
    for name, b, a in grown:
        print(
            f"    {f'{name} ({a.leaves})':<36} {(a.rows - b.rows) / n:>7.3f} {(a.heap - b.heap) / n:>9,.1f} "
            f"{(a.toast - b.toast) / n:>13,.1f} {(a.index - b.index) / n:>9,.1f} {(a.total - b.total) / n:>9,.1f} "
            f"{(a.total - b.total) / MiB:>10.2f}"
        )
    unchanged = len(res.tables) - len(grown)
    print(f"    ({unchanged} other tables of the schema did not change)")
    for note in res.notes:
        print(f"  NOTE       {note}")
    print(flush=True)


def summary_line(res: StreamResult) -> str:
    n = per_item(res)
    otlp = res.otlp_bytes / res.items
    pg = res.pg_bytes / n
    label = {"spans": "spans", "logs": "logs"}.get(res.stream, f"{res.stream} points")
    return (
        f"{label}: {pg:,.0f} B/item in PostgreSQL vs {otlp:,.0f} B OTLP = {pg / otlp:.2f}x; "
        f"PostgreSQL CPU {res.pg_cpu_s / n * 1e6:.1f} µs/item; otelpg CPU {res.otelpg_cpu_s / n * 1e6:.1f} µs/item"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Figures and method: docs/performance.md (Storage: bytes and PostgreSQL CPU per item).",
    )
    p.add_argument("--database-url", help="PostgreSQL DSN to use (default: an embedded server in a temp dir)")
    p.add_argument(
        "--streams",
        default=",".join(STREAMS),
        help=f"comma-separated streams to measure [{','.join(STREAMS)}]",
    )
    p.add_argument("--spans", type=int, default=100_000, help="spans sent [100000]")
    p.add_argument("--spans-per-request", type=int, default=500, help="[500]")
    p.add_argument("--points", type=int, default=20_000, help="metric points sent per point type [20000]")
    p.add_argument("--series", type=int, default=100, help="points per metric per request (series) [100]")
    p.add_argument("--metrics-per-request", type=int, default=5, help="[5]")
    p.add_argument("--metric-interval", type=float, default=60.0, help="seconds between a service's collections [60]")
    p.add_argument("--logs", type=int, default=100_000, help="log records sent [100000]")
    p.add_argument("--logs-per-request", type=int, default=500, help="[500]")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight [4]")
    p.add_argument("--no-rollups", action="store_true", help="otelpg with rollups.enabled: false")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="before each stream, wait up to S seconds for other processes to leave the CPUs idle",
    )
    p.add_argument("--keep", action="store_true", help="keep the schemas (with --database-url)")
    args = p.parse_args(argv)
    args.streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    bad = [s for s in args.streams if s not in STREAMS]
    if bad:
        p.error(f"unknown streams {bad}; choose from {', '.join(STREAMS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="otelpg-bench-storage-"))
    server = _pg.Server(args.database_url)
    results: list[StreamResult] = []
    try:
        dsn = server.start()
        settings = asyncio.run(_pg.settings(dsn))
        print(
            f"otelpg storage benchmark: {time.strftime('%Y-%m-%d %H:%M:%S')}, {platform.node()}, "
            f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}"
        )
        print(
            f"PostgreSQL {settings['server_version']} ({'--database-url' if args.database_url else 'embedded'}): "
            + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "server_version")
        )
        print(
            f"otelpg: default settings, rollups.enabled={not args.no_rollups}, C attribute converter: {_c_converter()}"
        )
        print(f"source: {ROOT} ({source_version()})")
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        print(
            "per item: bytes = growth of pg_total_relation_size over every table of the stream's schema / items; "
            "CPU = user+sys over the send phase / items"
        )
        print(flush=True)
        for stream in args.streams:
            res = run_stream(args, server, stream, workdir)
            print_stream(res)
            results.append(res)
        print("== every stream, per item")
        for res in results:
            print(summary_line(res))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
