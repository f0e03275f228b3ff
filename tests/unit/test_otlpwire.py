"""sidecar.pipeline.otlpwire.split: chunks that parse back to the request, per-item limits, hostile bodies,
framing errors exactly where upb reports them, and C == Python on generated and random input."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1 import logs_pb2 as lg
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mt
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as tr

from sidecar.pipeline import otlpwire
from sidecar.pipeline.otlpwire import LOGS, METRICS, TRACES, Split

REQUESTS: dict[int, type[Message]] = {
    TRACES: ExportTraceServiceRequest,
    METRICS: ExportMetricsServiceRequest,
    LOGS: ExportLogsServiceRequest,
}
SIGNALS = (TRACES, METRICS, LOGS)
NO_C = "sidecar.pipeline._otlpwire is not built (no C compiler at install): only the Python implementation runs"
IMPLS = ["python", pytest.param("c", marks=pytest.mark.skipif(otlpwire._scan_c is None, reason=NO_C))]
DEFAULTS = {"chunk_messages": 16384, "item_messages": 65536, "max_depth": 64}


def run(impl: str, signal: int, data: bytes, **limits: int | None) -> Split:
    scan = otlpwire._scan_c if impl == "c" else otlpwire._scan_python
    kw = DEFAULTS | limits
    return otlpwire._split(
        scan, signal, data, kw["chunk_messages"], kw["item_messages"], kw["max_depth"], kw.get("max_list")
    )


def outcome(impl: str, signal: int, data: bytes, **limits: int | None) -> Split | str:
    try:
        return run(impl, signal, data, **limits)
    except ValueError as e:
        return f"ValueError: {e}"


def lenient_classes() -> dict[int, type[Message]]:
    """The request classes with every `string` turned into `bytes`: the same framing rules as upb
    applies to the real ones, without the UTF-8 check that split() leaves to the later parse."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(fd) -> None:
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)

        def to_bytes(messages) -> None:
            for m in messages:
                for f in m.field:
                    if f.type == f.TYPE_STRING:
                        f.type = f.TYPE_BYTES
                to_bytes(m.nested_type)

        to_bytes(proto.message_type)
        pool.Add(proto)
        added.add(fd.name)

    out = {}
    for signal, cls in REQUESTS.items():
        add(cls.DESCRIPTOR.file)
        out[signal] = message_factory.GetMessageClass(pool.FindMessageTypeByName(cls.DESCRIPTOR.full_name))
    return out


LENIENT = lenient_classes()


def upb_accepts(signal: int, data: bytes) -> bool:
    try:
        LENIENT[signal].FromString(data)
    except Exception:
        return False
    return True


# ------------------------------------------------------------------------------ building requests


def av(v: object) -> AnyValue:
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[av(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attrs(v)))
    return AnyValue(string_value=str(v))


def attrs(d: dict) -> list[KeyValue]:
    return [KeyValue(key=k, value=av(v)) for k, v in d.items()]


def resource(i: int) -> Resource:
    return Resource(
        attributes=attrs({"service.name": f"svc-{i}", "host.tags": ["a", "b", 3], "k8s": {"pod": f"p{i}", "ns": "x"}}),
        dropped_attributes_count=i,
    )


def scope(i: int) -> InstrumentationScope:
    return InstrumentationScope(name=f"lib-{i}", version="1.2.3", attributes=attrs({"scope.attr": i}))


def span(i: int) -> tr.Span:
    return tr.Span(
        trace_id=bytes([i % 256]) * 16,
        span_id=bytes([i % 256]) * 8,
        parent_span_id=b"\1" * 8 if i % 3 else b"",
        name=f"GET /items/{i}",
        kind=tr.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000 + i,
        end_time_unix_nano=1_700_000_000_000_500_000 + i,
        attributes=attrs(
            {
                "http.method": "GET",
                "http.status_code": 200 + i % 3,
                "ok": True,
                "ratio": 0.5,
                "list": [1, "two", [3.0]],
                "map": {"k": {"deep": [True]}},
            }
        ),
        events=[tr.Span.Event(time_unix_nano=1, name="exception", attributes=attrs({"exception.type": "E", "n": i}))]
        * (i % 3),
        links=[tr.Span.Link(trace_id=b"\2" * 16, span_id=b"\3" * 8, attributes=attrs({"link": True}))] * (i % 2),
        status=tr.Status(code=tr.Status.STATUS_CODE_ERROR if i % 4 == 0 else tr.Status.STATUS_CODE_OK, message="m"),
        dropped_attributes_count=i % 2,
    )


def traces_request(n_resources: int = 2, n_scopes: int = 3, n_spans: int = 5) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    k = 0
    for r in range(n_resources):
        rs = req.resource_spans.add(resource=resource(r), schema_url="https://opentelemetry.io/schemas/1.26.0")
        for s in range(n_scopes):
            ss = rs.scope_spans.add(scope=scope(s), schema_url=f"scope-schema-{s}")
            for _ in range(n_spans):
                ss.spans.append(span(k))
                k += 1
    return req


def exemplar(i: int) -> mt.Exemplar:
    return mt.Exemplar(
        filtered_attributes=attrs({"user": f"u{i}"}),
        time_unix_nano=5,
        as_double=1.5,
        span_id=b"\4" * 8,
        trace_id=b"\5" * 16,
    )


