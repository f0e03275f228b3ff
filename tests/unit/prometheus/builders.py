"""Build OTLP requests tersely, and scrape an aggregator back into parsed families."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporters.prometheus.aggregator import PrometheusAggregator
from exporters.prometheus.collector import register
from exporters.prometheus.config import PrometheusConfig
from exporters.prometheus.exposition import render

CUMULATIVE = m.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = m.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
UNSPECIFIED = m.AggregationTemporality.AGGREGATION_TEMPORALITY_UNSPECIFIED
SEC = 1_000_000_000  # ns

DEFAULT_RESOURCE = {"service.name": "checkout", "service.namespace": "shop", "service.instance.id": "pod-1"}


def any_value(value: Any) -> AnyValue:
    if isinstance(value, AnyValue):
        return value
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        result = AnyValue()
        result.array_value.values.extend(any_value(v) for v in value)
        return result
    if isinstance(value, dict):
        result = AnyValue()
        result.kvlist_value.values.extend(attrs(value))
        return result
    return AnyValue(string_value=str(value))


def attrs(values: Mapping[str, Any] | None) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in (values or {}).items()]


def number(
    value: float,
    attributes: Mapping[str, Any] | None = None,
    *,
    start: int = 0,
    time: int = 0,
    flags: int = 0,
) -> m.NumberDataPoint:
    point = m.NumberDataPoint(
        attributes=attrs(attributes), start_time_unix_nano=start, time_unix_nano=time, flags=flags
    )
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return point


def gauge(name: str, points: Iterable[m.NumberDataPoint], unit: str = "", description: str = "") -> m.Metric:
    return m.Metric(name=name, unit=unit, description=description, gauge=m.Gauge(data_points=list(points)))


def sum_(
    name: str,
    points: Iterable[m.NumberDataPoint],
    *,
    monotonic: bool = True,
    temporality: int = CUMULATIVE,
    unit: str = "",
    description: str = "",
) -> m.Metric:
    return m.Metric(
        name=name,
        unit=unit,
        description=description,
        sum=m.Sum(data_points=list(points), is_monotonic=monotonic, aggregation_temporality=temporality),
    )


def hist_point(
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    *,
    start: int = 0,
    time: int = 0,
    flags: int = 0,
) -> m.HistogramDataPoint:
    point = m.HistogramDataPoint(
        attributes=attrs(attributes),
        explicit_bounds=list(bounds),
        bucket_counts=list(counts),
        count=sum(counts),
        start_time_unix_nano=start,
        time_unix_nano=time,
        flags=flags,
    )
    if total is not None:
        point.sum = total
    return point


def histogram(
    name: str,
    points: Iterable[m.HistogramDataPoint],
    *,
    temporality: int = CUMULATIVE,
    unit: str = "",
    description: str = "",
) -> m.Metric:
    return m.Metric(
        name=name,
        unit=unit,
        description=description,
        histogram=m.Histogram(data_points=list(points), aggregation_temporality=temporality),
    )


def exp_point(
    scale: int,
    positive: tuple[int, Sequence[int]] = (0, ()),
    negative: tuple[int, Sequence[int]] = (0, ()),
    zero_count: int = 0,
    total: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    *,
    zero_threshold: float = 0.0,
    start: int = 0,
    time: int = 0,
) -> m.ExponentialHistogramDataPoint:
    count = zero_count + sum(positive[1]) + sum(negative[1])
    point = m.ExponentialHistogramDataPoint(
        attributes=attrs(attributes),
        scale=scale,
        zero_count=zero_count,
        count=count,
        zero_threshold=zero_threshold,
        start_time_unix_nano=start,
        time_unix_nano=time,
        positive=m.ExponentialHistogramDataPoint.Buckets(offset=positive[0], bucket_counts=list(positive[1])),
        negative=m.ExponentialHistogramDataPoint.Buckets(offset=negative[0], bucket_counts=list(negative[1])),
    )
    if total is not None:
        point.sum = total
    return point


def exp_histogram(
    name: str,
    points: Iterable[m.ExponentialHistogramDataPoint],
    *,
    temporality: int = CUMULATIVE,
    unit: str = "",
) -> m.Metric:
    return m.Metric(
        name=name,
        unit=unit,
        exponential_histogram=m.ExponentialHistogram(data_points=list(points), aggregation_temporality=temporality),
    )


def summary(
    name: str,
    quantiles: Mapping[float, float],
    count: int,
    total: float,
    attributes: Mapping[str, Any] | None = None,
    *,
    time: int = 0,
    unit: str = "",
) -> m.Metric:
    point = m.SummaryDataPoint(
        attributes=attrs(attributes),
        count=count,
        sum=total,
        time_unix_nano=time,
        quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=q, value=v) for q, v in quantiles.items()],
    )
    return m.Metric(name=name, unit=unit, summary=m.Summary(data_points=[point]))


def metrics_request(
    *metrics: m.Metric,
    resource: Mapping[str, Any] | None = None,
    scope: tuple[str, str] = ("io.shop.lib", "1.2.0"),
    scope_attributes: Mapping[str, Any] | None = None,
    schema_url: str = "",
) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(attrs(DEFAULT_RESOURCE if resource is None else resource))
    sm = rm.scope_metrics.add()
    sm.scope.CopyFrom(InstrumentationScope(name=scope[0], version=scope[1], attributes=attrs(scope_attributes)))
    sm.schema_url = schema_url
    sm.metrics.extend(metrics)
    return request


def span(
    name: str,
    duration_s: float,
    *,
    kind: int = Span.SPAN_KIND_SERVER,
    status: int = Status.STATUS_CODE_UNSET,
    start: int = 1_700_000_000 * SEC,
) -> Span:
    return Span(
        name=name,
        kind=kind,
        status=Status(code=status),
        start_time_unix_nano=start,
        end_time_unix_nano=start + round(duration_s * SEC),
    )


def traces_request(*spans: Span, service: str | None = "checkout") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    if service is not None:
        rs.resource.attributes.extend(attrs({"service.name": service}))
    rs.scope_spans.add().spans.extend(spans)
    return request


def logs_request(*records: tuple[int, str], service: str | None = "checkout") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    if service is not None:
        rl.resource.attributes.extend(attrs({"service.name": service}))
    rl.scope_logs.add().log_records.extend(
        LogRecord(severity_number=number, severity_text=text) for number, text in records
    )
    return request


# --- scraping ---


class FakeClock:
    """A settable clock for PrometheusAggregator(clock=...): expiry tests move time by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_aggregator(**config: Any) -> tuple[PrometheusAggregator, FakeClock]:
    clock = FakeClock()
    return PrometheusAggregator(PrometheusConfig(**config), clock=clock), clock


def registry_for(aggregator: PrometheusAggregator) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    register(registry, aggregator)
    return registry


def scrape_text(aggregator: PrometheusAggregator, accept: str | None = None) -> str:
    body, _ = render(registry_for(aggregator), accept, None)
    return body.decode()


def scrape(aggregator: PrometheusAggregator, *, openmetrics: bool = False) -> dict[str, Metric]:
    """Render, parse back with prometheus_client's own parser, and index families by name."""
    if openmetrics:
        text = scrape_text(aggregator, "application/openmetrics-text; version=1.0.0")
        families = parse_openmetrics(text)
    else:
        families = parse_text(scrape_text(aggregator))
    return {family.name: family for family in families}


def samples(family: Metric, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted label items: value} for the samples called `name` (default: the family's own)."""
    name = name or family.name
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def only_value(family: Metric, name: str | None = None, **labels: str) -> float:
    """The value of the one sample named `name` whose labels include `labels`."""
    name = name or family.name
    found = [s.value for s in family.samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, family.samples)
    return found[0]
