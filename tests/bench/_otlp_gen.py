"""Realistic OTLP export requests for the ingest benchmark, encoded once and patched per request.

A *template* is one serialized Export*ServiceRequest shaped like what an SDK sends: a
BatchSpanProcessor batch of ~500 spans (10-20 attributes, some events, several scopes), a
metric reader's collection of ~1000 points of every type, a BatchLogRecordProcessor batch of
~500 log records. Building protobuf messages in Python is slow, so each template is built once
and request `k` is made by patching fixed-width fields in a copy of its bytes:

- the first 4 bytes of every trace_id / span_id / parent_span_id become `k` (big-endian), so
  every request carries distinct ids and parent links stay consistent;
- every fixed64 `*_time_unix_nano` gets `seq * step_ns` added (`seq` = the sender's request
  counter), so timestamps advance like a live stream (append-mostly B-tree inserts, as in
  production) and stay near the current time.

The offsets are found by walking the wire format with the message descriptors, and the patch
is a single `struct.pack` of the whole body with the changed fields (~0.3 ms for 500 spans).
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2 as lg
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.trace.v1 import trace_pb2 as t

SIGNALS = ("traces", "metrics", "logs")
REQUEST_TYPES = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
HTTP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
ITEM_NAMES = {"traces": "spans", "metrics": "points", "logs": "log records"}

_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_MAGIC = 0xB5  # first byte of every template id (overwritten by the request number when patched)


# --------------------------------------------------------------------------- attribute helpers


def kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        return KeyValue(
            key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value]))
        )
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


SERVICES = ("checkout", "cart", "payments", "catalog", "frontend", "shipping", "inventory", "auth")


def resource(service: str, rng: random.Random) -> dict:
    """The resource an SDK on Kubernetes sends: ~14 attributes, the same on every request."""
    pod = f"{service}-{rng.randrange(16**8):08x}-{rng.randrange(16**5):05x}"
    return {"attributes": [
        kv("service.name", service), kv("service.version", f"2.{rng.randrange(40)}.{rng.randrange(10)}"),
        kv("service.namespace", "shop"), kv("service.instance.id", f"{rng.randrange(16**12):012x}"),
        kv("deployment.environment.name", "production"), kv("k8s.namespace.name", "shop"),
        kv("k8s.pod.name", pod), kv("k8s.deployment.name", service), kv("k8s.node.name", "node-7"),
        kv("k8s.cluster.name", "eu-west-1-prod"), kv("host.name", pod), kv("host.arch", "amd64"),
        kv("process.pid", rng.randrange(1, 60000)), kv("process.runtime.name", "cpython"),
        kv("process.runtime.version", "3.12.4"), kv("telemetry.sdk.language", "python"),
        kv("telemetry.sdk.name", "opentelemetry"), kv("telemetry.sdk.version", "1.27.0"),
    ]}  # fmt: skip


class _Ids:
    """Template ids: first byte _MAGIC, then a counter (patched: bytes 0-3 become the request number)."""

    def __init__(self, seed: int) -> None:
        self._n = seed << 24

    def trace(self) -> bytes:
        self._n += 1
        return bytes([_MAGIC, 0, 0, 0]) + self._n.to_bytes(12, "big")

    def span(self) -> bytes:
        self._n += 1
        return bytes([_MAGIC, 0, 0, 0]) + (self._n & 0xFFFFFFFF).to_bytes(4, "big")


ROUTES = (
    "/api/orders/{id}",
    "/api/cart",
    "/api/products/{sku}",
    "/api/checkout",
    "/api/users/{id}/profile",
    "/api/search",
    "/healthz",
    "/api/payments/{id}/capture",
)
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "python-requests/2.32.3",
    "okhttp/4.12.0",
)
SQL = (
    "SELECT o.id, o.status, o.total, o.created_at FROM orders o WHERE o.customer_id = $1 "
    "ORDER BY o.created_at DESC LIMIT 20",
    "UPDATE inventory SET reserved = reserved + $1 WHERE sku = $2 AND warehouse_id = $3",
    "INSERT INTO order_items (order_id, sku, quantity, unit_price) VALUES ($1, $2, $3, $4)",
    "SELECT p.sku, p.name, p.price FROM products p WHERE p.sku = ANY($1)",
)  # fmt: skip
STACK = "".join(
    f'  File "/app/shop/{f}.py", line {n}, in {fn}\n    {code}\n'
    for f, n, fn, code in (
        ("views", 88, "checkout", "order = service.place(cart)"),
        ("service", 141, "place", "payment = self.payments.capture(order.id, cart.total)"),
        ("clients/payments", 57, "capture", "resp.raise_for_status()"),
    )
)


def _http_server_attrs(rng: random.Random, route: str, method: str, status: int, user: int) -> list[KeyValue]:
    path = route.replace("{id}", str(rng.randrange(10**6))).replace("{sku}", f"SKU-{rng.randrange(10**5)}")
    return [
        kv("http.request.method", method), kv("http.route", route), kv("url.path", path),
        kv("url.scheme", "https"), kv("url.query", f"page={rng.randrange(5)}&size=20"),
        kv("http.response.status_code", status), kv("server.address", "shop.example.com"),
        kv("server.port", 443), kv("client.address", f"10.{rng.randrange(256)}.{rng.randrange(256)}.7"),
        kv("user_agent.original", rng.choice(USER_AGENTS)), kv("network.protocol.version", "1.1"),
        kv("http.request.body.size", rng.randrange(100, 5000)),
        kv("http.response.body.size", rng.randrange(200, 20000)),
        kv("enduser.id", f"user-{user}"), kv("session.id", f"{rng.randrange(16**16):016x}"),
        kv("app.tenant", rng.choice(("acme", "globex", "initech"))),
    ]  # fmt: skip


def _db_attrs(rng: random.Random) -> list[KeyValue]:
    q = rng.choice(SQL)
    return [
        kv("db.system.name", "postgresql"), kv("db.namespace", "shop"), kv("db.operation.name", q.split()[0]),
        kv("db.collection.name", q.split()[3] if q.startswith("SELECT") else q.split()[2]),
        kv("db.query.text", q), kv("server.address", "pg-primary.shop.svc"), kv("server.port", 5432),
        kv("network.peer.address", "10.3.0.12"), kv("db.response.returned_rows", rng.randrange(50)),
        kv("code.function.name", "shop.repository.fetch"),
    ]  # fmt: skip


def _client_attrs(rng: random.Random, peer: str) -> list[KeyValue]:
    return [
        kv("http.request.method", "POST"), kv("url.full", f"http://{peer}.shop.svc:8080/api/v1/{peer}"),
        kv("server.address", f"{peer}.shop.svc"), kv("server.port", 8080),
        kv("http.response.status_code", 200), kv("network.protocol.version", "1.1"),
        kv("http.request.resend_count", 0), kv("network.peer.address", f"10.4.{rng.randrange(256)}.9"),
        kv("http.request.body.size", rng.randrange(100, 2000)), kv("http.response.body.size", rng.randrange(100, 4000)),
        kv("rpc.system", "http"),
    ]  # fmt: skip


def _cache_attrs(rng: random.Random) -> list[KeyValue]:
    return [
        kv("db.system.name", "redis"), kv("db.operation.name", rng.choice(("GET", "SET", "MGET", "EXPIRE"))),
        kv("db.query.text", f"GET cart:{rng.randrange(10**6)}"), kv("server.address", "redis.shop.svc"),
        kv("server.port", 6379), kv("db.namespace", "0"), kv("network.peer.address", "10.3.1.4"),
        kv("app.cache.hit", rng.random() < 0.8), kv("app.cache.ttl_seconds", 300),
        kv("code.function.name", "shop.cache.get"),
    ]  # fmt: skip


# --------------------------------------------------------------------------- traces


def traces_request(n_spans: int, seed: int, now_ns: int) -> ExportTraceServiceRequest:
    """~n_spans spans in traces of 4-12 spans: a SERVER root, DB/cache/HTTP-client children.

    ~10% of spans carry events (exceptions on errors, cache/retry notes); ~2% are errors.
    Four scopes, one resource (one SDK process), as a BatchSpanProcessor export looks.
    """
    rng = random.Random(seed)
    ids = _Ids(seed)
    service = SERVICES[seed % len(SERVICES)]
    scopes: dict[str, list[t.Span]] = {
        "opentelemetry.instrumentation.flask": [], "opentelemetry.instrumentation.psycopg": [],
        "opentelemetry.instrumentation.requests": [], "opentelemetry.instrumentation.redis": [],
    }  # fmt: skip
    made = 0
    start = now_ns - 5_000_000_000
    while made < n_spans:
        tid = ids.trace()
        root_id = ids.span()
        route = rng.choice(ROUTES)
        method = rng.choice(METHODS)
        error = rng.random() < 0.02
        t0 = start + rng.randrange(1_000_000_000)
        root_dur = rng.randrange(2_000_000, 400_000_000)
        children = min(rng.randrange(3, 12), n_spans - made - 1)
        cursor = t0 + 200_000
        for _ in range(max(children, 0)):
            kind_pick = rng.random()
            dur = rng.randrange(300_000, max(400_000, root_dur // max(children, 1)))
            events = []
            if kind_pick < 0.45:
                scope, kind, name, attrs = (
                    "opentelemetry.instrumentation.psycopg",
                    t.Span.SPAN_KIND_CLIENT,
                    None,
                    _db_attrs(rng),
                )
                name = f"{attrs[2].value.string_value} {attrs[3].value.string_value}"
            elif kind_pick < 0.75:
                scope, kind, attrs = ("opentelemetry.instrumentation.redis", t.Span.SPAN_KIND_CLIENT, _cache_attrs(rng))
                name = attrs[1].value.string_value
                if rng.random() < 0.1:
                    events.append(
                        t.Span.Event(
                            name="cache.miss",
                            time_unix_nano=cursor + dur // 2,
                            attributes=[kv("cache.key", f"cart:{rng.randrange(10**6)}")],
                        )
                    )
            else:
                peer = rng.choice(("payments", "inventory", "shipping", "pricing"))
                scope, kind, attrs = (
                    "opentelemetry.instrumentation.requests",
                    t.Span.SPAN_KIND_CLIENT,
                    _client_attrs(rng, peer),
                )
                name = "POST"
                if rng.random() < 0.15:
                    events.append(
                        t.Span.Event(
                            name="http.retry",
                            time_unix_nano=cursor + dur // 3,
                            attributes=[kv("http.request.resend_count", 1), kv("error.type", "ConnectionResetError")],
                        )
                    )
            scopes[scope].append(t.Span(
                trace_id=tid, span_id=ids.span(), parent_span_id=root_id, name=name, kind=kind,
                start_time_unix_nano=cursor, end_time_unix_nano=cursor + dur, attributes=attrs,
                events=events, flags=0x100, status=t.Status(),
            ))  # fmt: skip
            cursor += dur + rng.randrange(50_000, 500_000)
            made += 1
        status = t.Status()
        events = []
        code = 200
        if error:
            code = 500
            status = t.Status(code=t.Status.STATUS_CODE_ERROR, message="PaymentDeclinedError: card declined")
            events.append(t.Span.Event(name="exception", time_unix_nano=t0 + root_dur - 100_000, attributes=[
                kv("exception.type", "shop.payments.PaymentDeclinedError"), kv("exception.message", "card declined"),
                kv("exception.stacktrace", "Traceback (most recent call last):\n" + STACK),
                kv("exception.escaped", True),
            ]))  # fmt: skip
        elif rng.random() < 0.05:
            events.append(
                t.Span.Event(
                    name="feature_flag.evaluation",
                    time_unix_nano=t0 + 100_000,
                    attributes=[kv("feature_flag.key", "new-checkout"), kv("feature_flag.result.variant", "on")],
                )
            )
        scopes["opentelemetry.instrumentation.flask"].append(t.Span(
            trace_id=tid, span_id=root_id, name=f"{method} {route}", kind=t.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=t0, end_time_unix_nano=t0 + root_dur,
            attributes=_http_server_attrs(rng, route, method, code, rng.randrange(5000)),
            events=events, flags=0x100, status=status,
        ))  # fmt: skip
        made += 1
    return ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource=resource(service, rng), schema_url="https://opentelemetry.io/schemas/1.26.0",
        scope_spans=[t.ScopeSpans(scope={"name": name, "version": "0.48b0"}, spans=spans)
                     for name, spans in scopes.items() if spans],
    )])  # fmt: skip


# --------------------------------------------------------------------------- metrics

_HTTP_BOUNDS = [0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]


def metrics_request(n_points: int, seed: int, now_ns: int) -> ExportMetricsServiceRequest:
    """~n_points points: 35% sums, 25% gauges, 25% histograms, 10% exponential histograms,
    5% summaries; 3-6 attributes per point; all points of one collection share their times."""
    rng = random.Random(seed)
    service = SERVICES[seed % len(SERVICES)]
    start_ns = now_ns - 3_600_000_000_000
    points_per_metric = 20
    n_metrics = max(1, n_points // points_per_metric)
    metrics: list[m.Metric] = []
    for j in range(n_metrics):
        r = j % 20
        attr_sets = [
            [kv("http.route", ROUTES[p % len(ROUTES)]), kv("http.request.method", METHODS[p % len(METHODS)]),
             kv("http.response.status_code", (200, 201, 404, 500)[p % 4]), kv("server.address", "shop.example.com"),
             kv("app.shard", p)]
            for p in range(points_per_metric)
        ]  # fmt: skip
        common = {"start_time_unix_nano": start_ns, "time_unix_nano": now_ns}
        if r < 7:
            metric = m.Metric(name=f"http.server.requests.{j}", unit="{request}", description="Requests served.",
                              sum=m.Sum(aggregation_temporality=2, is_monotonic=True, data_points=[
                                  m.NumberDataPoint(attributes=a, as_int=rng.randrange(1, 10**7), **common)
                                  for a in attr_sets]))  # fmt: skip
        elif r < 12:
            metric = m.Metric(name=f"process.memory.usage.{j}", unit="By", description="Memory in use.",
                              gauge=m.Gauge(data_points=[
                                  m.NumberDataPoint(attributes=a[:3], as_double=rng.uniform(1e8, 4e9),
                                                    time_unix_nano=now_ns)
                                  for a in attr_sets]))  # fmt: skip
        elif r < 17:
            metric = m.Metric(name=f"http.server.request.duration.{j}", unit="s",
                              description="Duration of HTTP server requests.",
                              histogram=m.Histogram(aggregation_temporality=2, data_points=[
                                  m.HistogramDataPoint(
                                      attributes=a, count=sum(bc := [rng.randrange(500) for _ in range(16)]),
                                      sum=rng.uniform(10, 5000), min=0.0008, max=rng.uniform(1, 9),
                                      explicit_bounds=_HTTP_BOUNDS, bucket_counts=bc, **common)
                                  for a in attr_sets]))  # fmt: skip
        elif r < 19:
            metric = m.Metric(name=f"rpc.client.duration.{j}", unit="ms", exponential_histogram=m.ExponentialHistogram(
                aggregation_temporality=1, data_points=[
                    m.ExponentialHistogramDataPoint(
                        attributes=a[:4],
                        count=sum(bc := [rng.randrange(100) for _ in range(rng.randrange(8, 40))]) + 3,
                        sum=rng.uniform(100, 9000), scale=rng.choice((2, 3, 4)), zero_count=3, zero_threshold=0.0,
                        min=0.1, max=900.0, positive={"offset": rng.randrange(-5, 20), "bucket_counts": bc}, **common)
                    for a in attr_sets]))  # fmt: skip
        else:
            metric = m.Metric(name=f"legacy.request.latency.{j}", unit="s", summary=m.Summary(data_points=[
                m.SummaryDataPoint(attributes=a[:3], count=rng.randrange(1, 10**5), sum=rng.uniform(1, 10**4),
                                   quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=q,
                                                                                       value=rng.uniform(0, 3))
                                                    for q in (0.0, 0.5, 0.9, 0.99, 1.0)], **common)
                for a in attr_sets]))  # fmt: skip
        metrics.append(metric)
    return ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
        resource=resource(service, rng), schema_url="https://opentelemetry.io/schemas/1.26.0",
        scope_metrics=[
            m.ScopeMetrics(scope={"name": "opentelemetry.instrumentation.flask", "version": "0.48b0"},
                           metrics=metrics[: n_metrics // 2]),
            m.ScopeMetrics(scope={"name": "shop.metrics", "version": "2.1.0"}, metrics=metrics[n_metrics // 2:]),
        ],
    )])  # fmt: skip


# --------------------------------------------------------------------------- logs

_LOG_MESSAGES = (
    "order {id} placed by user-{u}: {n} items, total {amt} EUR",
    "cache miss for cart:{id}, loading from database",
    "payment capture for order {id} took {ms} ms",
    "GET /api/products/SKU-{id} 200 {ms}ms",
    "retrying call to inventory.shop.svc (attempt {n}): ConnectionResetError",
    "user-{u} session refreshed",
    "slow query ({ms} ms): SELECT o.id, o.status FROM orders o WHERE o.customer_id = $1",
)
_SEVERITIES = ((9, "INFO"),) * 14 + ((5, "DEBUG"),) * 3 + ((13, "WARN"),) * 2 + ((17, "ERROR"),)


def logs_request(n_records: int, seed: int, now_ns: int) -> ExportLogsServiceRequest:
    """n_records log records: 70% inside a span (trace/span ids), 5-10 attributes, string bodies
    (a few structured ones), ~15% warnings or errors, a few with event.name."""
    rng = random.Random(seed)
    ids = _Ids(seed)
    service = SERVICES[seed % len(SERVICES)]
    records = []
    base = now_ns - 5_000_000_000
    for i in range(n_records):
        number, sev_text = rng.choice(_SEVERITIES)
        msg = rng.choice(_LOG_MESSAGES).format(
            id=rng.randrange(10**6),
            u=rng.randrange(5000),
            n=rng.randrange(1, 9),
            amt=f"{rng.uniform(5, 500):.2f}",
            ms=rng.randrange(1, 900),
        )
        attrs = [
            kv("code.function.name", rng.choice(("place", "capture", "get_cart", "search"))),
            kv("code.file.path", "/app/shop/service.py"),
            kv("code.line.number", rng.randrange(1, 400)),
            kv("thread.name", f"worker-{rng.randrange(8)}"),
            kv("thread.id", rng.randrange(1, 2**16)),
        ]
        if rng.random() < 0.5:
            attrs += [kv("http.route", rng.choice(ROUTES)), kv("enduser.id", f"user-{rng.randrange(5000)}")]
        if rng.random() < 0.3:
            attrs += [
                kv("app.tenant", rng.choice(("acme", "globex"))),
                kv("app.region", "eu-west-1"),
                kv("app.tags", ["checkout", "v2"]),
            ]
        if rng.random() < 0.03:
            attrs.append(kv("event.name", "shop.order.placed"))
        body = AnyValue(string_value=msg)
        if rng.random() < 0.05:
            body = AnyValue(
                kvlist_value={"values": [kv("message", msg), kv("order_id", rng.randrange(10**6)), kv("ok", True)]}
            )
        ts = base + i * 10_000_000 + rng.randrange(1_000_000)
        rec = lg.LogRecord(
            time_unix_nano=ts,
            observed_time_unix_nano=ts + 150_000,
            severity_number=number,
            severity_text=sev_text,
            body=body,
            attributes=attrs,
            flags=1,
        )
        if rng.random() < 0.7:
            rec.trace_id = ids.trace()
            rec.span_id = ids.span()
        records.append(rec)
    half = n_records // 2
    return ExportLogsServiceRequest(resource_logs=[lg.ResourceLogs(
        resource=resource(service, rng), schema_url="https://opentelemetry.io/schemas/1.26.0",
        scope_logs=[lg.ScopeLogs(scope={"name": "shop.service"}, log_records=records[:half]),
                    lg.ScopeLogs(scope={"name": "shop.payments"}, log_records=records[half:])],
    )])  # fmt: skip


BUILDERS = {"traces": traces_request, "metrics": metrics_request, "logs": logs_request}
DEFAULT_ITEMS = {"traces": 500, "metrics": 1000, "logs": 500}


# --------------------------------------------------------------------------- patching


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def patch_points(body: bytes, descriptor: Descriptor) -> tuple[list[tuple[int, str]], int]:
    """(offset, 'id'|'ts') of every id field and fixed64 *_time_unix_nano in the serialized message."""
    found: list[tuple[int, str]] = []

    def walk(start: int, end: int, desc: Descriptor) -> None:
        pos = start
        while pos < end:
            tag, pos = _varint(body, pos)
            number, wire = tag >> 3, tag & 7
            field = desc.fields_by_number.get(number)
            if wire == 0:
                _, pos = _varint(body, pos)
            elif wire == 1:
                if field is not None and field.name.endswith("time_unix_nano"):
                    found.append((pos, "ts"))
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(body, pos)
                if field is not None:
                    if field.type == FieldDescriptor.TYPE_MESSAGE:
                        walk(pos, pos + length, field.message_type)
                    elif field.name in _ID_FIELDS and length in (8, 16):
                        found.append((pos, "id"))
                pos += length
            else:
                raise ValueError(f"unexpected wire type {wire} at {pos}")

    walk(0, len(body), descriptor)
    return found, len(found)


@dataclass
class Template:
    """One encoded request and how to derive request `k` from it."""

    signal: str
    body: bytes
    items: int
    kinds: tuple[str, ...]  # 'gap' (unchanged bytes), 'id' or 'ts' per struct field, covering the whole body
    fmt: str  # struct format: the body is exactly struct.pack(fmt, *fields)
    step_ns: int

    def __post_init__(self) -> None:
        self._struct = struct.Struct(self.fmt)
        self._base = self._struct.unpack(self.body)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_struct", "_base")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def make(self, k: int, seq: int) -> bytes:
        """Request k: ids prefixed with k; timestamps advanced by seq * step_ns. Same length as the template."""
        prefix = (k & 0xFFFFFFFF).to_bytes(4, "big")
        if prefix == b"\0\0\0\0":
            prefix = b"\0\0\0\1"
        add = seq * self.step_ns
        values = [
            v if kind == "gap" else v + add if kind == "ts" else prefix + v[4:]
            for v, kind in zip(self._base, self.kinds, strict=True)
        ]
        return self._struct.pack(*values)


def build_template(
    signal: str, items: int, seed: int, now_ns: int | None = None, step_ns: int = 10_000_000
) -> Template:
    now_ns = now_ns or time.time_ns()
    message = BUILDERS[signal](items, seed, now_ns)
    body = message.SerializeToString()
    points, _ = patch_points(body, message.DESCRIPTOR)
    parts = ["<"]
    kinds: list[str] = []
    pos = 0
    for offset, kind in sorted(points):
        if offset > pos:
            parts.append(f"{offset - pos}s")
            kinds.append("gap")
        size = body[offset - 1] if kind == "id" else 8  # ids: the length byte just before (< 128)
        parts.append(f"{size}s" if kind == "id" else "Q")
        kinds.append(kind)
        pos = offset + size
    if pos < len(body):
        parts.append(f"{len(body) - pos}s")
        kinds.append("gap")
    return Template(signal, body, count_items(signal, message), tuple(kinds), "".join(parts), step_ns)


def count_items(signal: str, message) -> int:
    if signal == "traces":
        return sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in message.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind:
                    n += len(getattr(metric, kind).data_points)
    return n


def build_templates(signal: str, count: int, items: int, now_ns: int | None = None) -> list[Template]:
    """`count` templates (different services and content) for one signal."""
    now_ns = now_ns or time.time_ns()
    return [build_template(signal, items, seed=i + 1, now_ns=now_ns) for i in range(count)]


def request_body(templates: list[Template], k: int, seq: int) -> bytes:
    """The request with id prefix k (distinct k, distinct ids) and time step seq: template seq % len."""
    return templates[seq % len(templates)].make(k, seq)
