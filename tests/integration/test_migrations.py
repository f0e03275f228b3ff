import asyncio
import datetime as dt

import asyncpg
import pytest

from exporters.postgres.maintenance import ensure_partitions
from exporters.postgres.migrate import Migration, MigrationError, discover, migrate, pending
from exporters.postgres.schema import COPY_TABLES, PARTITIONED_TABLES, SYSTEM_EVENTS_COLUMNS

EXPECTED_TABLES = {
    "otel_spans",
    "otel_span_events",
    "otel_logs",
    "otelpg_events",
    "otel_scopes",
    "performance_metrics",
    "otel_resources",
    "agent_states",
    "user_analytics",
    "system_config",
    "schema_migrations",
}


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
        "AND relkind IN ('r', 'p') AND NOT relispartition"
    )
    return {r["relname"] for r in rows}


async def test_fresh_apply_creates_the_whole_schema(db):
    applied = await migrate(db)
    assert [m.version for m in applied] == [m.version for m in discover()]
    assert await _tables(db) >= EXPECTED_TABLES
    assert await db.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'system_events'::regclass") == "v"
    for table in PARTITIONED_TABLES:
        kind = await db.fetchval("SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", table)
        assert kind == "p", table
        assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{table}_default")
    recorded = await db.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["checksum"]) for r in recorded] == [(m.version, m.checksum) for m in discover()]
    assert await db.fetchval("SELECT otelpg_histogram_quantile(0.5, '{1,2,4}', '{0,10,10,0}')") == 2.0


async def test_schema_columns_match_the_mapping_contract(db):
    await migrate(db)
    for table, columns in COPY_TABLES.items():
        rows = await db.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
            table,
        )
        assert set(columns) == {r["attname"] for r in rows}, table
    for table in PARTITIONED_TABLES:
        pk = await db.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'",
            table,
        )
        if table == "user_analytics":  # written once with its source rows, found by user: no key needed
            assert pk is None
            continue
        key = "bucket" if "_1" in table else '"timestamp"'
        assert pk in (
            f"PRIMARY KEY (service_name, {key}, id)",
            f"PRIMARY KEY (metric_name, service_name, series_hash, {key})",
        ), table
    # the view keeps schema 2's columns, in order
    view = await db.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'system_events'::regclass AND attnum > 0 ORDER BY attnum"
    )
    assert tuple(r["attname"] for r in view) == SYSTEM_EVENTS_COLUMNS


async def test_reapply_is_a_no_op(db):
    await migrate(db)
    assert await migrate(db) == []
    assert await pending(db) == []


async def test_concurrent_apply_from_two_connections(db_dsn):
    a, b = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        ra, rb = await asyncio.gather(migrate(a), migrate(b))
        assert sorted([len(ra), len(rb)]) == [0, len(discover())]
        assert await a.fetchval("SELECT count(*) FROM schema_migrations") == len(discover())
    finally:
        await a.close()
        await b.close()


async def test_changed_applied_migration_is_an_error(db):
    await migrate(db)
    first, *rest = discover()
    changed = [Migration(first.version, first.name, first.sql + "\n-- edited"), *rest]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(db, changed)


async def test_unknown_applied_migration_is_an_error(db):
    await migrate(db, [*discover(), Migration(9999, "future", "SELECT 1")])
    with pytest.raises(MigrationError, match="9999, unknown"):
        await migrate(db)


async def test_failed_migration_rolls_back(db):
    await migrate(db)
    bad = [*discover(), Migration(9998, "broken", "CREATE TABLE half_done (x int); SELECT no_such_function();")]
    with pytest.raises(MigrationError, match="9998_broken"):
        await migrate(db, bad)
    assert await db.fetchval("SELECT to_regclass('half_done')") is None
    assert await db.fetchval("SELECT max(version) FROM schema_migrations") == discover()[-1].version


async def test_partitions_around_today(db):
    await migrate(db)
    today = dt.date(2030, 1, 15)
    created = await ensure_partitions(db, 1, 3, today=today)
    assert created == 5 * len(PARTITIONED_TABLES)
    assert await ensure_partitions(db, 1, 3, today=today) == 0
    parts = await db.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'otel_spans'::regclass ORDER BY 1"
    )
    assert [r["relname"] for r in parts] == [
        "otel_spans_default",
        *(f"otel_spans_p2030{d:04d}" for d in (114, 115, 116, 117, 118)),
    ]
    # A row far outside the window lands in the default partition rather than failing (a row
    # INSERTed into the system_events view is kept in otelpg_events).
    await db.execute("INSERT INTO system_events (event_type, source, timestamp) VALUES ('t', 's', '1970-01-02')")
    await db.execute("INSERT INTO system_events (event_type, source, timestamp) VALUES ('t', 's', '2030-01-16')")
    where = await db.fetch("SELECT tableoid::regclass::text AS p FROM otelpg_events ORDER BY timestamp")
    assert [r["p"] for r in where] == ["otelpg_events_default", "otelpg_events_p20300116"]
