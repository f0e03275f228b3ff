"""ExportLogsServiceRequest → otel_logs rows, one per log record, and the otel_scopes rows they reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from uuid_utils import uuid7

from exporters.postgres.mapping.common import (
    BIGINT_MAX,
    INT_MAX,
    SMALLINT_MAX,
    ZERO_SPAN_ID,
    ZERO_TRACE_ID,
    Mapped,
    Mapper,
    describe_rejections,
    json_dumps,
    text,
    to_datetime,
    trace_uuid,
)
from exporters.postgres.schema import OTEL_LOGS, OTEL_SCOPES

# severity_number 1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17-20 error, 21-24 fatal.
SEVERITY_BY_NUMBER: tuple[str | None, ...] = (
    (None,) + ("trace",) * 4 + ("debug",) * 4 + ("info",) * 4 + ("warn",) * 4 + ("error",) * 4
    + ("fatal",) * 4
)  # fmt: skip

# severity_text spellings (lower case, trailing digits removed: "INFO2" → "info").
SEVERITY_BY_TEXT: dict[str, str] = {
    "trace": "trace", "finest": "trace", "finer": "trace", "verbose": "trace", "trc": "trace",
    "debug": "debug", "dbg": "debug", "fine": "debug", "config": "debug",
    "info": "info", "information": "info", "informational": "info", "notice": "info", "inf": "info",
    "warn": "warn", "warning": "warn", "wrn": "warn",
    "error": "error", "err": "error", "eror": "error", "severe": "error", "alert": "error",
    "fatal": "fatal", "critical": "fatal", "crit": "fatal", "emerg": "fatal", "emergency": "fatal",
    "panic": "fatal", "ftl": "fatal",
}  # fmt: skip

# otel_logs.severity: the first letter of the severity (a "char", which asyncpg takes as bytes).
SEVERITY_LETTER = {"trace": b"t", "debug": b"d", "info": b"i", "warn": b"w", "error": b"e", "fatal": b"f"}

_HAS_EVENT_NAME = "event_name" in LogRecord.DESCRIPTOR.fields_by_name
_INVALID_IDS = "invalid trace_id or span_id"


def severity(number: int, severity_text: str) -> str:
    """The severity column: from severity_number, else from severity_text, else 'info'."""
    if 0 < number < 25:
        return SEVERITY_BY_NUMBER[number]  # type: ignore[return-value]
    if severity_text:
        key = severity_text.strip().lower().rstrip("0123456789")
        return SEVERITY_BY_TEXT.get(key, "info")
    return "info"


def map_logs(
    request: ExportLogsServiceRequest,
    received_ns: int,
    new_id: Callable[[], Any] = uuid7,
    raw: bytes | None = None,
    mapper: Mapper | None = None,
) -> Mapped:
    """`raw`: the request's protobuf bytes, when the receiver has them (for the C converter).
    `mapper`: the limits, counters and memo to map with (None: a new Mapper, default limits)."""
    m = Mapper() if mapper is None else mapper
    fast = m.fast_attributes("logs", request, raw)
    if fast is not None and len(fast[0]) != sum(
        len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs
    ):
        fast = None  # not the records the protobuf API iterates: take the Python path
    record_attrs, bodies = (fast[0], fast[1]) if fast else ((), ())
    ri = 0  # index of the next log record in record_attrs / bodies
    rows: list[tuple] = []
    append = rows.append
    scopes: dict[int, tuple] = {}
    resources: dict[int, tuple] = {}
    items = rejected = 0
    traces: dict[bytes, Any] = {}
    received_dt = to_datetime(received_ns)
    to_dt = to_datetime
    attrs_of = m.attributes
    any_value = m.any_value
    key_text = m.key_text
    resource_row = m.resource_row
    scope_row = m.scope_row
    dumps = json_dumps
    by_number = SEVERITY_BY_NUMBER
    letter = SEVERITY_LETTER
    has_event_name = _HAS_EVENT_NAME
    z16 = ZERO_TRACE_ID
    z8 = ZERO_SPAN_ID

    for rl in request.resource_logs:
        resource = resource_row(rl.resource, rl.schema_url)
        rid = resource[0]
        service = resource[1]
        first = len(rows)
        for sl in rl.scope_logs:
            scope = scope_row(sl.scope, sl.schema_url)
            scope_id = None
            if scope is not None:
                scope_id = scope[0]
                scopes[scope_id] = scope
            records = sl.log_records
            items += len(records)
            for rec in records:
                ri += 1
                tid = rec.trace_id
                sid = rec.span_id
                if tid:
                    if len(tid) != 16:
                        rejected += 1
                        continue
                    if tid == z16:
                        trace = None
                    else:
                        trace = traces.get(tid)
                        if trace is None:
                            trace = traces[tid] = trace_uuid(tid)
                else:
                    trace = None
                if sid:
                    if len(sid) != 8:
                        rejected += 1
                        continue
                    span_id = None if sid == z8 else sid
                else:
                    span_id = None
                attrs = record_attrs[ri - 1] if fast else attrs_of(rec.attributes)
                event = attrs.get("event.name")
                from_field = not (event and isinstance(event, str))
                if from_field:
                    event = rec.event_name if has_event_name else None
                event = key_text(event) if event else None  # event_type is indexed
                number = rec.severity_number
                sev_text = rec.severity_text
                time_ns = rec.time_unix_nano
                observed_ns = rec.observed_time_unix_nano
                body = bodies[ri - 1] if fast else any_value(rec.body)
                extra: dict[str, Any] = {}
                if from_field and event and len(event) != len(rec.event_name):
                    extra["event_name"] = text(rec.event_name)  # the whole name, cut in event_type
                if rec.dropped_attributes_count:
                    extra["dropped_attributes_count"] = rec.dropped_attributes_count
                if time_ns:
                    ts = to_dt(time_ns)
                    nanos = time_ns % 1000
                else:
                    extra["time_unix_nano"] = 0
                    if observed_ns:
                        ts = to_dt(observed_ns)
                        nanos = observed_ns % 1000
                    else:
                        ts = received_dt
                        nanos = 0
                if observed_ns > BIGINT_MAX:
                    extra["observed_time_unix_nano"], observed_ns = observed_ns, 0
                flags = rec.flags
                if flags > INT_MAX:
                    extra["flags"], flags = flags, 0
                if not -SMALLINT_MAX <= number <= SMALLINT_MAX:
                    extra["severity_number"] = number
                    stored_number = 0
                else:
                    stored_number = number
                append((
                    new_id(), ts, nanos, service, rid, scope_id, trace, span_id, event or "log",
                    letter[by_number[number] if 0 < number < 25 else severity(number, sev_text)],
                    stored_number, text(sev_text) if sev_text else None, observed_ns or None, flags or None,
                    text(body) if body.__class__ is str else None,
                    None if body is None or body.__class__ is str else dumps(body),
                    dumps(attrs), dumps(extra) if extra else None,
                ))  # fmt: skip
        if len(rows) > first:
            resources[rid] = resource

    if fast:
        m.count_truncated(fast[2], fast[3])
    reasons = {_INVALID_IDS: rejected} if rejected else {}
    message = describe_rejections(reasons, "log record", "log records")
    return Mapped({OTEL_LOGS: rows, OTEL_SCOPES: list(scopes.values())}, resources, items, rejected, message, reasons)
