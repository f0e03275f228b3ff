"""The native encoder (_native.c) makes what the Python path makes: for any traces request and any
limits, the same rows (decoded from its binary COPY data and compared with the Python path's row
tuples), the same resources, scopes, counts, cuts and partial-success message, the same
user_analytics rows, and a TraceSummary from which the observers derive exactly what they derive
from the decoded request (span RED metrics, agent_states). Where only the Python path can map a
request it returns None; on mutated wire bytes it is either None or equal to the Python path.
(tests/integration/test_native_parity.py compares the rows as PostgreSQL stores them.)"""

from __future__ import annotations

import random
import uuid

import orjson
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from exporters.postgres.agent_states import AgentTracker
from exporters.postgres.ids import request_ids
from exporters.postgres.mapping import map_logs, map_traces
from exporters.postgres.mapping.common import NATIVE_AVAILABLE, CopyRows, Mapped, Mapper
from exporters.postgres.mapping.native import map_logs_native, map_traces_native
from exporters.postgres.mapping.user_analytics import user_analytics_rows
from exporters.postgres.schema import (
    OTEL_LOGS,
    OTEL_LOGS_COLUMNS,
    OTEL_SPAN_EVENTS,
    OTEL_SPAN_EVENTS_COLUMNS,
    OTEL_SPANS,
    OTEL_SPANS_COLUMNS,
    USER_ANALYTICS,
    USER_ANALYTICS_COLUMNS,
)
from exporters.prometheus.log_counts import LogCounts
from exporters.prometheus.series import SeriesStore
from exporters.prometheus.span_metrics import SpanMetrics
from sidecar.pipeline.signals import LOGS, TRACES
from sidecar.pipeline.span_metrics import SPAN_DURATION_BOUNDS_SECONDS, LogSummary, TraceSummary
from tests.copy_binary import read_tuples

from .builders import RECEIVED_NS, anyv, kvs, resource
from .test_fuzz import attrs, ids, res, texts, tree, u32, u64

pytestmark = pytest.mark.skipif(not NATIVE_AVAILABLE, reason="the native encoder is not built (no C compiler?)")

# The PostgreSQL type of each column the encoder writes (migrations/0003_lean_rows.sql).
KINDS = {
    "id": "uuid", "timestamp": "timestamptz", "nanos": "int2", "service_name": "text", "resource_id": "int8",
    "scope_id": "int8", "trace_id": "uuid", "span_id": "bytea", "parent_span_id": "bytea", "name": "text",
    "kind": "int2", "status_code": "int2", "status_message": "text", "duration_ns": "int8", "flags": "int4",
    "attributes": "jsonb", "extra": "jsonb", "span_name": "text", "user_id": "text", "action": "text",
    "page": "text", "session_id": "text", "metadata": "jsonb",
}  # fmt: skip
SEED = 0x123456789ABC


