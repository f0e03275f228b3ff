"""Partition maintenance as a component: one run at start and every `partitions.maintenance_interval`
seconds (skipped when another sidecar or `otelpg maintain` holds the lock); `run_maintenance` is
one run with the configured window and retention (what `otelpg maintain` does)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from exporters.postgres.config import PartitionsConfig, RetentionConfig
from exporters.postgres.legacy import convert_legacy_rows
from exporters.postgres.maintenance import MaintenanceReport, maintain
from exporters.postgres.schema import (
    OTEL_LOGS,
    OTEL_SPAN_EVENTS,
    OTEL_SPANS,
    OTELPG_EVENTS,
    PERFORMANCE_METRICS,
    PERFORMANCE_METRICS_1H,
    PERFORMANCE_METRICS_1M,
    USER_ANALYTICS,
)
from sidecar.pipeline.component import HEALTHY, Health, Tasks

log = logging.getLogger("otelpg.maintenance")

# Partitions of rows stored before schema 3 that `otelpg run` converts per maintenance run
# (`otelpg migrate` converts them all at once).
LEGACY_PARTITIONS_PER_RUN = 1


def retention_days(retention: RetentionConfig) -> dict[str, int]:
    spans = retention.spans_days or retention.system_events_days
    return {
        OTEL_SPANS: spans,
        OTEL_SPAN_EVENTS: spans,
        OTEL_LOGS: retention.logs_days or retention.system_events_days,
        OTELPG_EVENTS: retention.system_events_days,
        PERFORMANCE_METRICS: retention.performance_metrics_days,
        USER_ANALYTICS: retention.user_analytics_days,
        PERFORMANCE_METRICS_1M: retention.performance_metrics_1m_days,
        PERFORMANCE_METRICS_1H: retention.performance_metrics_1h_days,
    }


async def run_maintenance(
    conn: asyncpg.Connection,
    partitions: PartitionsConfig,
    retention: RetentionConfig,
    *,
    wait: bool = True,
    now: Any = None,
) -> MaintenanceReport:
    """One maintenance run with the configured window and retention (`otelpg maintain`)."""
    return await maintain(
        conn,
        days_behind=partitions.days_behind,
        days_ahead=partitions.days_ahead,
        retention_days=retention_days(retention),
        now=now,
        wait=wait,
    )


class PartitionMaintenance:
    name = "partition maintenance"

    def __init__(self, pool: asyncpg.Pool, partitions: PartitionsConfig, retention: RetentionConfig) -> None:
        self._pool = pool
        self._partitions = partitions
        self._retention = retention
        self._tasks = Tasks()
        self.last_report: MaintenanceReport | None = None

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), "otelpg-maintenance")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def health(self) -> Health:
        return HEALTHY

    async def maintain_once(self, *, wait: bool = False, now: Any = None) -> MaintenanceReport:
        async with self._pool.acquire() as conn:
            report = await run_maintenance(conn, self._partitions, self._retention, wait=wait, now=now)
        self.last_report = report
        if report.created or report.dropped or report.moved_rows or report.expired_default_rows:
            log.info("partition maintenance: %s", report.summary())
        async with self._pool.acquire() as conn:  # a schema-2 database's rows, a partition per run
            await convert_legacy_rows(conn, max_partitions=LEGACY_PARTITIONS_PER_RUN)
        return report

    async def _loop(self) -> None:
        interval = max(1.0, self._partitions.maintenance_interval)
        while True:
            try:
                await self.maintain_once()
            except Exception as e:  # PostgreSQL away, a lock timeout...: next run
                log.warning("partition maintenance failed: %s: %s", type(e).__name__, e)
            await asyncio.sleep(interval)
