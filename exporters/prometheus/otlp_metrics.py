"""Received OTLP metrics → series, as the Collector's prometheus exporter translates them.

| OTLP | Prometheus |
|---|---|
| Gauge | gauge |
| Sum, monotonic (cumulative, or delta accumulated) | counter (`_total`) |
| Sum, non-monotonic, cumulative | gauge |
| Sum, non-monotonic, delta | dropped (`unsupported_temporality`), or accumulated into a gauge if configured |
| Histogram (delta accumulated) | histogram |
| ExponentialHistogram (delta accumulated) | histogram with fixed buckets (see exp_histogram.py) |
| Summary | summary with `quantile` |
| unspecified temporality | dropped (`unsupported_temporality`) |

Series labels are the point attributes, `otel_scope_*` and `job`/`instance`; other resource attributes
go to `target_info` only (reference §1.7, §2.4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)

from exporters.prometheus import exp_histogram, temporality
from exporters.prometheus.config import AggregatorConfig
from exporters.prometheus.labels import (
    BaseLabels,
    LabelBuilder,
    ResourceIdentity,
    resource_identity,
    target_labels,
)
from exporters.prometheus.naming import InvalidNameError, MetricType, metric_name, unit_word
from exporters.prometheus.series import (
    OVERFLOW_KEY,
    ExpHist,
    Family,
    Hist,
    Info,
    Kind,
    Quantiles,
    Reason,
    Scalar,
    SeriesStore,
)

_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_UNSPECIFIED = AggregationTemporality.AGGREGATION_TEMPORALITY_UNSPECIFIED
_MAX_CACHED_NAMES = 10_000

TARGET_FAMILY = "target"  # rendered `target_info`


class MetricsTranslator:
    def __init__(self, store: SeriesStore, labels: LabelBuilder, config: AggregatorConfig) -> None:
        self._store = store
        self._labels = labels
        self._config = config
        # (OTel name, unit, type) → (family name, unit metadata) or the reason it has none. Bounded:
        # names come from clients.
        self._names: dict[tuple[str, str, MetricType], tuple[str, str] | Reason] = {}
        self._target = store.builtin(TARGET_FAMILY, "info", "Target metadata")

    def observe(self, request: ExportMetricsServiceRequest, now: float) -> None:
        config = self._config
        for rm in request.resource_metrics:
            identity = resource_identity(rm.resource.attributes)
            if config.target_info and (identity.job or identity.instance):
                self._observe_target(identity, now)
            for sm in rm.scope_metrics:
                scope = sm.scope
                base = self._labels.base(
                    identity, scope.name, scope.version, sm.schema_url, scope.attributes,
                    scope_labels=config.scope_labels,
                )
                for metric in sm.metrics:
                    self._observe_metric(metric, base, now)

    def _observe_target(self, identity: ResourceIdentity, now: float) -> None:
        store, family = self._store, self._target
        key = (("instance", identity.instance), ("job", identity.job))
        if store.admit(family, key, additive=False) is key:
            store.put(family, key, Info(target_labels(identity), now))

    def _observe_metric(self, metric: Metric, base: BaseLabels, now: float) -> None:
        which = metric.WhichOneof("data")
        if which is None:
            return
        data: Any = getattr(metric, which)
        points = data.data_points
        delta = False
        kind: Kind
        name_type: MetricType
        if which == "gauge":
            kind, name_type = "gauge", "gauge"
        elif which == "summary":
            kind, name_type = "summary", "summary"
        else:
            if data.aggregation_temporality == _UNSPECIFIED:
                self._store.drop(Reason.UNSUPPORTED_TEMPORALITY, len(points))
                return
            delta = data.aggregation_temporality == _DELTA
            if which == "sum":
                if data.is_monotonic:
                    kind, name_type = "counter", "monotonic_counter"
                elif delta and self._config.non_monotonic_delta == "drop":
                    self._store.drop(Reason.UNSUPPORTED_TEMPORALITY, len(points))
                    return
                else:
                    kind, name_type = "gauge", "non_monotonic_counter"
            else:
                kind, name_type = "histogram", which
        family = self._family(metric, name_type, kind)
        if type(family) is Reason:
            self._store.drop(family, len(points))
        elif kind == "histogram":
            if which == "histogram":
                self._histograms(family, points, base, delta, now)  # type: ignore[arg-type]
            else:
                self._exponentials(family, points, base, delta, now)  # type: ignore[arg-type]
        elif kind == "summary":
            self._summaries(family, points, base, now)  # type: ignore[arg-type]
        else:
            self._numbers(family, points, base, delta, now)  # type: ignore[arg-type]

    def _family(self, metric: Metric, name_type: MetricType, kind: Kind) -> Family | Reason:
        cache_key = (metric.name, metric.unit, name_type)
        named = self._names.get(cache_key)
        if named is None:
            named = self._name(metric.name, metric.unit, name_type)
            if len(self._names) >= _MAX_CACHED_NAMES:
                self._names.clear()
            self._names[cache_key] = named
        if type(named) is Reason:
            return named
        name, unit = named  # type: ignore[misc]
        return self._store.family(name, kind, metric.description or metric.name, unit)

    def _name(self, otel_name: str, unit: str, name_type: MetricType) -> tuple[str, str] | Reason:
        config = self._config
        try:
            name = metric_name(
                otel_name, unit, name_type, config.namespace, ratio_for_unit_one=config.gauge_ratio_suffix
            )
        except InvalidNameError:
            return Reason.INVALID_NAME
        if name_type == "monotonic_counter" and name != "total":
            name = name.removesuffix("_total")  # the family name; prometheus_client appends _total
        word = unit_word(unit)
        # OpenMetrics requires the family name to end with its unit; otherwise omit the metadata.
        return name, word if word and name.endswith("_" + word) else ""

    # --- per point type ---

    def _numbers(
        self, family: Family, points: Sequence[NumberDataPoint], base: BaseLabels, delta: bool, now: float
    ) -> None:
        store, point_labels = self._store, self._labels.point
        for p in points:
            key, labels = point_labels(base, p.attributes)
            if p.flags & _NO_RECORDED_VALUE:
                store.delete(family, key)
                continue
            # as_double is 0.0 when the value is an int, and as_int is 0 when it is a double.
            value = p.as_double or float(p.as_int)
            new = Scalar(labels, value, p.start_time_unix_nano, p.time_unix_nano, now)
            target = store.admit(family, key, additive=delta)
            if target is None:
                continue
            previous = family.series.get(target)
            if target is OVERFLOW_KEY:
                record = temporality.fold_number(previous, new)
            else:
                record = temporality.number(previous, new, delta)
            if type(record) is Reason:
                store.drop(record)
            else:
                store.put(family, target, record)  # type: ignore[arg-type]

    def _histograms(
        self, family: Family, points: Sequence[HistogramDataPoint], base: BaseLabels, delta: bool, now: float
    ) -> None:
        store, point_labels = self._store, self._labels.point
        for p in points:
            key, labels = point_labels(base, p.attributes)
            if p.flags & _NO_RECORDED_VALUE:
                store.delete(family, key)
                continue
            buckets = explicit_buckets(p)
            if buckets is None:
                store.drop(Reason.INVALID_POINT)
                continue
            total = p.sum if p.HasField("sum") else None
            new = Hist(labels, buckets[0], buckets[1], total, p.start_time_unix_nano, p.time_unix_nano, now)
            target = store.admit(family, key, additive=delta)
            if target is None:
                continue
            previous = family.series.get(target)
            if target is OVERFLOW_KEY:
                record = temporality.fold_histogram(previous, new)
            else:
                record = temporality.histogram(previous, new, delta)
            if type(record) is Reason:
                store.drop(record)
            else:
                store.put(family, target, record)  # type: ignore[arg-type]

    def _exponentials(
        self,
        family: Family,
        points: Sequence[ExponentialHistogramDataPoint],
        base: BaseLabels,
        delta: bool,
        now: float,
    ) -> None:
        store, point_labels = self._store, self._labels.point
        target_scale = self._config.exponential_histogram_scale
        max_buckets = self._config.exponential_histogram_max_buckets
        for p in points:
            key, labels = point_labels(base, p.attributes)
            if p.flags & _NO_RECORDED_VALUE:
                store.delete(family, key)
                continue
            zero_threshold = p.zero_threshold
            if not 0.0 <= zero_threshold < math.inf:
                store.drop(Reason.INVALID_POINT)
                continue
            scale, positive, negative = exp_histogram.fit(
                p.scale,
                exp_histogram.trim(p.positive.offset, p.positive.bucket_counts),
                exp_histogram.trim(p.negative.offset, p.negative.bucket_counts),
                target_scale,
                max_buckets,
            )
            total = p.sum if p.HasField("sum") else None
            new = ExpHist(
                labels, scale, zero_threshold, p.zero_count, positive, negative, total,
                p.start_time_unix_nano, p.time_unix_nano, now,
            )
            target = store.admit(family, key, additive=delta)
            if target is None:
                continue
            previous = family.series.get(target)
            if target is OVERFLOW_KEY:
                record = temporality.fold_exponential(previous, new, max_buckets)
            else:
                record = temporality.exponential(previous, new, delta, max_buckets)
            if type(record) is Reason:
                store.drop(record)
            else:
                store.put(family, target, record)  # type: ignore[arg-type]

    def _summaries(
        self, family: Family, points: Sequence[SummaryDataPoint], base: BaseLabels, now: float
    ) -> None:
        store, point_labels = self._store, self._labels.point
        for p in points:
            key, labels = point_labels(base, p.attributes)
            if p.flags & _NO_RECORDED_VALUE:
                store.delete(family, key)
                continue
            # One sample per quantile, lowest first (a repeated quantile keeps its last value).
            quantiles = tuple(sorted({q.quantile: q.value for q in p.quantile_values}.items()))
            if any(math.isnan(q) for q, _ in quantiles):
                store.drop(Reason.INVALID_POINT)
                continue
            new = Quantiles(labels, quantiles, p.count, p.sum, p.start_time_unix_nano, p.time_unix_nano, now)
            target = store.admit(family, key, additive=False)
            if target is None:
                continue
            previous = family.series.get(target)
            if type(previous) is Quantiles and new.time < previous.time:
                store.drop(Reason.OUT_OF_ORDER)
            else:
                store.put(family, target, new)


def explicit_buckets(point: HistogramDataPoint) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
    """(ascending bounds, per-bucket counts incl. +Inf), or None when the point is unusable.

    No bucket counts means count-only: a single +Inf bucket. Unsorted or repeated bounds are sorted
    and merged (the Collector sorts too); an explicit +Inf bound merges into the implicit one.
    """
    counts = tuple(point.bucket_counts)
    bounds = tuple(point.explicit_bounds)
    if not counts:
        return (), (point.count,)
    if len(counts) != len(bounds) + 1 or any(math.isnan(b) for b in bounds):
        return None
    if any(a >= b for a, b in pairwise(bounds)):
        merged: dict[float, int] = {}
        for bound, count in zip(bounds, counts, strict=False):
            merged[bound] = merged.get(bound, 0) + count
        ordered = sorted(merged.items())
        bounds = tuple(b for b, _ in ordered)
        counts = (*(c for _, c in ordered), counts[-1])
    if bounds and bounds[-1] == math.inf:
        bounds, counts = bounds[:-1], (*counts[:-2], counts[-2] + counts[-1])
    return bounds, counts