def kinds(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(KINDS[c] for c in columns)


def normalised(rows: list[tuple], columns: tuple[str, ...]) -> list[tuple]:
    """Python row tuples as the COPY reader gives them: JSON parsed, UUIDs plain."""
    out = []
    for row in rows:
        values = list(row)
        for i, kind in enumerate(kinds(columns)):
            if values[i] is None:
                continue
            if kind == "jsonb":
                values[i] = orjson.loads(values[i])
            elif kind == "uuid":
                values[i] = uuid.UUID(str(values[i]))
        out.append(tuple(values))
    return out


def decoded(rows: CopyRows | list[tuple] | None, columns: tuple[str, ...]) -> list[tuple]:
    if rows is None:
        return []
    assert isinstance(rows, CopyRows)
    got = read_tuples(rows.data, kinds(columns))
    assert len(got) == rows.count
    return got


def python_path(raw: bytes, lims: tuple[int, int]) -> tuple[Mapped, Mapper]:
    mapper = Mapper(*lims, native=False)
    request = ExportTraceServiceRequest.FromString(raw)
    return map_traces(request, RECEIVED_NS, new_id=request_ids(RECEIVED_NS, SEED), raw=raw, mapper=mapper), mapper


def native_path(
    raw: bytes, lims: tuple[int, int], user_rows: int = 1, recent: int = 20
) -> tuple[Mapped | None, Mapper]:
    mapper = Mapper(*lims, native=True)
    mapper.user_rows, mapper.recent_errors = user_rows, recent
    return map_traces_native(raw, RECEIVED_NS, request_ids(RECEIVED_NS, SEED), mapper), mapper


def span_metrics(observed: ExportTraceServiceRequest | TraceSummary) -> dict:
    store = SeriesStore(max_series_per_metric=10_000, max_series_total=100_000, expiry_seconds=300)
    metrics = SpanMetrics(store, SPAN_DURATION_BOUNDS_SECONDS)
    metrics.observe(observed, 1.0)
    return metrics.drain()


def agents(observed: ExportTraceServiceRequest | TraceSummary, error_log_size: int = 20) -> list[tuple]:
    tracker = AgentTracker(error_log_size=error_log_size, clock=lambda: 1000.0)
    tracker.observe(TRACES, observed, now=1000.0)
    return tracker.pending(1000.0)


def assert_same(raw: bytes, lims: tuple[int, int] = (1024, 65536), user_rows: int = 1) -> Mapped:
    py, py_mapper = python_path(raw, lims)
    native, native_mapper = native_path(raw, lims, user_rows)
    assert native is not None, "the native encoder stepped aside"
    assert decoded(native.rows[OTEL_SPANS], OTEL_SPANS_COLUMNS) == normalised(py.rows[OTEL_SPANS], OTEL_SPANS_COLUMNS)
    assert decoded(native.rows[OTEL_SPAN_EVENTS], OTEL_SPAN_EVENTS_COLUMNS) == normalised(
        py.rows[OTEL_SPAN_EVENTS], OTEL_SPAN_EVENTS_COLUMNS
    )
    # user_analytics: the Python path derives them in the batch (DerivedRows) from the span rows.
    spans = py.rows[OTEL_SPANS]
    assert isinstance(spans, list)
    users = user_analytics_rows([(OTEL_SPANS, r) for r in spans], truncated=py_mapper.truncated) if user_rows else []
    assert decoded(native.rows.get(USER_ANALYTICS), USER_ANALYTICS_COLUMNS) == normalised(users, USER_ANALYTICS_COLUMNS)
    assert native.rows["otel_scopes"] == py.rows["otel_scopes"]
    assert (native.resources, native.items, native.rejected, native.message, native.reasons) == (
        py.resources, py.items, py.rejected, py.message, py.reasons
    )  # fmt: skip
    assert native_mapper.truncated == py_mapper.truncated
    request = ExportTraceServiceRequest.FromString(raw)
    assert isinstance(native.decoded, TraceSummary)
    assert span_metrics(native.decoded) == span_metrics(request)
    assert agents(native.decoded) == agents(request)
    return native


# Spans the encoder maps itself: every field, with kinds, status codes and flags in their columns'
# range (beyond it the Python path keeps them exactly in `extra`).
spans = st.builds(
    Span, trace_id=ids, span_id=ids, parent_span_id=ids, name=texts, kind=st.integers(0, 2**15 - 1),
    start_time_unix_nano=st.one_of(u64, st.just(0)), end_time_unix_nano=u64, attributes=attrs, trace_state=texts,
    flags=st.integers(0, 2**31 - 1), dropped_attributes_count=u32, dropped_events_count=u32,
    dropped_links_count=u32, status=st.builds(Status, code=st.integers(0, 2**15 - 1), message=texts),
    events=st.lists(st.builds(Span.Event, time_unix_nano=st.one_of(u64, st.just(0)), name=texts, attributes=attrs,
                              dropped_attributes_count=u32), max_size=2),
    links=st.lists(st.builds(Span.Link, trace_id=ids, span_id=ids, attributes=attrs, trace_state=texts, flags=u32,
                             dropped_attributes_count=u32), max_size=2),
)  # fmt: skip
valid = st.builds(
    Span, trace_id=st.just(b"\x01" * 16), span_id=st.just(b"\x02" * 8), name=texts, attributes=attrs,
    start_time_unix_nano=st.integers(1, 2**62), end_time_unix_nano=st.integers(1, 2**62),
    status=st.builds(Status, code=st.integers(0, 2), message=texts),
    events=st.lists(st.builds(Span.Event, name=texts, attributes=attrs, time_unix_nano=u64), max_size=3),
)  # fmt: skip
user_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), texts, st.binary(max_size=6),
    st.lists(st.integers(-5, 5), max_size=2), st.text(min_size=300, max_size=400),
)  # fmt: skip
user_attrs = st.dictionaries(
    st.sampled_from(["enduser.id", "user.id", "url.path", "http.route", "session.id", "x"]), user_values, max_size=5
).map(kvs)
users = st.builds(
    Span, trace_id=st.just(b"\x03" * 16), span_id=st.just(b"\x04" * 8), name=texts, attributes=user_attrs,
    start_time_unix_nano=st.integers(1, 2**62),
)  # fmt: skip
scopes = st.one_of(st.none(), st.builds(InstrumentationScope, name=texts, version=texts, attributes=attrs))
small_limits = st.sampled_from([(1024, 65536), (2, 3), (0, 0), (1, 100)])


