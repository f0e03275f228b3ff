"""Span-derived RED aggregates as they pass from the Prometheus aggregator, which tallies them
per request, to the PostgreSQL flush, which writes them to performance_metrics every interval;
and the per-request summaries of spans and log records that the native encoder hands the
after-commit observers instead of a decoded request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# spanmetrics connector defaultHistogramBucketsMs, in seconds (Collector contrib, connector/spanmetricsconnector).
SPAN_DURATION_BOUNDS_SECONDS: tuple[float, ...] = (
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
)  # fmt: skip


class SpanTally(NamedTuple):
    """The spans of one request with the same resource, name, kind and status code."""

    resource: int  # index into TraceSummary.resources
    span_name: str
    kind: int  # SpanKind number
    status_code: int  # Status.StatusCode number
    calls: int
    bucket_counts: tuple[int, ...]  # over SPAN_DURATION_BOUNDS_SECONDS, le inclusive; the last is +Inf
    sum: float  # seconds (a negative duration counts as 0)


class ResourceSpansSummary(NamedTuple):
    """One ResourceSpans of a request, as agent_states counts it."""

    resource: bytes  # the serialized Resource
    schema_url: str
    spans: int  # in the request
    rows: int  # stored (spans with valid ids)
    event_rows: int  # span events stored
    errors: int  # with status code ERROR
    current_task: str | None  # the name of the last span of its last scope with a named last span
    recent_errors: list[tuple[int, str, str, bytes]]  # the newest (start ns, name, status message, trace id)


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """What the after-commit observers need of a traces request, made by the native encoder
    while it encodes the rows, so that nothing iterates the spans again in Python."""

    resources: list[ResourceSpansSummary]
    tallies: list[SpanTally]


class LogTally(NamedTuple):
    """The log records of one request with the same resource and severity."""

    resource: int  # index into LogSummary.resources
    bucket: int  # 1-6: severity_number 1-4, 5-8 ... 21-24; 0: another number, then `severity_text` says
    severity_text: str
    records: int


class ResourceLogsSummary(NamedTuple):
    """One ResourceLogs of a request, as agent_states counts it."""

    resource: bytes  # the serialized Resource
    schema_url: str
    records: int  # in the request
    rows: int  # stored (records with valid ids)
    errors: int  # of severity error or fatal
    # the newest: (time ns, severity text, body as a serialized AnyValue, trace id, severity number)
    recent_errors: list[tuple[int, str, bytes, bytes, int]]


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What the after-commit observers need of a logs request (see TraceSummary)."""

    resources: list[ResourceLogsSummary]
    tallies: list[LogTally]


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
