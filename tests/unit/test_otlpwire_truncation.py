"""sidecar.pipeline.otlpwire.split(max_list=N): every attribute list and array keeps its first N elements in
the chunks, exactly as the mapping's Mapper.max_attributes keeps them: the chunks parse to the
request with its lists cut (protobuf's merge and oneof rules included), map to the same rows, and
C == Python on generated, merged, random and hostile input."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable

import pytest
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

from exporters.postgres.mapping import map_logs, map_metrics, map_traces
from exporters.postgres.mapping.common import FAST_AVAILABLE, Mapper
from sidecar.pipeline import otlpwire
from sidecar.pipeline.otlpwire import LOGS, METRICS, TRACES, Split

from .test_otlpwire import (
    CHILDREN,
    DEFAULTS,
    DESCRIPTORS,
    IMPLS,
    ITEM_DEPTH,
    NO_C,
    REALISTIC,
    REQUESTS,
    SIGNALS,
    attrs,
    av,
    enc_field,
    flatten,
    header_limits_exceeded,
    nested,
    outcome,
    requests,
    run,
    same,
    same_and_flipped,
    stats,
    upb_accepts,
    with_spans,
    without,
)

enc = otlpwire._encode_varint
parity = pytest.mark.skipif(otlpwire._scan_c is None, reason=NO_C)
HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARITY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- the oracle


def is_list(owner: Message, f: FieldDescriptor) -> bool:
    """A list max_list truncates: a repeated KeyValue field, or ArrayValue.values."""
    if not f.is_repeated or f.message_type is None:
        return False
    return f.message_type.full_name == KeyValue.DESCRIPTOR.full_name or (
        owner.DESCRIPTOR.full_name == ArrayValue.DESCRIPTOR.full_name and f.name == "values"
    )


def truncate(m: Message, n: int) -> int:
    """Cuts every list of a parsed message to n elements, as the mapping does; how many were cut."""
    cut = 0
    for f, v in m.ListFields():
        if f.message_type is None:
            continue
        if f.is_repeated:
            if is_list(m, f) and len(v) > n:
                cut += len(v) - n
                del v[n:]
            for x in v:
                cut += truncate(x, n)
        else:
            cut += truncate(v, n)
    return cut


def cut_copy(m: Message, n: int) -> tuple[Message, int]:
    c = type(m)()
    c.CopyFrom(m)
    return c, truncate(c, n)


def expected(signal: int, req: Message, n: int, kw: dict) -> tuple[list[tuple], int, int, int]:
    """(kept items with their headers, all cut to n; items; rejected; elements cut from what is
    kept: the kept items and the headers of the containers holding one, once each)."""

    def ok(item: Message) -> bool:
        count, deepest = stats(item, ITEM_DEPTH[signal])
        return deepest <= kw["max_depth"] and count <= kw["item_messages"]

    kept: list[tuple] = []
    items = rejected = cut = 0

    def leaves(headers: tuple, parts: list) -> bool:
        """parts: [(header message, [sub-parts])] or items; adds the kept ones; any kept?"""
        nonlocal items, rejected, cut
        any_kept = False
        for part in parts:
            if isinstance(part, tuple):
                h, sub = part
                hc, hcut = cut_copy(h, n)
                if leaves((*headers, hc), sub):
                    any_kept = True
                    cut += hcut
            else:
                item, icut = cut_copy(part, n)
                items += 1
                if ok(item):
                    kept.append((*headers, item))
                    cut += icut
                    any_kept = True
                else:
                    rejected += 1
        return any_kept

    if signal == METRICS:
        tree = []
        for rm in req.resource_metrics:
            scopes = []
            for sm in rm.scope_metrics:
                metrics = []
                for m in sm.metrics:
                    which = m.WhichOneof("data")
                    if which is None:
                        continue
                    data = getattr(m, which)
                    metrics.append((without(m, which), [(without(data, "data_points"), list(data.data_points))]))
                scopes.append((without(sm, "metrics"), metrics))
            tree.append((without(rm, "scope_metrics"), scopes))
        leaves((), tree)
        # flatten() also names the data field: put it back in
        kept = [(rh, sh, mh, which_of(mh, dh), dh, p) for rh, sh, mh, dh, p in kept]
    else:
        sname, iname = ("scope_spans", "spans") if signal == TRACES else ("scope_logs", "log_records")
        tree = [
            (without(rs, sname), [(without(ss, iname), list(getattr(ss, iname))) for ss in getattr(rs, sname)])
            for rs in getattr(req, CHILDREN[signal])
        ]
        leaves((), tree)
    return kept, items, rejected, cut


def which_of(metric_header: Message, data_header: Message) -> str:
    return {
        mt.Gauge.DESCRIPTOR.full_name: "gauge",
        mt.Sum.DESCRIPTOR.full_name: "sum",
        mt.Histogram.DESCRIPTOR.full_name: "histogram",
        mt.ExponentialHistogram.DESCRIPTOR.full_name: "exponential_histogram",
        mt.Summary.DESCRIPTOR.full_name: "summary",
    }[data_header.DESCRIPTOR.full_name]


def check_cut(impl: str, signal: int, data: bytes, n: int, *, merged: bool = False, **limits: int) -> Split:
    """split(max_list=n) against protobuf's parse of `data` with every list cut to n.

    merged: the wire data repeats singular fields or oneof members (protobuf merges or replaces
    them), so split() counts items, messages and cuts as sent, not as parsed; only what the chunks
    parse to is compared (with limits that reject nothing)."""
    kw = DEFAULTS | limits
    cls = REQUESTS[signal]
    req = cls.FromString(data)
    kept, items, rejected, cut = expected(signal, req, n, kw)
    s = run(impl, signal, data, max_list=n, **limits)
    want = type(req)()
    want.CopyFrom(req)
    cut_anywhere = truncate(want, n)
    if not merged:
        assert (s.items, s.rejected, s.truncated) == (items, rejected, cut)
        assert s.messages == stats(want, 1)[0] - 1
    else:
        assert s.rejected == 0
    got: list[tuple] = []
    for chunk in s.chunks:
        part = flatten(signal, cls.FromString(chunk))
        assert part or merged, "every chunk holds at least one item"
        got += part
        if not merged:  # a chunk has nothing left to cut
            assert run(impl, signal, chunk, max_list=n, **(limits | {"chunk_messages": 1 << 30})).truncated == 0
    assert got == kept, "each chunk alone: the kept items cut to n, in order, each with its headers cut to n"
    joined = cls.FromString(b"".join(s.chunks))
    assert flatten(signal, joined) == kept
    if s.chunks:
        assert without(joined, CHILDREN[signal]) == without(want, CHILDREN[signal])
    if not cut_anywhere and not merged:  # no list over n: exactly what split() gives without max_list
        assert s == run(impl, signal, data, **limits)
        if s.chunks == [data]:
            assert s.chunks[0] is data
    return s


# ------------------------------------------------------------------------------------- schema


def test_lists_chains_and_oneof_match_the_installed_descriptors() -> None:
    by_name = {d.full_name: t for t, d in DESCRIPTORS.items()}
    has_list: dict[int, bool] = {}
    for t, d in DESCRIPTORS.items():
        lists = [f.number for f in d.fields if is_list(_instance(d), f)]
        assert len(lists) <= 1, d.full_name
        assert otlpwire._LIST.get(t) == (lists[0] if lists else None), d.full_name
        has_list[t] = bool(lists)

    def reaches_list(t: int) -> bool:
        """Has a list, or a singular message field whose type reaches one (merged across repeats)."""
        d = DESCRIPTORS[t]
        return has_list[t] or any(
            reaches_list(by_name[f.message_type.full_name])
            for f in d.fields
            if f.message_type is not None and not f.is_repeated
        )

    chained = {
        (t, f.number)
        for t, d in DESCRIPTORS.items()
        for f in d.fields
        if f.message_type is not None and not f.is_repeated and reaches_list(by_name[f.message_type.full_name])
    }
    # Metric's data oneof leads to data points (repeated: each its own lists), never to a list itself
    assert {(t, fn) for t, fn in chained if t != otlpwire._METRIC} == set(otlpwire._CHAINED)

    def chain(t: int) -> int:
        return 1 + max(
            (chain(by_name[f.message_type.full_name]) for f in DESCRIPTORS[t].fields if (t, f.number) in chained),
            default=0,
        )

    assert max(chain(t) for t in DESCRIPTORS if t != otlpwire._METRIC) == otlpwire._CHAIN
    wire = {
        FieldDescriptor.TYPE_STRING: 2,
        FieldDescriptor.TYPE_BYTES: 2,
        FieldDescriptor.TYPE_MESSAGE: 2,
        FieldDescriptor.TYPE_BOOL: 0,
        FieldDescriptor.TYPE_INT64: 0,
        FieldDescriptor.TYPE_INT32: 0,
        FieldDescriptor.TYPE_DOUBLE: 1,
    }
    [oneof] = AnyValue.DESCRIPTOR.oneofs
    assert {f.number: wire[f.type] for f in oneof.fields} == otlpwire._ONEOF


def _instance(d) -> Message:
    return next(cls for cls in _CLASSES if cls.DESCRIPTOR.full_name == d.full_name)()


_CLASSES = [
    ExportTraceServiceRequest, ExportLogsServiceRequest, ExportMetricsServiceRequest, tr.ResourceSpans,
    tr.ScopeSpans, lg.ResourceLogs, lg.ScopeLogs, mt.ResourceMetrics, mt.ScopeMetrics, mt.Metric, mt.Gauge, mt.Sum,
    mt.Histogram, mt.ExponentialHistogram, mt.Summary, Resource, InstrumentationScope, KeyValue, AnyValue,
    ArrayValue, KeyValueList, tr.Span, tr.Span.Event, tr.Span.Link, tr.Status, lg.LogRecord, mt.NumberDataPoint,
    mt.HistogramDataPoint, mt.ExponentialHistogramDataPoint, mt.ExponentialHistogramDataPoint.Buckets,
    mt.SummaryDataPoint, mt.SummaryDataPoint.ValueAtQuantile, mt.Exemplar,
]  # fmt: skip
if "entity_refs" in Resource.DESCRIPTOR.fields_by_name:
    from opentelemetry.proto.common.v1 import common_pb2

    _CLASSES.append(common_pb2.EntityRef)


@pytest.mark.parametrize("impl", IMPLS)
def test_max_list_argument(impl: str) -> None:
    for bad in (0, -1, 2**40 + 1):
        with pytest.raises(ValueError, match="max_list must be None or between 1 and 2"):
            run(impl, TRACES, b"", max_list=bad)
    if impl == "c":
        with pytest.raises(ValueError, match="max_list"):
            otlpwire._otlpwire.split(TRACES, b"", 1, 1, 1, -1)


# ------------------------------------------------------------------------------ big lists


def log_request(records: list[lg.LogRecord]) -> bytes:
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.extend(records)
    return req.SerializeToString()


@pytest.mark.parametrize("impl", IMPLS)
def test_log_record_with_100k_attributes_is_kept_cut(impl: str) -> None:
    big = lg.LogRecord(
        body=av("b"), attributes=[KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(100_000)]
    )
    data = log_request([lg.LogRecord(body=av("before")), big, lg.LogRecord(body=av("after"))])
    s = run(impl, LOGS, data)
    assert (s.items, s.rejected) == (3, 1) and s.reason == "1 log record rejected: more than 65536 nested values"
    s = run(impl, LOGS, data, max_list=1024)
    assert (s.items, s.rejected, s.reason, s.truncated) == (3, 0, "", 100_000 - 1024)
    assert s.messages == 2 + 2 * 2 + (2 + 2 * 1024)  # resource_logs, scope_logs; 2 small; big
    [chunk] = s.chunks
    recs = ExportLogsServiceRequest.FromString(chunk).resource_logs[0].scope_logs[0].log_records
    assert [r.body.string_value for r in recs] == ["before", "b", "after"]
    assert list(recs[1].attributes) == list(big.attributes[:1024])


@pytest.mark.parametrize("impl", IMPLS)
def test_span_with_200k_empty_attributes_is_kept_cut(impl: str) -> None:
    big = tr.Span(name="big").SerializeToString() + b"\x4a\x00" * 200_000
    data = with_spans([tr.Span(name="a").SerializeToString(), big, tr.Span(name="z").SerializeToString()])
    s = run(impl, TRACES, data, max_list=1024)
    assert (s.items, s.rejected, s.reason, s.truncated) == (3, 0, "", 200_000 - 1024)
    [chunk] = s.chunks
    spans = ExportTraceServiceRequest.FromString(chunk).resource_spans[0].scope_spans[0].spans
    assert [(sp.name, len(sp.attributes)) for sp in spans] == [("a", 0), ("big", 1024), ("z", 0)]
    cut = tr.Span(name="big").SerializeToString() + b"\x4a\x00" * 1024
    assert chunk == with_spans([tr.Span(name="a").SerializeToString(), cut, tr.Span(name="z").SerializeToString()])
    # over the limits even cut: still rejected
    s = run(impl, TRACES, data, max_list=1024, item_messages=1000)
    assert (s.rejected, s.truncated) == (1, 0) and s.reason == "1 span rejected: more than 1000 nested values"


@pytest.mark.parametrize("impl", IMPLS)
def test_huge_headers_become_storable(impl: str) -> None:
    n = 1_000_000 if impl == "c" else 100_000
    rs = b"\x0a" + enc(2 * n) + b"\x0a\x00" * n  # a resource with n empty attributes
    ss = b"\x0a\x05\x1a\x03\x0a\x01s" + b"\x12\x02\x0a\x00"  # scope {attributes: [{key: "s"}]}, one span
    rs += b"\x12" + enc(len(ss)) + ss
    data = b"\x0a" + enc(len(rs)) + rs
    with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric with more than 65536 nested"):
        run(impl, TRACES, data)
    s = check_cut(impl, TRACES, data, 1024)
    assert (s.items, s.truncated) == (1, n - 1024)
    r = ExportTraceServiceRequest.FromString(s.chunks[0]).resource_spans[0]
    assert len(r.resource.attributes) == 1024 and r.scope_spans[0].scope.attributes[0].key == "s"

    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    sm.scope.attributes.extend(KeyValue(key=str(i)) for i in range(70_000))
    m = sm.metrics.add(name="m", metadata=[KeyValue(key=str(i)) for i in range(70_000)])
    m.gauge.data_points.add(as_int=1, attributes=[KeyValue(key="a")] * 3)
    s = check_cut(impl, METRICS, req.SerializeToString(), 2)
    assert s.truncated == 2 * (70_000 - 2) + 1


@pytest.mark.parametrize("impl", IMPLS)
def test_nothing_to_cut_gives_todays_result(impl: str) -> None:
    for signal in SIGNALS:
        data = REALISTIC[signal]().SerializeToString()
        for cm in (1, 40, 16384):
            s = run(impl, signal, data, chunk_messages=cm, max_list=1024)
            assert s == run(impl, signal, data, chunk_messages=cm) and s.truncated == 0
        assert run(impl, signal, data, max_list=6).chunks[0] is data


# ------------------------------------------------------------------------------ what is cut


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("chunk_messages", [1, 7, 16384])
def test_realistic_requests_cut(impl: str, signal: int, n: int, chunk_messages: int) -> None:
    s = check_cut(impl, signal, REALISTIC[signal]().SerializeToString(), n, chunk_messages=chunk_messages)
    assert s.truncated > 0 or n == 3  # the metrics have no list longer than 3


def long_lists(n: int, extra: int = 3) -> dict[int, bytes]:
    """Requests where every kind of list holds n + extra elements (nested ones too)."""
    k = n + extra

    def value(prefix: str, i: int, depth: int) -> object:
        if depth and i == 0:
            return lst(f"{prefix}{i}.", depth - 1)
        if depth and i == 1:
            return amap(f"{prefix}{i}.", depth - 1)
        return f"{prefix}{i}" if i % 2 else i

    def lst(prefix: str, depth: int = 2) -> list:
        return [value(prefix, i, depth) for i in range(k)]

    def amap(prefix: str, depth: int = 2) -> dict:
        return {f"{prefix}{i}": value(prefix, i, depth) for i in range(k)}

    def kvs(prefix: str) -> list[KeyValue]:
        return attrs(amap(prefix))

    res = Resource(attributes=[*kvs("res."), KeyValue(key="service.name", value=av("svc"))])
    scope = InstrumentationScope(name="lib", version="1", attributes=kvs("scope."))
    spans = [
        tr.Span(
            trace_id=bytes([i + 1]) * 16,
            span_id=bytes([i + 1]) * 8,
            name=f"s{i}",
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_000_000_500 + i,
            attributes=kvs(f"span{i}."),
            events=[tr.Span.Event(time_unix_nano=5, name="ev", attributes=kvs("ev."))] * 2,
            links=[tr.Span.Link(trace_id=b"\2" * 16, span_id=b"\3" * 8, attributes=kvs("link."))],
        )
        for i in range(4)
    ]
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add(resource=res, schema_url="u")
    rs.scope_spans.add(scope=scope).spans.extend(spans[:3])
    rs.scope_spans.add(scope=InstrumentationScope(name="other")).spans.extend(spans[3:])
    traces.resource_spans.add(resource=Resource(attributes=kvs("r2."))).scope_spans.add().spans.extend(spans[:1])

    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add(resource=res).scope_logs.add(scope=scope)
    bodies = [av(lst("b")), av(amap("m")), av("text")]
    sl.log_records.extend(
        lg.LogRecord(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            severity_number=9,
            body=bodies[i % 3],
            attributes=kvs(f"log{i}."),
            trace_id=b"\6" * 16,
            span_id=b"\7" * 8,
        )
        for i in range(5)
    )

    metrics = ExportMetricsServiceRequest()
    sm = metrics.resource_metrics.add(resource=res).scope_metrics.add(scope=scope)
    ex = [mt.Exemplar(time_unix_nano=5, as_int=1, filtered_attributes=kvs("ex."))]
    t0 = 1_700_000_000_000_000_000
    g = sm.metrics.add(name="g", unit="1", metadata=kvs("md."))
    g.gauge.data_points.extend(
        mt.NumberDataPoint(time_unix_nano=t0 + i, as_double=i, attributes=kvs(f"g{i}."), exemplars=ex) for i in range(3)
    )
    su = sm.metrics.add(name="s", metadata=kvs("md2."))
    su.sum.aggregation_temporality = mt.AGGREGATION_TEMPORALITY_CUMULATIVE
    su.sum.data_points.add(time_unix_nano=t0, as_int=3, attributes=kvs("s."))
    h = sm.metrics.add(name="h")
    h.histogram.aggregation_temporality = mt.AGGREGATION_TEMPORALITY_DELTA
    h.histogram.data_points.add(
        time_unix_nano=t0, count=3, sum=1.5, bucket_counts=[1, 2], explicit_bounds=[1.0], attributes=kvs("h."),
        exemplars=ex,
    )  # fmt: skip
    e = sm.metrics.add(name="e")
    e.exponential_histogram.data_points.add(
        time_unix_nano=t0, count=3, scale=1, positive=mt.ExponentialHistogramDataPoint.Buckets(bucket_counts=[1, 2]),
        attributes=kvs("e."), exemplars=ex,
    )  # fmt: skip
    q = sm.metrics.add(name="q")
    q.summary.data_points.add(
        time_unix_nano=t0, count=2, sum=3.0, attributes=kvs("q."),
        quantile_values=[mt.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=1)],
    )  # fmt: skip
    return {TRACES: traces.SerializeToString(), LOGS: logs.SerializeToString(), METRICS: metrics.SerializeToString()}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_every_kind_of_list_is_cut(impl: str, signal: int, n: int) -> None:
    data = long_lists(n)[signal]
    for cm in (1, 30, 16384):
        s = check_cut(impl, signal, data, n, chunk_messages=cm)
        assert s.truncated > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_elements_count_across_interleaved_fields(impl: str) -> None:
    """A list's elements are counted in wire order; other fields between them keep their place."""
    kv = [KeyValue(key=f"k{i}").SerializeToString() for i in range(5)]
    body = (
        b"\x4a" + enc(len(kv[0])) + kv[0]
        + b"\x2a\x01x"  # name
        + b"\x4a" + enc(len(kv[1])) + kv[1]
        + b"\x40\x07"  # end_time
        + b"\x4a" + enc(len(kv[2])) + kv[2]
        + b"\xa0\x06\x01"  # unknown field 100
        + b"\x4a" + enc(len(kv[3])) + kv[3]
        + b"\x4a" + enc(len(kv[4])) + kv[4]
    )  # fmt: skip
    data = with_spans([body])
    s = check_cut(impl, TRACES, data, 2)
    assert s.truncated == 3
    want = with_spans([body[: body.index(b"\x40\x07") + 2] + b"\xa0\x06\x01"])
    assert s.chunks == [want]


