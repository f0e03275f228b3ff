"""How long upgrading a schema-2 database in place takes: rows are written as schema 2 stored them
(spans with a span event every 25, log records), the schema is migrated to the latest version and
`convert_legacy_rows` moves them into the lean tables, partition by partition. Prints the time per
million rows and the bytes before and after.

    python -m tests.bench.bench_upgrade [--rows 1000000] [--days 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time

import asyncpg

from exporters.postgres.legacy import convert_legacy_rows
from exporters.postgres.migrate import discover, migrate
from tests.bench._pg import Server, drop_schema, fresh_schema

FILL = """
WITH t AS (
    SELECT g, $1::timestamptz + (g * $3::float8) * interval '1 second' AS ts, 'svc-' || (g % 4) AS svc,
           md5(g::text)::uuid AS trace
    FROM generate_series(1, $2::int) g
)
INSERT INTO system_events (id, event_type, source, severity, payload, timestamp, metadata, service_name, resource_id,
                           trace_id, span_id, parent_span_id, name, duration_ms)
SELECT gen_random_uuid(),
       CASE WHEN g % 3 = 0 THEN 'log' WHEN g % 25 = 1 THEN 'span_event' ELSE 'span' END,
       svc, CASE WHEN g % 20 = 0 THEN 'error' ELSE 'info' END,
       CASE WHEN g % 3 = 0 THEN jsonb_build_object(
                'body', 'handled request ' || g || ' in ' || (g % 97) || ' ms', 'severity_number', 9,
                'severity_text', 'INFO', 'time_unix_nano', (extract(epoch FROM ts) * 1e9)::bigint,
                'observed_time_unix_nano', (extract(epoch FROM ts) * 1e9)::bigint + 1000,
                'attributes', jsonb_build_object('http.route', '/api/orders/{id}', 'code.function', 'handle'))
            WHEN g % 25 = 1 THEN jsonb_build_object(
                'span_name', 'GET /api/orders', 'time_unix_nano', (extract(epoch FROM ts) * 1e9)::bigint,
                'attributes', jsonb_build_object('exception.type', 'TimeoutError', 'exception.message', 'slow'))
            ELSE jsonb_build_object(
                'kind', 'SPAN_KIND_SERVER',
                'status', jsonb_build_object('code', CASE WHEN g % 20 = 0 THEN 'STATUS_CODE_ERROR'
                                                          ELSE 'STATUS_CODE_UNSET' END),
                'start_time_unix_nano', (extract(epoch FROM ts) * 1e9)::bigint,
                'end_time_unix_nano', (extract(epoch FROM ts) * 1e9)::bigint + (g % 997) * 1000000,
                'flags', 257,
                'attributes', jsonb_build_object('http.request.method', 'GET', 'http.route', '/api/orders/{id}',
                    'url.path', '/api/orders/' || g, 'http.response.status_code', 200, 'server.address', 'shop',
                    'server.port', 8080, 'network.protocol.version', '1.1', 'url.scheme', 'https'))
       END,
       ts, '{"scope": {"name": "opentelemetry.instrumentation.flask", "version": "0.48b0"}}'::jsonb, svc, g % 4,
       trace, lpad(to_hex(g), 16, '0'), CASE WHEN g % 2 = 0 THEN lpad(to_hex(g + 1), 16, '0') END,
       'GET /api/orders', CASE WHEN g % 3 <> 0 AND g % 25 <> 1 THEN (g % 997)::float8 END
FROM t
"""


async def _size(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'm')"
    )


async def run(dsn: str, rows: int, days: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, discover()[:2])
        start = await conn.fetchval("SELECT date_trunc('day', now()) - make_interval(days => $1)", days)
        await conn.execute(
            "SELECT otelpg_ensure_daily_partitions('system_events', $1::date, $2::date)",
            start.date(),
            (start + dt.timedelta(days=days)).date(),
        )
        began = time.perf_counter()
        await conn.execute(FILL, start, rows, days * 86400 / rows)
        await conn.execute("VACUUM ANALYZE")
        filled = time.perf_counter() - began
        before = await _size(conn)
        began = time.perf_counter()
        await migrate(conn)
        migrated = time.perf_counter() - began
        done = await convert_legacy_rows(conn)
        await conn.execute("VACUUM ANALYZE")
        after = await _size(conn)
    finally:
        await conn.close()
    per_million = done.seconds / done.rows * 1e6 if done.rows else 0.0
    print(f"schema-2 rows written: {rows:,} over {days} days in {filled:.1f} s")
    print(f"migration 0003 (rename, new tables, view): {migrated:.2f} s")
    print(
        f"conversion: {done.rows:,} rows ({done.spans:,} spans, {done.span_events:,} span events, {done.logs:,} logs) "
        f"from {done.partitions} partitions in {done.seconds:.1f} s = {per_million:.1f} s per million rows"
    )
    print(f"bytes: {before / rows:,.0f} per row before, {after / rows:,.0f} after (VACUUMed; emptied pages stay)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    server = Server(args.database_url)
    try:
        dsn = server.start()

        async def in_fresh_schema() -> None:
            schema_dsn = await fresh_schema(dsn, "bench_upgrade", migrated=False)
            try:
                await run(schema_dsn, args.rows, args.days)
            finally:
                await drop_schema(dsn, schema_dsn)

        asyncio.run(in_fresh_schema())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
