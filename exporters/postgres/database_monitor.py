"""Whether PostgreSQL answers, checked every few seconds: a component of its own, so the rest of
the exporter reads `Database.ok` instead of probing (a write's failure marks it lost at once)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from exporters.postgres.database import Database
from sidecar.pipeline.component import HEALTHY, Health, Tasks

CHECK_INTERVAL = 2.0


class DatabaseMonitor:
    """`last_commit`: time.monotonic() of the writer's last commit — under load every connection
    may be busy writing, and a recent commit is proof enough. After a start during an outage, the
    first successful check applies the schema."""

    name = "database monitor"

    def __init__(self, database: Database, last_commit: Callable[[], float], interval: float = CHECK_INTERVAL) -> None:
        self._database = database
        self._last_commit = last_commit
        self._interval = interval
        self._tasks = Tasks()

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), "otelpg-db-monitor")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def health(self) -> Health:
        return HEALTHY

    async def check(self) -> None:
        database = self._database
        try:
            if time.monotonic() - self._last_commit() > self._interval:
                await asyncio.wait_for(database.pool.fetchval("SELECT 1"), self._interval)
            if not database.schema_ready.is_set():
                await database.prepare_schema()
        except Exception as e:
            database.lost(e)
        else:
            database.back()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()