@pytest.mark.parametrize("impl", IMPLS)
def test_only_the_path_to_a_cut_is_reencoded(impl: str) -> None:
    """Lengths on the path to a cut list are re-encoded (minimal varints), the rest is copied."""
    padded = b"\x7a\x82\x80\x80\x00\x18\x01"  # status {code: 1} with a 5-byte length: copied as sent
    kv = b"\x0a\x01k\x12\x88\x80\x00\x2a\x06" + b"\x0a\x00" * 3  # {k: [empty x 3]}, value's length padded
    span = b"\x4a" + enc(len(kv)) + kv + b"\x2a\x01a" + padded
    data = with_spans([span])
    s = check_cut(impl, TRACES, data, 1)
    assert s.truncated == 2  # the array's 2nd and 3rd values
    kv_cut = b"\x0a\x01k\x12\x04\x2a\x02\x0a\x00"
    assert s.chunks == [with_spans([b"\x4a" + enc(len(kv_cut)) + kv_cut + b"\x2a\x01a" + padded])]
    s = check_cut(impl, TRACES, data, 2)
    assert s.truncated == 1 and s.chunks[0].count(padded) == 1


# ---------------------------------------------------------------- protobuf's merge and oneof rules


def ld(fn: int, payload: bytes) -> bytes:
    return enc_field(fn, 2, enc(len(payload)) + payload)


