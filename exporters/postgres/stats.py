"""`otelpg stats`: per table rows, bytes, partitions, oldest and newest timestamp, rows inserted and
the share of the database it takes; then the totals; then what this sidecar keeps in its data dir
(spool segments waiting for replay, dead letters).

Sizes, partition counts and insert counters come from the catalog and the cumulative statistics
(cheap at any size). Rows are counted exactly below 64 MiB, else estimated. The oldest and newest
timestamps of a partitioned table are read from its first and last non-empty partitions (by range)
and its default partition only, not from the whole table.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg

from exporters.postgres.schema import (
    AGENT_STATES,
    EVENT_TYPES,
    METRIC_NAMES,
    OTEL_LOGS,
    OTEL_RESOURCES,
    OTEL_SCOPES,
    OTEL_SPAN_EVENTS,
    OTEL_SPANS,
    OTELPG_EVENTS,
    PARTITIONING,
    PERFORMANCE_METRICS,
    PERFORMANCE_METRICS_1H,
    PERFORMANCE_METRICS_1M,
    SYSTEM_CONFIG,
    USER_ANALYTICS,
)

TABLES = (
    OTEL_SPANS,
    OTEL_SPAN_EVENTS,
    OTEL_LOGS,
    OTELPG_EVENTS,
    PERFORMANCE_METRICS,
    PERFORMANCE_METRICS_1M,
    PERFORMANCE_METRICS_1H,
    USER_ANALYTICS,
    OTEL_RESOURCES,
    OTEL_SCOPES,
    AGENT_STATES,
    SYSTEM_CONFIG,
    METRIC_NAMES,
    EVENT_TYPES,
)

# The time span of a table: (column of its oldest row, column of its newest row).
TIME_COLUMNS: dict[str, tuple[str, str]] = {
    **{table: (column, column) for table, (column, _) in PARTITIONING.items()},
    OTEL_RESOURCES: ("first_seen", "last_seen"),
    OTEL_SCOPES: ("first_seen", "last_seen"),
    AGENT_STATES: ("last_active", "last_active"),
    SYSTEM_CONFIG: ("updated_at", "updated_at"),
    METRIC_NAMES: ("first_seen", "last_seen"),
    EVENT_TYPES: ("first_seen", "last_seen"),
}
TOTAL = "total"

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
       -- live tuples from the cumulative statistics (current after every commit), else the planner's
       -- estimate (refreshed only by ANALYZE/VACUUM, -1 before the first one)
       sum(coalesce(nullif(pg_stat_get_live_tuples(m.relid), 0), greatest(c.reltuples, 0)))::bigint AS estimated_rows,
       bool_or(c.reltuples < 0 AND c.relkind = 'r') AS never_analyzed,
       sum(coalesce(pg_stat_get_tuples_inserted(m.relid), 0))::bigint AS inserted
FROM members m JOIN pg_class c ON c.oid = m.relid
GROUP BY m.table_name
"""

_EXACT_COUNT_BELOW_BYTES = 64 * 1024 * 1024


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _partitioned_span(conn: asyncpg.Connection, table: str, column: str) -> tuple[Any, Any, int]:
    """(oldest, newest, rows in the default partition) of a partitioned table, reading only its first
    and last non-empty partitions and the default one."""
    parts = await conn.fetch(
        "SELECT partition, is_default FROM otelpg_partitions WHERE parent = $1 ORDER BY is_default, range_start",
        table,
    )
    ranged = [r["partition"] for r in parts if not r["is_default"]]
    default = next((r["partition"] for r in parts if r["is_default"]), None)
    oldest = newest = None
    for part in ranged:
        oldest = await conn.fetchval(f"SELECT min({_q(column)}) FROM {_q(part)}")
        if oldest is not None:
            break
    for part in reversed(ranged):
        newest = await conn.fetchval(f"SELECT max({_q(column)}) FROM {_q(part)}")
        if newest is not None:
            break
    in_default = 0
    if default is not None:
        lo, hi, in_default = await conn.fetchrow(
            f"SELECT min({_q(column)}), max({_q(column)}), count(*) FROM {_q(default)}"
        )
        oldest = lo if oldest is None or (lo is not None and lo < oldest) else oldest
        newest = hi if newest is None or (hi is not None and hi > newest) else newest
    return oldest, newest, in_default


def _iso(t: Any) -> str | None:
    return t.isoformat() if isinstance(t, dt.datetime) else None


