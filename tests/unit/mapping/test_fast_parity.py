"""The C attribute converter (_fast.c) gives exactly the rows of the pure-Python path: for any
request (several resources and scopes, events, nested values, NaN, bytes, NUL, repeated keys,
invalid spans) and any limits; and where the wire data needs protobuf's merge rules it steps
aside (None) so the Python path decides."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from exporters.postgres.mapping import map_logs, map_traces
from exporters.postgres.mapping.common import FAST_AVAILABLE, MAX_ATTRIBUTES, MAX_VALUE_LENGTH, Mapper

from .builders import RECEIVED_NS, Ids, kvs, resource
from .test_fuzz import attrs, logs, res, spans

pytestmark = pytest.mark.skipif(not FAST_AVAILABLE, reason="the C converter is not built (no C compiler?)")


def both(map_fn, request, raw: bytes | None = None, lims: tuple[int, int] = (MAX_ATTRIBUTES, MAX_VALUE_LENGTH)):
    """(rows, truncation counts) from the C path and from the Python path, each with a new
    Mapper (resources are converted, and their cuts counted, once per Mapper, then memoised)."""
    out = []
    for fast in (True, False):
        mapper = Mapper(*lims, fast=fast)
        mapped = map_fn(request, RECEIVED_NS, new_id=Ids(), mapper=mapper, **({"raw": raw} if fast else {}))
        out.append(((mapped.rows, mapped.resources, mapped.items, mapped.rejected, mapped.message), mapper.truncated))
    return out


def assert_same(map_fn, request, lims: tuple[int, int]) -> None:
    """Same rows and, unless an item was rejected, the same cut counts under limits `lims`."""
    (fast, fast_counts), (slow, slow_counts) = both(map_fn, request, lims=lims)
    assert fast == slow
    if not slow[3]:  # no rejected item: the C path counts cuts in rejected items' attributes too
        assert fast_counts == slow_counts


small_limits = st.sampled_from([(1024, 65536), (2, 3), (0, 0), (1, 100)])
valid_ids = st.builds(
    Span,
    trace_id=st.just(b"\x01" * 16),
    span_id=st.just(b"\x02" * 8),
    attributes=attrs,
    events=st.lists(st.builds(Span.Event, name=st.text(max_size=5), attributes=attrs), max_size=3),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(res, st.lists(st.lists(st.one_of(spans, valid_ids), max_size=3), max_size=3)), max_size=3),
    small_limits,
)
def test_traces_c_path_equals_python_path(structure, lims):
    request = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=r, scope_spans=[ScopeSpans(spans=s) for s in scopes]) for r, scopes in structure
    ])  # fmt: skip
    assert_same(map_traces, request, lims)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(res, st.lists(st.lists(logs, max_size=3), max_size=3)), max_size=3), small_limits)
def test_logs_c_path_equals_python_path(structure, lims):
    request = ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(resource=r, scope_logs=[ScopeLogs(log_records=s) for s in scopes]) for r, scopes in structure
    ])  # fmt: skip
    assert_same(map_logs, request, lims)


def test_receiver_bytes_are_used_as_given():
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, attributes=kvs({"a": 1, "b": [1, "x"], "c": {"d": 2.5}}))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource({"service.name": "s"}), scope_spans=[ScopeSpans(spans=[span])])])  # fmt: skip
    (fast, _), (slow, _) = both(map_traces, request, raw=request.SerializeToString())
    assert fast == slow


def _any(*fields: AnyValue) -> bytes:
    return b"".join(f.SerializeToString() for f in fields)  # concatenation = protobuf merge


def _traces_with_value(value_bytes: bytes) -> bytes:
    kv = b"\x0a\x01k" + b"\x12" + bytes([len(value_bytes)]) + value_bytes  # KeyValue{key: "k", value: ...}
    span = (
        Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).SerializeToString() + b"\x4a" + bytes([len(kv)]) + kv
    )  # field 9: attributes
    scope = b"\x12" + bytes([len(span)]) + span
    rs = b"\x12" + bytes([len(scope)]) + scope
    return b"\x0a" + bytes([len(rs)]) + rs


@pytest.mark.parametrize(
    "value",
    [
        _any(AnyValue(string_value="a"), AnyValue(int_value=7)),  # two oneof members: the last wins
        _any(
            AnyValue(array_value={"values": [AnyValue(int_value=1)]}),
            AnyValue(array_value={"values": [AnyValue(int_value=2)]}),
        ),  # a message member twice: merged
        b"\x1a\x01x",  # int_value with the wire type of a string: protobuf keeps it as an unknown field
    ],
    ids=["oneof-twice", "array-merged", "wrong-wire-type"],
)
def test_wire_forms_needing_protobuf_rules_take_the_python_path(value):
    from exporters.postgres.mapping import _fast

    raw = _traces_with_value(value)
    request = ExportTraceServiceRequest.FromString(raw)  # protobuf accepts all of these
    assert _fast.span_attributes(raw, 1024, 65536) is None
    (fast, _), (slow, _) = both(map_traces, request, raw=raw)
    assert fast == slow and fast[0]["otel_spans"]


def test_kv_and_body_edge_values_match():
    values = {
        "": "",
        "nul": "a\x00b",
        "empty": None,
        "zero": 0,
        "f": False,
        "nan": float("nan"),
        "inf": float("-inf"),
        "bytes": b"\x00\xff\x10",
        "nested": {"x": [b"ab", {"y": None}]},
    }
    kv = [*kvs(values), KeyValue(key="nul", value=AnyValue(int_value=3))]  # a repeated key: last wins
    records = [
        LogRecord(body=body, attributes=kv)
        for body in (AnyValue(), AnyValue(bytes_value=b"z"), AnyValue(kvlist_value={"values": kv}))
    ]
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])
    (fast, _), (slow, _) = both(map_logs, request)
    assert fast == slow
