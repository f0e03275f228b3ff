"""Database utilization on /metrics: bytes, estimated rows and partitions per table, database size.

A background task runs the catalog queries (`exporters.postgres.stats.catalog_stats`) every `interval` seconds
and swaps in an immutable snapshot; `collect()` only reads that snapshot (no SQL, no awaits), so a
scrape never waits for PostgreSQL. Until the first refresh succeeds the families are absent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import NamedTuple

import asyncpg
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from exporters.postgres.stats import catalog_stats
from sidecar.pipeline.component import HEALTHY, Health, Tasks

log = logging.getLogger("otelpg.database_metrics")


class TableUsage(NamedTuple):
    table: str
    bytes: int
    rows_estimated: int
    partitions: int


class DatabaseSnapshot(NamedTuple):
    tables: tuple[TableUsage, ...]
    database_bytes: int


class DatabaseUtilization:
    """The collector and its refresh loop. `interval` 0 disables both."""

    name = "database utilization"

    def __init__(
        self,
        interval: float,
        registry: CollectorRegistry | None = None,
        query_timeout: float = 10.0,
        *,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self.interval = interval
        self._pool = pool
        self._tasks = Tasks()
        self._query_timeout = query_timeout
        self.snapshot: DatabaseSnapshot | None = None
        self._failing = False
        if registry is not None:
            registry.register(self)

    async def start(self) -> None:
        if self._pool is not None:
            self._tasks.spawn(self.run(self._pool), "otelpg-database-stats")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def health(self) -> Health:
        return HEALTHY

    async def run(self, pool: asyncpg.Pool) -> None:
        if self.interval <= 0:
            return
        while True:
            await self.refresh(pool)
            await asyncio.sleep(self.interval)

    async def refresh(self, pool: asyncpg.Pool) -> bool:
        """Query the catalog and swap the snapshot; on failure keep the previous one."""
        try:
            async with asyncio.timeout(self._query_timeout), pool.acquire() as conn:
                tables, size = await catalog_stats(conn)
        except Exception as e:  # the database away, a timeout, a revoked privilege: try again later
            if not self._failing:
                log.warning("database utilization not refreshed: %s: %s", type(e).__name__, e)
            self._failing = True
            return False
        self._failing = False
        self.snapshot = DatabaseSnapshot(
            tuple(
                TableUsage(t["table_name"], t["bytes"], t["estimated_rows"], t["partitions"])
                for t in sorted(tables, key=lambda t: t["table_name"])
            ),
            size,
        )
        return True

    def describe(self) -> list[Metric]:
        return []  # dynamic: registering must not run collect()

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        table_bytes = GaugeMetricFamily(
            "otelpg_database_table_bytes",
            "Bytes of a table with its partitions, indexes and TOAST.",
            labels=["table"],
            unit="bytes",
        )
        rows = GaugeMetricFamily(
            "otelpg_database_table_rows_estimated",
            "Rows of a table with its partitions (PostgreSQL's live tuple count, else the planner's estimate).",
            labels=["table"],
        )
        partitions = GaugeMetricFamily(
            "otelpg_database_table_partitions",
            "Partitions of a table (0 when it is not partitioned).",
            labels=["table"],
        )
        for t in snapshot.tables:
            table_bytes.add_metric([t.table], t.bytes)
            rows.add_metric([t.table], t.rows_estimated)
            partitions.add_metric([t.table], t.partitions)
        yield table_bytes
        yield rows
        yield partitions
        yield GaugeMetricFamily(
            "otelpg_database_size_bytes",
            "Size of the whole database on disk.",
            value=snapshot.database_bytes,
            unit="bytes",
        )
