"""Regenerates the fuzzing seed corpus, tests/fuzz/corpus/<entry point>/*.pb, deterministically.

Every seed is a real, valid serialized Export{Trace,Metrics,Logs}ServiceRequest, as a receiver gets it:

- the golden requests of tests/testdata/otlp/*.textproto;
- requests the OpenTelemetry SDK encodes (its own OTLP encoder, fixed ids and timestamps);
- small requests from the ingest benchmark's generator (tests/bench/_otlp_gen.py: what SDKs on
  Kubernetes send);
- hand-built requests covering the data model: attributes of every AnyValue type (nested arrays
  and kvlists, bytes, empty values, NaN and infinities) on resources, scopes, spans, events,
  links, log records and data points; log bodies of every type; metric data points of every type
  with exemplars; several resources and scopes, empty containers, fields of newer protocol
  versions (unknown to older receivers) and long lists and values for the limits.

Usage (from the repository root, in the dev virtualenv): python tests/fuzz/make_corpus.py
Rewrites the *.pb files of every corpus directory listed in CORPORA (and nothing else).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2 as lg
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as t

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tests.bench import _otlp_gen as gen  # noqa: E402
from tests.unit.mapping.builders import anyv, kvs  # noqa: E402

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z: every timestamp is T0 + something
MAX_SEED_BYTES = 20_000


# ------------------------------------------------------------------------------------- values


# Every AnyValue member, at the top and nested, and the values that need care when converted.
EVERY_VALUE: dict[str, object] = {
    "str": "checkout",
    "str.empty": "",
    "str.unicode": "Zürich ☃ 東京 \U0001f600",
    "str.nul": "a\x00b",
    "bool.true": True,
    "bool.false": False,
    "int": 42,
    "int.zero": 0,
    "int.negative": -(2**63),
    "int.max": 2**63 - 1,
    "double": 3.25,
    "double.zero": 0.0,
    "double.negative": -1e-300,
    "double.nan": math.nan,
    "double.inf": math.inf,
    "double.-inf": -math.inf,
    "bytes": b"\x00\x01\xfe\xff",
    "bytes.empty": b"",
    "empty": None,
    "array": ["a", 1, 2.5, True, b"\x07", None],
    "array.empty": [],
    "array.nested": [[1, [2, [3, ["deep"]]]], {"k": [{"kk": "v"}]}],
    "kvlist": {"a": 1, "b": "two", "c": [1.5, False]},
    "kvlist.empty": {},
    "kvlist.nested": {"l1": {"l2": {"l3": {"l4": [b"\xaa", {"l5": None}]}}}},
}


def duplicate_keys() -> list[KeyValue]:
    """The same key twice (the last one wins) and an empty key."""
    return [*kvs({"dup": "first", "": "empty key"}), KeyValue(key="dup", value=anyv("second"))]


def resource(service: str, extra: dict[str, object] | None = None) -> Resource:
    return Resource(attributes=kvs({"service.name": service, "service.instance.id": f"{service}-1", **(extra or {})}))


def scope(name: str, version: str = "1.0.0", attrs: dict[str, object] | None = None) -> dict:
    return {"name": name, "version": version, "attributes": kvs(attrs or {})}


def tid(n: int) -> bytes:
    return bytes([0x5B, n]) + bytes(range(14))


def sid(n: int) -> bytes:
    return bytes([0xEE, n]) + bytes(range(6))


def with_unknown_fields(msg: Message, fields: bytes) -> bytes:
    """msg serialized, with extra top-level fields a newer protocol version could carry."""
    return msg.SerializeToString() + fields


# ------------------------------------------------------------------------------------- traces


def traces_every_value() -> ExportTraceServiceRequest:
    span = t.Span(
        trace_id=tid(1), span_id=sid(1), parent_span_id=sid(0), trace_state="vendor=abc,other=1", flags=0x301,
        name="GET /api/orders/{id}", kind=t.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0, end_time_unix_nano=T0 + 25_000_000,
        attributes=[*kvs(EVERY_VALUE), *duplicate_keys()], dropped_attributes_count=3,
        events=[
            t.Span.Event(time_unix_nano=T0 + 1000, name="exception", attributes=kvs({
                "exception.type": "ValueError", "exception.message": "bad input",
                "exception.stacktrace": "Traceback (most recent call last):\n  ...\nValueError: bad input",
                "exception.escaped": True,
            })),
            t.Span.Event(time_unix_nano=T0 + 2000, name="every.value", attributes=kvs(EVERY_VALUE),
                         dropped_attributes_count=1),
            t.Span.Event(time_unix_nano=T0 + 3000, name=""),
        ],
        dropped_events_count=2,
        links=[
            t.Span.Link(trace_id=tid(2), span_id=sid(2), trace_state="k=v", flags=0x101,
                        attributes=kvs({"link.reason": "batch", "nested": {"a": [1, b"\x01"]}}),
                        dropped_attributes_count=1),
            t.Span.Link(trace_id=tid(3), span_id=sid(3)),
        ],
        dropped_links_count=1,
        status=t.Status(code=t.Status.STATUS_CODE_ERROR, message="PaymentDeclinedError: card declined"),
    )  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource=resource("checkout", {"every": EVERY_VALUE, "host.arch": "amd64"}),
        schema_url="https://opentelemetry.io/schemas/1.26.0",
        scope_spans=[t.ScopeSpans(scope=scope("shop.http", attrs={"scope.kind": "server", "n": 1}), spans=[span],
                                  schema_url="https://opentelemetry.io/schemas/1.24.0")],
    )])  # fmt: skip


def traces_kinds_and_status() -> ExportTraceServiceRequest:
    """Every span kind and status code, a root and children, ids missing or of the wrong length."""
    spans = [
        t.Span(trace_id=tid(4), span_id=sid(10 + kind), parent_span_id=sid(10) if kind else b"", name=f"op.{kind}",
               kind=kind, start_time_unix_nano=T0 + kind, end_time_unix_nano=T0 + 1_000_000 * kind,
               attributes=kvs({"kind": kind, "db.system.name": "postgresql", "server.port": 5432}),
               status=t.Status(code=kind % 3, message="" if kind % 3 != 2 else "timeout"))
        for kind in range(6)
    ]  # fmt: skip
    spans.append(t.Span(trace_id=b"\x01" * 15, span_id=b"\x02" * 9, name="bad ids"))
    spans.append(t.Span())  # every field at its default
    return ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource=resource("inventory"), scope_spans=[t.ScopeSpans(scope=scope("shop.db"), spans=spans)],
    )])  # fmt: skip


def traces_many_containers() -> ExportTraceServiceRequest:
    """Two resources of two scopes each, an empty scope, an empty resource, a scope without a name."""
    rs = []
    for r in range(2):
        scopes = [
            t.ScopeSpans(
                scope=scope(f"lib.{s}", f"0.{s}", {"lib.id": s}),
                spans=[t.Span(trace_id=tid(20 + r), span_id=sid(4 * r + s + 2 * k), name=f"span {r}.{s}.{k}",
                              kind=t.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=T0, end_time_unix_nano=T0 + 10,
                              attributes=kvs({"r": r, "s": s, "k": k}))
                       for k in range(2)],
                schema_url=f"https://example.com/s/{s}",
            )
            for s in range(2)
        ]  # fmt: skip
        scopes.append(t.ScopeSpans(scope=scope("lib.empty")))
        scopes.append(t.ScopeSpans(spans=[t.Span(trace_id=tid(30), span_id=sid(30), name="no scope")]))
        rs.append(t.ResourceSpans(resource=resource(f"svc{r}", {"r": r}), scope_spans=scopes,
                                  schema_url=f"https://opentelemetry.io/schemas/1.2{r}.0"))  # fmt: skip
    rs.append(t.ResourceSpans())
    rs.append(t.ResourceSpans(scope_spans=[t.ScopeSpans(spans=[t.Span(name="no resource")])]))
    return ExportTraceServiceRequest(resource_spans=rs)


def traces_limits() -> ExportTraceServiceRequest:
    """Long lists and values: what max_attributes and max_value_length cut."""
    attrs = {f"attr.{i:02d}": i if i % 2 else f"value {i}" for i in range(60)}
    attrs["long.string"] = "x" * 3000 + "é" * 500
    attrs["long.bytes"] = bytes(range(256)) * 4
    attrs["long.array"] = list(range(80))
    attrs["wide.kvlist"] = {f"k{i}": i for i in range(40)}
    span = t.Span(
        trace_id=tid(40), span_id=sid(40), name="n" * 300, kind=t.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=T0, end_time_unix_nano=T0 + 5, attributes=kvs(attrs),
        events=[t.Span.Event(time_unix_nano=T0 + i, name=f"e{i}", attributes=kvs({"i": i, "s": "y" * 100}))
                for i in range(30)],
        links=[t.Span.Link(trace_id=tid(41), span_id=sid(i), attributes=kvs({"i": i})) for i in range(20)],
    )  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource=resource("limits", {f"res.{i}": i for i in range(30)}),
        scope_spans=[t.ScopeSpans(scope=scope("limits", attrs={f"sc.{i}": i for i in range(20)}), spans=[span])],
    )])  # fmt: skip


def nested(depth: int, kind: str) -> object:
    v: object = "bottom"
    for i in range(depth):
        v = [v, i] if kind == "array" else {f"d{i}": v}
    return v


def traces_deep() -> ExportTraceServiceRequest:
    """Values nested near the wire splitter's default max_depth (64 messages): under it, and over."""
    spans = [
        t.Span(trace_id=tid(50), span_id=sid(50), name="deep",
               attributes=kvs({"deep.array": nested(25, "array"), "deep.kvlist": nested(15, "kvlist")})),
        t.Span(trace_id=tid(50), span_id=sid(51), name="too deep",
               events=[t.Span.Event(name="deeper", attributes=kvs({"x": nested(20, "kvlist")}))]),
    ]  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource=resource("deep"), scope_spans=[t.ScopeSpans(scope=scope("deep"), spans=spans)])])  # fmt: skip


