"""User-facing settings of the Prometheus aggregator, with the Collector's defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# spanmetrics connector defaultHistogramBucketsMs, in seconds (Collector contrib, connector/spanmetricsconnector).
SPAN_DURATION_BOUNDS_SECONDS: tuple[float, ...] = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.05,
    0.1,
    0.2,
    0.4,
    0.8,
    1.0,
    1.4,
    2.0,
    5.0,
    10.0,
    15.0,
)


@dataclass(frozen=True, slots=True)
class AggregatorConfig:
    expiry_seconds: float = 300.0
    """A series not updated for this long disappears (the Collector's `metric_expiration`, 5m)."""
    max_series_per_metric: int = 2000
    """New label sets past this fold into one `otel_metric_overflow="true"` series (SDK default 2000)."""
    max_series_total: int = 20_000
    """Across all families. Rendering costs ~15 µs per sample and Prometheus times out at 10 s."""
    namespace: str = ""
    """Prefix for translated OTLP metric names (the Collector's `namespace`)."""
    scope_labels: bool = True
    """Add `otel_scope_name`, `otel_scope_version`, `otel_scope_schema_url`, `otel_scope_<attr>`."""
    target_info: bool = True
    """One `target_info` series per job/instance carrying the other resource attributes."""
    gauge_ratio_suffix: bool = True
    """`_ratio` for gauges with unit `1`, as the Collector and Prometheus still do."""
    non_monotonic_delta: Literal["drop", "accumulate"] = "drop"
    """Delta UpDownCounters: dropped like the Collector, or accumulated into a gauge."""
    exponential_histogram_scale: int = 0
    """Exported scale of exponential histograms; 0 gives power-of-two `le` bounds."""
    exponential_histogram_max_buckets: int = 160
    """Per sign; wider points are downscaled further (160 is the SDK's default max_size)."""
    span_duration_bounds: tuple[float, ...] = SPAN_DURATION_BOUNDS_SECONDS
    reserved_prefixes: tuple[str, ...] = ("otelpg_",)
    """Client metric names that would collide with otelpg's self-telemetry on the same registry."""

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"exporters.prometheus.{key}: {why}")

        if not self.expiry_seconds > 0:
            raise bad("expiry_seconds", "must be > 0")
        if self.max_series_per_metric < 1:
            raise bad("max_series_per_metric", "must be >= 1")
        if self.max_series_total < 1:
            raise bad("max_series_total", "must be >= 1")
        if self.non_monotonic_delta not in ("drop", "accumulate"):
            raise bad("non_monotonic_delta", "must be 'drop' or 'accumulate'")
        if not -10 <= self.exponential_histogram_scale <= 20:
            raise bad("exponential_histogram_scale", "must be between -10 and 20")
        if self.exponential_histogram_max_buckets < 2:
            raise bad("exponential_histogram_max_buckets", "must be >= 2")
        bounds = self.span_duration_bounds
        if not bounds or any(not math.isfinite(b) for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise bad("span_duration_bounds", "must be finite, strictly ascending and not empty")
