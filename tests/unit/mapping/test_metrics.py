from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

from exporters.postgres.mapping import Mapped, map_metrics
from exporters.postgres.mapping.common import Mapper
from exporters.postgres.mapping.metrics import exp_bucket_bound, exp_histogram_buckets
from exporters.postgres.schema import PERFORMANCE_METRICS, PERFORMANCE_METRICS_COLUMNS

from .builders import RECEIVED_NS, T0, Ids, kvs, loads, resource

START = T0 - 60_000_000_000
TS = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
START_TS = datetime(2023, 11, 14, 22, 12, 20, tzinfo=UTC)
RES = {"service.name": "billing"}
DELTA, CUMULATIVE = 1, 2


def request(*metrics, scope=None, res=None, schema_url="") -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
        resource=res if res is not None else resource(RES),
        scope_metrics=[m.ScopeMetrics(scope=scope, metrics=list(metrics), schema_url=schema_url)],
    )])  # fmt: skip


def rows(mapped: Mapped) -> list[dict]:
    return [dict(zip(PERFORMANCE_METRICS_COLUMNS, r, strict=True)) for r in mapped.rows[PERFORMANCE_METRICS]]


def one(metric: m.Metric, **kw) -> dict:
    mapped = map_metrics(request(metric, **kw), RECEIVED_NS, new_id=Ids())
    assert (mapped.rejected, mapped.message) == (0, "")
    [row] = rows(mapped)
    return row


def number(**kw) -> m.NumberDataPoint:
    return m.NumberDataPoint(start_time_unix_nano=START, time_unix_nano=T0, **kw)


RID = Mapper().resource_row(resource(RES), "")[0]
EMPTY = {"count": None, "sum": None, "min": None, "max": None, "bucket_bounds": None, "bucket_counts": None}


def test_gauge_golden():
    row = one(
        m.Metric(name="system.memory.usage", unit="By", description="Memory in use",
                 gauge=m.Gauge(data_points=[
                     number(as_int=3 * 10**9, attributes=kvs({"state": "used", "cpu": 0}))])),
        scope=InstrumentationScope(name="hostmetrics", version="0.9"),
    )  # fmt: skip
    assert row == {
        "id": uuid.UUID(int=1), "metric_name": "system.memory.usage", "value": 3e9, "unit": "By",
        "tags": '{"state":"used","cpu":0}', "timestamp": TS, "service_name": "billing", "resource_id": RID,
        "metric_type": "gauge", "temporality": None, "is_monotonic": None, "start_timestamp": START_TS,
        **EMPTY, "exemplars": None,
        "details": '{"description":"Memory in use","scope":{"name":"hostmetrics","version":"0.9"}}',
    }  # fmt: skip
    assert type(row["value"]) is float


@pytest.mark.parametrize(("temporality", "expected"), [(DELTA, "delta"), (CUMULATIVE, "cumulative"), (0, None)])
@pytest.mark.parametrize("monotonic", [True, False])
def test_sum_temporalities(temporality, expected, monotonic):
    row = one(m.Metric(name="http.server.requests", unit="{request}", sum=m.Sum(
        aggregation_temporality=temporality, is_monotonic=monotonic,
        data_points=[number(as_double=12.5)])))  # fmt: skip
    assert row["metric_type"] == "sum"
    assert row["temporality"] == expected
    assert row["is_monotonic"] is monotonic
    assert row["value"] == 12.5
    assert row["details"] is None  # no description, scope or flags
    assert row["tags"] == "{}"


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ({"as_int": 0}, 0.0),
        ({"as_double": 0.0}, 0.0),
        ({"as_double": -0.0}, -0.0),
        ({"as_int": -(2**63)}, float(-(2**63))),
        ({"as_int": 2**53 + 1}, float(2**53 + 1)),
        ({"as_double": 1e300}, 1e300),
        ({}, None),
    ],
)
def test_number_values(point, expected):
    row = one(m.Metric(name="g", gauge=m.Gauge(data_points=[number(**point)])))
    assert row["value"] == expected
    if expected is not None:
        assert type(row["value"]) is float
        assert math.copysign(1, row["value"]) == math.copysign(1, expected)


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_stored_as_floats(x):
    row = one(m.Metric(name="g", gauge=m.Gauge(data_points=[number(as_double=x)])))
    assert row["value"] == x or (math.isnan(x) and math.isnan(row["value"]))