def vi(fn: int, v: int) -> bytes:
    return enc_field(fn, 0, enc(v))


def arr(*values: bytes) -> bytes:
    """An AnyValue holding an array of these AnyValue wires."""
    return ld(5, b"".join(ld(1, v) for v in values))


def ints(*xs: int) -> list[bytes]:
    return [vi(3, x) for x in xs]


@pytest.mark.parametrize("impl", IMPLS)
def test_merged_and_replaced_values_count_as_protobuf_parses_them(impl: str) -> None:
    cases = {
        "array then array: one array": arr(*ints(1, 2)) + arr(*ints(3, 4)),
        "array, int, array: the second only": arr(*ints(1, 2, 3)) + vi(3, 9) + arr(*ints(4, 5, 6)),
        "int sent as bytes is unknown: one array": arr(*ints(1, 2)) + ld(3, b"\x05") + arr(*ints(3)),
        "kvlist replaces the array": arr(*ints(1, 2, 3)) + ld(6, ld(1, ld(1, b"a")) * 3) + arr(*ints(7)),
        "kvlist then kvlist": ld(6, ld(1, ld(1, b"a")) * 2) + ld(6, ld(1, ld(1, b"b")) * 2),
        "string_value_strindex replaces": arr(*ints(1, 2, 3)) + vi(8, 1) + arr(*ints(4, 5, 6)),
        "empty string replaces": arr(*ints(1, 2, 3)) + ld(1, b"") + arr(*ints(4, 5, 6)),
        "array inside array": arr(arr(*ints(1, 2, 3)), arr(*ints(4, 5, 6)) + arr(*ints(7))),
    }
    for name, value in cases.items():
        # the value as an attribute sent in two KeyValue.value fields, and as a log body sent twice
        kv = ld(1, b"k") + ld(2, value) + ld(2, arr(*ints(10, 11, 12)))
        rec = ld(5, value) + ld(6, kv) + ld(5, value)
        sl = ld(2, rec)
        rl = ld(1, ld(1, kv)) + ld(2, sl) + ld(1, ld(1, kv) * 3)  # the resource sent twice: merged
        data = ld(1, rl)
        assert upb_accepts(LOGS, data)
        for n in (1, 2, 3):
            check_cut(impl, LOGS, data, n, merged=True)
            check_cut(impl, LOGS, data, n, merged=True, chunk_messages=1)
        assert name


