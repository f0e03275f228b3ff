"""The `prometheus` section: invalid values fail fast with the whole key; defaults follow the Collector."""

from __future__ import annotations

import pytest

from exporters.prometheus.config import SPAN_DURATION_BOUNDS_SECONDS, PrometheusConfig
from sidecar.config import load_config
from sidecar.pipeline.errors import ConfigError


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("series_expiry", "0", "must be positive"),
        ("max_series_per_metric", "0", "must be positive"),
        ("max_series_total", "0", "must be positive"),
        ("non_monotonic_delta", "keep", "must be one of drop, accumulate"),
        ("exponential_histogram_scale", "21", "must be between -10 and 20"),
        ("exponential_histogram_scale", "-11", "must be at least -10"),
        ("exponential_histogram_max_buckets", "1", "must be at least 2"),
    ],
)
def test_invalid_settings_name_their_key(tmp_path, key, value, problem):
    path = tmp_path / "otelpg.yaml"
    path.write_text(f"prometheus:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"prometheus\.{key}: {problem}"):
        load_config(path, env={})


def test_defaults_follow_the_collector():
    config = PrometheusConfig()
    assert config.series_expiry == 300
    assert config.max_series_per_metric == 2000
    assert config.non_monotonic_delta == "drop"
    assert SPAN_DURATION_BOUNDS_SECONDS[0] == 0.002 and SPAN_DURATION_BOUNDS_SECONDS[-1] == 15.0


def test_every_option_is_reachable_from_the_config_file(tmp_path):
    path = tmp_path / "otelpg.yaml"
    path.write_text("prometheus:\n  namespace: acme\n  scope_labels: false\n  non_monotonic_delta: ACCUMULATE\n")
    config = load_config(path, env={}).prometheus
    assert (config.namespace, config.scope_labels, config.non_monotonic_delta) == ("acme", False, "accumulate")
