"""otelpg's own operational events (started, database_unavailable, spool_replayed...) as
`system_events` rows with source 'otelpg'. Events raised while PostgreSQL is away wait in a
bounded buffer and are written when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
import uuid_utils

from exporters.postgres.batcher import Batcher
from exporters.postgres.schema import OTELPG_EVENTS
from sidecar.pipeline.component import HEALTHY, Health, Tasks
from sidecar.pipeline.errors import OtelpgError

log = logging.getLogger("otelpg.events")

SOURCE = "otelpg"


def event_row(event_type: str, severity: str, payload: dict[str, Any], at: dt.datetime | None = None) -> tuple:
    at = at or dt.datetime.now(dt.UTC)
    return (
        uuid_utils.uuid7(),
        event_type,
        SOURCE,
        severity,
        orjson.dumps(payload).decode(),
        at,
        "{}",
        SOURCE,
        None,
        None,
        None,
        None,
        event_type,
        None,
    )


class EventLog:
    """A component, and an observer of the database: its loss and return are events too."""

    name = "events"

    def __init__(
        self,
        batcher: Batcher,
        *,
        max_buffered: int = 1000,
        started: dict[str, Any] | None = None,
        database_ok: Callable[[], bool] = lambda: True,
    ) -> None:
        """`started`: the payload of a `started` event written at start; at stop, a `stopped`
        event is written while `database_ok()`."""
        self._batcher = batcher
        self._started = started
        self._database_ok = database_ok
        self._buffer: deque[tuple] = deque(maxlen=max_buffered)
        self._wake = asyncio.Event()
        self._tasks = Tasks()

    async def start(self) -> None:
        if self._started is not None:
            self.emit("started", **self._started)
        self._tasks.spawn(self.run(), "otelpg-events")

    async def stop(self, within: float = 5.0) -> None:
        """Write what is buffered (within `within` seconds), then stop."""
        if self._started is not None and self._database_ok():
            self.emit("stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), within)
        await self._tasks.cancel()

    def health(self) -> Health:
        return HEALTHY

    def database_lost(self, error: str) -> None:
        self.emit("database_unavailable", "error", error=error)

    def database_back(self) -> None:
        self.emit("database_recovered")

    def emit(self, event_type: str, severity: str = "info", **payload: Any) -> None:
        self._buffer.append(event_row(event_type, severity, payload))
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write the buffered events; keep them for later if PostgreSQL can't take them now."""
        if not self._buffer or self._batcher.closed:
            return not self._buffer
        rows = list(self._buffer)
        self._buffer.clear()
        try:
            await self._batcher.submit({OTELPG_EVENTS: rows}, {}, len(rows), 200 * len(rows))
        except OtelpgError as e:
            log.debug("events not written yet: %s", e)
            self._buffer.extendleft(reversed(rows))
            await asyncio.sleep(2)
            self._wake.set()
            return False
        return True