def metric(kind: str, i: int) -> mt.Metric:
    m = mt.Metric(name=f"{kind}.{i}", description="what it measures", unit="ms", metadata=attrs({"origin": "sdk"}))
    a = attrs({"route": f"/r{i}", "code": 200})
    if kind == "gauge":
        m.gauge.data_points.extend(
            mt.NumberDataPoint(attributes=a, time_unix_nano=10 + j, as_double=j * 0.5, exemplars=[exemplar(j)])
            for j in range(3)
        )
    elif kind == "sum":
        m.sum.aggregation_temporality = mt.AGGREGATION_TEMPORALITY_CUMULATIVE
        m.sum.is_monotonic = True
        m.sum.data_points.extend(mt.NumberDataPoint(attributes=a, as_int=j, start_time_unix_nano=1) for j in range(4))
    elif kind == "histogram":
        m.histogram.aggregation_temporality = mt.AGGREGATION_TEMPORALITY_DELTA
        m.histogram.data_points.extend(
            mt.HistogramDataPoint(
                attributes=a,
                count=6,
                sum=12.5,
                bucket_counts=[1, 2, 3],
                explicit_bounds=[1.0, 5.0],
                exemplars=[exemplar(j)],
                min=0.1,
                max=9.0,
            )
            for j in range(2)
        )
    elif kind == "exponential_histogram":
        m.exponential_histogram.aggregation_temporality = mt.AGGREGATION_TEMPORALITY_CUMULATIVE
        m.exponential_histogram.data_points.extend(
            mt.ExponentialHistogramDataPoint(
                attributes=a,
                count=7,
                scale=3,
                zero_count=1,
                positive=mt.ExponentialHistogramDataPoint.Buckets(offset=-2, bucket_counts=[1, 300, 70000]),
                negative=mt.ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[2]),
                exemplars=[exemplar(j)],
            )
            for j in range(2)
        )
    else:
        m.summary.data_points.extend(
            mt.SummaryDataPoint(
                attributes=a,
                count=3,
                sum=4.0,
                quantile_values=[mt.SummaryDataPoint.ValueAtQuantile(quantile=q, value=q * 10) for q in (0.5, 0.99)],
            )
            for _ in range(3)
        )
    return m


METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def metrics_request(n_resources: int = 2, n_scopes: int = 2) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    for r in range(n_resources):
        rm = req.resource_metrics.add(resource=resource(r), schema_url="https://opentelemetry.io/schemas/1.26.0")
        for s in range(n_scopes):
            sm = rm.scope_metrics.add(scope=scope(s), schema_url="s")
            sm.metrics.extend(metric(kind, i) for i, kind in enumerate(METRIC_KINDS))
    return req


def log_record(i: int) -> lg.LogRecord:
    bodies = [
        av({"msg": "hello", "user": {"id": i, "roles": ["a", "b"]}}),
        av(["line 1", 2, {"x": [1, [2, [3]]]}]),
        av(f"plain text {i}"),
    ]
    return lg.LogRecord(
        time_unix_nano=1 + i,
        observed_time_unix_nano=2 + i,
        severity_number=9,
        severity_text="INFO",
        body=bodies[i % 3],
        attributes=attrs({"log.file": "app.log", "n": i}),
        trace_id=b"\6" * 16,
        span_id=b"\7" * 8,
        event_name="e" if i % 2 else "",
    )


def logs_request(n_resources: int = 2, n_scopes: int = 2, n_records: int = 6) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    k = 0
    for r in range(n_resources):
        rl = req.resource_logs.add(resource=resource(r), schema_url="https://opentelemetry.io/schemas/1.26.0")
        for s in range(n_scopes):
            sl = rl.scope_logs.add(scope=scope(s), schema_url="s")
            for _ in range(n_records):
                sl.log_records.append(log_record(k))
                k += 1
    return req


REALISTIC = {TRACES: traces_request, METRICS: metrics_request, LOGS: logs_request}


# ----------------------------------------------------------------------------- the oracle


def stats(m: Message, depth: int) -> tuple[int, int]:
    """(messages, deepest level) of m's subtree, m included, m at `depth` (the request is 1)."""
    count, deepest = 1, depth
    for f, v in m.ListFields():
        if f.message_type is None:
            continue
        for x in v if f.is_repeated else (v,):
            c, d = stats(x, depth + 1)
            count += c
            deepest = max(deepest, d)
    return count, deepest


def without(m: Message, *fields: str) -> Message:
    h = type(m)()
    h.CopyFrom(m)
    for f in fields:
        h.ClearField(f)
    return h


def flatten(signal: int, req: Message) -> list[tuple]:
    """Every item with its own headers, in order: (resource header, scope header, [metric header,
    data field, data header,] item). Empty containers vanish, as in the chunks."""
    out: list[tuple] = []
    if signal == METRICS:
        for rm in req.resource_metrics:
            rh = without(rm, "scope_metrics")
            for sm in rm.scope_metrics:
                sh = without(sm, "metrics")
                for m in sm.metrics:
                    which = m.WhichOneof("data")
                    if which is None:
                        continue
                    mh = without(m, which)
                    data = getattr(m, which)
                    dh = without(data, "data_points")
                    out.extend((rh, sh, mh, which, dh, p) for p in data.data_points)
        return out
    rname, sname, iname = (
        ("resource_spans", "scope_spans", "spans")
        if signal == TRACES
        else ("resource_logs", "scope_logs", "log_records")
    )
    for rs in getattr(req, rname):
        rh = without(rs, sname)
        for ss in getattr(rs, sname):
            sh = without(ss, iname)
            out.extend((rh, sh, it) for it in getattr(ss, iname))
    return out


ITEM_DEPTH = {TRACES: 4, METRICS: 6, LOGS: 4}
CHILDREN = {TRACES: "resource_spans", METRICS: "resource_metrics", LOGS: "resource_logs"}


def check(impl: str, signal: int, data: bytes, *, unusual: bool = False, **limits: int) -> Split:
    """Runs split() and checks everything it promises against protobuf's own parse of `data`.

    unusual: the request holds metrics with their data set twice, whose points and messages split()
    counts as sent, not as protobuf's merge rules leave them."""
    kw = DEFAULTS | limits
    cls = REQUESTS[signal]
    req = cls.FromString(data)
    flat = flatten(signal, req)

    def rejected(item: Message) -> bool:
        count, deepest = stats(item, ITEM_DEPTH[signal])
        return deepest > kw["max_depth"] or count > kw["item_messages"]

    kept = [f for f in flat if not rejected(f[-1])]
    s = run(impl, signal, data, **limits)
    if not unusual:
        assert s.items == len(flat)
        assert s.rejected == len(flat) - len(kept)
        assert s.messages == stats(req, 1)[0] - 1
    assert bool(s.reason) == bool(s.rejected)

    got: list[tuple] = []
    for chunk in s.chunks:
        part = flatten(signal, cls.FromString(chunk))
        assert part, "every chunk holds at least one item"
        got += part
        # small: at most 4 x max(chunk_messages, 2 x its headers), or one big item with its headers
        chunk_msgs = stats(cls.FromString(chunk), 1)[0] - 1
        item_msgs = [stats(f[-1], ITEM_DEPTH[signal])[0] for f in part]
        headers = chunk_msgs - sum(item_msgs)
        assert chunk_msgs <= max(4 * max(kw["chunk_messages"], 2 * headers), headers + max(item_msgs))
    assert got == kept, "each chunk alone: the kept items, in order, each with its own headers"

    merged = cls.FromString(b"".join(s.chunks))
    assert flatten(signal, merged) == kept, "all chunks merged: the request minus rejected items"
    if s.chunks:
        assert without(merged, CHILDREN[signal]) == without(req, CHILDREN[signal])
    if not s.rejected and stats(req, 1)[0] - 1 <= kw["chunk_messages"] and kept:
        assert len(s.chunks) == 1
        if cls.FromString(s.chunks[0]) == req:  # no empty container dropped
            assert s.chunks[0] is data
    return s