def test_histogram_golden():
    row = one(m.Metric(name="http.server.duration", unit="ms", description="latency", histogram=m.Histogram(
        aggregation_temporality=DELTA,
        data_points=[m.HistogramDataPoint(
            start_time_unix_nano=START, time_unix_nano=T0, attributes=kvs({"route": "/a"}),
            count=10, sum=123.5, min=0.5, max=90.0, explicit_bounds=[1.0, 10.0, 100.0],
            bucket_counts=[1, 4, 5, 0], flags=1,
            exemplars=[m.Exemplar(time_unix_nano=T0 - 5, as_double=42.0, trace_id=bytes(range(16)),
                                  span_id=bytes(range(8)), filtered_attributes=kvs({"user": "u1"})),
                       m.Exemplar(time_unix_nano=T0 - 4, as_int=7)],
        )])))  # fmt: skip
    assert {**row, "exemplars": loads(row["exemplars"]), "details": loads(row["details"])} == {
        "id": uuid.UUID(int=1), "metric_name": "http.server.duration", "value": 123.5, "unit": "ms",
        "tags": '{"route":"/a"}', "timestamp": TS, "service_name": "billing", "resource_id": RID,
        "metric_type": "histogram", "temporality": "delta", "is_monotonic": None, "start_timestamp": START_TS,
        "count": 10, "sum": 123.5, "min": 0.5, "max": 90.0,
        "bucket_bounds": [1.0, 10.0, 100.0], "bucket_counts": [1, 4, 5, 0],
        "exemplars": [
            {"time_unix_nano": T0 - 5, "value": 42.0, "trace_id": "000102030405060708090a0b0c0d0e0f",
             "span_id": "0001020304050607", "filtered_attributes": {"user": "u1"}},
            {"time_unix_nano": T0 - 4, "value": 7},
        ],
        "details": {"description": "latency", "flags": 1},
    }  # fmt: skip


def test_histogram_without_sum_min_max_or_buckets():
    row = one(m.Metric(name="h", histogram=m.Histogram(aggregation_temporality=CUMULATIVE, data_points=[
        m.HistogramDataPoint(time_unix_nano=T0, count=3)])))  # fmt: skip
    assert row["value"] is None
    assert (row["count"], row["sum"], row["min"], row["max"]) == (3, None, None, None)
    assert row["bucket_bounds"] is None and row["bucket_counts"] is None
    assert row["start_timestamp"] is None


def test_histogram_sum_zero_is_kept_and_single_bucket_has_no_bounds():
    row = one(m.Metric(name="h", histogram=m.Histogram(data_points=[
        m.HistogramDataPoint(time_unix_nano=T0, count=2, sum=0.0, bucket_counts=[2])])))  # fmt: skip
    assert row["value"] == 0.0 and row["sum"] == 0.0
    assert row["bucket_bounds"] == [] and row["bucket_counts"] == [2]
    assert row["temporality"] is None


def test_uint64_counts_beyond_bigint_are_clamped():
    big = 2**64 - 1
    row = one(
        m.Metric(
            name="h",
            histogram=m.Histogram(
                data_points=[
                    m.HistogramDataPoint(time_unix_nano=T0, count=big, explicit_bounds=[1.0], bucket_counts=[big, 1])
                ]
            ),
        )
    )
    assert row["count"] == 2**63 - 1
    assert row["bucket_counts"] == [2**63 - 1, 1]