# merged wire: every singular field may be sent again, every oneof member may follow another
names = st.sampled_from([b"", b"a", b"k", b"zz"])
scalar_members = st.one_of(
    names.map(lambda s: ld(1, s)),  # string_value
    st.integers(0, 1).map(lambda v: vi(2, v)),  # bool_value
    st.integers(0, 300).map(lambda v: vi(3, v)),  # int_value
    st.just(enc_field(4, 1, b"\0" * 7 + b"\x40")),  # double_value
    names.map(lambda s: ld(7, s)),  # bytes_value
    st.just(vi(8, 2)),  # string_value_strindex
    st.just(ld(3, b"\x05")),  # int_value with the wrong wire type: unknown
    st.just(vi(100, 1)),  # unknown
)
noise = st.sampled_from([vi(100, 3), ld(101, b"x"), enc_field(102, 5, b"abcd")])


def with_noise(elements: st.SearchStrategy[bytes], max_size: int = 5) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(elements, noise), max_size=max_size).map(b"".join)


def kv_wires(anyw: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(names.map(lambda k: ld(1, k)), anyw.map(lambda a: ld(2, a))), max_size=3).map(b"".join)


def any_extend(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    member = st.one_of(
        scalar_members,
        with_noise(inner.map(lambda v: ld(1, v))).map(lambda b: ld(5, b)),
        with_noise(kv_wires(inner).map(lambda v: ld(1, v))).map(lambda b: ld(6, b)),
    )
    return st.lists(member, min_size=1, max_size=3).map(b"".join)


any_wires = st.recursive(scalar_members, any_extend, max_leaves=12)
kv_wire = kv_wires(any_wires)
kv_list = st.lists(kv_wire, max_size=6)


def fields(*parts: st.SearchStrategy[bytes], max_size: int = 8) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(*parts, noise), max_size=max_size).map(b"".join)