# ----------------------------------------------------------------------------- realistic requests


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("chunk_messages", [1, 2, 7, 40, 150, 16384])
def test_realistic_requests_split_and_merge_back(impl: str, signal: int, chunk_messages: int) -> None:
    data = REALISTIC[signal]().SerializeToString()
    s = check(impl, signal, data, chunk_messages=chunk_messages)
    assert s.rejected == 0 and s.reason == ""
    if chunk_messages == 16384:
        assert s.chunks == [data] and s.chunks[0] is data
    elif chunk_messages <= 40:
        assert len(s.chunks) > 3


@pytest.mark.parametrize("impl", IMPLS)
def test_counts(impl: str) -> None:
    s = run(impl, TRACES, traces_request(n_resources=2, n_scopes=3, n_spans=5).SerializeToString())
    assert s.items == 30
    s = run(impl, METRICS, metrics_request(n_resources=2, n_scopes=2).SerializeToString())
    assert s.items == 4 * (3 + 4 + 2 + 2 + 3)
    s = run(impl, LOGS, logs_request(n_resources=1, n_scopes=2, n_records=6).SerializeToString())
    assert s.items == 12
    assert run(impl, TRACES, b"") == Split([], 0, 0, "", 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_containers_are_dropped(impl: str) -> None:
    req = traces_request(n_resources=1, n_scopes=1, n_spans=2)
    req.resource_spans.add(resource=resource(7))  # no scopes
    req.resource_spans[0].scope_spans.add(scope=scope(9))  # no spans
    mreq = metrics_request(n_resources=1, n_scopes=1)
    mreq.resource_metrics[0].scope_metrics[0].metrics.add(name="no data")
    mreq.resource_metrics[0].scope_metrics[0].metrics.add(name="empty gauge").gauge.SetInParent()
    for signal, r in ((TRACES, req), (METRICS, mreq)):
        data = r.SerializeToString()
        s = check(impl, signal, data)
        assert len(s.chunks) == 1 and s.chunks[0] != data
        assert REQUESTS[signal].FromString(s.chunks[0]) != r


@pytest.mark.parametrize("impl", IMPLS)
def test_request_level_unknown_fields_go_in_the_first_chunk(impl: str) -> None:
    data = b"\x28\x07" + traces_request().SerializeToString() + b"\x32\x02hi" + b"\x3b\x08\x01\x3c"
    s = check(impl, TRACES, data, chunk_messages=30)
    assert len(s.chunks) > 1
    assert s.chunks[0].startswith(b"\x28\x07\x32\x02hi\x3b\x08\x01\x3c")
    assert all(b"\x32\x02hi" not in c for c in s.chunks[1:])


@pytest.mark.parametrize("impl", IMPLS)
def test_headers_after_children_and_unknown_fields_are_kept(impl: str) -> None:
    """Header fields may follow the children (schema_url does, serialized in field order), repeat,
    or be unknown: each chunk carries all of them, byte for byte, before the children."""
    rs = tr.ResourceSpans(scope_spans=[tr.ScopeSpans(spans=[span(i) for i in range(6)], schema_url="late")])
    rs_bytes = rs.SerializeToString() + b"\x0a\x02\x10\x05" + b"\xa0\x06\x01"  # resource (after), unknown 100
    data = b"\x0a" + otlpwire._encode_varint(len(rs_bytes)) + rs_bytes
    s = check(impl, TRACES, data, chunk_messages=20)
    assert len(s.chunks) > 2
    for chunk in s.chunks:
        r = ExportTraceServiceRequest.FromString(chunk).resource_spans[0]
        assert r.resource.dropped_attributes_count == 5 and r.scope_spans[0].schema_url == "late"
        assert b"\xa0\x06\x01" in chunk


# ------------------------------------------------------------------------------ limits and hostile


def test_hostile_empty_resource_spans_return_quickly() -> None:
    n = 9_400_000 if otlpwire.IMPLEMENTATION == "c" else 200_000
    data = b"\x0a\x00" * n
    t0 = time.perf_counter()
    s = otlpwire.split(TRACES, data)
    elapsed = time.perf_counter() - t0
    print(f"\n{n} empty ResourceSpans ({len(data) >> 20} MiB), {otlpwire.IMPLEMENTATION}: {elapsed * 1e3:.1f} ms")
    assert s == Split([], 0, 0, "", n)


@pytest.mark.skipif(otlpwire._scan_c is None, reason=NO_C)
def test_c_scan_releases_the_gil_and_runs_concurrently() -> None:
    data = b"\x0a\x00" * 3_000_000
    ticks = 0
    stop = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=tick)
    t.start()
    try:
        during = 0
        for _ in range(5):  # a loaded machine may not schedule the other thread at once
            before = ticks
            otlpwire.split(TRACES, data)
            during = ticks - before
            if during:
                break
    finally:
        stop.set()
        t.join()
    assert during > 0, "another thread ran while split() scanned"

    body = traces_request(n_resources=3, n_scopes=3, n_spans=40).SerializeToString()
    expected = otlpwire.split(TRACES, body, chunk_messages=50)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: otlpwire.split(TRACES, body, chunk_messages=50), range(32)))
    assert all(r == expected for r in results)


def with_spans(spans: list[bytes], signal: int = TRACES) -> bytes:
    """A request with one resource and one scope holding these serialized items."""
    ss = b"\x0a\x03\x0a\x01s" + b"".join(b"\x12" + otlpwire._encode_varint(len(x)) + x for x in spans)
    rs = b"\x0a\x02\x10\x01" + b"\x12" + otlpwire._encode_varint(len(ss)) + ss
    return b"\x0a" + otlpwire._encode_varint(len(rs)) + rs


