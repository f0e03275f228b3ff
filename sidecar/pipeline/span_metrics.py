"""Span-derived RED aggregates as they pass from the Prometheus aggregator, which tallies them
per request, to the PostgreSQL flush, which writes them to performance_metrics every interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class SpanKey(NamedTuple):
    service_name: str
    span_name: str
    span_kind: str
    status_code: str

    @property
    def is_overflow(self) -> bool:
        return self == OVERFLOW_SPAN_KEY


OVERFLOW_SPAN_KEY = SpanKey("", "", "", "")
"""Keys past the series cap, folded together (a real key always has a kind and a status)."""


@dataclass(frozen=True, slots=True)
class SpanMetricsDelta:
    """What one key accumulated since the last drain, shaped like an OTLP delta histogram."""

    calls: int
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]  # per bucket, len(bounds) + 1 (the last is +Inf)
    sum: float  # seconds
    count: int
