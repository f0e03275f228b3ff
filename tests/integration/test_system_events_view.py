"""The system_events view (migrations/0003_lean_rows.sql) returns, from the lean rows, what
tests/system_events_view.py computes in Python — and the mapping tests hold that to schema 2's
payload and metadata. So a query written against schema 2's system_events reads the same values."""

from __future__ import annotations

import json
import uuid

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from exporters.postgres.mapping import Mapped, map_logs, map_traces
from exporters.postgres.migrate import migrate
from exporters.postgres.schema import COPY_TABLES, OTEL_SCOPES, SYSTEM_EVENTS_COLUMNS
from tests.system_events_view import system_events_rows
from tests.unit.mapping.builders import RECEIVED_NS, T0, anyv, kvs, resource

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
RES = resource({"service.name": "checkout", "host.name": "h1"})
SCOPE = InstrumentationScope(name="flask", version="3.0", attributes=kvs({"a": 1}))


def _span(i: int, **kw) -> Span:
    fields = {"trace_id": TRACE, "span_id": i.to_bytes(8, "big"), "name": f"op{i}",
              "start_time_unix_nano": T0 + 123, "end_time_unix_nano": T0 + 1_500_789}  # fmt: skip
    fields.update(kw)
    return Span(**fields)


def traces() -> ExportTraceServiceRequest:
    spans = [
        _span(1, kind=Span.SPAN_KIND_SERVER, attributes=kvs({"http.route": "/orders", "n": 5})),
        _span(2, parent_span_id=(1).to_bytes(8, "big"), kind=Span.SPAN_KIND_CLIENT, flags=0x301,
              status=Status(code=Status.STATUS_CODE_ERROR, message="boom"), trace_state="rojo=1",
              dropped_attributes_count=1, dropped_events_count=2, dropped_links_count=3,
              links=[Span.Link(trace_id=bytes(range(16)), span_id=bytes(range(8)), flags=1,
                               attributes=kvs({"k": "v"}))],
              events=[Span.Event(time_unix_nano=T0 + 999, name="exception",
                                 attributes=kvs({"exception.type": "E"}), dropped_attributes_count=4),
                      Span.Event(name="no time")]),
        _span(3, start_time_unix_nano=0, end_time_unix_nano=T0),  # no start: the receive time
        _span(4, end_time_unix_nano=T0),  # ends before it starts
        _span(5, end_time_unix_nano=0),  # never ended
        _span(6, kind=9, status=Status(code=7)),  # numbers beyond the enums
        _span(7, kind=2**31 - 1, status=Status(code=2**31 - 1, message="m"), flags=2**32 - 1),
        _span(8, name="nul\x00name", status=Status(message="a\x00b")),
        _span(10, start_time_unix_nano=2**64 - 2, end_time_unix_nano=2**64 - 1),  # after 2262: beyond BIGINT
    ]  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=RES, scope_spans=[ScopeSpans(scope=SCOPE, spans=spans, schema_url="https://s/1.0"),
                                   ScopeSpans(spans=[_span(9)])],
    )])  # fmt: skip


def logs() -> ExportLogsServiceRequest:
    records = [
        LogRecord(time_unix_nano=T0 + 5, observed_time_unix_nano=T0 + 7, severity_number=17, severity_text="ERROR",
                  body=anyv("payment failed"), flags=1, dropped_attributes_count=2, trace_id=TRACE,
                  span_id=(1).to_bytes(8, "big"), attributes=kvs({"user.id": "u1"})),
        LogRecord(observed_time_unix_nano=T0 + 11, severity_text="WARN2", body=anyv({"k": [1, 2.5, None]})),
        LogRecord(body=anyv(12), attributes=kvs({"event.name": "checkout.done"})),
        LogRecord(time_unix_nano=T0, body=anyv(True), severity_number=2**31 - 1, flags=2**32 - 1),
        LogRecord(time_unix_nano=T0, body=anyv(b"\x01\x02"), severity_number=-5, severity_text="x\x00y"),
        LogRecord(time_unix_nano=T0, body=anyv(float("nan")), observed_time_unix_nano=2**64 - 1),
        LogRecord(time_unix_nano=T0, body=anyv("a\x00b"), attributes=kvs({"event.name": "log"})),
        LogRecord(time_unix_nano=T0),  # no body
        LogRecord(time_unix_nano=T0, body=anyv("")),
    ]  # fmt: skip
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=RES, scope_logs=[ScopeLogs(scope=SCOPE, log_records=records)])]
    )


async def _store(db, mapped: Mapped) -> None:
    scopes = mapped.rows.get(OTEL_SCOPES, [])
    if scopes:
        await db.executemany(
            "INSERT INTO otel_scopes (scope_id, name, version, metadata) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            scopes,
        )
    for table, rows in mapped.rows.items():
        if table in COPY_TABLES and rows:
            await db.copy_records_to_table(table, records=rows, columns=COPY_TABLES[table])


def _comparable(row: tuple) -> dict:
    d = dict(zip(SYSTEM_EVENTS_COLUMNS, row, strict=True))
    d["id"] = str(d["id"])
    d["trace_id"] = None if d["trace_id"] is None else str(d["trace_id"])
    d["payload"] = json.loads(d["payload"])
    d["metadata"] = json.loads(d["metadata"])
    return d


async def test_the_view_rebuilds_schema_2_rows_from_the_lean_rows(db):
    await migrate(db)
    for mapped in (map_traces(traces(), RECEIVED_NS), map_logs(logs(), RECEIVED_NS)):
        assert mapped.rejected == 0
        await _store(db, mapped)
        expected = [_comparable(r) for r in system_events_rows(mapped)]
        ids = [e["id"] for e in expected]
        fetched = await db.fetch(
            f"SELECT {', '.join(SYSTEM_EVENTS_COLUMNS)} FROM system_events WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
        by_id = {str(r["id"]): _comparable(tuple(r)) for r in fetched}
        assert len(fetched) == len(ids), await db.fetchval("SELECT count(*) FROM system_events")
        assert [by_id.get(i) for i in ids] == expected


async def test_rows_inserted_into_the_view_are_kept_as_they_are(db):
    await migrate(db)
    await db.execute(
        "INSERT INTO system_events (event_type, source, payload, name) VALUES ('deploy', 'ci', '{\"v\": 2}', 'x')"
    )
    row = await db.fetchrow("SELECT event_type, source, severity, payload, name, service_name FROM system_events")
    assert dict(row) == {"event_type": "deploy", "source": "ci", "severity": "info", "payload": '{"v": 2}',
                         "name": "x", "service_name": "unknown_service"}  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM otelpg_events") == 1


async def test_deleting_through_the_view_deletes_the_stored_rows(db):
    await migrate(db)
    for mapped in (map_traces(traces(), RECEIVED_NS), map_logs(logs(), RECEIVED_NS)):
        await _store(db, mapped)
    await db.execute("INSERT INTO system_events (event_type, source, service_name) VALUES ('deploy', 'ci', 'checkout')")
    before = await db.fetchval("SELECT count(*) FROM system_events")
    deleted = await db.execute("DELETE FROM system_events WHERE service_name = 'checkout' AND event_type <> 'span'")
    assert int(deleted.split()[-1]) == before - 10  # all but the 10 spans
    assert await db.fetchval("SELECT count(*) FROM system_events") == 10
    counts = [
        await db.fetchval(f"SELECT count(*) FROM {t}") for t in ("otel_span_events", "otel_logs", "otelpg_events")
    ]
    assert counts == [0, 0, 0] and await db.fetchval("SELECT count(*) FROM otel_spans") == 10