def test_histogram_with_mismatched_buckets_is_rejected():
    mapped = map_metrics(request(
        m.Metric(name="h", histogram=m.Histogram(data_points=[
            m.HistogramDataPoint(count=2, explicit_bounds=[1.0, 2.0], bucket_counts=[1, 1]),
            m.HistogramDataPoint(count=2, explicit_bounds=[], bucket_counts=[1, 1]),
            m.HistogramDataPoint(count=2, explicit_bounds=[1.0], bucket_counts=[1, 1]),
        ])),
        m.Metric(gauge=m.Gauge(data_points=[number(as_int=1)])),
    ), RECEIVED_NS)  # fmt: skip
    assert (mapped.items, mapped.rejected) == (4, 3)
    assert mapped.message == (
        "3 data points rejected: metric without a name (1), "
        "histogram bucket_counts must have len(explicit_bounds) + 1 entries (2)"
    )
    [row] = rows(mapped)
    assert row["bucket_bounds"] == [1.0] and row["bucket_counts"] == [1, 1]


def test_summary_golden():
    row = one(m.Metric(name="rpc.duration", unit="s", summary=m.Summary(data_points=[m.SummaryDataPoint(
        start_time_unix_nano=START, time_unix_nano=T0, count=100, sum=25.5, attributes=kvs({"m": "get"}),
        quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.2),
                         m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=math.nan),
                         m.SummaryDataPoint.ValueAtQuantile(quantile=1.0, value=1.5)])])))  # fmt: skip
    assert {**row, "details": loads(row["details"])} == {
        "id": uuid.UUID(int=1), "metric_name": "rpc.duration", "value": 25.5, "unit": "s",
        "tags": '{"m":"get"}', "timestamp": TS, "service_name": "billing", "resource_id": RID,
        "metric_type": "summary", "temporality": None, "is_monotonic": None, "start_timestamp": START_TS,
        "count": 100, "sum": 25.5, "min": None, "max": None, "bucket_bounds": None, "bucket_counts": None,
        "exemplars": None,
        "details": {"quantiles": [{"quantile": 0.5, "value": 0.2}, {"quantile": 0.99, "value": "NaN"},
                                  {"quantile": 1.0, "value": 1.5}]},
    }  # fmt: skip


def quantile(q: float, bounds: list[float], counts: list[int]) -> float | None:
    """Python port of otelpg_histogram_quantile() in migrations/0001_init.sql."""
    total = sum(counts)
    if not counts or total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, c in enumerate(counts):
        if cumulative + c >= rank and c > 0:
            if i >= len(bounds):
                return bounds[i - 1]
            upper = bounds[i]
            lower = min(0.0, upper) if i == 0 else bounds[i - 1]
            return lower + (upper - lower) * ((rank - cumulative) / c)
        cumulative += c
    return bounds[-1]


def test_exponential_histogram_golden():
    # scale 1: base = sqrt(2). positive offset 2 → buckets (2, 2.83], (2.83, 4]; negative offset 0 → (1, 1.41]
    row = one(m.Metric(name="latency", unit="s", exponential_histogram=m.ExponentialHistogram(
        aggregation_temporality=CUMULATIVE,
        data_points=[m.ExponentialHistogramDataPoint(
            start_time_unix_nano=START, time_unix_nano=T0, count=10, sum=20.0, min=-1.3, max=3.9, scale=1,
            zero_count=2, zero_threshold=0.001,
            positive=m.ExponentialHistogramDataPoint.Buckets(offset=2, bucket_counts=[3, 4]),
            negative=m.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[1]),
            exemplars=[m.Exemplar(time_unix_nano=T0, as_double=3.5)],
        )])))  # fmt: skip
    r2 = math.sqrt(2)
    assert row["metric_type"] == "exponential_histogram"
    assert row["temporality"] == "cumulative"
    assert (row["value"], row["count"], row["sum"], row["min"], row["max"]) == (20.0, 10, 20.0, -1.3, 3.9)
    assert row["bucket_bounds"] == pytest.approx([-r2, -1.0, -0.001, 0.001, 2.0, 2 * r2, 4.0])
    assert row["bucket_counts"] == [0, 1, 0, 2, 0, 3, 4, 0]
    assert len(row["bucket_counts"]) == len(row["bucket_bounds"]) + 1
    assert sum(row["bucket_counts"]) == 10
    assert loads(row["exemplars"]) == [{"time_unix_nano": T0, "value": 3.5}]
    assert loads(row["details"]) == {
        "scale": 1, "zero_count": 2, "zero_threshold": 0.001,
        "positive": {"offset": 2, "bucket_counts": [3, 4]},
        "negative": {"offset": 0, "bucket_counts": [1]},
    }  # fmt: skip
    assert quantile(0.5, row["bucket_bounds"], row["bucket_counts"]) == pytest.approx(2 + (2 * r2 - 2) * 2 / 3)
    assert quantile(1.0, row["bucket_bounds"], row["bucket_counts"]) == pytest.approx(4.0)