@pytest.mark.parametrize("impl", IMPLS)
def test_item_with_200k_empty_attributes_is_rejected_alone(impl: str) -> None:
    big = tr.Span(name="big").SerializeToString() + b"\x4a\x00" * 200_000
    data = with_spans([span(1).SerializeToString(), big, span(2).SerializeToString()])
    s = check(impl, TRACES, data)
    assert (s.items, s.rejected) == (3, 1)
    assert s.reason == "1 span rejected: more than 65536 nested values"
    assert s.messages == stats(ExportTraceServiceRequest.FromString(data), 1)[0] - 1
    assert [
        sp.name
        for c in s.chunks
        for sp in ExportTraceServiceRequest.FromString(c).resource_spans[0].scope_spans[0].spans
    ] == ["GET /items/1", "GET /items/2"]


def nested(levels: int) -> AnyValue:
    """An AnyValue with messages `levels` levels below it (array_value, values, array_value...)."""
    v = AnyValue(array_value=ArrayValue()) if levels % 2 else AnyValue(string_value="bottom")
    for _ in range(levels // 2):
        v = AnyValue(array_value=ArrayValue(values=[v]))
    return v


def deep_span(depth: int) -> tr.Span:
    """A span (level 4) whose subtree reaches exactly `depth`: KeyValue 5, AnyValue 6, then more."""
    return tr.Span(name=f"deep{depth}", attributes=[KeyValue(key="k", value=nested(depth - 6))])


@pytest.mark.parametrize("impl", IMPLS)
def test_items_nested_too_deep_are_rejected(impl: str) -> None:
    assert stats(deep_span(64), 4)[1] == 64 and stats(deep_span(66), 4)[1] == 66
    data = with_spans(
        [
            deep_span(64).SerializeToString(),
            deep_span(66).SerializeToString(),
            span(3).SerializeToString(),
            deep_span(100).SerializeToString(),
        ]
    )
    s = check(impl, TRACES, data)
    assert (s.items, s.rejected) == (4, 2)
    assert s.reason == "2 spans rejected: nested more than 64 levels"
    s = check(impl, TRACES, data, max_depth=101)
    assert s.rejected == 0
    s = check(impl, TRACES, data, item_messages=20)  # the first kind of rejection is reported
    assert s.reason == "2 spans rejected: more than 20 nested values" and s.rejected == 4


@pytest.mark.parametrize("impl", IMPLS)
def test_items_deeper_than_upb_accepts_are_rejected_not_raised(impl: str) -> None:
    """upb refuses more than 100 levels below the request; such an item is just rejected."""
    value = b""  # AnyValue -> array_value (5) -> ArrayValue -> values (1) -> AnyValue ... 120 levels
    for i in range(120):
        value = (b"\x2a" if i % 2 else b"\x0a") + otlpwire._encode_varint(len(value)) + value
    kv = b"\x12" + otlpwire._encode_varint(len(value)) + value
    sp = b"\x4a" + otlpwire._encode_varint(len(kv)) + kv
    groups = b"\xab\x01" * 110 + b"\xac\x01" * 110  # unknown groups nest too
    data = with_spans([sp, span(1).SerializeToString(), groups, span(2).SerializeToString()])
    assert not upb_accepts(TRACES, data)
    s = run(impl, TRACES, data, max_depth=101)
    assert (s.items, s.rejected) == (4, 2) and s.reason == "2 spans rejected: nested more than 101 levels"
    assert all(upb_accepts(TRACES, c) for c in s.chunks)


@pytest.mark.parametrize("impl", IMPLS)
def test_logs_and_metrics_limits(impl: str) -> None:
    recs = [log_record(i) for i in range(4)]
    recs[1].body.CopyFrom(nested(70))
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.extend(recs)
    s = check(impl, LOGS, req.SerializeToString(), chunk_messages=5)
    assert s.reason == "1 log record rejected: nested more than 64 levels"

    mreq = metrics_request(n_resources=1, n_scopes=1)
    points = mreq.resource_metrics[0].scope_metrics[0].metrics[1].sum.data_points
    points[2].attributes.extend(KeyValue(key=str(i)) for i in range(70))
    s = check(impl, METRICS, mreq.SerializeToString(), chunk_messages=3, item_messages=60)
    assert s.reason == "1 metric data point rejected: more than 60 nested values"


@pytest.mark.parametrize("impl", IMPLS)
def test_headers_over_the_limits_make_the_request_invalid(impl: str) -> None:
    req = traces_request(n_resources=1, n_scopes=1, n_spans=1)
    req.resource_spans[0].resource.attributes.append(KeyValue(key="deep", value=nested(70)))
    with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric nested more than 64 levels$"):
        run(impl, TRACES, req.SerializeToString())
    req = traces_request(n_resources=1, n_scopes=1, n_spans=1)
    req.resource_spans[0].scope_spans[0].scope.attributes.extend(KeyValue(key=str(i)) for i in range(100))
    with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric with more than 99 nested"):
        run(impl, TRACES, req.SerializeToString(), item_messages=99)
    mreq = metrics_request(n_resources=1, n_scopes=1)
    mreq.resource_metrics[0].scope_metrics[0].metrics[0].metadata.extend(KeyValue(key=str(i)) for i in range(100))
    with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric with more than 99 nested"):
        run(impl, METRICS, mreq.SerializeToString(), item_messages=99)


@pytest.mark.parametrize("impl", IMPLS)
def test_huge_headers_over_tiny_items_are_not_amplified(impl: str) -> None:
    """A 1 MiB schema_url over 100k empty spans: cutting every 16384 spans would copy it 7 times."""
    body = b"\x12\x00" * 100_000
    ss = b"\x12" + otlpwire._encode_varint(len(body)) + body
    rs = b"\x1a" + otlpwire._encode_varint(1 << 20) + b"u" * (1 << 20) + ss
    data = b"\x0a" + otlpwire._encode_varint(len(rs)) + rs
    with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric headers too large to split$"):
        run(impl, TRACES, data)
    s = run(impl, TRACES, data, chunk_messages=1 << 20)
    assert len(s.chunks) == 1 and s.items == 100_000


@pytest.mark.parametrize("impl", IMPLS)
def test_big_headers_stretch_chunks_instead_of_being_copied_per_item(impl: str) -> None:
    req = traces_request(n_resources=1, n_scopes=1, n_spans=40)
    req.resource_spans[0].resource.attributes.extend(KeyValue(key=str(i)) for i in range(300))
    s = check(impl, TRACES, req.SerializeToString(), chunk_messages=10)
    rs = req.resource_spans[0]
    headers = stats(without(rs, "scope_spans"), 2)[0] + stats(without(rs.scope_spans[0], "spans"), 3)[0]
    item_msgs = sum(stats(sp, 4)[0] for sp in rs.scope_spans[0].spans)
    assert headers > 300
    assert 1 < len(s.chunks) <= item_msgs // headers + 1  # each chunk but the last: items >= headers


def unusual_metric() -> bytes:
    """A Metric whose data oneof is set three times: gauge, then sum, then gauge again."""
    g1 = metric("gauge", 1).gauge.SerializeToString()
    sm = metric("sum", 2).sum.SerializeToString()
    g2 = metric("gauge", 3).gauge.SerializeToString()
    enc = otlpwire._encode_varint
    return (
        b"\x0a\x05weird"
        + b"\x2a"
        + enc(len(g1))
        + g1
        + b"\x3a"
        + enc(len(sm))
        + sm
        + b"\x2a"
        + enc(len(g2))
        + g2
        + b"\x1a\x02ms"
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_metric_with_data_set_twice_is_one_unchanged_unit(impl: str) -> None:
    weird = unusual_metric()
    parsed = mt.Metric.FromString(weird)
    assert parsed.WhichOneof("data") == "gauge"  # protobuf's oneof rules applied
    normal = [metric(k, i).SerializeToString() for i, k in enumerate(METRIC_KINDS)]
    metrics = [*normal[:2], weird, *normal[2:]]
    body = b"".join(b"\x12" + otlpwire._encode_varint(len(m)) + m for m in metrics)
    sm = b"\x0a\x03\x0a\x01s" + body
    rm = b"\x12" + otlpwire._encode_varint(len(sm)) + sm
    data = b"\x0a" + otlpwire._encode_varint(len(rm)) + rm
    for cm in (1, 5, 30, 16384):
        s = check(impl, METRICS, data, unusual=True, chunk_messages=cm)
        assert s.items == 3 + 4 + 2 + 2 + 3 + (3 + 4 + 3)  # all the points sent count
        holding = [c for c in s.chunks if weird in c]
        assert len(holding) == 1
        got = [
            m
            for c in s.chunks
            for m in ExportMetricsServiceRequest.FromString(c).resource_metrics[0].scope_metrics[0].metrics
            if m.name == "weird"
        ]
        assert got == [parsed]
    s = run(impl, METRICS, data, item_messages=30)
    assert s.rejected == 10 and s.reason == "10 metric data points rejected: more than 30 nested values"
    assert all(weird not in c for c in s.chunks)


@pytest.mark.parametrize("impl", IMPLS)
def test_arguments_are_checked(impl: str) -> None:
    for bad in (
        {"chunk_messages": 0},
        {"item_messages": 0},
        {"max_depth": 0},
        {"max_depth": 102},
        {"max_list": 0},
        {"max_list": 2**40 + 1},
    ):
        with pytest.raises(ValueError):
            run(impl, TRACES, b"", **bad)
    assert run(impl, TRACES, b"", max_list=2**40) == Split([], 0, 0, "", 0, 0)
    with pytest.raises(ValueError, match="unknown signal"):
        run(impl, 3, b"")


def test_accepts_bytes_like() -> None:
    data = traces_request().SerializeToString()
    assert otlpwire.split(TRACES, bytearray(data)).chunks == [data]
    assert otlpwire.split(TRACES, memoryview(data)).items == 30


# ---------------------------------------------------------------------------------- framing


HAND_MADE = [
    b"\x08\x01",  # field 1 as a varint: upb keeps it as an unknown field
    b"\x09" + b"\0" * 8,
    b"\x0d" + b"\0" * 4,
    b"\x0b\x0c",  # field 1 as a group: unknown
    b"\x2b\x33\x34\x2c",  # nested unknown groups
    b"\x2b\x34",  # mismatched end-group
    b"\x2c",  # end-group outside a group
    b"\x2e",  # wire type 6
    b"\x2f",  # wire type 7
    b"\x00\x00",  # field number 0
    b"\x02\x00",
    b"\x2b\x00\x00\x2c",  # field 0 inside a group: upb accepts it
    b"\x2b\x03\x04\x2c",  # a group numbered 0 inside a group, too
    b"\x2b\x04\x2c",
    b"\x28" + b"\xff" * 9 + b"\x01",  # 10-byte varint
    b"\x28" + b"\xff" * 9 + b"\x7f",
    b"\x28" + b"\xff" * 10 + b"\x01",  # 11 bytes
    b"\xf8\xff\xff\xff\x0f\x00",  # 5-byte tag, largest field number
    b"\xf8\xff\xff\xff\x1f\x00",  # tag above 2**32
    b"\xb0\x80\x80\x80\x00\x00",  # 5-byte padded tag
    b"\xb0\x80\x80\x80\x80\x00\x00",  # 6-byte tag
    b"\x2a\xff\xff\xff\xff\x0f",  # length way past the end
    b"\x2a\x85\x80\x80\x80\x00hello",  # 5-byte length
    b"\x2a\x85\x80\x80\x80\x80\x00hello",  # 6-byte length: upb refuses lengths over 5 bytes
    b"\x2a\x85\x80\x80\x80\x80\x80\x80\x80\x80\x02hello",  # 10-byte length wrapping to 5
    b"\x0a\x05\x00",
    b"\x0a\x03\x29\x00\x00" + b"\x00" * 10,  # fixed64 crossing its message's end
    b"\x0a\x02\x28\x80" + b"\x00" * 10,  # varint crossing it
    b"\x0a\x01\xa8" + b"\x01\x00" * 3,  # tag crossing it
    b"\x0a\x01\x2b\x2c",  # group crossing it
    b"\x0a\x02\x2b\x2c",
    b"\x0a\x01\x2b",
    b"\x0a\x04\x0a\x02\x08\x01",  # resource (field 1) holding an unknown varint
    b"\x0a\x02\x12\x02",  # scope_spans with a truncated body
    b"\x0a\x04\x12\x02\x12\x00",  # one empty span
    b"\x0a\x04\x12\x02\x10\x01",  # scope_spans with field 2 as a varint: unknown, no span
    b"\x0a\x03\x12\x01\x12",
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("data", HAND_MADE)
def test_hand_made_framing_matches_upb(impl: str, data: bytes) -> None:
    ok = upb_accepts(TRACES, data)
    result = outcome(impl, TRACES, data)
    assert isinstance(result, Split) == ok, result
    if ok:
        check(impl, TRACES, data)


def packed_cases() -> list[tuple[int, bytes]]:
    def point_request(point: bytes, field: int) -> bytes:
        enc = otlpwire._encode_varint
        data = bytes([(field << 3) | 2]) + enc(len(point)) + point  # Histogram/ExponentialHistogram
        m = b"\x0a\x01m" + data
        sm = b"\x12" + enc(len(m)) + m
        rm = b"\x12" + enc(len(sm)) + sm
        return b"\x0a" + enc(len(rm)) + rm

    def hist(dp: bytes) -> bytes:
        return point_request(b"\x0a" + otlpwire._encode_varint(len(dp)) + dp, 9)

    def expo(buckets: bytes) -> bytes:
        dp = b"\x42" + otlpwire._encode_varint(len(buckets)) + buckets
        return point_request(b"\x0a" + otlpwire._encode_varint(len(dp)) + dp, 10)

    return [
        (METRICS, hist(b"\x32\x08" + b"\1" * 8)),
        (METRICS, hist(b"\x32\x05" + b"\1" * 5)),
        (METRICS, hist(b"\x3a\x0c" + b"\0" * 12)),
        (METRICS, hist(b"\x30\x01")),  # bucket_counts as a varint: unknown
        (METRICS, expo(b"\x12\x02\x01\x02")),
        (METRICS, expo(b"\x12\x02\x01\x82\x08\x01")),  # varint crossing the packed field's end
        (METRICS, expo(b"\x12\x0a" + b"\xff" * 9 + b"\x7f")),
        (METRICS, expo(b"\x12\x0b" + b"\xff" * 10 + b"\x01")),
        (METRICS, expo(b"\x11" + b"\0" * 8)),
    ]


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_repeated_fields_match_upb(impl: str) -> None:
    for signal, data in packed_cases():
        assert isinstance(outcome(impl, signal, data), Split) == upb_accepts(signal, data), data


def framing_matches_upb(impl: str, signal: int, data: bytes) -> None:
    result = outcome(impl, signal, data)
    if upb_accepts(signal, data):
        assert isinstance(result, Split), result
        assert all(upb_accepts(signal, c) for c in result.chunks)
    else:
        assert isinstance(result, str) and result.startswith("ValueError: invalid protobuf: "), result


def small_requests() -> dict[int, bytes]:
    return {
        TRACES: traces_request(n_resources=1, n_scopes=2, n_spans=2).SerializeToString(),
        METRICS: metrics_request(n_resources=1, n_scopes=1).SerializeToString(),
        LOGS: logs_request(n_resources=1, n_scopes=1, n_records=3).SerializeToString(),
    }


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("signal", SIGNALS)
def test_truncation_at_every_byte_raises_iff_upb_does(impl: str, signal: int) -> None:
    data = small_requests()[signal]
    for i in range(len(data)):
        framing_matches_upb(impl, signal, data[:i])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("signal", SIGNALS)
def test_byte_flips_raise_iff_upb_does(impl: str, signal: int) -> None:
    data = small_requests()[signal]
    rng = random.Random(20240601 + signal)
    for _ in range(600):
        b = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            b[rng.randrange(len(b))] = rng.randrange(256)
        framing_matches_upb(impl, signal, bytes(b))


def test_error_messages() -> None:
    cases = {
        b"\x0a\x05\x00": "invalid protobuf: truncated length-delimited field at byte 0",
        b"\x0a\x00\x2f": "invalid protobuf: wire type 7 at byte 2",
        b"\x0a\x02\x2b\x80": "invalid protobuf: truncated tag at byte 3",
        b"\x0a\x02\x2b\x00": "invalid protobuf: truncated varint at byte 3",
        b"\x0a\x01\x2b": "invalid protobuf: unterminated group at byte 2",
        b"\x2c": "invalid protobuf: unexpected end-group tag at byte 0",
        b"\x00\x00": "invalid protobuf: field number 0 at byte 0",
        b"\x0a\x02\x29\x00": "invalid protobuf: truncated fixed64 field at byte 2",
    }
    for data, message in cases.items():
        with pytest.raises(ValueError) as e:
            otlpwire.split(TRACES, data)
        assert str(e.value) == message


# ------------------------------------------------------------------------------------ schema


DESCRIPTORS = {
    otlpwire._REQ_TRACES: ExportTraceServiceRequest.DESCRIPTOR,
    otlpwire._RS: tr.ResourceSpans.DESCRIPTOR,
    otlpwire._SS: tr.ScopeSpans.DESCRIPTOR,
    otlpwire._REQ_LOGS: ExportLogsServiceRequest.DESCRIPTOR,
    otlpwire._RL: lg.ResourceLogs.DESCRIPTOR,
    otlpwire._SL: lg.ScopeLogs.DESCRIPTOR,
    otlpwire._REQ_METRICS: ExportMetricsServiceRequest.DESCRIPTOR,
    otlpwire._RM: mt.ResourceMetrics.DESCRIPTOR,
    otlpwire._SM: mt.ScopeMetrics.DESCRIPTOR,
    otlpwire._METRIC: mt.Metric.DESCRIPTOR,
    otlpwire._GAUGE: mt.Gauge.DESCRIPTOR,
    otlpwire._SUM: mt.Sum.DESCRIPTOR,
    otlpwire._HIST: mt.Histogram.DESCRIPTOR,
    otlpwire._EHIST: mt.ExponentialHistogram.DESCRIPTOR,
    otlpwire._SUMMARY: mt.Summary.DESCRIPTOR,
    otlpwire._RESOURCE: Resource.DESCRIPTOR,
    otlpwire._SCOPE: InstrumentationScope.DESCRIPTOR,
    otlpwire._KV: KeyValue.DESCRIPTOR,
    otlpwire._ANY: AnyValue.DESCRIPTOR,
    otlpwire._ARRAY: ArrayValue.DESCRIPTOR,
    otlpwire._KVLIST: KeyValueList.DESCRIPTOR,
    otlpwire._SPAN: tr.Span.DESCRIPTOR,
    otlpwire._EVENT: tr.Span.Event.DESCRIPTOR,
    otlpwire._LINK: tr.Span.Link.DESCRIPTOR,
    otlpwire._STATUS: tr.Status.DESCRIPTOR,
    otlpwire._LOG: lg.LogRecord.DESCRIPTOR,
    otlpwire._NDP: mt.NumberDataPoint.DESCRIPTOR,
    otlpwire._HDP: mt.HistogramDataPoint.DESCRIPTOR,
    otlpwire._EHDP: mt.ExponentialHistogramDataPoint.DESCRIPTOR,
    otlpwire._BUCKETS: mt.ExponentialHistogramDataPoint.Buckets.DESCRIPTOR,
    otlpwire._SDP: mt.SummaryDataPoint.DESCRIPTOR,
    otlpwire._VAQ: mt.SummaryDataPoint.ValueAtQuantile.DESCRIPTOR,
    otlpwire._EXEMPLAR: mt.Exemplar.DESCRIPTOR,
}
if "entity_refs" in Resource.DESCRIPTOR.fields_by_name:
    DESCRIPTORS[otlpwire._ENTITYREF] = Resource.DESCRIPTOR.fields_by_name["entity_refs"].message_type

FIXED64 = {FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_SFIXED64}
NOT_PACKABLE = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE}


def test_schema_matches_the_installed_descriptors() -> None:
    """Every sub-message field and packed array the scanner knows is what opentelemetry-proto says."""
    by_name = {d.full_name: t for t, d in DESCRIPTORS.items()}
    for t, d in DESCRIPTORS.items():
        expected = {f.number: by_name[f.message_type.full_name] for f in d.fields if f.message_type is not None}
        assert otlpwire._SUB[t] == expected, d.full_name
        packed = {
            (t, f.number): otlpwire._PK_FIXED64 if f.type in FIXED64 else otlpwire._PK_VARINT
            for f in d.fields
            if f.is_repeated and f.type not in NOT_PACKABLE
        }
        assert {k: v for k, v in otlpwire._PACKED.items() if k[0] == t} == packed, d.full_name
        if t in otlpwire._STRUCTURAL:
            assert otlpwire._STRUCTURAL[t] <= set(expected)


# ------------------------------------------------------------------------ generated requests


texts = st.text(max_size=4)
scalar_values = st.one_of(
    st.builds(lambda s: AnyValue(string_value=s), texts),
    st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
    st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=4)),
    st.just(AnyValue()),
)
any_values = st.recursive(
    scalar_values,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: AnyValue(array_value=ArrayValue(values=xs))),
        st.lists(st.builds(lambda k, v: KeyValue(key=k, value=v), texts, inner), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs))
        ),
    ),
    max_leaves=10,
)
key_values = st.lists(st.builds(lambda k, v: KeyValue(key=k, value=v), texts, any_values), max_size=4)
resources = st.builds(lambda a: Resource(attributes=a), key_values)
scopes = st.builds(
    lambda n, a: InstrumentationScope(name=n, attributes=a), texts, st.lists(st.just(KeyValue()), max_size=2)
)