def traces_sdk() -> ExportTraceServiceRequest:
    """Spans as the OpenTelemetry SDK encodes them: fixed ids and timestamps."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

    class Ids(IdGenerator):
        def __init__(self) -> None:
            self.n = 0

        def generate_span_id(self) -> int:
            self.n += 1
            return 0xA000 + self.n

        def generate_trace_id(self) -> int:
            self.n += 1
            return 0x5B8EFFF798038103D269B633813FC600 + self.n

    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=SdkResource({"service.name": "cart", "service.version": "1.4.2", "telemetry.sdk.language": "python"}),
        id_generator=Ids(),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    http = provider.get_tracer(
        "opentelemetry.instrumentation.aiohttp", "0.48b0", "https://opentelemetry.io/schemas/1.11.0"
    )
    db = provider.get_tracer("opentelemetry.instrumentation.asyncpg", "0.48b0")
    root = http.start_span("POST /cart", kind=SpanKind.SERVER, start_time=T0, attributes={
        "http.request.method": "POST", "http.route": "/cart", "http.response.status_code": 500,
        "url.path": "/cart", "server.port": 8080, "user_agent.original": "okhttp/4.12.0",
        "app.items": [1, 2, 3], "app.ratio": [0.5, 1.5], "app.flags": [True, False], "app.tags": ["a", "b"],
    })  # fmt: skip
    ctx = set_span_in_context(root)
    for i in range(3):
        child = db.start_span(
            "SELECT shop.carts", context=ctx, kind=SpanKind.CLIENT, start_time=T0 + 1_000_000 * (i + 1),
            attributes={"db.system.name": "postgresql", "db.query.text": "SELECT * FROM carts WHERE id = $1",
                        "db.response.returned_rows": i},
            links=[Link(root.get_span_context(), {"link.kind": "parent.copy"})] if i == 2 else None,
        )  # fmt: skip
        child.add_event("retry", {"attempt": i}, timestamp=T0 + 1_000_000 * (i + 1) + 500)
        child.end(end_time=T0 + 1_000_000 * (i + 1) + 900_000)
    root.add_event("exception", {"exception.type": "KeyError", "exception.message": "'sku'"}, timestamp=T0 + 9_000_000)
    root.set_status(Status(StatusCode.ERROR, "KeyError: 'sku'"))
    root.end(end_time=T0 + 10_000_000)
    return encode_spans(exporter.get_finished_spans())


def traces_generated(n_spans: int, seed: int) -> ExportTraceServiceRequest:
    return gen.traces_request(n_spans, seed, T0)


# --------------------------------------------------------------------------------------- logs


def logs_every_body() -> ExportLogsServiceRequest:
    """One record per body type (and none), with and without trace context."""
    bodies: list[object] = [
        "order 42 placed", "", "ünïcödé ☃", "multi\nline\tbody", True, False, 7, -(2**63), 2.5, math.nan, -math.inf,
        b"\x00\xffraw", ["a", 1, [2, {"k": b"\x01"}]], {"message": "structured", "order_id": 42, "ok": True,
        "nested": {"a": [1.5, None]}}, [], {},
    ]  # fmt: skip
    records = [
        lg.LogRecord(
            time_unix_nano=T0 + i, observed_time_unix_nano=T0 + i + 150, severity_number=(i % 24) + 1,
            severity_text=("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")[i % 6], body=anyv(body),
            attributes=kvs({"code.function.name": "place", "i": i}), flags=1 if i % 2 else 0,
            trace_id=tid(60) if i % 3 else b"", span_id=sid(60) if i % 3 else b"",
            event_name="shop.order.placed" if i % 5 == 0 else "", dropped_attributes_count=i % 2,
        )
        for i, body in enumerate(bodies)
    ]  # fmt: skip
    records.append(lg.LogRecord(time_unix_nano=T0, severity_number=9))  # no body at all
    records.append(lg.LogRecord())
    return ExportLogsServiceRequest(resource_logs=[lg.ResourceLogs(
        resource=resource("checkout"), schema_url="https://opentelemetry.io/schemas/1.26.0",
        scope_logs=[lg.ScopeLogs(scope=scope("shop.service"), log_records=records)],
    )])  # fmt: skip


def logs_every_attribute() -> ExportLogsServiceRequest:
    """Attributes of every type, several resources and scopes, empty containers, long values."""
    records = [
        lg.LogRecord(time_unix_nano=T0, severity_number=17, severity_text="ERROR", body=anyv("every value"),
                     attributes=[*kvs(EVERY_VALUE), *duplicate_keys()], trace_id=tid(61), span_id=sid(61)),
        lg.LogRecord(time_unix_nano=T0 + 1, body=anyv("l" * 2000),
                     attributes=kvs({f"a{i}": "v" * (i * 10) for i in range(40)})),
        lg.LogRecord(time_unix_nano=T0 + 2, body=anyv(nested(20, "kvlist")),
                     attributes=kvs({"deep": nested(25, "array")})),
    ]  # fmt: skip
    return ExportLogsServiceRequest(resource_logs=[
        lg.ResourceLogs(resource=resource("payments", {"every": EVERY_VALUE}), scope_logs=[
            lg.ScopeLogs(scope=scope("shop.payments", attrs={"s": [1, 2]}), log_records=records,
                         schema_url="https://example.com/logs"),
            lg.ScopeLogs(scope=scope("shop.empty")),
            lg.ScopeLogs(log_records=[lg.LogRecord(body=anyv("no scope"))]),
        ]),
        lg.ResourceLogs(),
        lg.ResourceLogs(scope_logs=[lg.ScopeLogs(log_records=[lg.LogRecord(body=anyv({"no": "resource"}))])]),
    ])  # fmt: skip


def logs_sdk() -> ExportLogsServiceRequest:
    """Log records as the OpenTelemetry SDK encodes them (the Logs API, fixed timestamps)."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs import export as log_export
    from opentelemetry.sdk.resources import Resource as SdkResource

    exporter_type = getattr(log_export, "InMemoryLogRecordExporter", None) or log_export.InMemoryLogExporter
    exporter = exporter_type()
    provider = LoggerProvider(resource=SdkResource({"service.name": "shipping", "k8s.pod.name": "shipping-7f9c"}))
    provider.add_log_record_processor(log_export.SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("shop.shipping", "2.0.1")
    rows: list[tuple[SeverityNumber, object, dict]] = [
        (SeverityNumber.INFO, "label printed for order 17", {"order.id": 17, "carrier": "dhl"}),
        (SeverityNumber.WARN, {"event": "slow carrier api", "ms": 812.5, "retries": [1, 2]}, {"http.status": 503}),
        (SeverityNumber.ERROR, b"\x89PNG", {"error.type": "IOError", "flags": [True, False]}),
        (SeverityNumber.DEBUG, ["line 1", "line 2"], {}),
    ]
    for i, (severity, body, attributes) in enumerate(rows):
        logger.emit(LogRecord(
            timestamp=T0 + i, observed_timestamp=T0 + i + 10, trace_id=0x5B8E + i if i % 2 else None,
            span_id=0xA0 + i if i % 2 else None, severity_text=severity.name, severity_number=severity,
            body=body, attributes=attributes, event_name="shipping.label" if i == 0 else None,
        ))  # fmt: skip
    return encode_logs(exporter.get_finished_logs())


def logs_generated(n_records: int, seed: int) -> ExportLogsServiceRequest:
    return gen.logs_request(n_records, seed, T0)


# ------------------------------------------------------------------------------------ metrics


def exemplars(n: int) -> list[m.Exemplar]:
    return [
        m.Exemplar(time_unix_nano=T0 + i, span_id=sid(70 + i), trace_id=tid(70),
                   filtered_attributes=kvs({"user": f"u{i}", "every": EVERY_VALUE if i == 0 else {}}),
                   **({"as_double": 0.25 * i} if i % 2 else {"as_int": i}))
        for i in range(n)
    ]  # fmt: skip


def metrics_every_type() -> ExportMetricsServiceRequest:
    """Every data point type with exemplars and flags, metric metadata, a metric without data."""
    common = {"start_time_unix_nano": T0, "time_unix_nano": T0 + 60_000_000_000}
    attrs = kvs({"http.route": "/cart", "status": 200, "every": EVERY_VALUE})
    metrics = [
        m.Metric(name="process.memory.usage", unit="By", description="Memory in use.", metadata=kvs({"m": 1}),
                 gauge=m.Gauge(data_points=[
                     m.NumberDataPoint(attributes=attrs, as_double=1.5e9, exemplars=exemplars(2), **common),
                     m.NumberDataPoint(as_int=-3, flags=1, time_unix_nano=T0),
                 ])),
        m.Metric(name="http.server.requests", unit="{request}", sum=m.Sum(
            aggregation_temporality=m.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=True, data_points=[
                m.NumberDataPoint(attributes=attrs[:2], as_int=10**12, exemplars=exemplars(1), **common)])),
        m.Metric(name="queue.delta", sum=m.Sum(aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
                                               data_points=[m.NumberDataPoint(as_double=-0.5, **common)])),
        m.Metric(name="http.server.request.duration", unit="s", histogram=m.Histogram(
            aggregation_temporality=m.AGGREGATION_TEMPORALITY_CUMULATIVE, data_points=[
                m.HistogramDataPoint(attributes=attrs, count=10, sum=2.5, min=0.001, max=1.2,
                                     explicit_bounds=[0.005, 0.01, 0.1, 1.0], bucket_counts=[1, 2, 3, 3, 1],
                                     exemplars=exemplars(3), **common),
                m.HistogramDataPoint(count=0, flags=1, **common),
            ])),
        m.Metric(name="rpc.client.duration", unit="ms", exponential_histogram=m.ExponentialHistogram(
            aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA, data_points=[
                m.ExponentialHistogramDataPoint(
                    attributes=attrs[:1], count=20, sum=123.0, scale=3, zero_count=2, zero_threshold=1e-9,
                    positive={"offset": -2, "bucket_counts": [1, 0, 5, 7]},
                    negative={"offset": 4, "bucket_counts": [2, 3]}, min=-4.0, max=90.0,
                    exemplars=exemplars(2), **common),
                m.ExponentialHistogramDataPoint(scale=-10, **common),
            ])),
        m.Metric(name="legacy.latency", unit="s", summary=m.Summary(data_points=[
            m.SummaryDataPoint(attributes=attrs[:2], count=100, sum=42.0, quantile_values=[
                m.SummaryDataPoint.ValueAtQuantile(quantile=q, value=q * 3) for q in (0.0, 0.5, 0.99, 1.0)],
                **common),
        ])),
        m.Metric(name="no.data", unit="1", description="A metric with no data field."),
    ]  # fmt: skip
    return ExportMetricsServiceRequest(resource_metrics=[
        m.ResourceMetrics(resource=resource("checkout", {"every": EVERY_VALUE}),
                          schema_url="https://opentelemetry.io/schemas/1.26.0", scope_metrics=[
            m.ScopeMetrics(scope=scope("shop.metrics", attrs={"a": [1]}), metrics=metrics[:4]),
            m.ScopeMetrics(scope=scope("shop.more"), metrics=metrics[4:], schema_url="https://example.com/m"),
            m.ScopeMetrics(scope=scope("shop.empty")),
        ]),
        m.ResourceMetrics(),
    ])  # fmt: skip


def metrics_sdk() -> ExportMetricsServiceRequest:
    """Metrics as the OpenTelemetry SDK collects and encodes them (timestamps made fixed)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource as SdkResource

    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        resource=SdkResource({"service.name": "frontend", "deployment.environment.name": "staging"}),
        views=[View(instrument_name="rpc.*", aggregation=ExponentialBucketHistogramAggregation(max_size=20))],
    )
    meter = provider.get_meter("shop.frontend", "3.1.0")
    requests = meter.create_counter("http.server.requests", unit="{request}", description="Requests.")
    inflight = meter.create_up_down_counter("http.server.active_requests")
    duration = meter.create_histogram("http.server.request.duration", unit="s")
    rpc = meter.create_histogram("rpc.client.duration", unit="ms")
    meter.create_observable_gauge("process.cpu.utilization", callbacks=[lambda _: [Observation(0.37, {"cpu": 0})]])
    for i in range(6):
        labels = {"http.route": ("/", "/cart", "/checkout")[i % 3], "http.response.status_code": 200 + 100 * (i % 4)}
        requests.add(1 + i, labels)
        inflight.add(1 if i % 2 else -1, {"http.route": "/"})
        duration.record(0.003 * (i + 1) ** 2, labels)
        rpc.record(1.7**i, {"rpc.service": "inventory"})
    request = encode_metrics(reader.get_metrics_data())
    for rm in request.resource_metrics:  # the SDK stamps the collection time: fixed, for a deterministic seed
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                data = getattr(metric, metric.WhichOneof("data"))
                for point in data.data_points:
                    if point.start_time_unix_nano:
                        point.start_time_unix_nano = T0
                    point.time_unix_nano = T0 + 60_000_000_000
                    for exemplar in getattr(point, "exemplars", ()):
                        exemplar.time_unix_nano = T0 + 1
    return request


def metrics_generated(n_points: int, seed: int) -> ExportMetricsServiceRequest:
    return gen.metrics_request(n_points, seed, T0)


# ------------------------------------------------------------------------------------- golden


def golden(name: str, message_type: type[Message]) -> Callable[[], Message]:
    def build() -> Message:
        path = ROOT / "tests" / "testdata" / "otlp" / f"{name}.textproto"
        return text_format.Parse(path.read_text(), message_type())

    return build


# ------------------------------------------------------------------------------------ corpora

Seed = tuple[str, Callable[[], Message | bytes]]


def serialized(build: Callable[[], Message | bytes]) -> bytes:
    made = build()
    return made if isinstance(made, bytes) else made.SerializeToString(deterministic=True)


# Unknown fields a newer protocol version could add: a varint, a fixed64, a length-delimited message.
_UNKNOWN = bytes([0xF8, 0x07, 0x01, 0x81, 0x08]) + bytes(8) + bytes([0x8A, 0x08, 0x03, 0x08, 0x96, 0x01])

TRACES: list[Seed] = [
    ("traces_golden", golden("trace", ExportTraceServiceRequest)),
    ("traces_sdk", traces_sdk),
    ("traces_every_value", traces_every_value),
    ("traces_kinds_status", traces_kinds_and_status),
    ("traces_many_containers", traces_many_containers),
    ("traces_limits", traces_limits),
    ("traces_deep", traces_deep),
    ("traces_generated_1", lambda: traces_generated(10, 1)),
    ("traces_generated_2", lambda: traces_generated(14, 2)),
    ("traces_unknown_fields", lambda: with_unknown_fields(traces_kinds_and_status(), _UNKNOWN)),
]
LOGS: list[Seed] = [
    ("logs_golden", golden("logs", ExportLogsServiceRequest)),
    ("logs_sdk", logs_sdk),
    ("logs_every_body", logs_every_body),
    ("logs_every_attribute", logs_every_attribute),
    ("logs_generated_1", lambda: logs_generated(12, 1)),
    ("logs_generated_2", lambda: logs_generated(8, 3)),
    ("logs_unknown_fields", lambda: with_unknown_fields(logs_every_body(), _UNKNOWN)),
]
METRICS: list[Seed] = [
    ("metrics_golden", golden("metrics", ExportMetricsServiceRequest)),
    ("metrics_sdk", metrics_sdk),
    ("metrics_every_type", metrics_every_type),
    ("metrics_generated", lambda: metrics_generated(40, 1)),
    ("metrics_unknown_fields", lambda: with_unknown_fields(metrics_every_type(), _UNKNOWN)),
]


# Entry point (tests/fuzz/fuzz_native.py TARGETS) -> its seeds. The wire splitter reads every signal.
CORPORA: dict[str, list[Seed]] = {
    "split": TRACES + METRICS + LOGS,
    "span_attributes": TRACES,
    "log_attributes": LOGS,
    "encode_traces": TRACES,
    "encode_logs": LOGS,
}


def main() -> None:
    for entry_point, seeds in CORPORA.items():
        directory = HERE / "corpus" / entry_point
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.pb"):
            old.unlink()
        for name, build in seeds:
            data = serialized(build)
            assert 0 < len(data) < MAX_SEED_BYTES, f"{name}: {len(data)} bytes (seeds stay under {MAX_SEED_BYTES})"
            (directory / f"{name}.pb").write_bytes(data)
        print(f"{directory.relative_to(ROOT)}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
