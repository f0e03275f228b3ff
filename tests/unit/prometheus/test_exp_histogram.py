"""Exponential → fixed buckets: downscaling, merging and bucket layout."""

from __future__ import annotations

import math
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from exporters.prometheus.exp_histogram import downscale, fit, merge, merge_fit, to_buckets, trim, upper_bound


def test_trim_drops_empty_buckets_at_both_ends():
    assert trim(5, [0, 0, 1, 0, 2, 0]) == (7, (1, 0, 2))
    assert trim(5, [0, 0]) == (0, ())


def test_downscale_merges_adjacent_buckets_including_negative_indices():
    # indices -3..2 at scale s → >> 1 → -2, -2, -1, -1, 0, 0 (arithmetic shift floors)
    assert downscale((-3, (1, 2, 3, 4, 5, 6)), 1) == (-2, (1, 5, 9, 6))
    assert downscale((0, (1, 2)), 0) == (0, (1, 2))


def test_merge_sums_overlapping_ranges():
    assert merge((0, (1, 1)), (1, (2, 2))) == (0, (1, 3, 2))
    assert merge((0, ()), (3, (1,))) == (3, (1,))


def test_fit_downscales_to_the_target_scale_and_then_to_max_buckets():
    scale, pos, _ = fit(3, (0, tuple(range(16))), (0, ()), 0, 160)
    assert scale == 0 and pos == (0, (28, 92))
    scale, pos, _ = fit(0, (0, (1,) * 10), (0, ()), 0, 4)
    assert scale == -2 and sum(pos[1]) == 10 and len(pos[1]) <= 4


def test_coarser_points_keep_their_own_scale():
    scale, pos, _ = fit(-1, (0, (1, 2)), (0, ()), 0, 160)
    assert (scale, pos) == (-1, (0, (1, 2)))


def test_merge_fit_does_not_allocate_the_gap_between_far_ranges():
    scale, pos, _ = merge_fit((0, (0, (1,)), (0, ())), (0, (10**9, (1,)), (0, ())), 160)
    assert len(pos[1]) <= 160 and sum(pos[1]) == 2 and scale < 0


def test_upper_bounds_are_exact_powers_of_two_at_non_positive_scales():
    assert upper_bound(3, 0) == 8.0
    assert upper_bound(-2, 0) == 0.25
    assert upper_bound(1, -2) == 16.0
    assert upper_bound(1, 1) == math.sqrt(2)
    assert upper_bound(10**6, 0) == math.inf


def test_to_buckets_layout():
    bounds, cumulative = to_buckets(0, 0.001, 2, (1, (3, 4)), (0, (5,)))
    assert bounds == [-1.0, 0.001, 4.0, 8.0]
    assert cumulative == [5, 7, 10, 14, 14]


def test_to_buckets_folds_a_zero_threshold_above_the_first_positive_bound():
    bounds, cumulative = to_buckets(0, 3.0, 1, (0, (2, 4)), (0, ()))  # zero bucket reaches 3 > le 2
    assert bounds == [3.0, 4.0]
    assert cumulative == [3, 7, 7]


def test_to_buckets_sends_overflowed_bounds_to_inf():
    bounds, cumulative = to_buckets(0, 0.0, 0, (1022, (1, 1)), (0, ()))  # 2**1024 overflows a double
    assert bounds == [math.ldexp(1.0, 1023)]
    assert cumulative == [1, 2]


@given(
    scale=st.integers(-3, 8),
    offset=st.integers(-50, 50),
    counts=st.lists(st.integers(0, 1000), max_size=40),
    neg_counts=st.lists(st.integers(0, 1000), max_size=10),
    zero=st.integers(0, 100),
)
def test_converted_buckets_are_valid_and_lossless(scale, offset, counts, neg_counts, zero):
    target, pos, neg = fit(scale, trim(offset, counts), trim(-offset, neg_counts), 0, 20)
    bounds, cumulative = to_buckets(target, 0.0, zero, pos, neg)
    assert all(a < b for a, b in pairwise(bounds))
    assert all(a <= b for a, b in pairwise(cumulative))
    assert cumulative[-1] == sum(counts) + sum(neg_counts) + zero
    assert len(cumulative) == len(bounds) + 1
