"""What each part of the schema costs PostgreSQL: raw binary COPY of otelpg's rows into variants
of the tables (an index dropped, JSONB as JSON, synchronous_commit off), PostgreSQL CPU per row.

Evidence for the schema side of docs/performance.md. Rows come from the ingest benchmark's
request generator and otelpg's mapping, mapped before timing; each variant gets a fresh,
migrated schema and the same rows (new ids).

    /work/venv/bin/python tests/bench/bench_copy_variants.py [--rows 100000] [--database-url DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import asyncpg
import psutil
from uuid_utils import uuid7

from exporters.postgres.schema import COPY_TABLES
from tests.bench import _pg
from tests.bench._otlp_gen import build_templates
from tests.bench.bench_ingest import mapped_rows

VARIANTS: dict[str, dict[str, list[str]]] = {
    "system_events": {
        "as migrated": [],
        "without (event_type, timestamp) index": ["DROP INDEX system_events_type_time_idx"],
        "without trace_id index": ["DROP INDEX system_events_trace_id_idx"],
        "without BRIN (timestamp)": ["DROP INDEX system_events_timestamp_brin"],
        "payload, metadata JSON (not JSONB)": [
            "ALTER TABLE system_events ALTER COLUMN payload TYPE json, ALTER COLUMN metadata TYPE json"
        ],
        "no secondary index at all": [
            "DROP INDEX system_events_type_time_idx",
            "DROP INDEX system_events_trace_id_idx",
            "DROP INDEX system_events_timestamp_brin",
        ],
    },
    "performance_metrics": {
        "as migrated": [],
        "without (metric_name, timestamp) index": ["DROP INDEX performance_metrics_name_time_idx"],
        "tags, details, exemplars JSON (not JSONB)": [
            "ALTER TABLE performance_metrics ALTER COLUMN tags TYPE json, ALTER COLUMN details TYPE json, "
            "ALTER COLUMN exemplars TYPE json"
        ],
    },
}
SIGNAL = {"system_events": "traces", "performance_metrics": "metrics"}


async def measure(
    server: _pg.Server, dsn: str, table: str, setup: list[str], rows: list[tuple], batch: int, synchronous_commit: str
) -> tuple[float, float]:
    schema_dsn = await _pg.fresh_schema(dsn, "bench_variant", migrated=True)
    try:
        conn = await asyncpg.connect(schema_dsn)
        try:
            for sql in setup:
                try:
                    await conn.execute(sql)
                except asyncpg.PostgresError as e:  # a variant the current schema doesn't have
                    print(f"    ({sql}: {e})")
                    return float("nan"), float("nan")
            await conn.execute(f"SET synchronous_commit = {synchronous_commit}")
            columns = COPY_TABLES[table]
            await conn.copy_records_to_table(table, records=[], columns=columns)
            cpu0 = server.cpu_seconds()
            t0 = time.perf_counter()
            for i in range(0, len(rows), batch):
                await conn.copy_records_to_table(table, records=rows[i : i + batch], columns=columns)
            elapsed = time.perf_counter() - t0
            cpu = server.cpu_seconds() - cpu0
        finally:
            await conn.close()
    finally:
        await _pg.drop_schema(dsn, schema_dsn)
    return len(rows) / elapsed, cpu / len(rows) * 1e6


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--database-url")
    p.add_argument("--table", choices=(*VARIANTS, "all"), default="all")
    args = p.parse_args()
    server = _pg.Server(args.database_url)
    dsn = server.start()
    try:
        print(
            f"PostgreSQL {(await _pg.settings(dsn))['server_version']}, {args.rows:,} rows per variant, "
            f"{args.batch}-row COPY batches on one connection, one transaction each; "
            f"machine load before: {psutil.cpu_percent(1.0):.0f}%"
        )
        for table, variants in VARIANTS.items():
            if args.table not in ("all", table):
                continue
            signal = SIGNAL[table]
            rows, _ = mapped_rows(
                signal, build_templates(signal, 4, 500 if signal == "traces" else 1000), args.rows, 7_000_000
            )
            print(f"== {table}")
            for name, setup in [*variants.items(), ("as migrated, synchronous_commit=off", [])]:
                sync = "off" if "synchronous_commit=off" in name else "on"
                rows = [(uuid7(), *r[1:]) for r in rows]
                rate, us = await measure(server, dsn, table, setup, rows, args.batch, sync)
                print(f"  {rate:9,.0f} rows/s  {us:5.1f} µs PostgreSQL CPU/row  {name}")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
