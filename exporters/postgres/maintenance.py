"""Partition upkeep: partitions exist ahead of the data, rows never stay without one, retention
drops whole partitions.

For every partitioned table (schema.PARTITIONING: daily, or monthly for the 1h rollup) one run
1. drops the partitions whose whole range is past retention (DROP TABLE: never a bulk DELETE);
2. deletes from the `<table>_default` partition the rows already past retention — it only holds
   rows whose day had no partition (clients with broken clocks, backfills), so this is small;
3. creates the partitions of [today - days_behind, today + days_ahead], and of every earlier day
   still within retention that has rows in the default partition. A partition is created as a
   standalone table, the rows of its range are moved into it from the default partition
   (DELETE ... RETURNING, in the same transaction), then it is ATTACHed. ATTACH takes only a
   SHARE UPDATE EXCLUSIVE lock on the parent, so COPYs into other partitions go on meanwhile
   (CREATE TABLE ... PARTITION OF would lock the whole table).
Rows beyond today + days_ahead wait in the default partition until the window reaches their day.

Each DDL step is its own short transaction with a lock timeout: a step that can't get its locks is
skipped and retried at the next run rather than stalling ingest behind it. Dropping a partition
needs an ACCESS EXCLUSIVE lock on its parent (PostgreSQL's rule; DETACH CONCURRENTLY can't be used
next to a default partition), during which COPYs into that table wait: its timeout is 1 s. A session-level
advisory lock per schema makes concurrent runs (several sidecars, `otelpg maintain` from cron)
take turns; the background task skips its run when another holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import asyncpg

from exporters.postgres.schema import (
    EVENT_TYPES,
    METRIC_NAMES,
    PARTITIONED_TABLES,
    PARTITIONING,
    PERFORMANCE_METRICS_1H,
    PERFORMANCE_METRICS_1M,
)

log = logging.getLogger("otelpg.maintenance")

_LOCK_KEY = "hashtext('otelpg.maintain.' || current_schema())"
_MAX_YEAR = 9999  # Python's datetime can't hold the end of a partition past it
# Rollup rows are updated in place many times: room on the page makes those HOT updates.
_STORAGE = {PERFORMANCE_METRICS_1M: " WITH (fillfactor = 70)", PERFORMANCE_METRICS_1H: " WITH (fillfactor = 70)"}


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    moved_rows: int = 0  # rows moved out of default partitions into their new partition
    dropped: list[str] = field(default_factory=list)
    expired_default_rows: int = 0  # rows past retention deleted from default partitions
    skipped: list[str] = field(default_factory=list)  # steps that hit the lock timeout, retried next run
    locked_out: bool = False  # another maintainer held the lock (wait=False)

    def summary(self) -> str:
        if self.locked_out:
            return "another maintainer is running: skipped"
        parts = [
            f"created {len(self.created)} partitions",
            f"moved {self.moved_rows} rows out of default partitions",
            f"dropped {len(self.dropped)} partitions past retention",
        ]
        if self.expired_default_rows:
            parts.append(f"deleted {self.expired_default_rows} expired rows from default partitions")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} (lock timeout, retried next run)")
        return ", ".join(parts)


def period_start(unit: str, t: dt.datetime | dt.date) -> dt.datetime:
    """The start (UTC midnight) of the day or month holding `t`."""
    d = t.astimezone(dt.UTC).date() if isinstance(t, dt.datetime) else t
    if unit == "month":
        d = d.replace(day=1)
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)


def next_period(unit: str, start: dt.datetime) -> dt.datetime:
    if unit == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + dt.timedelta(days=1)


def partition_name(table: str, unit: str, start: dt.datetime) -> str:
    return f"{table}_p{start:%Y%m}" if unit == "month" else f"{table}_p{start:%Y%m%d}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(t: dt.datetime) -> str:
    return "'" + t.isoformat() + "'"  # our own datetimes: no quoting issue


@contextlib.asynccontextmanager
async def advisory_lock(conn: asyncpg.Connection, wait: bool = True) -> AsyncIterator[bool]:
    """Session-level maintenance lock of the current schema; yields whether it is held."""
    if wait:
        await conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})")
        held = True
    else:
        held = await conn.fetchval(f"SELECT pg_try_advisory_lock({_LOCK_KEY})")
    try:
        yield held
    finally:
        if held:
            await conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})")


async def _ranges(conn: asyncpg.Connection, table: str) -> list[tuple[dt.datetime, dt.datetime, str]]:
    rows = await conn.fetch(
        "SELECT range_start, range_end, partition FROM otelpg_partitions "
        "WHERE parent = $1 AND NOT is_default AND range_start IS NOT NULL ORDER BY range_start",
        table,
    )
    return [(r["range_start"], r["range_end"], r["partition"]) for r in rows]


def _overlaps(ranges: list[tuple[dt.datetime, dt.datetime, str]], lo: dt.datetime, hi: dt.datetime) -> bool:
    return any(start < hi and end > lo for start, end, _ in ranges)


async def _columns(conn: asyncpg.Connection, table: str) -> str:
    names = await conn.fetchval(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        table,
    )
    return names


async def create_partition(
    conn: asyncpg.Connection, table: str, start: dt.datetime, lock_timeout_ms: int = 5000
) -> int:
    """Create the partition of `table` starting at `start` (one period wide), moving the rows of its
    range out of the default partition, in one transaction. Return the rows moved."""
    column, unit = PARTITIONING[table]
    end = next_period(unit, start)
    name = partition_name(table, unit, start)
    default = f"{table}_default"
    lo, hi = _literal(start), _literal(end)
    columns = await _columns(conn, table)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        # First, so that no writer adds rows of this range to the default partition while we move
        # them (ATTACH takes this lock anyway, to check the default partition).
        await conn.execute(f"LOCK TABLE {_ident(default)} IN ACCESS EXCLUSIVE MODE")
        await conn.execute(
            f"CREATE TABLE {_ident(name)} (LIKE {_ident(table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            + _STORAGE.get(table, "")
        )
        # Proves the partition constraint, so ATTACH needn't scan the new table to check it.
        await conn.execute(
            f"ALTER TABLE {_ident(name)} ADD CONSTRAINT {_ident(name + '_range')} "
            f"CHECK ({_ident(column)} >= {lo} AND {_ident(column)} < {hi})"
        )
        status = await conn.execute(
            f"WITH moved AS (DELETE FROM {_ident(default)} WHERE {_ident(column)} >= $1 AND {_ident(column)} < $2 "
            f"RETURNING {columns}) INSERT INTO {_ident(name)} ({columns}) SELECT {columns} FROM moved",
            start,
            end,
        )
        await conn.execute(
            f"ALTER TABLE {_ident(table)} ATTACH PARTITION {_ident(name)} FOR VALUES FROM ({lo}) TO ({hi})"
        )
        await conn.execute(f"ALTER TABLE {_ident(name)} DROP CONSTRAINT {_ident(name + '_range')}")
    moved = int(status.split()[-1])
    if moved:
        log.info("moved %d rows from %s into the new partition %s", moved, default, name)
    return moved


async def _create_missing(
    conn: asyncpg.Connection, table: str, starts: list[dt.datetime], report: MaintenanceReport, lock_timeout_ms: int
) -> None:
    ranges = await _ranges(conn, table)
    unit = PARTITIONING[table][1]
    for start in sorted(set(starts)):
        end = next_period(unit, start)
        if _overlaps(ranges, start, end):
            continue  # exists (or a partition made by hand covers part of it: leave the rows in default)
        try:
            moved = await create_partition(conn, table, start, lock_timeout_ms)
        except asyncpg.LockNotAvailableError:
            # A long query holds the default partition: don't wait again for each period.
            log.warning(
                "partition %s not created: %s_default is busy (retried next run)",
                partition_name(table, unit, start),
                table,
            )
            report.skipped.append(partition_name(table, unit, start))
            return
        ranges.append((start, end, partition_name(table, unit, start)))
        report.created.append(partition_name(table, unit, start))
        report.moved_rows += moved


def _window(unit: str, today: dt.date, days_behind: int, days_ahead: int) -> list[dt.datetime]:
    first = period_start(unit, today - dt.timedelta(days=days_behind))
    last = period_start(unit, today + dt.timedelta(days=days_ahead))
    starts, s = [], first
    while s <= last:
        starts.append(s)
        s = next_period(unit, s)
    return starts


async def ensure_partitions(
    conn: asyncpg.Connection, days_behind: int, days_ahead: int, today: dt.date | None = None
) -> int:
    """Create the missing daily partitions of [today - days_behind, today + days_ahead] of every
    day-partitioned table (rows of those days in a default partition are moved into them);
    return how many were created."""
    today = today or dt.datetime.now(dt.UTC).date()
    report = MaintenanceReport()
    async with advisory_lock(conn):
        for table in PARTITIONED_TABLES:
            await _create_missing(conn, table, _window("day", today, days_behind, days_ahead), report, 5000)
    return len(report.created)


async def maintain(
    conn: asyncpg.Connection,
    *,
    days_behind: int,
    days_ahead: int,
    retention_days: Mapping[str, int],
    now: dt.datetime | None = None,
    wait: bool = True,
    lock_timeout_ms: int = 5000,
    drop_lock_timeout_ms: int = 1000,
) -> MaintenanceReport:
    """One maintenance run over every partitioned table (see the module docstring).

    `retention_days` maps a table to the days it keeps; tables not in it are never trimmed.
    `now` is injectable for tests; `wait=False` returns at once when another run holds the lock.
    """
    now = now or dt.datetime.now(dt.UTC)
    today = now.astimezone(dt.UTC).date()
    report = MaintenanceReport()
    async with advisory_lock(conn, wait) as held:
        if not held:
            report.locked_out = True
            return report
        for table, (column, unit) in PARTITIONING.items():
            keep = retention_days.get(table)
            # Whole periods are kept: those ending after the cutoff.
            expire_before = period_start(unit, today - dt.timedelta(days=keep)) if keep else None
            if expire_before is not None:
                await _drop_expired(conn, table, expire_before, report, drop_lock_timeout_ms)
            default = f"{table}_default"
            if expire_before is not None:
                status = await conn.execute(f"DELETE FROM {_ident(default)} WHERE {_ident(column)} < $1", expire_before)
                expired = int(status.split()[-1])
                if expired:
                    log.info("deleted %d rows past retention from %s", expired, default)
                report.expired_default_rows += expired
            horizon = next_period(unit, period_start(unit, today + dt.timedelta(days=days_ahead)))
            late = await conn.fetch(
                f"SELECT DISTINCT date_trunc('{unit}', {_ident(column)}, 'UTC') AS start FROM {_ident(default)} "
                f"WHERE {_ident(column)} >= $1 AND {_ident(column)} < $2",
                expire_before or dt.datetime(1, 1, 1, tzinfo=dt.UTC),
                horizon,
            )
            starts = _window(unit, today, days_behind, days_ahead) + [
                r["start"] for r in late if r["start"].year < _MAX_YEAR
            ]
            await _create_missing(conn, table, starts, report, lock_timeout_ms)
        await _trim_lookups(conn, now, max(retention_days.values(), default=0))
    return report


async def _drop_expired(
    conn: asyncpg.Connection, table: str, expire_before: dt.datetime, report: MaintenanceReport, lock_timeout_ms: int
) -> None:
    for _start, end, name in await _ranges(conn, table):
        if end > expire_before:
            break  # sorted by start; daily/monthly ranges don't overlap
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                await conn.execute(f"DROP TABLE {_ident(name)}")
        except asyncpg.LockNotAvailableError:
            log.warning("partition %s past retention not dropped: its table is busy (retried next run)", name)
            report.skipped.append(name)
            return  # the next ones would wait for the same lock
        log.info("dropped partition %s (past retention)", name)
        report.dropped.append(name)


async def _trim_lookups(conn: asyncpg.Connection, now: dt.datetime, keep_days: int) -> None:
    """Forget metric names and event types not seen for longer than any data is kept."""
    if keep_days <= 0:
        return
    for table in (METRIC_NAMES, EVENT_TYPES):
        await conn.execute(f"DELETE FROM {table} WHERE last_seen < $1", now - dt.timedelta(days=keep_days))