def request_of(structure: list) -> bytes:
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=r, schema_url=url, scope_spans=[
            ScopeSpans(scope=scope, spans=ss) if scope is not None else ScopeSpans(spans=ss) for scope, ss in scopes_
        ])
        for r, url, scopes_ in structure
    ]).SerializeToString()  # fmt: skip


structures = st.lists(
    st.tuples(res, st.sampled_from(["", "https://opentelemetry.io/schemas/1.26.0"]),
              st.lists(st.tuples(scopes, st.lists(st.one_of(spans, valid, users), max_size=4)), max_size=3)),
    max_size=3,
)  # fmt: skip


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(structures, small_limits)
def test_native_rows_equal_the_python_paths(structure, lims):
    assert_same(request_of(structure), lims)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(structures)
def test_without_user_analytics_no_user_rows(structure):
    native, _ = native_path(request_of(structure), (1024, 65536), user_rows=0)
    assert native is not None and USER_ANALYTICS not in native.rows


def one_span(**fields) -> bytes:
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=5, **fields)
    return request_of([(resource({"service.name": "s"}), "", [(None, [span])])])


@pytest.mark.parametrize(
    ("fields", "user_rows"),
    [
        ({"kind": 2**15}, 1),  # beyond SMALLINT: kept exactly in `extra` by the Python path
        ({"kind": -1}, 1),
        ({"status": Status(code=2**15)}, 1),
        ({"flags": 2**31}, 1),
        ({"attributes": kvs({"enduser.id": "u"})}, 2),  # user ids hashed (HMAC) in the Python path
    ],
    ids=["kind", "negative-kind", "status", "flags", "hashed-user"],
)
def test_what_only_the_python_path_maps_steps_aside(fields, user_rows):
    native, _ = native_path(one_span(**fields), (1024, 65536), user_rows)
    assert native is None


def test_the_id_sequence_continues_across_paths():
    ids_ = request_ids(RECEIVED_NS, SEED)
    first = map_traces_native(one_span(), RECEIVED_NS, ids_, Mapper(native=True))
    assert first is not None and ids_.counter == 1
    assert ids_() == uuid.UUID(bytes=ids_.head + (2).to_bytes(4, "big"))


def test_recent_errors_are_the_newest_error_log_size():
    errors = [Span(trace_id=b"\x01" * 16, span_id=bytes([0, 0, 0, 0, 0, 0, 0, i + 1]), name=f"e{i}",
                   status=Status(code=2, message=f"m{i}"), start_time_unix_nano=i + 1) for i in range(30)]  # fmt: skip
    raw = request_of([(resource({"service.name": "s"}), "", [(None, errors)])])
    for size in (0, 5, 20, 40):
        native, _ = native_path(raw, (1024, 65536), recent=size)
        assert native is not None and isinstance(native.decoded, TraceSummary)
        assert agents(native.decoded, size) == agents(ExportTraceServiceRequest.FromString(raw), size)


def _mutations(raw: bytes, rng: random.Random, n: int):
    for _ in range(n):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            what = rng.random()
            at = rng.randrange(len(b)) if b else 0
            if what < 0.5 and b:
                b[at] = rng.randrange(256)
            elif what < 0.7 and b:
                del b[at : at + rng.randint(1, 8)]
            elif what < 0.85:
                b[at:at] = rng.randbytes(rng.randint(1, 8))
            else:
                b = b[: rng.randrange(len(b) + 1)]
        yield bytes(b)