async def table_stats(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """One dict per table of TABLES (in that order), then a `total` one."""
    found = {r["table_name"]: dict(r) for r in await conn.fetch(_SQL, list(TABLES))}
    database_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    have_partitions_view = await conn.fetchval("SELECT to_regclass('otelpg_partitions') IS NOT NULL")
    out: list[dict[str, Any]] = []
    for table in TABLES:
        r = found.get(table)
        if r is None:
            out.append({"table": table, "rows": None, "bytes": None, "partitions": None, "exists": False})
            continue
        rows = r["estimated_rows"]
        exact = r["never_analyzed"] or r["bytes"] < _EXACT_COUNT_BELOW_BYTES
        if exact:  # small or never analyzed: the estimate is useless, an exact count is cheap
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")  # table name from our constant list
        first_col, last_col = TIME_COLUMNS[table]
        in_default = None
        if table in PARTITIONING and have_partitions_view:
            oldest, newest, in_default = await _partitioned_span(conn, table, first_col)
        else:
            oldest, newest = await conn.fetchrow(f"SELECT min({first_col}), max({last_col}) FROM {table}")
        out.append({
            "table": table, "rows": rows, "rows_exact": exact, "bytes": r["bytes"],
            "share": round(r["bytes"] / database_bytes, 4) if database_bytes else None,
            "partitions": r["partitions"], "default_partition_rows": in_default,
            "oldest": _iso(oldest), "newest": _iso(newest), "inserted": r["inserted"], "exists": True,
        })  # fmt: skip
    present = [r for r in out if r["exists"]]
    otelpg_bytes = sum(r["bytes"] for r in present)
    out.append({
        "table": TOTAL, "rows": sum(r["rows"] for r in present), "rows_exact": all(r["rows_exact"] for r in present),
        "bytes": otelpg_bytes, "share": round(otelpg_bytes / database_bytes, 4) if database_bytes else None,
        "partitions": sum(r["partitions"] for r in present),
        "default_partition_rows": sum(r["default_partition_rows"] or 0 for r in present),
        "oldest": min((r["oldest"] for r in present if r["oldest"]), default=None),
        "newest": max((r["newest"] for r in present if r["newest"]), default=None),
        "inserted": sum(r["inserted"] for r in present), "database_bytes": database_bytes, "exists": True,
    })  # fmt: skip
    return out


async def catalog_stats(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], int]:
    """Per existing table: partitions, bytes and estimated rows, plus the database size. Catalog and
    statistics reads only, never count(*): cheap at any size, for the periodic refresh of /metrics."""
    rows = await conn.fetch(_SQL, list(TABLES))
    size = await conn.fetchval("SELECT pg_database_size(current_database())")
    return [dict(r) for r in rows], size


def local_stats(data_dir: str | Path) -> list[dict[str, Any]]:
    """The data dir's own state, as rows like the tables': spool segments waiting for replay, and
    dead letters (data PostgreSQL refused for good) with the latest reason."""
    from exporters.postgres.dead_letter import FILE_NAME, read_letters

    spool = Path(data_dir) / "spool"
    segments = sorted(spool.glob("segment-*.spool")) if spool.is_dir() else []
    path = Path(data_dir) / "dead-letter" / FILE_NAME
    letters = read_letters(path)
    return [
        {"table": "spool", "local": True, "rows": len(segments), "bytes": sum(p.stat().st_size for p in segments),
         "path": str(spool), "exists": True},
        {"table": "dead_letter", "local": True, "rows": len(letters), "bytes": path.stat().st_size if letters else 0,
         "items": sum(x.get("items", 0) for x in letters), "path": str(path),
         "latest": {k: letters[-1].get(k) for k in ("time", "signal", "source", "reason", "services")}
         if letters else None, "exists": True},
    ]  # fmt: skip


def format_local(rows: list[dict[str, Any]]) -> str:
    spool, letters = rows
    lines = [f"spool: {spool['rows']} segment(s), {_size(spool['bytes'])} waiting for replay ({spool['path']})"]
    if letters["rows"]:
        latest = letters["latest"]
        lines.append(
            f"dead letters: {letters['rows']} ({letters['items']} items, {_size(letters['bytes'])}) in "
            f"{letters['path']}; latest {_when(latest['time'])} {latest['signal']} of "
            f"{', '.join(latest['services'] or ['?'])}: {latest['reason']}"
        )
    else:
        lines.append("dead letters: none")
    return "\n".join(lines)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _when(t: str | None) -> str:
    return t[:19].replace("T", " ") if t else "-"


def format_stats(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'table':<24}{'rows':>14}{'bytes':>12}{'share':>8}{'partitions':>12}{'in default':>12}"
        f"  {'oldest':<21}{'newest':<21}{'inserted':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["table"] == TOTAL:
            lines.append("-" * len(head))
        count = "-" if r["rows"] is None else (f"{r['rows']:,}" if r.get("rows_exact") else f"~{r['rows']:,}")
        parts = "-" if r["partitions"] is None else str(r["partitions"])
        share = "-" if r.get("share") is None else f"{100 * r['share']:.1f}%"
        default = "-" if r.get("default_partition_rows") is None else f"{r['default_partition_rows']:,}"
        inserted = "-" if r.get("inserted") is None else f"{r['inserted']:,}"
        lines.append(
            f"{r['table']:<24}{count:>14}{_size(r['bytes']):>12}{share:>8}{parts:>12}{default:>12}"
            f"  {_when(r.get('oldest')):<21}{_when(r.get('newest')):<21}{inserted:>14}"
        )
    total = next((r for r in rows if r["table"] == TOTAL), None)
    if total is not None:
        lines.append(
            f"database size {_size(total['database_bytes'])}; otelpg's tables take "
            f"{100 * (total['share'] or 0):.1f}% of it. 'inserted' counts rows since the last "
            "statistics reset (partitions dropped since are not included)."
        )
    return "\n".join(lines)
