"""Upgrading a schema-2 database in place: migration 0003 keeps its rows readable through the
system_events view, and the conversion moves them into the lean tables partition by partition
(resumable) without changing what queries return."""

from __future__ import annotations

import json

import orjson

from exporters.postgres.legacy import convert_legacy_rows
from exporters.postgres.mapping import map_logs, map_traces
from exporters.postgres.migrate import discover, migrate
from exporters.postgres.schema import SYSTEM_EVENTS_COLUMNS
from tests.integration.test_system_events_view import logs, traces
from tests.system_events_view import system_events_rows
from tests.unit.mapping.builders import RECEIVED_NS

# What users and the dashboards ask of system_events (the whole rows, and typical aggregates).
QUERIES = [
    f"SELECT {', '.join(SYSTEM_EVENTS_COLUMNS)} FROM system_events ORDER BY id",
    "SELECT event_type, severity, count(*) FROM system_events GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT service_name, name, round(avg(duration_ms)::numeric, 6) FROM system_events "
    "WHERE event_type = 'span' GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT payload->'status'->>'code', payload->>'kind', count(*) FROM system_events "
    "WHERE event_type = 'span' GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT trace_id, span_id, parent_span_id FROM system_events WHERE trace_id IS NOT NULL ORDER BY 1, 2, 3",
    "SELECT payload->'body', payload->>'severity_text' FROM system_events WHERE event_type NOT IN "
    "('span', 'span_event') ORDER BY id",
]


def _value(v: object) -> object:
    """JSON compared as values (key order and spacing aside)."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


async def _answers(db) -> list[list[tuple]]:
    return [[tuple(_value(v) for v in r) for r in await db.fetch(q)] for q in QUERIES]


async def _fill_schema_2(db) -> int:
    """Schema 2's rows of the test requests, as schema 2's mapping wrote them, over two days."""
    await migrate(db, discover()[:2])
    await db.execute("SELECT otelpg_ensure_daily_partitions('system_events', '2023-11-14', '2023-11-14')")
    rows = [
        r for m in (map_traces(traces(), RECEIVED_NS), map_logs(logs(), RECEIVED_NS)) for r in system_events_rows(m)
    ]
    await db.copy_records_to_table("system_events", records=rows, columns=SYSTEM_EVENTS_COLUMNS)
    # otelpg's own event, and a row a client inserted that is neither a span nor a log record
    await db.execute(
        "INSERT INTO system_events (event_type, source, payload, timestamp) VALUES "
        "('started', 'otelpg', '{\"version\": 2}', '2023-11-13'), ('deploy', 'ci', '{\"v\": 1}', '2023-11-14')"
    )
    return len(rows)


async def test_a_schema_2_database_reads_the_same_after_migrating_and_converting(db):
    stored = await _fill_schema_2(db)
    before = await _answers(db)
    assert len(before[0]) == stored + 2

    await migrate(db)  # 0003: the table becomes otelpg_events, system_events the view
    assert await _answers(db) == before

    first = await convert_legacy_rows(db, max_partitions=1)  # stops after one partition (resumable)
    assert first.partitions == 1
    assert await _answers(db) == before
    rest = await convert_legacy_rows(db)
    assert first.rows + rest.rows == stored
    assert await _answers(db) == before
    assert (await convert_legacy_rows(db)).partitions == 0  # nothing left

    counts = {
        t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in ("otel_spans", "otel_span_events", "otel_logs")
    }
    assert counts == {"otel_spans": 10, "otel_span_events": 2, "otel_logs": 9}
    kept = await db.fetch("SELECT event_type, source FROM otelpg_events ORDER BY event_type")
    assert [tuple(r) for r in kept] == [("deploy", "ci"), ("started", "otelpg")]
    mapped_scopes = {r[0] for m in (map_traces(traces(), 0), map_logs(logs(), 0)) for r in m.rows["otel_scopes"]}
    assert {r["scope_id"] for r in await db.fetch("SELECT scope_id FROM otel_scopes")} == mapped_scopes
    # flask with the spans' schema_url, and flask without one (the logs'): two scopes
    scopes = await db.fetch("SELECT metadata FROM otel_scopes ORDER BY metadata ? 'schema_url'")
    assert [orjson.loads(r["metadata"]) for r in scopes] == [
        {"scope": {"name": "flask", "version": "3.0", "attributes": {"a": 1}}},
        {"scope": {"name": "flask", "version": "3.0", "attributes": {"a": 1}}, "schema_url": "https://s/1.0"},
    ]