def test_exponential_histogram_positive_only_quantiles_stay_inside_buckets():
    # scale 0 (base 2), buckets 3..5 → (8,16], (16,32], (32,64]
    bounds, counts = exp_histogram_buckets(0, 0, 0.0, 3, [10, 10, 10], 0, [])
    assert bounds == [0.0, 8.0, 16.0, 32.0, 64.0]
    assert counts == [0, 0, 10, 10, 10, 0]
    assert quantile(0.5, bounds, counts) == pytest.approx(24.0)
    assert quantile(0.01, bounds, counts) > 8.0


@pytest.mark.parametrize("scale", [-10, -3, 0, 1, 5, 20])
def test_exponential_bucket_bounds_match_the_definition(scale):
    for index in (-5, -1, 0, 1, 7):
        exponent = index * 2.0**-scale  # base**index == 2**(index * 2**-scale)
        expected = math.inf if exponent >= 1024 else 2.0**exponent
        assert exp_bucket_bound(scale, index) == pytest.approx(expected, rel=1e-12)


def test_exponential_histogram_extremes_never_raise():
    assert exp_bucket_bound(-10, 2**31) == math.inf
    assert exp_bucket_bound(-10, -(2**31)) == 0.0
    assert exp_bucket_bound(20, 2**31 - 1) == math.inf  # 2**2048
    assert exp_bucket_bound(20, 2**20 * 100) == 2.0**100
    bounds, counts = exp_histogram_buckets(-10, 1, 0.0, 2**31 - 3, [1, 1], -(2**31), [1])
    assert len(counts) == len(bounds) + 1
    # out of the data model's scale range: no derived buckets, layout still in details
    assert exp_histogram_buckets(21, 0, 0.0, 0, [1], 0, []) == (None, None)
    row = one(
        m.Metric(
            name="e",
            exponential_histogram=m.ExponentialHistogram(
                data_points=[
                    m.ExponentialHistogramDataPoint(
                        time_unix_nano=T0,
                        count=1,
                        scale=-11,
                        positive=m.ExponentialHistogramDataPoint.Buckets(bucket_counts=[1]),
                    )
                ]
            ),
        )
    )
    assert row["bucket_bounds"] is None and row["bucket_counts"] is None
    assert loads(row["details"])["scale"] == -11
    assert row["value"] is None  # no sum


def test_exponential_histogram_empty():
    row = one(
        m.Metric(
            name="e",
            exponential_histogram=m.ExponentialHistogram(
                aggregation_temporality=DELTA,
                data_points=[m.ExponentialHistogramDataPoint(time_unix_nano=T0)],
            ),
        )
    )
    assert row["bucket_bounds"] == [0.0]
    assert row["bucket_counts"] == [0, 0]
    assert (row["count"], row["sum"]) == (0, None)


def test_details_carry_scope_schema_url_flags_and_metadata():
    metric = m.Metric(
        name="g", description="d", gauge=m.Gauge(data_points=[number(as_int=1, flags=1), number(as_int=2)])
    )
    if "metadata" in m.Metric.DESCRIPTOR.fields_by_name:
        metric.metadata.extend(kvs({"prometheus.type": "unknown"}))
    mapped = map_metrics(request(metric, scope=InstrumentationScope(name="s", attributes=kvs({"a": 1})),
                                 schema_url="https://x/1.0"), RECEIVED_NS)  # fmt: skip
    a, b = rows(mapped)
    expected = {
        "description": "d",
        "scope": {"name": "s", "attributes": {"a": 1}},
        "schema_url": "https://x/1.0",
    }
    if "metadata" in m.Metric.DESCRIPTOR.fields_by_name:
        expected["metadata"] = {"prometheus.type": "unknown"}
    assert loads(a["details"]) == {**expected, "flags": 1}
    assert loads(b["details"]) == expected


