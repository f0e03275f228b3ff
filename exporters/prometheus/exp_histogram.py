"""Exponential histograms → classic fixed-bucket histograms.

Text 0.0.4 and OpenMetrics 1.0 can't carry native histograms (the Python client renders them only
for OpenMetrics 2.0), so the spec's "MAY be converted to fixed-bucket histograms" is what we do.

How: a point is downscaled to one fixed exported scale (default 0) by merging 2**(scale - target)
adjacent buckets (index >> by). At scale s bucket i holds (base**i, base**(i+1)] with
base = 2**(2**-s), so at scale 0 every `le` is a power of two: the bucket boundaries of a series
stay the same from point to point and from one SDK rescale to the next, which keeps `rate()` over
`_bucket` series meaningful. A point whose scale is already coarser than the target keeps its own.
If the populated range is wider than `max_buckets`, it is downscaled further.

Rendering: negative buckets first (most negative first, `le` = -base**i), then the zero bucket
(`le` = zero_threshold), then positive buckets (`le` = base**(i+1)), then +Inf. The negative side
is approximate at exact powers of the base (OTel's negative buckets include their lower end).
"""

from __future__ import annotations

import math
from itertools import accumulate

Buckets = tuple[int, tuple[int, ...]]  # (index offset, counts)
EMPTY: Buckets = (0, ())


def trim(offset: int, counts: tuple[int, ...] | list[int]) -> Buckets:
    """Drop empty buckets at both ends (SDKs often send leading zeros)."""
    lo, hi = 0, len(counts)
    while lo < hi and not counts[lo]:
        lo += 1
    while hi > lo and not counts[hi - 1]:
        hi -= 1
    if lo == hi:
        return EMPTY
    return offset + lo, tuple(counts[lo:hi])


def downscale(buckets: Buckets, by: int) -> Buckets:
    """Merge 2**by adjacent buckets: index i at scale s becomes i >> by at scale s - by."""
    offset, counts = buckets
    if by <= 0 or not counts:
        return buckets
    first, last, step = offset >> by, (offset + len(counts) - 1) >> by, 1 << by
    out = []
    for index in range(first, last + 1):
        lo = (index << by) - offset  # <= 0 for the first merged bucket
        out.append(sum(counts[max(lo, 0) : lo + step]))
    return first, tuple(out)


def merge(a: Buckets, b: Buckets) -> Buckets:
    """Sum two bucket ranges at the same scale."""
    if not a[1]:
        return b
    if not b[1]:
        return a
    first = min(a[0], b[0])
    out = [0] * (max(a[0] + len(a[1]), b[0] + len(b[1])) - first)
    for offset, counts in (a, b):
        for i, count in enumerate(counts):
            out[offset - first + i] += count
    return first, tuple(out)


def _width(a: Buckets, b: Buckets) -> int:
    if not a[1] or not b[1]:
        return len(a[1]) + len(b[1])
    return max(a[0] + len(a[1]), b[0] + len(b[1])) - min(a[0], b[0])


def merge_fit(
    a: tuple[int, Buckets, Buckets], b: tuple[int, Buckets, Buckets], max_buckets: int
) -> tuple[int, Buckets, Buckets]:
    """Sum two (scale, positive, negative) histograms at the coarser scale, downscaled until each side
    fits max_buckets. The width is checked before merging: two far-apart ranges must not allocate
    the gap between them."""
    scale = min(a[0], b[0])
    a_pos, a_neg = downscale(a[1], a[0] - scale), downscale(a[2], a[0] - scale)
    b_pos, b_neg = downscale(b[1], b[0] - scale), downscale(b[2], b[0] - scale)
    while _width(a_pos, b_pos) > max_buckets or _width(a_neg, b_neg) > max_buckets:
        a_pos, a_neg, b_pos, b_neg = (downscale(x, 1) for x in (a_pos, a_neg, b_pos, b_neg))
        scale -= 1
    return scale, merge(a_pos, b_pos), merge(a_neg, b_neg)


def fit(
    scale: int, positive: Buckets, negative: Buckets, target_scale: int, max_buckets: int
) -> tuple[int, Buckets, Buckets]:
    """Downscale both sides to min(scale, target_scale), then further until each fits max_buckets."""
    by = max(0, scale - target_scale)
    while True:
        pos, neg = downscale(positive, by), downscale(negative, by)
        if len(pos[1]) <= max_buckets and len(neg[1]) <= max_buckets:
            return scale - by, pos, neg
        by += 1


def upper_bound(index: int, scale: int) -> float:
    """base**index for base = 2**(2**-scale): exact (a power of two) for scale <= 0."""
    try:
        if scale <= 0:
            return math.ldexp(1.0, index << -scale)
        return math.exp2(index / (1 << scale))
    except OverflowError:
        return math.inf


def to_buckets(
    scale: int, zero_threshold: float, zero_count: int, positive: Buckets, negative: Buckets
) -> tuple[list[float], list[int]]:
    """Ascending upper bounds (without +Inf) and cumulative counts (the last one is the +Inf count)."""
    bounds: list[float] = []
    counts: list[int] = []
    neg_offset, neg_counts = negative
    for i in range(len(neg_counts) - 1, -1, -1):
        bounds.append(-upper_bound(neg_offset + i, scale))
        counts.append(neg_counts[i])
    if zero_count or neg_counts:
        bounds.append(zero_threshold)
        counts.append(zero_count)
    pos_offset, pos_counts = positive
    for i, count in enumerate(pos_counts):
        bounds.append(upper_bound(pos_offset + i + 1, scale))
        counts.append(count)
    # Keep `le` strictly ascending on odd input: a bucket whose bound is not above the previous one
    # (a zero threshold above the first positive bound) folds into it, which is still a true "<=";
    # a bound that overflowed to +-inf carries its count to the next finite bucket, or to +Inf.
    out_bounds: list[float] = []
    out_counts: list[int] = []
    pending = 0
    for bound, count in zip(bounds, counts, strict=True):
        if math.isinf(bound):
            pending += count
        elif out_bounds and bound <= out_bounds[-1]:
            out_counts[-1] += count + pending
            pending = 0
        else:
            out_bounds.append(bound)
            out_counts.append(count + pending)
            pending = 0
    cumulative = list(accumulate(out_counts))
    total = (cumulative[-1] if cumulative else 0) + pending
    return out_bounds, [*cumulative, total]
