"""DatabaseUtilization: the background refresh reads the catalog; collect() only reads its snapshot."""

from __future__ import annotations

import asyncio

import asyncpg
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from exporters.postgres.database_metrics import DatabaseUtilization
from exporters.postgres.maintenance import ensure_partitions
from exporters.postgres.migrate import migrate


async def test_refresh_then_scrape_and_a_failed_refresh_keeps_the_last_snapshot(db_dsn):
    registry = CollectorRegistry()
    stats = DatabaseUtilization(30, registry)
    assert b"otelpg_database" not in generate_latest(registry)  # nothing before the first refresh

    conn = await asyncpg.connect(db_dsn)
    try:
        await migrate(conn)
        await ensure_partitions(conn, 1, 1)
        await conn.execute(
            "INSERT INTO otel_resources (resource_id, service_name, attributes) "
            "SELECT g, 's', '{}' FROM generate_series(1, 10) g"
        )
    finally:
        await conn.close()  # a backend publishes its table statistics at the latest when it exits
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    try:
        for _ in range(50):
            assert await stats.refresh(pool)
            if any(t.table == "otel_resources" and t.rows_estimated for t in stats.snapshot.tables):
                break
            await asyncio.sleep(0.1)
    finally:
        await pool.close()

    tables = {t.table: t for t in stats.snapshot.tables}
    assert tables["otel_resources"].rows_estimated == 10  # live tuples, before any ANALYZE
    assert tables["otel_resources"].partitions == 0
    for partitioned in ("otel_spans", "otel_span_events", "otel_logs", "otelpg_events"):
        assert tables[partitioned].partitions >= 3, partitioned  # default + the days ensured
    assert "system_events" not in tables  # a view now: no storage of its own to report
    assert all(t.bytes > 0 for t in tables.values())
    assert stats.snapshot.database_bytes > sum(t.bytes for t in tables.values())
    text = generate_latest(registry).decode()
    assert 'otelpg_database_table_rows_estimated{table="otel_resources"} 10.0' in text
    assert "# TYPE otelpg_database_size_bytes gauge" in text

    before = stats.snapshot
    assert not await stats.refresh(pool)  # closed pool: the refresh fails, the scrape keeps working
    assert stats.snapshot is before
    assert generate_latest(registry).decode() == text