def test_unit_empty_is_none():
    assert one(m.Metric(name="g", unit="", gauge=m.Gauge(data_points=[number(as_int=1)])))["unit"] is None


def test_timestamps_zero_and_huge():
    row = one(m.Metric(name="g", gauge=m.Gauge(data_points=[m.NumberDataPoint(as_int=1)])))
    assert row["timestamp"] == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert row["start_timestamp"] is None
    row = one(
        m.Metric(
            name="g",
            gauge=m.Gauge(
                data_points=[m.NumberDataPoint(as_int=1, time_unix_nano=2**64 - 1, start_time_unix_nano=2**64 - 1)]
            ),
        )
    )
    assert row["timestamp"].year == 2554 == row["start_timestamp"].year


def test_metric_without_data_counts_nothing():
    mapped = map_metrics(request(m.Metric(name="nothing"), m.Metric()), RECEIVED_NS)
    assert mapped == Mapped({PERFORMANCE_METRICS: []}, {}, 0, 0, "")


def test_points_of_a_metric_without_a_name_are_rejected():
    mapped = map_metrics(request(
        m.Metric(gauge=m.Gauge(data_points=[number(as_int=1), number(as_int=2)])),
        m.Metric(histogram=m.Histogram(data_points=[m.HistogramDataPoint(count=1)])),
        m.Metric(name="ok", sum=m.Sum(data_points=[number(as_int=3)])),
    ), RECEIVED_NS)  # fmt: skip
    assert (mapped.items, mapped.rejected) == (4, 3)
    assert mapped.message == "3 data points rejected: metric without a name"
    [row] = rows(mapped)
    assert row["metric_name"] == "ok"
    assert len(mapped.resources) == 1


def test_nul_bytes_in_names_units_tags_and_details():
    row = one(
        m.Metric(
            name="a\x00b",
            unit="m\x00s",
            description="d\x00",
            gauge=m.Gauge(data_points=[number(as_int=1, attributes=kvs({"k\x00": "v\x00"}))]),
        ),
        res=resource({"service.name": "s\x00"}),
    )
    for col, value in row.items():
        assert "\x00" not in str(value) and "\\u0000" not in str(value), col
    assert (row["metric_name"], row["unit"], row["service_name"]) == ("a\ufffdb", "m\ufffds", "s\ufffd")
    assert loads(row["tags"]) == {"k\ufffd": "v\ufffd"}


def test_every_type_in_one_request_and_distinct_ids():
    metrics = [
        m.Metric(name="g", gauge=m.Gauge(data_points=[number(as_int=i) for i in range(50)])),
        m.Metric(name="s", sum=m.Sum(aggregation_temporality=DELTA,
                                     data_points=[number(as_double=1.0)] * 50)),
        m.Metric(name="h", histogram=m.Histogram(data_points=[m.HistogramDataPoint(count=1)] * 50)),
        m.Metric(name="e", exponential_histogram=m.ExponentialHistogram(
            data_points=[m.ExponentialHistogramDataPoint(count=1)] * 50)),
        m.Metric(name="q", summary=m.Summary(data_points=[m.SummaryDataPoint(count=1)] * 50)),
    ]  # fmt: skip
    mapped = map_metrics(request(*metrics), RECEIVED_NS)
    assert mapped.items == 250
    got = rows(mapped)
    assert [r["metric_type"] for r in got[::50]] == ["gauge", "sum", "histogram", "exponential_histogram",
                                                     "summary"]  # fmt: skip
    assert len({r["id"] for r in got}) == 250
