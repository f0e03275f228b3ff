"""RED metrics from spans, as the Collector's spanmetrics connector derives them (connector/spanmetricsconnector).

`traces_span_metrics_calls_total` (counter) and `traces_span_metrics_duration_seconds` (histogram,
the connector's default buckets in seconds) by `service_name`, `span_name`, `span_kind`
(`SPAN_KIND_SERVER`...) and `status_code` (`STATUS_CODE_UNSET|OK|ERROR`). Errors are the calls
with `status_code="STATUS_CODE_ERROR"`.

Spans are first tallied per key for the whole request (a list increment per span), then each key
updates its series once: the per-span cost stays a dict lookup and a bisect. The same per-key deltas
are kept for `drain()`, which another component flushes to PostgreSQL every interval.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache
from operator import add

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from exporters.prometheus.labels import LabelKey, resource_identity
from exporters.prometheus.series import OVERFLOW_KEY, OVERFLOW_LABELS, Hist, Scalar, SeriesStore
from sidecar.pipeline.span_metrics import (
    OVERFLOW_SPAN_KEY,
    SPAN_DURATION_BOUNDS_SECONDS,
    SpanKey,
    SpanMetricsDelta,
    TraceSummary,
)

CALLS_FAMILY = "traces_span_metrics_calls"  # rendered with `_total`
DURATION_FAMILY = "traces_span_metrics_duration_seconds"

_KINDS = {value: name for name, value in Span.SpanKind.items()}
_STATUSES = {value: name for name, value in Status.StatusCode.items()}


@lru_cache(maxsize=256)
def _resource(raw: bytes) -> Resource:
    """A serialized Resource (the encoder hands them over as bytes; an SDK sends the same one)."""
    return Resource.FromString(raw)


class SpanMetrics:
    def __init__(self, store: SeriesStore, bounds: tuple[float, ...]) -> None:
        self._store = store
        self._bounds = bounds
        self._calls = store.builtin(
            CALLS_FAMILY, "counter", "Number of spans, by service, span name, kind and status code"
        )
        self._duration = store.builtin(
            DURATION_FAMILY,
            "histogram",
            "Duration of spans in seconds, by service, span name, kind and status code",
            "seconds",
        )
        self._pending: dict[SpanKey, list] = {}  # key → [calls, bucket counts, sum] since the last drain

    def observe(self, request: ExportTraceServiceRequest | TraceSummary, now: float) -> None:
        if isinstance(request, TraceSummary):
            self._observe_summary(request, now)
            return
        bounds, buckets = self._bounds, len(self._bounds) + 1
        # (service, span name, kind number, status number) → [calls, bucket counts, sum]
        tally: dict[tuple[str, str, int, int], list] = {}
        for rs in request.resource_spans:
            service = resource_identity(rs.resource.attributes).service_name
            for ss in rs.scope_spans:
                for span in ss.spans:
                    key = (service, span.name, span.kind, span.status.code)
                    entry = tally.get(key)
                    if entry is None:
                        entry = tally[key] = [0, [0] * buckets, 0.0]
                    nanos = span.end_time_unix_nano - span.start_time_unix_nano
                    seconds = nanos / 1e9 if nanos > 0 else 0.0  # a negative duration counts as 0
                    entry[0] += 1
                    entry[1][bisect_left(bounds, seconds)] += 1  # le is inclusive: bound b holds b
                    entry[2] += seconds
        kinds, statuses = _KINDS, _STATUSES
        for (service, name, kind, status), (calls, counts, total) in tally.items():
            key = SpanKey(
                service, name, kinds.get(kind, "SPAN_KIND_UNSPECIFIED"), statuses.get(status, "STATUS_CODE_UNSET")
            )
            self._apply(key, calls, counts, total, now)

    def _observe_summary(self, summary: TraceSummary, now: float) -> None:
        """The native encoder's tallies (same keys, buckets and sums as `observe` makes), merged
        across resources that share a service name."""
        if self._bounds != SPAN_DURATION_BOUNDS_SECONDS:  # the encoder tallies over these
            raise ValueError("span metrics tallied natively need the default duration buckets")
        services = [
            resource_identity(_resource(r.resource).attributes).service_name for r in summary.resources
        ]  # fmt: skip
        tally: dict[tuple[str, str, int, int], list] = {}
        for t in summary.tallies:
            key = (services[t.resource], t.span_name, t.kind, t.status_code)
            entry = tally.get(key)
            if entry is None:
                tally[key] = [t.calls, list(t.bucket_counts), t.sum]
            else:
                entry[0] += t.calls
                entry[1] = list(map(add, entry[1], t.bucket_counts))
                entry[2] += t.sum
        kinds, statuses = _KINDS, _STATUSES
        for (service, name, kind, status), (calls, counts, total) in tally.items():
            span_key = SpanKey(
                service, name, kinds.get(kind, "SPAN_KIND_UNSPECIFIED"), statuses.get(status, "STATUS_CODE_UNSET")
            )
            self._apply(span_key, calls, counts, total, now)

    def _apply(self, key: SpanKey, calls: int, counts: list[int], total: float, now: float) -> None:
        store, calls_family, duration_family = self._store, self._calls, self._duration
        service, name, kind, status = key
        label_key: LabelKey = (
            (("service_name", service), ("span_kind", kind), ("span_name", name), ("status_code", status))
            if name  # an empty label value is an absent label
            else (("service_name", service), ("span_kind", kind), ("status_code", status))
        )
        target = store.admit(calls_family, label_key, additive=True)
        if target is None:  # not reached: span counts are additive, so they fold instead
            return
        if target is OVERFLOW_KEY:
            key = OVERFLOW_SPAN_KEY
        previous = calls_family.series.get(target)
        if type(previous) is Scalar:
            labels = previous.labels
            store.put(calls_family, target, Scalar(labels, previous.value + calls, 0, 0, now))
        else:
            labels = OVERFLOW_LABELS if target is OVERFLOW_KEY else dict(label_key)
            store.put(calls_family, target, Scalar(labels, float(calls), 0, 0, now))
        # The duration series mirrors the calls series: same key, admitted by the same decision.
        hist = duration_family.series.get(target)
        if type(hist) is Hist:
            merged = tuple(map(add, hist.counts, counts))
            hist_sum = (hist.sum or 0.0) + total
            store.put(duration_family, target, Hist(labels, self._bounds, merged, hist_sum, 0, 0, now))
        else:
            store.put(duration_family, target, Hist(labels, self._bounds, tuple(counts), total, 0, 0, now))
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = [calls, counts, total]
        else:
            pending[0] += calls
            pending[1] = list(map(add, pending[1], counts))
            pending[2] += total

    def drain(self) -> dict[SpanKey, SpanMetricsDelta]:
        """Per key, what was observed since the previous drain; resets the pending deltas."""
        pending, self._pending = self._pending, {}
        bounds = self._bounds
        return {
            key: SpanMetricsDelta(calls, bounds, tuple(counts), total, calls)
            for key, (calls, counts, total) in pending.items()
        }