def attr_fields(fn: int) -> st.SearchStrategy[bytes]:
    return kv_list.map(lambda kvs: b"".join(ld(fn, kv) for kv in kvs))


span_wire = fields(
    names.map(lambda s: ld(5, s)),
    attr_fields(9),
    fields(attr_fields(3), names.map(lambda s: ld(2, s)), max_size=3).map(lambda b: ld(11, b)),
    fields(attr_fields(4), max_size=3).map(lambda b: ld(13, b)),
    st.just(ld(15, vi(3, 1))),
    st.integers(0, 9).map(lambda v: vi(8, v)),
)
log_wire = fields(attr_fields(6), any_wires.map(lambda a: ld(5, a)), st.just(ld(3, b"INFO")), st.just(vi(2, 9)))
exemplar_wire = fields(attr_fields(7), st.just(vi(6, 1))).map(lambda b: ld(5, b))
ndp_wire = fields(attr_fields(7), exemplar_wire, st.just(vi(6, 4)))
hdp_wire = fields(attr_fields(9), exemplar_wire.map(lambda b: b"\x42" + b[1:]), st.just(vi(4, 2)))
ehdp_wire = fields(attr_fields(1), exemplar_wire.map(lambda b: b"\x5a" + b[1:]), st.just(ld(8, vi(1, 1))))
sdp_wire = fields(attr_fields(7), st.just(ld(6, enc_field(1, 1, b"\0" * 8))))
points = {5: ndp_wire, 7: ndp_wire, 9: hdp_wire, 10: ehdp_wire, 11: sdp_wire}
data_wire = st.sampled_from(sorted(points)).flatmap(
    lambda fn: st.lists(points[fn], max_size=3).map(lambda ps: ld(fn, b"".join(ld(1, p) for p in ps) + vi(2, 1)))
)
metric_wire = fields(names.map(lambda s: ld(1, s)), attr_fields(12), data_wire, st.just(ld(3, b"ms")))
resource_wire = fields(attr_fields(1), st.just(vi(2, 3)))
scope_wire = fields(names.map(lambda s: ld(1, s)), attr_fields(3), st.just(ld(2, b"v")))
ITEM_WIRES = {TRACES: span_wire, LOGS: log_wire, METRICS: metric_wire}


