"""ExportMetricsServiceRequest → performance_metrics rows, one per data point."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from uuid_utils import uuid7

from exporters.postgres.mapping.common import (
    INT64_MAX,
    KEY_MAX_BYTES,
    Mapped,
    Mapper,
    describe_rejections,
    json_dumps,
    json_float,
    text,
    to_datetime,
)
from exporters.postgres.schema import PERFORMANCE_METRICS

TEMPORALITY = {1: "delta", 2: "cumulative"}  # 0 (UNSPECIFIED) and unknown values → None
_HAS_METADATA = "metadata" in Metric.DESCRIPTOR.fields_by_name
# Exponential-histogram scales for which explicit bounds are derived (the data model's range);
# the exact layout is kept in `details` whatever the scale.
MIN_SCALE, MAX_SCALE = -10, 20
_BAD_BUCKETS = "histogram bucket_counts must have len(explicit_bounds) + 1 entries"


def _clamp_counts(counts: list[int]) -> list[int]:
    """BIGINT[] holds int64; a uint64 count beyond it (never seen in practice) is clamped."""
    if counts and max(counts) > INT64_MAX:
        return [c if c <= INT64_MAX else INT64_MAX for c in counts]
    return counts


def exp_bucket_bound(scale: int, index: int) -> float:
    """base**index with base = 2**(2**-scale): the lower edge of bucket `index` (which covers
    (base**index, base**(index+1)]). Overflow gives inf and underflow 0.0, never an error."""
    try:
        if scale <= 0:
            return math.ldexp(1.0, index << -scale)
        return math.exp2(index / (1 << scale))
    except OverflowError:
        return math.inf if index > 0 else 0.0


@lru_cache(maxsize=512)
def _exp_layout(
    scale: int,
    zero_threshold: float,
    positive_offset: int,
    n_positive: int,
    negative_offset: int,
    n_negative: int,
) -> tuple[tuple[float, ...], bool, bool, bool]:
    """The bounds of one exponential-histogram layout (cached: the points of a metric share it),
    and which gap buckets it has: (bounds, negative_gap, zero_bucket, positive_gap)."""
    bound = exp_bucket_bound
    bounds: list[float] = []
    negative_gap = positive_gap = False
    if n_negative:
        bounds.append(-bound(scale, negative_offset + n_negative))
        for k in range(n_negative - 1, -1, -1):
            bounds.append(-bound(scale, negative_offset + k))
        if zero_threshold > 0 and -zero_threshold > bounds[-1]:
            bounds.append(-zero_threshold)
            negative_gap = True
    zero_upper = zero_threshold if zero_threshold > 0 else 0.0
    zero_bucket = not bounds or zero_upper > bounds[-1]
    if zero_bucket:
        bounds.append(zero_upper)
    if n_positive:
        low = bound(scale, positive_offset)
        if low > bounds[-1]:
            bounds.append(low)
            positive_gap = True
        for k in range(1, n_positive + 1):
            bounds.append(bound(scale, positive_offset + k))
    return tuple(bounds), negative_gap, zero_bucket, positive_gap


def exp_histogram_buckets(
    scale: int,
    zero_count: int,
    zero_threshold: float,
    positive_offset: int,
    positive_counts: list[int],
    negative_offset: int,
    negative_counts: list[int],
) -> tuple[list[float], list[int]] | tuple[None, None]:
    """An exponential histogram as explicit buckets, ascending: upper bounds, and counts with one
    more entry (the +Inf bucket), the layout otelpg_histogram_quantile() reads.

    Negative buckets (highest index first), the zero bucket [-zero_threshold, zero_threshold],
    then positive buckets. Zero-count buckets are added at the edges of gaps so every bucket's
    lower edge is the previous bound: (-inf, -base**(top+1)] before the negative buckets,
    (-base**neg_offset, -zero_threshold] between them and the zero bucket, and
    (zero_threshold, base**pos_offset] before the positive buckets. Counts sum to the count.
    None, None outside the data model's scale range [-10, 20].
    """
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return None, None
    bounds, negative_gap, zero_bucket, positive_gap = _exp_layout(
        scale, zero_threshold, positive_offset, len(positive_counts), negative_offset, len(negative_counts)
    )
    counts: list[int] = []
    if negative_counts:
        counts.append(0)
        counts.extend(reversed(negative_counts))
        if negative_gap:
            counts.append(0)
    if zero_bucket:
        counts.append(zero_count)
    else:  # malformed layout (zero bucket not above the negative ones): merged into the last bucket
        counts[-1] += zero_count
    if positive_counts:
        if positive_gap:
            counts.append(0)
        counts.extend(positive_counts)
    counts.append(0)
    return list(bounds), counts


def _value(point: Any) -> Any:
    """A JSON value from an as_double/as_int oneof (exemplars): int stays int, None when unset."""
    w = point.WhichOneof("value")
    if w == "as_double":
        return json_float(point.as_double)
    if w == "as_int":
        return point.as_int
    return None


def _exemplars(exemplars: Any, attributes: Callable[[Any], dict[str, Any]]) -> str:
    out = []
    for e in exemplars:
        d: dict[str, Any] = {"time_unix_nano": e.time_unix_nano, "value": _value(e)}
        if e.trace_id:
            d["trace_id"] = e.trace_id.hex()
        if e.span_id:
            d["span_id"] = e.span_id.hex()
        if e.filtered_attributes:
            d["filtered_attributes"] = attributes(e.filtered_attributes)
        out.append(d)
    return json_dumps(out)


def _details(base: dict[str, Any], base_json: str | None, flags: int, extra: dict | None) -> str | None:
    if not flags and extra is None:
        return base_json
    d = dict(base)
    if flags:
        d["flags"] = flags
    if extra:
        d.update(extra)
    return json_dumps(d)


def map_metrics(
    request: ExportMetricsServiceRequest,
    received_ns: int,
    new_id: Callable[[], Any] = uuid7,
    raw: bytes | None = None,
    mapper: Mapper | None = None,
) -> Mapped:
    """`raw` is accepted for the same signature as the other mappers (points have no converter).
    `mapper`: the limits, counters and memo to map with (None: a new Mapper, default limits)."""
    m = Mapper() if mapper is None else mapper
    rows: list[tuple] = []
    append = rows.append
    resources: dict[int, tuple] = {}
    items = unnamed = bad_buckets = 0
    received = to_datetime(received_ns)
    to_dt = to_datetime
    attrs_of = m.attributes
    key_text = m.key_text
    resource_row = m.resource_row
    scope_info = m.scope_info
    dumps = json_dumps
    temporalities = TEMPORALITY
    # Consecutive points usually share their timestamps: convert each distinct one once.
    last_ns = last_start_ns = -1
    last_ts = last_start = None

    for rm in request.resource_metrics:
        resource = resource_row(rm.resource, rm.schema_url)
        rid = resource[0]
        service = resource[1]
        first = len(rows)
        for sm in rm.scope_metrics:
            scope = scope_info(sm.scope)
            scope_schema_url = sm.schema_url
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue  # no data: nothing to store, nothing to count
                data = getattr(metric, kind)
                points = data.data_points
                n = len(points)
                items += n
                name = metric.name
                if not name:
                    unnamed += n
                    continue
                base: dict[str, Any] = {}
                if "\x00" in name or len(name) > KEY_MAX_BYTES // 4:
                    full = text(name)
                    name = key_text(name)
                    if name != full:
                        base["name"] = full  # metric_name is indexed: the whole name is kept here
                unit = text(metric.unit) or None
                if metric.description:
                    base["description"] = metric.description
                if scope:
                    base["scope"] = scope
                if scope_schema_url:
                    base["schema_url"] = scope_schema_url
                if _HAS_METADATA and metric.metadata:
                    base["metadata"] = attrs_of(metric.metadata)
                base_json = dumps(base) if base else None

                if kind == "gauge" or kind == "sum":
                    if kind == "sum":
                        temporality = temporalities.get(data.aggregation_temporality)
                        monotonic = data.is_monotonic
                    else:
                        temporality = monotonic = None
                    for dp in points:
                        v = dp.as_double
                        if not v:  # 0.0, or the value is an int, or unset
                            i = dp.as_int
                            if i:
                                v = float(i)
                            elif dp.WhichOneof("value") is None:
                                v = None
                        t = dp.time_unix_nano
                        if t != last_ns:
                            last_ns = t
                            last_ts = to_dt(t) if t else received
                        s = dp.start_time_unix_nano
                        if s != last_start_ns:
                            last_start_ns = s
                            last_start = to_dt(s) if s else None
                        attrs = dp.attributes
                        flags = dp.flags
                        ex = dp.exemplars
                        append((
                            new_id(), name, v, unit, dumps(attrs_of(attrs)) if attrs else "{}",
                            last_ts, service, rid, kind, temporality, monotonic, last_start,
                            None, None, None, None, None, None,
                            _exemplars(ex, attrs_of) if ex else None,
                            _details(base, base_json, flags, None) if flags else base_json,
                        ))  # fmt: skip
                    continue

                temporality = temporalities.get(data.aggregation_temporality) if kind != "summary" else None
                for dp in points:
                    t = dp.time_unix_nano
                    if t != last_ns:
                        last_ns = t
                        last_ts = to_dt(t) if t else received
                    s = dp.start_time_unix_nano
                    if s != last_start_ns:
                        last_start_ns = s
                        last_start = to_dt(s) if s else None
                    attrs = dp.attributes
                    tags = dumps(attrs_of(attrs)) if attrs else "{}"
                    count = dp.count
                    if count > INT64_MAX:
                        count = INT64_MAX
                    if kind == "summary":
                        total = dp.sum
                        extra = {
                            "quantiles": [
                                {"quantile": json_float(q.quantile), "value": json_float(q.value)}
                                for q in dp.quantile_values
                            ]
                        }
                        append((
                            new_id(), name, total, unit, tags, last_ts, service, rid, kind, None, None,
                            last_start, count, total, None, None, None, None, None,
                            _details(base, base_json, dp.flags, extra),
                        ))  # fmt: skip
                        continue
                    total = dp.sum if dp.HasField("sum") else None
                    lo = dp.min if dp.HasField("min") else None
                    hi = dp.max if dp.HasField("max") else None
                    ex = dp.exemplars
                    exemplars = _exemplars(ex, attrs_of) if ex else None
                    bounds: list[float] | None
                    counts: list[int] | None
                    if kind == "histogram":
                        bc = dp.bucket_counts
                        if bc:
                            bounds = list(dp.explicit_bounds)
                            if len(bc) != len(bounds) + 1:
                                bad_buckets += 1
                                continue
                            counts = _clamp_counts(list(bc))
                        else:
                            counts = bounds = None
                        details = _details(base, base_json, dp.flags, None)
                    else:  # exponential_histogram
                        pos = dp.positive
                        neg = dp.negative
                        pos_counts = list(pos.bucket_counts)
                        neg_counts = list(neg.bucket_counts)
                        scale = dp.scale
                        zero_count = dp.zero_count
                        zero_threshold = dp.zero_threshold
                        bounds, counts = exp_histogram_buckets(
                            scale, zero_count, zero_threshold,
                            pos.offset, pos_counts, neg.offset, neg_counts,
                        )  # fmt: skip
                        if counts is not None:
                            counts = _clamp_counts(counts)
                        details = _details(base, base_json, dp.flags, {
                            "scale": scale,
                            "zero_count": zero_count,
                            "zero_threshold": json_float(zero_threshold),
                            "positive": {"offset": pos.offset, "bucket_counts": pos_counts},
                            "negative": {"offset": neg.offset, "bucket_counts": neg_counts},
                        })  # fmt: skip
                    append((
                        new_id(), name, total, unit, tags, last_ts, service, rid, kind, temporality,
                        None, last_start, count, total, lo, hi, bounds, counts, exemplars, details,
                    ))  # fmt: skip
        if len(rows) > first:
            resources[rid] = resource

    reasons = {why: n for why, n in (("metric without a name", unnamed), (_BAD_BUCKETS, bad_buckets)) if n}
    message = describe_rejections(reasons, "data point", "data points")
    return Mapped({PERFORMANCE_METRICS: rows}, resources, items, unnamed + bad_buckets, message, reasons)
