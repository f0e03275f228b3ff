"""The Prometheus exporter's settings (the `prometheus` section), with the Collector's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.pipeline.errors import ConfigError
from sidecar.pipeline.settings import setting
from sidecar.pipeline.span_metrics import SPAN_DURATION_BOUNDS_SECONDS

# Re-exported: the span duration buckets are shared with the native encoder (sidecar.pipeline).
__all__ = ["RESERVED_PREFIXES", "SPAN_DURATION_BOUNDS_SECONDS", "PrometheusConfig"]


RESERVED_PREFIXES: tuple[str, ...] = ("otelpg_",)
"""Client metric names that would collide with otelpg's self-telemetry on the same registry."""


@dataclass(frozen=True)
class PrometheusConfig:
    series_expiry: float = setting(
        300.0,
        "Seconds a received metric series is exported after its last update (the Collector's metric_expiration).",
        positive=True,
    )
    max_series_per_metric: int = setting(
        2000, "Series per metric name; beyond it, points fold into one otel_metric_overflow series.", positive=True
    )
    max_series_total: int = setting(
        20_000, "Series across all received metrics (bounds the exposition size).", positive=True
    )
    span_metrics_flush_interval: float = setting(
        60.0, "Seconds between flushes of span-derived aggregates to performance_metrics (0 disables)."
    )
    database_stats_interval: float = setting(
        30.0, "Seconds between refreshes of the database utilization gauges from the catalog (0 disables)."
    )
    namespace: str = setting("", "Prefix of translated OTLP metric names (the Collector's namespace).")
    scope_labels: bool = setting(
        True, "Add otel_scope_name, otel_scope_version, otel_scope_schema_url and otel_scope_<attribute> labels."
    )
    target_info: bool = setting(
        True, "Export one target_info series per job/instance carrying the other resource attributes."
    )
    gauge_ratio_suffix: bool = setting(True, "Suffix _ratio on gauges with unit 1, as the Collector does.")
    non_monotonic_delta: str = setting(
        "drop",
        "Delta UpDownCounters: drop (as the Collector does) or accumulate into a gauge.",
        choices=("drop", "accumulate"),
    )
    exponential_histogram_scale: int = setting(
        0, "Exported scale of exponential histograms (-10..20); 0 gives power-of-two le bounds.", minimum=-10
    )
    exponential_histogram_max_buckets: int = setting(
        160, "Buckets per sign of an exported exponential histogram; wider points are downscaled (SDK default)."
    )

    def validate(self) -> None:
        if self.exponential_histogram_scale > 20:
            raise ConfigError("exponential_histogram_scale", "must be between -10 and 20")
        if self.exponential_histogram_max_buckets < 2:
            raise ConfigError("exponential_histogram_max_buckets", "must be at least 2")