def make_span(name: str, a: list, events: list, links: list, status: bool) -> tr.Span:
    sp = tr.Span(name=name, attributes=a, events=events, links=links)
    if status:
        sp.status.code = tr.Status.STATUS_CODE_OK
        sp.status.SetInParent()
    return sp


spans = st.builds(
    make_span,
    texts,
    key_values,
    st.lists(st.builds(lambda a: tr.Span.Event(name="e", attributes=a), key_values), max_size=2),
    st.lists(st.builds(lambda a: tr.Span.Link(attributes=a), key_values), max_size=2),
    st.booleans(),
)
log_records = st.builds(lambda b, a: lg.LogRecord(body=b, attributes=a), any_values, key_values)
exemplars = st.lists(st.builds(lambda a: mt.Exemplar(filtered_attributes=a), key_values), max_size=2)
number_points = st.lists(
    st.builds(lambda a, e: mt.NumberDataPoint(attributes=a, exemplars=e), key_values, exemplars), max_size=3
)


@st.composite
def metrics(draw) -> mt.Metric:
    m = mt.Metric(name=draw(texts), metadata=draw(st.lists(st.just(KeyValue(key="m")), max_size=2)))
    kind = draw(st.sampled_from((*METRIC_KINDS, "none")))
    if kind in ("gauge", "sum"):
        getattr(m, kind).data_points.extend(draw(number_points))
        getattr(m, kind).SetInParent()
    elif kind == "histogram":
        m.histogram.SetInParent()
        m.histogram.data_points.extend(
            mt.HistogramDataPoint(attributes=a, exemplars=e, bucket_counts=[1, 2], explicit_bounds=[0.5])
            for a, e in draw(st.lists(st.tuples(key_values, exemplars), max_size=3))
        )
    elif kind == "exponential_histogram":
        m.exponential_histogram.SetInParent()
        m.exponential_histogram.data_points.extend(
            mt.ExponentialHistogramDataPoint(
                attributes=a, positive=mt.ExponentialHistogramDataPoint.Buckets(bucket_counts=[5, 999999])
            )
            for a in draw(st.lists(key_values, max_size=3))
        )
    elif kind == "summary":
        m.summary.SetInParent()
        m.summary.data_points.extend(
            mt.SummaryDataPoint(attributes=a, quantile_values=[mt.SummaryDataPoint.ValueAtQuantile(quantile=0.5)] * q)
            for a, q in draw(st.lists(st.tuples(key_values, st.integers(0, 2)), max_size=3))
        )
    return m


