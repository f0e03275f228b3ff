"""Replays the spool into PostgreSQL, oldest segment first, once the database answers again.

Each record is mapped again with the ids its request had (ids.py: receive time, seed, row
index) and written through the writer's idempotent path: a segment replayed twice (a crash
between commit and delete), or a request whose COMMIT did succeed before it was spooled,
adds no duplicate rows. A segment is deleted only after all its rows are committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporters.postgres.mapping_thread import MappingThread
from exporters.postgres.spool import Spool, read_segment
from exporters.postgres.writer import Writer
from sidecar.errors import RetryableError
from sidecar.receivers.signals import LOGS, METRICS, TRACES
from sidecar.telemetry import Telemetry

log = logging.getLogger("otelpg.replayer")

_DECODE = {"traces": TRACES.request_type, "metrics": METRICS.request_type, "logs": LOGS.request_type}


class Replayer:
    def __init__(self, spool: Spool, writer: Writer, mapping: MappingThread, telemetry: Telemetry, *,
                 database_ok: Callable[[], bool],
                 on_replayed: Callable[[dict[str, Any]], None], batch_rows: int = 5000,
                 interval: float = 1.0) -> None:
        self._spool = spool
        self._writer = writer
        self._mapping = mapping
        self._telemetry = telemetry
        self._database_ok = database_ok
        self._on_replayed = on_replayed
        self._batch_rows = batch_rows
        self._interval = interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._spool.empty or not self._database_ok():
                continue
            try:
                await self.replay()
            except RetryableError as e:
                log.info("spool replay paused: %s", e)
            except Exception:
                log.exception("spool replay failed; will retry")
                await asyncio.sleep(5)

    async def replay(self) -> int:
        """Replay every sealed segment; return the rows committed."""
        total = 0
        for path in await self._spool.seal():
            rows, records = await self._replay_segment(path)
            self._spool.remove(path)
            total += rows
            self._telemetry.spool_replayed_rows.inc(rows)
            log.info("replayed spool segment %s: %d requests, %d rows", path.name, records, rows)
            self._on_replayed({"segment": path.name, "requests": records, "rows": rows})
        self._spool.discard_empty()
        return total

    async def _replay_segment(self, path: Path) -> tuple[int, int]:
        records = await asyncio.to_thread(lambda: list(read_segment(path)))
        tables: dict[str, list[tuple]] = {}
        resources: dict[int, tuple] = {}
        pending = committed = 0
        for record in records:
            request = _DECODE[record.signal]()
            request.ParseFromString(record.payload)
            mapped = await self._mapping.map(record.signal, request, record.received_ns, record.seed,
                                             record.payload)
            for table, rows in mapped.rows.items():
                if rows:
                    tables.setdefault(table, []).extend(rows)
                    pending += len(rows)
            resources.update(mapped.resources)
            if pending >= self._batch_rows:
                await self._write(tables, resources, pending)
                committed += pending
                tables, resources, pending = {}, {}, 0
        if pending:
            await self._write(tables, resources, pending)
            committed += pending
        return committed, len(records)

    async def _write(self, tables: dict[str, list[tuple]], resources: dict[int, tuple], nrows: int) -> None:
        await self._writer.write_rows(tables, resources, nrows, idempotent=True)
