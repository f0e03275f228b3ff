"""Property tests: whatever a client sends, mapping never raises and every value is one
PostgreSQL accepts (no NUL in TEXT, JSONB without \\u0000, aware datetimes, int64 in BIGINT)."""

from __future__ import annotations

from datetime import datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from exporters.postgres.mapping import map_logs, map_metrics, map_traces
from exporters.postgres.schema import (
    OTEL_LOGS,
    OTEL_LOGS_COLUMNS,
    OTEL_SPAN_EVENTS,
    OTEL_SPAN_EVENTS_COLUMNS,
    OTEL_SPANS,
    OTEL_SPANS_COLUMNS,
    PERFORMANCE_METRICS_COLUMNS,
)
from tests.system_events_view import system_events_rows

from .builders import RECEIVED_NS, anyv, kvs, resource

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
texts = st.text(max_size=12)
ids = st.one_of(st.binary(max_size=17), st.sampled_from([bytes(16), bytes(8), b"\x01" * 16, b"\x01" * 8]))
leaf = st.one_of(st.none(), st.booleans(), i64, st.floats(), texts, st.binary(max_size=6))
tree = st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(texts, c, max_size=3)),
                    max_leaves=8)  # fmt: skip
attrs = st.dictionaries(texts, tree, max_size=4).map(kvs)
res = st.dictionaries(st.sampled_from(["service.name", "host.name", "x"]), tree, max_size=3).map(resource)

JSON_COLUMNS = {"payload", "metadata", "tags", "exemplars", "details", "attributes", "extra", "body_value"}
BIGINT_COLUMNS = {"count", "resource_id", "scope_id", "duration_ns", "observed_time_unix_nano"}
SMALLINT_COLUMNS = {"kind", "status_code", "severity_number", "nanos"}
INTEGER_COLUMNS = {"flags"}


def check(rows: list[tuple], columns: tuple[str, ...]) -> None:
    for row in rows:
        assert len(row) == len(columns)
        for col, value in zip(columns, row, strict=True):
            if col in JSON_COLUMNS and value is not None:
                assert "\\u0000" not in value, col
                orjson.loads(value)
            elif isinstance(value, str):
                assert "\x00" not in value, col
            elif col in ("timestamp", "start_timestamp") and value is not None:
                assert isinstance(value, datetime) and value.tzinfo is not None
            elif col in BIGINT_COLUMNS and value is not None:
                assert -(2**63) <= value < 2**63
            elif col in SMALLINT_COLUMNS:
                assert -(2**15) <= value < 2**15, col
            elif col in INTEGER_COLUMNS and value is not None:
                assert -(2**31) <= value < 2**31, col
            elif col == "bucket_counts" and value is not None:
                assert all(0 <= c < 2**63 for c in value)


spans = st.builds(
    Span, trace_id=ids, span_id=ids, parent_span_id=ids, name=texts, kind=st.integers(-(2**31), 2**31 - 1),
    start_time_unix_nano=u64, end_time_unix_nano=u64, attributes=attrs, trace_state=texts, flags=u32,
    status=st.builds(Status, code=st.integers(-(2**31), 2**31 - 1), message=texts),
    events=st.lists(st.builds(Span.Event, time_unix_nano=u64, name=texts, attributes=attrs), max_size=2),
    links=st.lists(st.builds(Span.Link, trace_id=ids, span_id=ids, attributes=attrs), max_size=2),
)  # fmt: skip


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(res, st.lists(spans, max_size=4))
def test_traces_never_raise(resource_, spans_):
    req = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource_, scope_spans=[ScopeSpans(spans=spans_)])]
    )
    mapped = map_traces(req, RECEIVED_NS)
    check(mapped.rows[OTEL_SPANS], OTEL_SPANS_COLUMNS)
    check(mapped.rows[OTEL_SPAN_EVENTS], OTEL_SPAN_EVENTS_COLUMNS)
    system_events_rows(mapped)  # the view's rows can be built from them
    stored_spans = len(mapped.rows[OTEL_SPANS])
    assert stored_spans + mapped.rejected == mapped.items == len(spans_)


logs = st.builds(
    LogRecord, time_unix_nano=u64, observed_time_unix_nano=u64, severity_number=st.integers(-(2**31), 2**31 - 1),
    severity_text=texts, body=tree.map(anyv), attributes=attrs, flags=u32, trace_id=ids, span_id=ids,
)  # fmt: skip


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(res, st.lists(logs, max_size=4))
def test_logs_never_raise(resource_, records):
    req = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource_, scope_logs=[ScopeLogs(log_records=records)])]
    )
    mapped = map_logs(req, RECEIVED_NS)
    check(mapped.rows[OTEL_LOGS], OTEL_LOGS_COLUMNS)
    system_events_rows(mapped)
    assert len(mapped.rows[OTEL_LOGS]) + mapped.rejected == mapped.items == len(records)


floats = st.floats()
number_points = st.lists(st.one_of(
    st.builds(m.NumberDataPoint, time_unix_nano=u64, start_time_unix_nano=u64, as_double=floats,
              attributes=attrs, flags=u32),
    st.builds(m.NumberDataPoint, time_unix_nano=u64, as_int=i64,
              exemplars=st.lists(st.builds(m.Exemplar, as_double=floats, trace_id=ids), max_size=2)),
), max_size=3)  # fmt: skip
buckets = st.builds(m.ExponentialHistogramDataPoint.Buckets, offset=st.integers(-(2**31), 2**31 - 1),
                    bucket_counts=st.lists(u64, max_size=4))  # fmt: skip
metrics = st.one_of(
    st.builds(m.Metric, name=texts, unit=texts, description=texts,
              gauge=st.builds(m.Gauge, data_points=number_points)),
    st.builds(m.Metric, name=texts, sum=st.builds(m.Sum, data_points=number_points,
                                                  aggregation_temporality=st.integers(0, 3),
                                                  is_monotonic=st.booleans())),
    st.builds(m.Metric, name=texts, histogram=st.builds(m.Histogram, data_points=st.lists(st.builds(
        m.HistogramDataPoint, count=u64, sum=floats, min=floats, max=floats,
        explicit_bounds=st.lists(floats, max_size=3), bucket_counts=st.lists(u64, max_size=4)), max_size=2))),
    st.builds(m.Metric, name=texts, exponential_histogram=st.builds(
        m.ExponentialHistogram, data_points=st.lists(st.builds(
            m.ExponentialHistogramDataPoint, count=u64, sum=floats, scale=st.integers(-12, 22),
            zero_count=u64, zero_threshold=floats, positive=buckets, negative=buckets), max_size=2))),
    st.builds(m.Metric, name=texts, summary=st.builds(m.Summary, data_points=st.lists(st.builds(
        m.SummaryDataPoint, count=u64, sum=floats, quantile_values=st.lists(st.builds(
            m.SummaryDataPoint.ValueAtQuantile, quantile=floats, value=floats), max_size=2)), max_size=2))),
    st.builds(m.Metric, name=texts),
)  # fmt: skip


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(res, st.lists(metrics, max_size=4))
def test_metrics_never_raise(resource_, metrics_):
    req = ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
        resource=resource_, scope_metrics=[m.ScopeMetrics(metrics=metrics_)])])  # fmt: skip
    mapped = map_metrics(req, RECEIVED_NS)
    rows = mapped.rows["performance_metrics"]
    check(rows, PERFORMANCE_METRICS_COLUMNS)
    assert len(rows) + mapped.rejected == mapped.items
    for row in rows:
        bounds, counts = row[16], row[17]
        if counts is not None:
            assert len(counts) == len(bounds) + 1