@st.composite
def requests(draw) -> tuple[int, bytes]:
    signal = draw(st.sampled_from(SIGNALS))
    items = {TRACES: spans, LOGS: log_records, METRICS: metrics()}[signal]
    req = REQUESTS[signal]()
    for _ in range(draw(st.integers(0, 3))):
        r = getattr(req, CHILDREN[signal]).add(resource=draw(resources), schema_url=draw(texts))
        for _ in range(draw(st.integers(0, 3))):
            s = getattr(r, CHILDREN[signal].replace("resource", "scope")).add(scope=draw(scopes))
            getattr(s, {TRACES: "spans", LOGS: "log_records", METRICS: "metrics"}[signal]).extend(
                draw(st.lists(items, max_size=5))
            )
    return signal, req.SerializeToString()


limits = st.fixed_dictionaries(
    {"chunk_messages": st.integers(1, 60), "item_messages": st.integers(1, 80), "max_depth": st.integers(8, 101)}
)
HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def header_limits_exceeded(signal: int, data: bytes, kw: dict) -> bool:
    """Would a resource, scope or metric header break the limits (split then raises)?"""
    req = REQUESTS[signal].FromString(data)
    for r in getattr(req, CHILDREN[signal]):
        headers = [(without(r, CHILDREN[signal].replace("resource", "scope")), 2)]
        for s in getattr(r, CHILDREN[signal].replace("resource", "scope")):
            headers.append((without(s, {TRACES: "spans", LOGS: "log_records", METRICS: "metrics"}[signal]), 3))
            if signal == METRICS:
                for m in s.metrics:
                    which = m.WhichOneof("data")
                    headers.append((without(m, which) if which else m, 4))
                    if which:
                        headers.append((without(getattr(m, which), "data_points"), 5))
        for h, depth in headers:
            count, deepest = stats(h, depth)
            if deepest > kw["max_depth"] or count > kw["item_messages"]:
                return True
    return False


