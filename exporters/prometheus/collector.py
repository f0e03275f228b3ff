"""prometheus_client collectors: families built from an aggregator snapshot on every scrape.

No awaits, no I/O, no SQL: collect() reads an immutable snapshot. Samples are appended directly
because series in one family carry different label sets (attributes differ per point), which the
`*MetricFamily.add_metric(label_values)` API can't express; the family classes still provide the
type and the text/OpenMetrics name munging. Pitfalls of prometheus_client handled here:
- CounterMetricFamily appends `_total`: families are named without it (the snapshot already is).
- `unit=` appends the unit unless the name ends with it: the snapshot only carries a unit when it does.
- OpenMetrics allows `_count` only together with `_sum`, and no `_sum` when a bound is negative or the
  sum is unknown: such histograms keep their count in the `+Inf` bucket only (as
  HistogramMetricFamily.add_metric does). `_count` always equals the `+Inf` bucket.
- SummaryMetricFamily has no quantiles: `quantile` samples are written by hand.
- No `created=`: the Python client would write `_created` as extra gauge families in text 0.0.4.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import accumulate

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporters.prometheus import exp_histogram
from exporters.prometheus.aggregator import PrometheusAggregator
from exporters.prometheus.series import ExpHist, FamilyView, Hist, Quantiles, Reason


@lru_cache(maxsize=1024)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """`le` label values, Go-formatted like every Prometheus client (`1.0`, `0.005`, `1e+06`, `+Inf`)."""
    return (*(floatToGoString(b) for b in bounds), "+Inf")


def _counter(view: FamilyView) -> Metric:
    family = CounterMetricFamily(view.name, view.help, unit=view.unit)
    name = family.name + "_total"
    family.samples = [Sample(name, r.labels, r.value) for r in view.records]  # type: ignore[union-attr]
    return family


def _gauge(view: FamilyView) -> Metric:
    family = GaugeMetricFamily(view.name, view.help, unit=view.unit)
    name = family.name
    family.samples = [Sample(name, r.labels, r.value) for r in view.records]  # type: ignore[union-attr]
    return family


def _histogram(view: FamilyView) -> Metric:
    family = HistogramMetricFamily(view.name, view.help, unit=view.unit)
    bucket, count, sum_ = family.name + "_bucket", family.name + "_count", family.name + "_sum"
    samples = family.samples
    for record in view.records:
        if type(record) is ExpHist:
            bounds_list, cumulative = exp_histogram.to_buckets(
                record.scale, record.zero_threshold, record.zero_count, record.positive, record.negative
            )
            bounds = tuple(bounds_list)
        else:
            assert type(record) is Hist
            bounds, cumulative = record.bounds, list(accumulate(record.counts))
        labels = record.labels
        for le, value in zip(_le_values(bounds), cumulative, strict=True):
            samples.append(Sample(bucket, {**labels, "le": le}, value))
        # OpenMetrics: no sum with negative thresholds, and `_count` if and only if `_sum`; the +Inf
        # bucket still carries the count.
        if record.sum is not None and not (bounds and bounds[0] < 0):
            samples.append(Sample(count, labels, cumulative[-1]))
            samples.append(Sample(sum_, labels, record.sum))
    return family


def _summary(view: FamilyView) -> Metric:
    family = SummaryMetricFamily(view.name, view.help, unit=view.unit)
    name, count, sum_ = family.name, family.name + "_count", family.name + "_sum"
    samples = family.samples
    for record in view.records:
        assert type(record) is Quantiles
        labels = record.labels
        for quantile, value in record.quantiles:
            samples.append(Sample(name, {**labels, "quantile": floatToGoString(quantile)}, value))
        samples.append(Sample(count, labels, record.count))
        samples.append(Sample(sum_, labels, record.sum))
    return family


def _info(view: FamilyView) -> Metric:
    family = InfoMetricFamily(view.name, view.help)  # `target` → `target_info`, a gauge in text 0.0.4
    name = family.name + "_info"
    family.samples = [Sample(name, r.labels, 1.0) for r in view.records]
    return family


_BUILDERS = {
    "counter": _counter,
    "gauge": _gauge,
    "histogram": _histogram,
    "summary": _summary,
    "info": _info,
}


def build_families(views: Iterable[FamilyView]) -> Iterator[Metric]:
    for view in views:
        yield _BUILDERS[view.kind](view)


class AggregatorCollector:
    """The translated OTLP metrics, span metrics, log counts and target_info."""

    def __init__(self, aggregator: PrometheusAggregator) -> None:
        self._aggregator = aggregator

    def describe(self) -> list[Metric]:
        # Families are dynamic: report none, so registering never runs collect().
        return []

    def collect(self) -> Iterator[Metric]:
        return build_families(self._aggregator.snapshot().families)


class AggregatorSelfCollector:
    """The aggregator's own counts: `otelpg_prometheus_active_series`, `otelpg_prometheus_families`,
    `otelpg_prometheus_dropped_points_total{reason}` (every reason, 0 included)."""

    def __init__(self, aggregator: PrometheusAggregator) -> None:
        self._aggregator = aggregator

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self._aggregator.stats()
        yield GaugeMetricFamily(
            "otelpg_prometheus_active_series", "Series held for the Prometheus endpoint", stats.active_series
        )
        yield GaugeMetricFamily(
            "otelpg_prometheus_families", "Metric families with at least one series", stats.families
        )
        dropped = CounterMetricFamily(
            "otelpg_prometheus_dropped_points",
            "Points not exposed as their own series, by reason (overflow: folded into the overflow series)",
            labels=["reason"],
        )
        for reason in Reason:
            dropped.add_metric([reason.value], stats.dropped.get(reason.value, 0))
        yield dropped


def register(
    registry: CollectorRegistry, aggregator: PrometheusAggregator
) -> tuple[AggregatorCollector, AggregatorSelfCollector]:
    """Register both collectors on an injected registry (never the global REGISTRY)."""
    collectors = AggregatorCollector(aggregator), AggregatorSelfCollector(aggregator)
    for collector in collectors:
        registry.register(collector)
    return collectors
