"""Aggregator settings fail fast with the key they are about."""

from __future__ import annotations

import pytest

from exporters.prometheus.config import AggregatorConfig


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"expiry_seconds": 0}, "expiry_seconds"),
        ({"max_series_per_metric": 0}, "max_series_per_metric"),
        ({"max_series_total": 0}, "max_series_total"),
        ({"non_monotonic_delta": "keep"}, "non_monotonic_delta"),
        ({"exponential_histogram_scale": 21}, "exponential_histogram_scale"),
        ({"exponential_histogram_max_buckets": 1}, "exponential_histogram_max_buckets"),
        ({"span_duration_bounds": (1.0, 0.5)}, "span_duration_bounds"),
        ({"span_duration_bounds": ()}, "span_duration_bounds"),
    ],
)
def test_invalid_settings_name_their_key(override, key):
    with pytest.raises(ValueError, match=rf"exporters\.prometheus\.{key}:"):
        AggregatorConfig(**override)


def test_defaults_follow_the_collector():
    config = AggregatorConfig()
    assert config.expiry_seconds == 300
    assert config.max_series_per_metric == 2000
    assert config.span_duration_bounds[0] == 0.002 and config.span_duration_bounds[-1] == 15.0