@pytest.mark.parametrize("impl", IMPLS)
@HYPOTHESIS
@given(request=requests(), kw=limits)
def test_generated_requests(impl: str, request: tuple[int, bytes], kw: dict) -> None:
    signal, data = request
    if header_limits_exceeded(signal, data, kw):
        with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric"):
            run(impl, signal, data, **kw)
        return
    try:
        check(impl, signal, data, **kw)
    except ValueError as e:  # headers bigger in bytes than 4 chunks of items
        assert str(e) == "request rejected: resource, scope or metric headers too large to split"


# ------------------------------------------------------------------------------------- parity


def enc_field(fn: int, wt: int, payload: bytes) -> bytes:
    return otlpwire._encode_varint((fn << 3) | wt) + payload


field_numbers = st.sampled_from([1, 1, 2, 2, 3, 5, 6, 7, 9, 10, 11, 12, 15, 100, 0])
wire = st.recursive(
    st.just(b""),
    lambda inner: st.lists(
        st.one_of(
            st.builds(
                lambda fn, v: enc_field(fn, 0, otlpwire._encode_varint(v)), field_numbers, st.integers(0, 2**64 - 1)
            ),
            st.builds(lambda fn, b: enc_field(fn, 1, b), field_numbers, st.binary(min_size=8, max_size=8)),
            st.builds(lambda fn, b: enc_field(fn, 5, b), field_numbers, st.binary(min_size=4, max_size=4)),
            st.builds(lambda fn, b: enc_field(fn, 2, otlpwire._encode_varint(len(b)) + b), field_numbers, inner),
            st.builds(lambda fn, b: enc_field(fn, 3, b + enc_field(fn, 4, b"")), field_numbers, inner),
            st.binary(max_size=3),  # noise
        ),
        max_size=6,
    ).map(b"".join),
    max_leaves=40,
)


