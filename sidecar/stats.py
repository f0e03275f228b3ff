"""`otelpg stats`: rows, bytes and partitions of otelpg's tables."""

from __future__ import annotations

from typing import Any

import asyncpg

from exporters.postgres.schema import (
    AGENT_STATES,
    OTEL_RESOURCES,
    PERFORMANCE_METRICS,
    SYSTEM_CONFIG,
    SYSTEM_EVENTS,
    USER_ANALYTICS,
)

TABLES = (SYSTEM_EVENTS, PERFORMANCE_METRICS, OTEL_RESOURCES, AGENT_STATES, USER_ANALYTICS, SYSTEM_CONFIG)

# Sizes and row estimates summed over a table and its partitions, from the catalog (cheap at any size).
_SQL = """
WITH parent AS (
    SELECT c.oid, c.relname
    FROM pg_class c
    WHERE c.relname = ANY($1::text[]) AND c.relnamespace = current_schema()::regnamespace
), members AS (
    SELECT p.relname AS table_name, p.oid AS relid, false AS is_partition FROM parent p
    UNION ALL
    SELECT p.relname, i.inhrelid, true FROM parent p JOIN pg_inherits i ON i.inhparent = p.oid
)
SELECT m.table_name,
       count(*) FILTER (WHERE m.is_partition) AS partitions,
       sum(pg_total_relation_size(m.relid))::bigint AS bytes,
       sum(greatest(c.reltuples, 0))::bigint AS estimated_rows,
       bool_or(c.reltuples < 0 AND c.relkind = 'r') AS never_analyzed
FROM members m JOIN pg_class c ON c.oid = m.relid
GROUP BY m.table_name
"""

_EXACT_COUNT_BELOW_BYTES = 64 * 1024 * 1024


async def table_stats(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    found = {r["table_name"]: dict(r) for r in await conn.fetch(_SQL, list(TABLES))}
    out = []
    for table in TABLES:
        r = found.get(table)
        if r is None:
            out.append({"table": table, "rows": None, "bytes": None, "partitions": None, "exists": False})
            continue
        rows = r["estimated_rows"]
        exact = r["never_analyzed"] or r["bytes"] < _EXACT_COUNT_BELOW_BYTES
        if exact:  # small or never analyzed: the estimate is useless, an exact count is cheap
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")  # table name from our constant list
        out.append({"table": table, "rows": rows, "rows_exact": exact, "bytes": r["bytes"],
                    "partitions": r["partitions"], "exists": True})
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def format_stats(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'table':<22}{'rows':>14}{'bytes':>14}{'partitions':>12}"]
    for r in rows:
        count = "-" if r["rows"] is None else (f"{r['rows']:,}" if r.get("rows_exact") else f"~{r['rows']:,}")
        parts = "-" if r["partitions"] is None else str(r["partitions"])
        lines.append(f"{r['table']:<22}{count:>14}{_size(r['bytes']):>14}{parts:>12}")
    return "\n".join(lines)
