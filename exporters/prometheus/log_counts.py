"""Running totals of log records by service and severity.

Named `log_record_count_total` after the Collector's count connector (`log.record.count` through the
prometheus exporter; connector/countconnector), so queries written against a Collector keep working. Unlike
that connector's delta sums with no start time, which the exporter fails to accumulate (contrib
#30203), this is a real cumulative counter. `otelpg_*` stays for otelpg's own self-telemetry.
"""

from __future__ import annotations

from functools import lru_cache

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporters.prometheus.labels import resource_identity
from exporters.prometheus.series import OVERFLOW_KEY, OVERFLOW_LABELS, Scalar, SeriesStore
from sidecar.pipeline.span_metrics import LogSummary

LOG_RECORDS_FAMILY = "log_record_count"  # rendered with `_total`

# severity_number 1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17-20 error, 21-24 fatal.
_SEVERITY_BY_NUMBER = ("trace", "debug", "info", "warn", "error", "fatal")


def severity(number: int, text: str) -> str:
    if 1 <= number <= 24:
        return _SEVERITY_BY_NUMBER[(number - 1) // 4]
    return text.lower() if text else "unspecified"


def _tally(request: ExportLogsServiceRequest) -> dict[tuple[str, str], int]:
    """(service, severity) → log records of the request."""
    tally: dict[tuple[str, str], int] = {}
    for rl in request.resource_logs:
        service = resource_identity(rl.resource.attributes).service_name
        for sl in rl.scope_logs:
            for record in sl.log_records:
                key = (service, severity(record.severity_number, record.severity_text))
                tally[key] = tally.get(key, 0) + 1
    return tally


def _summary_tally(summary: LogSummary) -> dict[tuple[str, str], int]:
    """The same from the native encoder's tallies (by severity number bucket, else by text)."""
    services = [resource_identity(_resource(r.resource).attributes).service_name for r in summary.resources]
    tally: dict[tuple[str, str], int] = {}
    for t in summary.tallies:
        level = _SEVERITY_BY_NUMBER[t.bucket - 1] if t.bucket else severity(0, t.severity_text)
        key = (services[t.resource], level)
        tally[key] = tally.get(key, 0) + t.records
    return tally


@lru_cache(maxsize=256)
def _resource(raw: bytes) -> Resource:
    return Resource.FromString(raw)


class LogCounts:
    def __init__(self, store: SeriesStore) -> None:
        self._store = store
        self._family = store.builtin(LOG_RECORDS_FAMILY, "counter", "Number of log records, by service and severity")

    def observe(self, request: ExportLogsServiceRequest | LogSummary, now: float) -> None:
        tally = _summary_tally(request) if isinstance(request, LogSummary) else _tally(request)
        store, family = self._store, self._family
        for (service, level), count in tally.items():
            label_key = (("service_name", service), ("severity", level))
            target = store.admit(family, label_key, additive=True)
            if target is None:  # not reached: counts are additive, so they fold instead
                continue
            previous = family.series.get(target)
            if type(previous) is Scalar:
                store.put(family, target, previous._replace(value=previous.value + count, updated=now))
            else:
                labels = OVERFLOW_LABELS if target is OVERFLOW_KEY else dict(label_key)
                store.put(family, target, Scalar(labels, float(count), 0, 0, now))