def test_mutated_wire_bytes_are_either_left_to_python_or_mapped_the_same():
    """Differential fuzzing against protobuf: bytes protobuf refuses are never encoded, and bytes
    it accepts are encoded as the Python path maps them (or left to it)."""
    rng = random.Random(20261204)
    seeds = [
        one_span(attributes=kvs({"a": [1, "x", {"b": 2.5}], "enduser.id": "u", "url.path": "/p"}),
                 events=[Span.Event(name="e", time_unix_nano=7, attributes=kvs({"k": b"\x00\x01"}))],
                 links=[Span.Link(trace_id=b"\x05" * 16, span_id=b"\x06" * 8, attributes=kvs({"l": True}))],
                 status=Status(code=2, message="boom"), trace_state="t=1", end_time_unix_nano=9),
        request_of([(resource({"service.name": "a", "n": 1}), "u", [
            (InstrumentationScope(name="sc", version="1"),
             [Span(trace_id=b"\x07" * 16, span_id=b"\x08" * 8, name="n")]),
        ])]),
    ]  # fmt: skip
    encoded = 0
    for seed in seeds:
        for raw in _mutations(seed, rng, 1500):
            try:
                ExportTraceServiceRequest.FromString(raw)
            except (DecodeError, RecursionError):
                native, _ = native_path(raw, (1024, 65536))
                assert native is None, raw.hex()
                continue
            native, _ = native_path(raw, (1024, 65536))
            if native is not None:
                encoded += 1
                assert_same(raw)
    assert encoded > 100  # most mutations that protobuf accepts are still encoded natively


# --------------------------------------------------------------------------- logs

KINDS.update({
    "event_type": "text", "severity": "bytea", "severity_number": "int2", "severity_text": "text",
    "observed_time_unix_nano": "int8", "body": "text", "body_value": "jsonb",
})  # fmt: skip


def log_counts(observed: ExportLogsServiceRequest | LogSummary) -> dict:
    store = SeriesStore(max_series_per_metric=10_000, max_series_total=100_000, expiry_seconds=300)
    LogCounts(store).observe(observed, 1.0)
    return {k: v.value for family in store.families.values() for k, v in family.series.items()}


def log_agents(observed: ExportLogsServiceRequest | LogSummary, error_log_size: int = 20) -> list[tuple]:
    tracker = AgentTracker(error_log_size=error_log_size, clock=lambda: 1000.0)
    tracker.observe(LOGS, observed, now=1000.0)
    return tracker.pending(1000.0)


def assert_same_logs(raw: bytes, lims: tuple[int, int] = (1024, 65536), user_rows: int = 1) -> Mapped:
    py_mapper = Mapper(*lims, native=False)
    request = ExportLogsServiceRequest.FromString(raw)
    py = map_logs(request, RECEIVED_NS, new_id=request_ids(RECEIVED_NS, SEED), raw=raw, mapper=py_mapper)
    native_mapper = Mapper(*lims, native=True)
    native_mapper.user_rows = user_rows
    native = map_logs_native(raw, RECEIVED_NS, request_ids(RECEIVED_NS, SEED), native_mapper)
    assert native is not None, "the native encoder stepped aside"
    assert decoded(native.rows[OTEL_LOGS], OTEL_LOGS_COLUMNS) == normalised(py.rows[OTEL_LOGS], OTEL_LOGS_COLUMNS)
    records = py.rows[OTEL_LOGS]
    assert isinstance(records, list)
    users = user_analytics_rows([(OTEL_LOGS, r) for r in records], truncated=py_mapper.truncated) if user_rows else []
    assert decoded(native.rows.get(USER_ANALYTICS), USER_ANALYTICS_COLUMNS) == normalised(users, USER_ANALYTICS_COLUMNS)
    encoded = native.rows[OTEL_LOGS]
    assert isinstance(encoded, CopyRows)
    assert encoded.event_types == {(r[8], r[3]) for r in records}  # (event_type, service): the lookup table's
    assert native.rows["otel_scopes"] == py.rows["otel_scopes"]
    assert (native.resources, native.items, native.rejected, native.message, native.reasons) == (
        py.resources, py.items, py.rejected, py.message, py.reasons
    )  # fmt: skip
    assert native_mapper.truncated == py_mapper.truncated
    assert isinstance(native.decoded, LogSummary)
    assert log_counts(native.decoded) == log_counts(request)
    assert log_agents(native.decoded) == log_agents(request)
    return native


