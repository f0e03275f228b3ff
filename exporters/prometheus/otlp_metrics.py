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
go to `target_info` only (OpenTelemetry spec, Prometheus compatibility: resource attributes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
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
from exporters.prometheus.config import PrometheusConfig
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
    Record,
    Scalar,
    SeriesStore,
)
from exporters.prometheus.wire import attribute_fingerprints

_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_UNSPECIFIED = AggregationTemporality.AGGREGATION_TEMPORALITY_UNSPECIFIED
_MAX_CACHED_NAMES = 10_000
_MAX_CACHED_BOUNDS = 1024
_MISSING = object()

TARGET_FAMILY = "target"  # rendered `target_info`


class MetricsTranslator:
    def __init__(self, store: SeriesStore, labels: LabelBuilder, config: PrometheusConfig) -> None:
        self._store = store
        self._labels = labels
        self._config = config
        # (OTel name, unit, type) → (family name, unit metadata) or the reason it has none. Bounded:
        # names come from clients.
        self._names: dict[tuple[str, str, MetricType], tuple[str, str] | Reason] = {}
        self._target = store.builtin(TARGET_FAMILY, "info", "Target metadata")
        self._known_bounds: dict[tuple[float, ...], tuple[float, ...] | None] = {}
        max_buckets = config.exponential_histogram_max_buckets
        # OTLP data kind → (convert, combine, fold); see _observe_points.
        self._handlers: dict[str, tuple[Callable, Callable, Callable]] = {
            "gauge": (self._number, temporality.number, temporality.fold_number),
            "sum": (self._number, temporality.number, temporality.fold_number),
            "histogram": (self._histogram, temporality.histogram, temporality.fold_histogram),
            "exponential_histogram": (
                self._exponential,
                partial(temporality.exponential, max_buckets=max_buckets),
                partial(temporality.fold_exponential, max_buckets=max_buckets),
            ),
            "summary": (self._summary, temporality.summary, temporality.no_fold),
        }

    def observe(self, request: ExportMetricsServiceRequest, now: float) -> None:
        config = self._config
        for rm in request.resource_metrics:
            identity = resource_identity(rm.resource.attributes)
            if identity.job and not identity.instance:
                # Replicas without an instance id write the same series and their counters flap.
                self._store.warn_once(
                    identity.job,
                    "instance",
                    "job %s sends no service.instance.id: its replicas share series",
                    identity.job,
                )
            if config.target_info and (identity.job or identity.instance):
                self._observe_target(identity, now)
            for sm in rm.scope_metrics:
                scope = sm.scope
                base = self._labels.base(
                    identity,
                    scope.name,
                    scope.version,
                    sm.schema_url,
                    scope.attributes,
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
        if isinstance(family, Reason):
            self._store.drop(family, len(points))
            return
        convert, combine, fold = self._handlers[which]
        fingerprints = attribute_fingerprints(data, which)
        self._observe_points(family, points, fingerprints, base, delta, now, convert, combine, fold)

    def _family(self, metric: Metric, name_type: MetricType, kind: Kind) -> Family | Reason:
        cache_key = (metric.name, metric.unit, name_type)
        named = self._names.get(cache_key)
        if named is None:
            named = self._name(metric.name, metric.unit, name_type)
            if len(self._names) >= _MAX_CACHED_NAMES:
                self._names.clear()
            self._names[cache_key] = named
        if isinstance(named, Reason):
            return named
        name, unit = named
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

    def _observe_points(
        self,
        family: Family,
        points: Sequence[Any],
        fingerprints: list[bytes],
        base: BaseLabels,
        delta: bool,
        now: float,
        convert: Callable[[Any, dict[str, str], float], Record | Reason],
        combine: Callable[[Record | None, Any, bool], Record | Reason],
        fold: Callable[[Record | None, Any], Record | Reason],
    ) -> None:
        """The per-point loop shared by every metric type; `convert` makes the point's record,
        `combine` merges it with the series' previous one, `fold` into the overflow series."""
        store, label_sets = self._store, self._labels
        for point, fingerprint in zip(points, fingerprints, strict=True):
            cached = label_sets.cached(base, fingerprint)
            key, labels = cached if cached is not None else label_sets.point(base, point.attributes)
            if point.flags & _NO_RECORDED_VALUE:
                store.delete(family, key)
                continue
            new = convert(point, labels, now)
            if type(new) is Reason:
                store.drop(new)
                continue
            target = store.admit(family, key, additive=delta)
            if target is None:
                continue
            if cached is None and target is key:
                label_sets.remember(base, fingerprint, key, labels)
            previous = family.series.get(target)
            record = fold(previous, new) if target is OVERFLOW_KEY else combine(previous, new, delta)
            if type(record) is Reason:
                store.drop(record)
            else:
                store.put(family, target, record)  # type: ignore[arg-type]

    # --- per point type: OTLP point → record ---

    @staticmethod
    def _number(point: NumberDataPoint, labels: dict[str, str], now: float) -> Scalar:
        # as_double is 0.0 when the value is an int, and as_int is 0 when it is a double.
        value = point.as_double or float(point.as_int)
        return Scalar(labels, value, point.start_time_unix_nano, point.time_unix_nano, now)

    def _histogram(self, point: HistogramDataPoint, labels: dict[str, str], now: float) -> Hist | Reason:
        buckets = explicit_buckets(point, self._known_bounds)
        if buckets is None:
            return Reason.INVALID_POINT
        total = point.sum if point.HasField("sum") else None
        return Hist(labels, buckets[0], buckets[1], total, point.start_time_unix_nano, point.time_unix_nano, now)

    def _exponential(
        self, point: ExponentialHistogramDataPoint, labels: dict[str, str], now: float
    ) -> ExpHist | Reason:
        zero_threshold = point.zero_threshold
        if not 0.0 <= zero_threshold < math.inf:
            return Reason.INVALID_POINT
        scale, positive, negative = exp_histogram.fit(
            point.scale,
            exp_histogram.trim(point.positive.offset, point.positive.bucket_counts),
            exp_histogram.trim(point.negative.offset, point.negative.bucket_counts),
            self._config.exponential_histogram_scale,
            self._config.exponential_histogram_max_buckets,
        )
        total = point.sum if point.HasField("sum") else None
        return ExpHist(
            labels,
            scale,
            zero_threshold,
            point.zero_count,
            positive,
            negative,
            total,
            point.start_time_unix_nano,
            point.time_unix_nano,
            now,
        )

    @staticmethod
    def _summary(point: SummaryDataPoint, labels: dict[str, str], now: float) -> Quantiles | Reason:
        # One sample per quantile, lowest first (a repeated quantile keeps its last value).
        quantiles = tuple(sorted({q.quantile: q.value for q in point.quantile_values}.items()))
        if any(math.isnan(q) for q, _ in quantiles):
            return Reason.INVALID_POINT
        return Quantiles(
            labels, quantiles, point.count, point.sum, point.start_time_unix_nano, point.time_unix_nano, now
        )


def explicit_buckets(
    point: HistogramDataPoint, known: dict[tuple[float, ...], tuple[float, ...] | None]
) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
    """(ascending bounds, per-bucket counts incl. +Inf), or None when the point is unusable.

    No bucket counts means count-only: a single +Inf bucket. Unsorted or repeated bounds are sorted
    and merged (the Collector sorts too); an explicit +Inf bound merges into the implicit one.
    `known` caches, per distinct bounds, the canonical tuple (shared by every series using it) when
    the bounds need no fixing, or None when they take the slow path.
    """
    counts = tuple(point.bucket_counts)
    if not counts:
        return (), (point.count,)
    bounds = tuple(point.explicit_bounds)
    if len(counts) != len(bounds) + 1:
        return None
    canonical = known.get(bounds, _MISSING)
    if canonical is _MISSING:
        plain = all(a < b for a, b in pairwise(bounds)) and not (bounds and not math.isfinite(bounds[-1]))
        canonical = bounds if plain and not any(math.isnan(b) for b in bounds) else None
        if len(known) >= _MAX_CACHED_BOUNDS:
            known.clear()
        known[bounds] = canonical
    if canonical is not None:
        return canonical, counts  # type: ignore[return-value]
    if any(math.isnan(b) for b in bounds):
        return None
    merged: dict[float, int] = {}
    for bound, count in zip(bounds, counts, strict=False):
        merged[bound] = merged.get(bound, 0) + count
    ordered = sorted(merged.items())
    bounds, counts = tuple(b for b, _ in ordered), (*(c for _, c in ordered), counts[-1])
    if bounds and bounds[-1] == math.inf:
        bounds, counts = bounds[:-1], (*counts[:-2], counts[-2] + counts[-1])
    return bounds, counts
