"""Partition upkeep: daily partitions exist ahead of the data that will need them."""

from __future__ import annotations

import datetime as dt

import asyncpg

from exporters.postgres.schema import PARTITIONED_TABLES

_LOCK = "hashtext('otelpg.maintain.' || current_schema())"


async def ensure_partitions(
    conn: asyncpg.Connection, days_behind: int, days_ahead: int, today: dt.date | None = None
) -> int:
    """Create the missing daily partitions of every partitioned table; return how many.

    Rows outside the window still land in each table's default partition. A transaction-level
    advisory lock keeps several sidecars on one database from racing.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=days_behind), today + dt.timedelta(days=days_ahead)
    created = 0
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
        for table in PARTITIONED_TABLES:
            created += await conn.fetchval(
                "SELECT otelpg_ensure_daily_partitions($1, $2, $3)", table, first, last
            )
    return created
