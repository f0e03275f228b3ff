"""How a new point combines with the one already held: pure functions returning the record to
store, or the Reason the point is dropped.

Delta → cumulative follows the OTel metrics data model's single-writer rules:
- first point: starts the series;
- `start == previous.time`: aligned, added; the series keeps its start;
- `start > previous.time`: a gap (the writer restarted or points were lost): the series resets;
- `start < previous.time`: an overlap, i.e. a resend or a second writer: dropped (`misaligned`);
- `start == 0` (no start time, e.g. the Collector's count connector): plain addition, statsd style,
  so such counters accumulate instead of showing each batch (contrib issues #30203, #29300).
A point older than the one held is dropped (`out_of_order`) for every temporality, so an exposed
counter only decreases when its source really restarted (or a delta stream had a gap).
"""

from __future__ import annotations

from operator import add

from exporters.prometheus import exp_histogram
from exporters.prometheus.series import OVERFLOW_LABELS, ExpHist, Hist, Quantiles, Reason, Record, Scalar


def _alignment(previous_time: int, start: int) -> Reason | bool:
    """True: add to the accumulated value; False: reset to the new point; or a drop reason."""
    if start == 0 or start == previous_time:
        return True
    if start > previous_time:
        return False
    return Reason.MISALIGNED


def number(previous: Record | None, new: Scalar, delta: bool) -> Scalar | Reason:
    """A gauge or sum point; deltas are accumulated into a cumulative value."""
    if type(previous) is not Scalar:
        return new
    if new.time < previous.time:
        return Reason.OUT_OF_ORDER
    if not delta:
        return new
    aligned = _alignment(previous.time, new.start)
    if aligned is True:
        return Scalar(previous.labels, previous.value + new.value, previous.start, new.time, new.updated)
    return new if aligned is False else aligned


def histogram(previous: Record | None, new: Hist, delta: bool) -> Hist | Reason:
    """An explicit-bucket histogram point; deltas with the same bounds are accumulated."""
    if type(previous) is not Hist:
        return new
    if new.time < previous.time:
        return Reason.OUT_OF_ORDER
    if not delta:
        return new
    aligned = _alignment(previous.time, new.start)
    if aligned is True:
        # Bounds changed: the sum of the two would be meaningless, so the newer point restarts it.
        return _add_hist(previous, new, previous.start) if previous.bounds == new.bounds else new
    return new if aligned is False else aligned


def exponential(previous: Record | None, new: ExpHist, delta: bool, max_buckets: int) -> ExpHist | Reason:
    """An exponential histogram point; deltas are merged at the coarser of the two scales."""
    if type(previous) is not ExpHist:
        return new
    if new.time < previous.time:
        return Reason.OUT_OF_ORDER
    if not delta:
        return new
    aligned = _alignment(previous.time, new.start)
    if aligned is True:
        if previous.zero_threshold != new.zero_threshold:
            return new  # like changed bounds: can't re-bucket the zero bucket, restart
        return _add_exp(previous, new, previous.start, previous.labels, max_buckets)
    return new if aligned is False else aligned


def summary(previous: Record | None, new: Quantiles, delta: bool = False) -> Quantiles | Reason:
    """A summary point replaces the previous one unless it is older (summaries have no temporality)."""
    if type(previous) is Quantiles and new.time < previous.time:
        return Reason.OUT_OF_ORDER
    return new


# --- folding into the overflow series: additive, no alignment (many streams share it) ---


def fold_number(previous: Record | None, new: Scalar) -> Scalar:
    if type(previous) is not Scalar:
        return new._replace(labels=OVERFLOW_LABELS)
    time = max(previous.time, new.time)
    return Scalar(OVERFLOW_LABELS, previous.value + new.value, previous.start, time, new.updated)


def fold_histogram(previous: Record | None, new: Hist) -> Hist | Reason:
    if type(previous) is not Hist:
        return new._replace(labels=OVERFLOW_LABELS)
    if previous.bounds != new.bounds:
        return Reason.CARDINALITY_LIMIT  # streams with other bounds can't share one bucket layout
    return _add_hist(previous, new, previous.start)._replace(time=max(previous.time, new.time))


def fold_exponential(previous: Record | None, new: ExpHist, max_buckets: int) -> ExpHist | Reason:
    if type(previous) is not ExpHist:
        return new._replace(labels=OVERFLOW_LABELS)
    if previous.zero_threshold != new.zero_threshold:
        return Reason.CARDINALITY_LIMIT
    merged = _add_exp(previous, new, previous.start, OVERFLOW_LABELS, max_buckets)
    return merged._replace(time=max(previous.time, new.time))


def no_fold(previous: Record | None, new: Record) -> Reason:
    """Summaries are never additive (admit() never sends them to the overflow series)."""
    return Reason.CARDINALITY_LIMIT


def _add_hist(a: Hist, b: Hist, start: int) -> Hist:
    counts = tuple(map(add, a.counts, b.counts))  # same bounds, so same length
    total = None if a.sum is None or b.sum is None else a.sum + b.sum
    return Hist(a.labels, a.bounds, counts, total, start, b.time, b.updated)


def _add_exp(a: ExpHist, b: ExpHist, start: int, labels: dict[str, str], max_buckets: int) -> ExpHist:
    scale, positive, negative = exp_histogram.merge_fit(
        (a.scale, a.positive, a.negative), (b.scale, b.positive, b.negative), max_buckets
    )
    total = None if a.sum is None or b.sum is None else a.sum + b.sum
    zeros, now = a.zero_count + b.zero_count, b.updated
    return ExpHist(labels, scale, a.zero_threshold, zeros, positive, negative, total, start, b.time, now)