@st.composite
def merged_requests(draw) -> tuple[int, bytes]:
    signal = draw(st.sampled_from(SIGNALS))
    rss = []
    for _ in range(draw(st.integers(0, 2))):
        parts = [ld(1, draw(resource_wire)) for _ in range(draw(st.integers(0, 2)))]
        for _ in range(draw(st.integers(0, 2))):
            sparts = [ld(1, draw(scope_wire)) for _ in range(draw(st.integers(0, 2)))]
            sparts += [ld(2, draw(ITEM_WIRES[signal])) for _ in range(draw(st.integers(0, 3)))]
            draw(st.randoms(use_true_random=False)).shuffle(sparts)
            parts.append(ld(2, b"".join(sparts)))
        draw(st.randoms(use_true_random=False)).shuffle(parts)
        rss.append(ld(1, b"".join(parts) + draw(noise)))
    return signal, b"".join(rss)


@pytest.mark.parametrize("impl", IMPLS)
@HYPOTHESIS
@given(request=merged_requests(), n=st.integers(1, 3), cm=st.sampled_from([1, 5, 16384]))
def test_merged_wire_cut_as_parsed(impl: str, request: tuple[int, bytes], n: int, cm: int) -> None:
    signal, data = request
    try:
        check_cut(impl, signal, data, n, merged=True, chunk_messages=cm)
    except ValueError as e:
        # With chunk budgets of a message or a few, headers outweigh their items: the documented
        # refusal (a chunk would grow past 4x its budget), the same in both implementations.
        assert cm < 16384 and "headers too large to split" in str(e), e
        other = "python" if impl == "c" else "c"
        assert outcome(other, signal, data, max_list=n, chunk_messages=cm) == f"ValueError: {e}"