def same(signal: int, data: bytes, kw: dict) -> None:
    c, p = outcome("c", signal, data, **kw), outcome("python", signal, data, **kw)
    assert c == p
    if isinstance(c, Split) and c.chunks == [data]:
        assert isinstance(p, Split) and c.chunks[0] is data and p.chunks[0] is data


def same_and_flipped(signal: int, data: bytes, kw: dict, flip: tuple[int, int]) -> None:
    """`same` for the data, and for the data with one byte (flip[0], wrapped) set to flip[1]."""
    same(signal, data, kw)
    if data:
        b = bytearray(data)
        b[flip[0] % len(b)] = flip[1]
        same(signal, bytes(b), kw)


parity = pytest.mark.skipif(otlpwire._scan_c is None, reason=NO_C)
PARITY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@parity
@PARITY
@given(signal=st.sampled_from(SIGNALS), data=st.binary(max_size=300), kw=limits)
def test_parity_random_bytes(signal: int, data: bytes, kw: dict) -> None:
    same(signal, data, kw)


@parity
@PARITY
@given(signal=st.sampled_from(SIGNALS), data=wire, kw=limits, cut=st.integers(0, 10**6))
def test_parity_random_wire(signal: int, data: bytes, kw: dict, cut: int) -> None:
    same(signal, data, kw)
    same(signal, data[: cut % (len(data) + 1)], kw)


@parity
@HYPOTHESIS
@given(request=requests(), kw=limits, flip=st.tuples(st.integers(0, 10**6), st.integers(0, 255)))
def test_parity_generated_requests(request: tuple[int, bytes], kw: dict, flip: tuple[int, int]) -> None:
    same_and_flipped(*request, kw, flip)


@parity
@pytest.mark.parametrize("signal", SIGNALS)
def test_parity_realistic_and_hostile(signal: int) -> None:
    data = REALISTIC[signal]().SerializeToString()
    for cm in (1, 3, 10, 100, 16384):
        same(signal, data, {"chunk_messages": cm, "item_messages": 50, "max_depth": 12})
    same(signal, b"\x0a\x00" * 100_000, DEFAULTS)
    same(signal, with_spans([b"\x4a\x00" * 70_000, b""] * 3), DEFAULTS)


def mutations(data: bytes, rng: random.Random) -> Callable[[], bytes]:
    def one() -> bytes:
        b = bytearray(data)
        op = rng.randrange(4)
        if op == 0:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            del b[rng.randrange(len(b)) :]
        elif op == 2:
            i = rng.randrange(len(b))
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:
            i, j = sorted(rng.randrange(len(b)) for _ in range(2))
            b[i:i] = b[i:j]
        return bytes(b)

    return one


@parity
@pytest.mark.parametrize("signal", SIGNALS)
def test_parity_mutated_realistic(signal: int) -> None:
    rng = random.Random(7 + signal)
    mutate = mutations(REALISTIC[signal]().SerializeToString(), rng)
    for _ in range(400):
        kw = {
            "chunk_messages": rng.choice((1, 5, 50, 16384)),
            "item_messages": rng.choice((10, 100, 65536)),
            "max_depth": rng.choice((8, 20, 64, 101)),
        }
        same(signal, mutate(), kw)