ascii_severity = st.one_of(
    st.sampled_from(["", "INFO", "Warning2", " error ", "FATAL", "crit\x1c", "debug9", "x", "ERR", "notice"]),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=8),
)
log_attrs = st.dictionaries(
    st.sampled_from(["event.name", "enduser.id", "user.id", "url.path", "session.id", "k"]), user_values, max_size=4
).map(kvs)
log_records = st.builds(
    LogRecord, time_unix_nano=st.one_of(u64, st.just(0)), observed_time_unix_nano=st.one_of(u64, st.just(0)),
    severity_number=st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 30)), severity_text=ascii_severity,
    body=tree.map(anyv), attributes=st.one_of(attrs, log_attrs), flags=u32, trace_id=ids, span_id=ids,
    dropped_attributes_count=u32, event_name=st.one_of(texts, st.just(""), st.text(min_size=1100, max_size=1200)),
)  # fmt: skip
log_structures = st.lists(
    st.tuples(res, st.sampled_from(["", "https://s/1"]), st.lists(st.tuples(scopes, st.lists(log_records, max_size=4)),
                                                                    max_size=3)),
    max_size=3,
)  # fmt: skip


def logs_of(structure: list) -> bytes:
    return ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(resource=r, schema_url=url, scope_logs=[
            ScopeLogs(scope=scope, log_records=recs) if scope is not None else ScopeLogs(log_records=recs)
            for scope, recs in scopes_
        ])
        for r, url, scopes_ in structure
    ]).SerializeToString()  # fmt: skip


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(log_structures, small_limits)
def test_native_log_rows_equal_the_python_paths(structure, lims):
    assert_same_logs(logs_of(structure), lims)


def one_log(**fields) -> bytes:
    record = LogRecord(time_unix_nano=5, **fields)
    return logs_of([(resource({"service.name": "s"}), "", [(None, [record])])])


@pytest.mark.parametrize(
    ("fields", "user_rows"),
    [
        ({"severity_text": "ÉRROR"}, 1),  # str.strip() and str.lower() follow Unicode: Python decides
        ({"attributes": kvs({"user.id": "u"})}, 2),  # user ids hashed (HMAC) in the Python path
    ],
    ids=["unicode-severity", "hashed-user"],
)
def test_what_only_the_python_path_maps_steps_aside_logs(fields, user_rows):
    mapper = Mapper(native=True)
    mapper.user_rows = user_rows
    assert map_logs_native(one_log(**fields), RECEIVED_NS, request_ids(RECEIVED_NS, SEED), mapper) is None


def test_mutated_log_bytes_are_either_left_to_python_or_mapped_the_same():
    rng = random.Random(4)
    seed = logs_of([(resource({"service.name": "a"}), "u", [(InstrumentationScope(name="sc"), [
        LogRecord(time_unix_nano=7, severity_number=17, severity_text="ERROR", body=anyv({"a": [1, 2.5, "x"]}),
                  attributes=kvs({"event.name": "e", "enduser.id": "u", "b": b"\x00"}), trace_id=b"\x01" * 16,
                  span_id=b"\x02" * 8, event_name="ev", flags=1, observed_time_unix_nano=9),
        LogRecord(observed_time_unix_nano=3, severity_text="warn", body=anyv("text\x00body")),
    ])])])  # fmt: skip
    encoded = 0
    for raw in _mutations(seed, rng, 3000):
        try:
            ExportLogsServiceRequest.FromString(raw)
        except (DecodeError, RecursionError):
            mapper = Mapper(native=True)
            mapper.user_rows = 1
            assert map_logs_native(raw, RECEIVED_NS, request_ids(RECEIVED_NS, SEED), mapper) is None, raw.hex()
            continue
        mapper = Mapper(native=True)
        mapper.user_rows = 1
        if map_logs_native(raw, RECEIVED_NS, request_ids(RECEIVED_NS, SEED), mapper) is not None:
            encoded += 1
            assert_same_logs(raw)
    assert encoded > 100


@pytest.mark.parametrize("value", [b"\x00", b"", float("nan"), float("-inf"), 5, "x", True])
def test_an_event_name_attribute_of_any_type_gives_the_python_paths_event_type(value):
    """Bytes and non-finite doubles are strings in the attributes (base64, "NaN"), so the Python
    path takes them as the event name; the encoder leaves those to it and maps the rest itself."""
    raw = logs_of([(resource({}), "", [(None, [LogRecord(attributes=kvs({"event.name": value}), event_name="f")])])])
    mapper = Mapper(native=True)
    mapper.user_rows = 1
    if map_logs_native(raw, RECEIVED_NS, request_ids(RECEIVED_NS, SEED), mapper) is not None:
        assert_same_logs(raw)