limits = st.fixed_dictionaries(
    {
        "chunk_messages": st.integers(1, 60),
        "item_messages": st.integers(1, 80),
        "max_depth": st.integers(8, 101),
        "max_list": st.integers(1, 3),
    }
)


@pytest.mark.parametrize("impl", IMPLS)
@HYPOTHESIS
@given(request=requests(), kw=limits)
def test_generated_requests_cut(impl: str, request: tuple[int, bytes], kw: dict) -> None:
    signal, data = request
    n = kw.pop("max_list")
    result = outcome(impl, signal, data, max_list=n, **kw)
    if isinstance(result, str):  # a header over the limits once cut, or headers too big to split
        cut = REQUESTS[signal].FromString(data)
        truncate(cut, n)
        if result != "ValueError: request rejected: resource, scope or metric headers too large to split":
            assert result.startswith("ValueError: request rejected: resource, scope or metric"), result
            assert header_limits_exceeded(signal, cut.SerializeToString(), kw)
        return
    check_cut(impl, signal, data, n, **kw)


# ------------------------------------------------------------------------------------- parity


@parity
@PARITY
@given(request=merged_requests(), kw=limits, flip=st.tuples(st.integers(0, 10**6), st.integers(0, 255)))
def test_parity_merged_wire(request: tuple[int, bytes], kw: dict, flip: tuple[int, int]) -> None:
    same_and_flipped(*request, kw, flip)


@parity
@HYPOTHESIS
@given(request=requests(), kw=limits, cut=st.integers(0, 10**6))
def test_parity_generated_requests_cut(request: tuple[int, bytes], kw: dict, cut: int) -> None:
    signal, data = request
    same(signal, data, kw)
    same(signal, data[: cut % (len(data) + 1)], kw)


@parity
@PARITY
@given(signal=st.sampled_from(SIGNALS), data=st.binary(max_size=300), kw=limits)
def test_parity_random_bytes_cut(signal: int, data: bytes, kw: dict) -> None:
    same(signal, data, kw)


