"""The `system_events` view, in Python: schema 2's rows (SYSTEM_EVENTS_COLUMNS order, payload and
metadata as JSON text) rebuilt from a mapped request's otel_spans, otel_span_events and otel_logs
rows exactly as migrations/0003_lean_rows.sql rebuilds them, each span followed by its events.

Mapping tests read rows through it (they check what a query of system_events returns), and
tests/integration/test_system_events_view.py checks that PostgreSQL's view returns the same."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from exporters.postgres.mapping import Mapped
from exporters.postgres.schema import (
    LOG,
    OTEL_LOGS,
    OTEL_SCOPES,
    OTEL_SPAN_EVENTS,
    OTEL_SPANS,
    SPAN,
    SPAN_EVENT,
    SYSTEM_EVENTS_COLUMNS,
)

KINDS = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
         "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")  # fmt: skip
CODES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
SEVERITIES = {b"t": "trace", b"d": "debug", b"i": "info", b"w": "warn", b"e": "error", b"f": "fatal"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def unix_nano(ts: dt.datetime, nanos: int) -> int:
    return ((ts - _EPOCH) // dt.timedelta(microseconds=1)) * 1000 + nanos


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _metadata(scopes: dict[int, tuple], scope_id: int | None) -> str:
    return scopes[scope_id][3] if scope_id is not None else "{}"


def span_row(r: tuple, scopes: dict[int, tuple]) -> tuple:
    kind, code = r[SPAN.KIND], r[SPAN.STATUS_CODE]
    status: dict[str, Any] = {"code": CODES[code] if 0 <= code <= 2 else code}
    if r[SPAN.STATUS_MESSAGE] is not None:
        status["message"] = r[SPAN.STATUS_MESSAGE]
    start = unix_nano(r[SPAN.TIMESTAMP], r[SPAN.NANOS])
    duration = r[SPAN.DURATION_NS]
    payload: dict[str, Any] = {
        "kind": KINDS[kind] if 0 <= kind <= 5 else kind,
        "status": status,
        "attributes": _json(r[SPAN.ATTRIBUTES]),
        "start_time_unix_nano": start,
        "end_time_unix_nano": None if duration is None else start + duration,
    }
    if r[SPAN.FLAGS] is not None:
        payload["flags"] = r[SPAN.FLAGS]
    payload.update(_json(r[SPAN.EXTRA]) or {})
    return (
        r[SPAN.ID], "span", r[SPAN.SERVICE_NAME], "error" if code == 2 else "info", json.dumps(payload),
        r[SPAN.TIMESTAMP], _metadata(scopes, r[SPAN.SCOPE_ID]), r[SPAN.SERVICE_NAME], r[SPAN.RESOURCE_ID],
        r[SPAN.TRACE_ID], r[SPAN.SPAN_ID].hex(),
        r[SPAN.PARENT_SPAN_ID].hex() if r[SPAN.PARENT_SPAN_ID] is not None else None,
        r[SPAN.NAME], None if duration is None else duration / 1e6,
    )  # fmt: skip


def span_event_row(r: tuple, scopes: dict[int, tuple]) -> tuple:
    payload = {
        "span_name": r[SPAN_EVENT.SPAN_NAME],
        "attributes": _json(r[SPAN_EVENT.ATTRIBUTES]),
        "time_unix_nano": unix_nano(r[SPAN_EVENT.TIMESTAMP], r[SPAN_EVENT.NANOS]),
    }
    payload.update(_json(r[SPAN_EVENT.EXTRA]) or {})
    return (
        r[SPAN_EVENT.ID], "span_event", r[SPAN_EVENT.SERVICE_NAME],
        "error" if r[SPAN_EVENT.NAME] == "exception" else "info", json.dumps(payload), r[SPAN_EVENT.TIMESTAMP],
        _metadata(scopes, r[SPAN_EVENT.SCOPE_ID]), r[SPAN_EVENT.SERVICE_NAME], r[SPAN_EVENT.RESOURCE_ID],
        r[SPAN_EVENT.TRACE_ID], r[SPAN_EVENT.SPAN_ID].hex(), None, r[SPAN_EVENT.NAME], None,
    )  # fmt: skip


def log_row(r: tuple, scopes: dict[int, tuple]) -> tuple:
    body = r[LOG.BODY] if r[LOG.BODY] is not None else _json(r[LOG.BODY_VALUE])
    payload: dict[str, Any] = {
        "body": body,
        "attributes": _json(r[LOG.ATTRIBUTES]),
        "severity_number": r[LOG.SEVERITY_NUMBER],
        "severity_text": r[LOG.SEVERITY_TEXT] or "",
        "time_unix_nano": unix_nano(r[LOG.TIMESTAMP], r[LOG.NANOS]),
        "observed_time_unix_nano": r[LOG.OBSERVED_TIME_UNIX_NANO] or 0,
    }
    if r[LOG.FLAGS] is not None:
        payload["flags"] = r[LOG.FLAGS]
    payload.update(_json(r[LOG.EXTRA]) or {})
    event_type = r[LOG.EVENT_TYPE]
    return (
        r[LOG.ID], event_type, r[LOG.SERVICE_NAME], SEVERITIES[r[LOG.SEVERITY]], json.dumps(payload),
        r[LOG.TIMESTAMP], _metadata(scopes, r[LOG.SCOPE_ID]), r[LOG.SERVICE_NAME], r[LOG.RESOURCE_ID],
        r[LOG.TRACE_ID], r[LOG.SPAN_ID].hex() if r[LOG.SPAN_ID] is not None else None, None,
        None if event_type == "log" else event_type, None,
    )  # fmt: skip


def system_events_rows(mapped: Mapped) -> list[tuple]:
    """The view's rows for a mapped request: each span followed by its events, then log records."""
    scopes = {r[0]: r for r in mapped.rows.get(OTEL_SCOPES, ())}
    events: dict[tuple, list[tuple]] = {}
    for e in mapped.rows.get(OTEL_SPAN_EVENTS, ()):
        events.setdefault((e[SPAN_EVENT.TRACE_ID], e[SPAN_EVENT.SPAN_ID]), []).append(e)
    out: list[tuple] = []
    for s in mapped.rows.get(OTEL_SPANS, ()):
        out.append(span_row(s, scopes))
        out.extend(span_event_row(e, scopes) for e in events.pop((s[SPAN.TRACE_ID], s[SPAN.SPAN_ID]), ()))
    out.extend(log_row(r, scopes) for r in mapped.rows.get(OTEL_LOGS, ()))
    return out


def system_events_dicts(mapped: Mapped) -> list[dict]:
    return [dict(zip(SYSTEM_EVENTS_COLUMNS, r, strict=True)) for r in system_events_rows(mapped)]
