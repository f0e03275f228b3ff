"""The native encoder's rows, as PostgreSQL stores them, equal the Python path's: the same traces and
logs requests written through otelpg's write path both ways, then every stored row fetched back
and compared (otel_spans, otel_span_events, otel_logs, user_analytics, otel_scopes, otel_resources,
the lookup table and the system_events view). Also: a replayed native batch adds nothing, and a native request with a
row PostgreSQL refuses loses only that row (narrowed down through the request mapped again in
Python, with the same ids)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from exporters.postgres.ids import request_ids
from exporters.postgres.mapping.common import NATIVE_AVAILABLE, CopyRows, Mapper
from exporters.postgres.mapping_thread import map_chunk
from sidecar.pipeline.signals import LOGS, TRACES
from tests.bench._otlp_gen import logs_request, traces_request
from tests.integration.test_isolation import Pipeline, export, poison
from tests.unit.mapping.builders import anyv, kvs, resource

pytestmark = pytest.mark.skipif(not NATIVE_AVAILABLE, reason="the native encoder is not built (no C compiler?)")

NOW = time.time_ns()
TABLES = {
    "otel_spans": "id",
    "otel_logs": "id",
    "otel_span_events": "id",
    "user_analytics": "id",
    "otel_scopes": "scope_id",
    "otel_resources": "resource_id",
    "otelpg_event_types": "event_type, service_name",
    "system_events": "id",
}
COMPARED = {  # columns that record when a row was written, not what it holds
    "otel_scopes": "scope_id, name, version, metadata",
    "otel_resources": "resource_id, service_name, attributes, schema_url",
    "otelpg_event_types": "event_type, service_name",
}


def edge_request() -> ExportTraceServiceRequest:
    """Spans with what is rare: no start, an end before the start, links, trace_state, dropped
    counts, NUL and non-ASCII in names, events without a time, invalid ids, users of every kind."""
    t = NOW
    spans = [
        Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="root\x00é", kind=2, start_time_unix_nano=t,
             end_time_unix_nano=t + 1234, status=Status(code=2, message="boom\x00"), flags=0x301,
             attributes=kvs({"enduser.id": "alice", "url.path": "/p", "session.id": "s1", "n": [1, 2.5, None],
                             "m": {"k": b"\xff\x00"}, "f": float("nan"), "big": 2**62}),
             events=[Span.Event(name="ev", time_unix_nano=0, attributes=kvs({"a": "b"}), dropped_attributes_count=2),
                     Span.Event(name="ev2", time_unix_nano=t + 5)]),
        Span(trace_id=b"\x01" * 16, span_id=b"\x03" * 8, parent_span_id=b"\x02" * 8, name="child", kind=3,
             start_time_unix_nano=0, end_time_unix_nano=t, trace_state="k=v", dropped_attributes_count=1,
             dropped_events_count=2, dropped_links_count=3,
             links=[Span.Link(trace_id=b"\x04" * 16, span_id=b"\x05" * 8, trace_state="x", flags=1,
                              attributes=kvs({"l": True}), dropped_attributes_count=4)],
             attributes=kvs({"user.id": 42, "http.route": "/r/{id}"})),
        Span(trace_id=b"\x01" * 16, span_id=b"\x06" * 8, name="backwards", start_time_unix_nano=t + 10,
             end_time_unix_nano=t, attributes=kvs({"enduser.id": True, "user.id": "bob"})),
        Span(trace_id=bytes(16), span_id=b"\x07" * 8, name="invalid"),
    ]  # fmt: skip
    lib = InstrumentationScope(name="lib", version="1.0", attributes=kvs({"x": 1}))
    edge = resource({"service.name": "edge", "host.name": "h"})
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=edge, schema_url="https://s/1", scope_spans=[
            ScopeSpans(scope=lib, spans=spans[:2]), ScopeSpans(spans=spans[2:]),
        ]),
        ResourceSpans(resource=resource({}), scope_spans=[ScopeSpans(spans=[Span(
            trace_id=b"\x08" * 16, span_id=b"\x09" * 8, name="no service", start_time_unix_nano=t)])]),
    ])  # fmt: skip


async def stored(db: asyncpg.Connection) -> dict[str, list]:
    out = {}
    for table, order in TABLES.items():
        columns = COMPARED.get(table, "*")
        out[table] = [tuple(r) for r in await db.fetch(f"SELECT {columns} FROM {table} ORDER BY {order}")]
    return out


async def clear(db: asyncpg.Connection) -> None:
    for table in TABLES:
        if table != "system_events":
            await db.execute(f"DELETE FROM {table}")


@pytest.fixture
async def pipeline(pool: asyncpg.Pool, tmp_path: Path):
    p = Pipeline(pool, tmp_path)
    p.mapping.mapper.user_rows = 1  # user_analytics on, ids not hashed: the configuration's default
    await p.batcher.start()
    try:
        yield p
    finally:
        await p.close()


async def write(pipeline: Pipeline, request, received_ns: int, seed: int, native: bool):
    """Map with the given path and submit through the batcher (the exporter's own ids, so both paths
    give the rows the same ids)."""
    signal = LOGS if isinstance(request, ExportLogsServiceRequest) else TRACES
    mapped = map_chunk(signal, request.SerializeToString(), received_ns, request_ids(received_ns, seed),
                       mapper=pipeline.mapping.mapper, native=native)  # fmt: skip
    assert any(isinstance(r, CopyRows) for r in mapped.rows.values()) == native
    nrows = sum(len(r) for r in mapped.rows.values())
    refused = await pipeline.batcher.submit(mapped.rows, mapped.resources, nrows, 0)
    assert refused == []


def edge_logs() -> ExportLogsServiceRequest:
    """Log records with what is rare: no time, an event name from the attribute and from the field
    (one cut in event_type), bodies of every kind, NUL, severities by number and by text, users."""
    t = NOW
    records = [
        LogRecord(time_unix_nano=t, severity_number=17, severity_text="ERROR", body=anyv("boom\x00"),
                  attributes=kvs({"event.name": "checkout", "enduser.id": "alice", "url.path": "/p"}),
                  trace_id=b"\x01" * 16, span_id=b"\x02" * 8, flags=1),
        LogRecord(observed_time_unix_nano=t + 1, severity_text=" Warning2 ", body=anyv({"k": [1, 2.5, None, b"\xff"]}),
                  event_name="e" * 1100, dropped_attributes_count=3, attributes=kvs({"user.id": 7})),
        LogRecord(time_unix_nano=t + 2, body=anyv(float("nan")), severity_number=99999),
        LogRecord(time_unix_nano=t + 3, body=anyv(b"\x00\x01"), trace_id=bytes(16), span_id=bytes(8)),
        LogRecord(time_unix_nano=t + 4, body=anyv(True), trace_id=b"\x03" * 5),  # invalid: rejected
    ]  # fmt: skip
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=resource({"service.name": "edge-logs"}),
        scope_logs=[ScopeLogs(scope=InstrumentationScope(name="log-lib"), log_records=records[:3]),
                    ScopeLogs(log_records=records[3:])],
    )])  # fmt: skip


@pytest.mark.parametrize(
    "request_",
    [edge_request(), traces_request(300, 7, NOW), edge_logs(), logs_request(300, 8, NOW)],
    ids=["edge", "realistic", "edge-logs", "realistic-logs"],
)
async def test_stored_rows_are_the_same_either_way(pool, db, tmp_path, request_):
    rows = {}
    for native in (False, True):
        await clear(db)
        p = Pipeline(pool, tmp_path / str(native))  # a writer that has upserted no resource or scope yet
        p.mapping.mapper.user_rows = 1
        await p.batcher.start()
        try:
            await write(p, request_, NOW, 99, native=native)
        finally:
            await p.close()
        rows[native] = await stored(db)
    python_rows, native_rows = rows[False], rows[True]
    assert native_rows.keys() == python_rows.keys()
    for table in TABLES:
        assert native_rows[table] == python_rows[table], table
    assert len(native_rows["otel_spans"]) + len(native_rows["otel_logs"]) > 2 and native_rows["user_analytics"]


async def test_a_replayed_native_batch_adds_nothing(pipeline, db):
    request = edge_request()
    mapped = map_chunk(TRACES, request.SerializeToString(), NOW, request_ids(NOW, 5), mapper=pipeline.mapping.mapper)
    nrows = sum(len(r) for r in mapped.rows.values())
    await pipeline.writer.write_rows(mapped.rows, mapped.resources, nrows)
    first = await stored(db)
    await pipeline.writer.write_rows(mapped.rows, mapped.resources, nrows, idempotent=True)
    assert await stored(db) == first


async def test_a_refused_row_of_a_native_request_costs_only_itself(pipeline, db):
    await poison(db, "otel_spans", "name")
    request = traces_request(50, 3, NOW)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].name = "poison"
    innocent = traces_request(40, 4, NOW)
    results = await asyncio.gather(
        pipeline.exporter.consume(export(TRACES, request)), pipeline.exporter.consume(export(TRACES, innocent))
    )
    assert results[1].rejected == 0
    assert results[0].rejected == 1 and "'poison'" in results[0].message
    total = sum(len(ss.spans) for r in (request, innocent) for rs in r.resource_spans for ss in rs.scope_spans)
    assert await db.fetchval("SELECT count(*) FROM otel_spans") == total - 1


def test_the_app_mapper_is_native_by_default():
    assert Mapper().native