@parity
@pytest.mark.parametrize("signal", SIGNALS)
def test_parity_mutated_long_lists(signal: int) -> None:
    rng = random.Random(11 + signal)
    data = long_lists(2)[signal]
    for _ in range(300):
        b = bytearray(data)
        op = rng.randrange(3)
        if op == 0:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            del b[rng.randrange(len(b)) :]
        else:
            i, j = sorted(rng.randrange(len(b)) for _ in range(2))
            b[i:i] = b[i:j]
        kw = {
            "chunk_messages": rng.choice((1, 5, 50, 16384)),
            "item_messages": rng.choice((10, 100, 65536)),
            "max_depth": rng.choice((8, 20, 64, 101)),
            "max_list": rng.choice((1, 2, 3, 1024)),
        }
        same(signal, bytes(b), kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("signal", SIGNALS)
def test_framing_errors_in_cut_elements_are_still_raised(impl: str, signal: int) -> None:
    """What is cut is checked as upb checks it: invalid bytes there make the request invalid."""
    data = long_lists(1, extra=1)[signal]
    rng = random.Random(3 + signal)
    for _ in range(300):
        b = bytearray(data)
        b[rng.randrange(len(b))] = rng.randrange(256)
        result = outcome(impl, signal, bytes(b), max_list=1)
        if upb_accepts(signal, bytes(b)):
            assert isinstance(result, Split), result
        else:
            assert isinstance(result, str) and result.startswith("ValueError: invalid protobuf: "), result


# ------------------------------------------------------------------------------- depth limits


def deep_kv(levels: int) -> bytes:
    return KeyValue(key="deep", value=nested(levels)).SerializeToString()


@pytest.mark.parametrize("impl", IMPLS)
def test_cut_elements_do_not_count_toward_max_depth(impl: str) -> None:
    first = KeyValue(key="first").SerializeToString()
    span = ld(5, b"s") + ld(9, first) + ld(9, deep_kv(70))  # the 2nd attribute reaches level 76
    data = with_spans([span])
    assert run(impl, TRACES, data).reason == "1 span rejected: nested more than 64 levels"
    s = check_cut(impl, TRACES, data, 1)
    assert (s.rejected, s.truncated) == (0, 1)
    # the same in a header: no longer invalid
    rs = ld(1, ld(1, first) + ld(1, deep_kv(70))) + ld(2, ld(2, b""))
    data = ld(1, rs)
    with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric nested more than 64 levels$"):
        run(impl, TRACES, data)
    assert check_cut(impl, TRACES, data, 1).truncated == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_cut_elements_deeper_than_upb_accepts(impl: str) -> None:
    """upb refuses the request: an item holding such an element is rejected, a header raises."""
    value = b""
    for i in range(120):
        value = (b"\x2a" if i % 2 else b"\x0a") + enc(len(value)) + value
    deep = ld(1, b"deep") + ld(2, value)
    span = ld(5, b"s") + ld(9, ld(1, b"first")) + ld(9, deep)
    data = with_spans([span, ld(5, b"ok")])
    assert not upb_accepts(TRACES, data)
    s = run(impl, TRACES, data, max_list=1, max_depth=101)
    assert (s.items, s.rejected, s.truncated) == (2, 1, 0)
    assert s.reason == "1 span rejected: nested more than 101 levels"
    rs = ld(1, ld(1, ld(1, b"first")) + ld(1, deep)) + ld(2, ld(2, b""))
    with pytest.raises(ValueError, match=r"^request rejected: resource, scope or metric nested more than 64 levels$"):
        run(impl, TRACES, ld(1, rs), max_list=1)


# ---------------------------------------------------------------------- the rows the mapping makes


class Ids:
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=next(self._n))


MAPPERS: dict[int, Callable] = {TRACES: map_traces, LOGS: map_logs, METRICS: map_metrics}


def mapped(signal: int, bodies: list[bytes], n: int, fast: bool) -> tuple[tuple, int]:
    """The rows, resources, items and rejections of these requests mapped in order with a new
    Mapper(max_attributes=n); attributes cut."""
    mapper = Mapper(n, fast=fast)
    ids = Ids()
    rows: dict[str, list] = {}
    resources: dict = {}
    items = rejected = 0
    reasons: dict[str, int] = {}
    for body in bodies:
        m = MAPPERS[signal](
            REQUESTS[signal].FromString(body), 1_700_000_000_000_000_000, new_id=ids, raw=body, mapper=mapper
        )
        for table, r in m.rows.items():
            rows.setdefault(table, []).extend(r)
        resources.update(m.resources)
        items += m.items
        rejected += m.rejected
        for k, v in m.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    if "otel_scopes" in rows:  # each chunk carries the scopes of its items: they are upserted once
        rows["otel_scopes"] = list(dict.fromkeys(rows["otel_scopes"]))
    return (rows, resources, items, rejected, reasons), mapper.truncated["attributes"]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("n", [1, 3, 1024])
def test_chunks_map_to_the_rows_of_the_request(fast: bool, signal: int, n: int) -> None:
    """Mapping the chunks of split(max_list=n) gives the rows of the request mapped with
    Mapper(max_attributes=n) (which then has nothing left to cut), and split counts what the
    mapping would have cut."""
    data = long_lists(n, extra=3 if n < 1024 else 10)[signal]
    fast = fast and FAST_AVAILABLE
    whole, whole_cut = mapped(signal, [data], n, fast)
    assert whole_cut > 0
    for cm in (1 << 30, 40, 1):
        s = otlpwire.split(signal, data, chunk_messages=cm, max_list=n)
        assert s.rejected == 0 and (len(s.chunks) == 1 if cm == 1 << 30 else len(s.chunks) > 1)
        rows, cut = mapped(signal, s.chunks, n, fast)
        assert rows == whole
        assert cut == 0
        if cm == 1 << 30:
            assert s.truncated == whole_cut
    assert whole[0] and all(len(r) for r in whole[0].values())
