"""Replays the spool into PostgreSQL, oldest segment first, once the database answers again.

Each record is split and mapped again, chunk by chunk, with the ids its request had (ids.py:
receive time, seed, row index) and written through the writer's idempotent path: a segment
replayed twice (a crash between commit and delete), or a request whose COMMIT did succeed
before it was spooled, adds no duplicate rows. A segment is deleted only after all its rows are
committed or, for what PostgreSQL refuses for good, kept as dead letters.

Records are merged into transactions of about `batch.max_rows` rows. A permanent refusal is
narrowed down to the records and then the rows that caused it (isolation.py): the others are
committed, the refused rows' records become dead letters, and replay goes on. A record that
can't even be decoded becomes a dead letter too. Nothing one client spooled can stop the replay
of what others spooled after it. A transient failure pauses replay; it resumes by itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters.postgres.batcher import MAX_ROW_WRITES, Tables, merge_tables
from exporters.postgres.dead_letter import DeadLetter, Letter
from exporters.postgres.ids import request_ids
from exporters.postgres.isolation import isolate, refused_rows
from exporters.postgres.mapping.common import CopyRows
from exporters.postgres.mapping_thread import MappingThread
from exporters.postgres.schema import row_service
from exporters.postgres.spool import Record, Spool, read_segment
from exporters.postgres.writer import Writer
from sidecar.pipeline import otlpwire
from sidecar.pipeline.component import HEALTHY, Health, Tasks
from sidecar.pipeline.errors import DecodeError, OtelpgError, PermanentError, RetryableError
from sidecar.pipeline.telemetry import Telemetry

log = logging.getLogger("otelpg.replayer")

STUCK_AFTER = 30.0  # seconds of failing replay (database up) before /health says so


@dataclass(slots=True)
class _Mapped:
    """One spooled request, mapped."""

    record: Record
    rows: dict[str, list[tuple]] = field(default_factory=dict)  # row tuples: mapped without the native encoder
    resources: dict[int, tuple] = field(default_factory=dict)
    nrows: int = 0


class Replayer:
    def __init__(
        self,
        spool: Spool,
        writer: Writer,
        mapping: MappingThread,
        telemetry: Telemetry,
        *,
        database_ok: Callable[[], bool],
        on_replayed: Callable[[dict[str, Any]], None],
        dead_letter: DeadLetter | None = None,
        batch_rows: int = 5000,
        interval: float = 1.0,
    ) -> None:
        self._spool = spool
        self._writer = writer
        self._mapping = mapping
        self._telemetry = telemetry
        self._database_ok = database_ok
        self._on_replayed = on_replayed
        self._dead_letter = dead_letter
        self._batch_rows = batch_rows
        self._interval = interval
        self._wake = asyncio.Event()
        self._tasks = Tasks()
        self.failing_since: float | None = None  # time.monotonic() of the first failure in a row
        self.last_error = ""

    name = "spool replay"

    async def start(self) -> None:
        if not self._spool.empty:
            log.info("spool holds %d bytes from an earlier run: replaying", self._spool.bytes)
        self._tasks.spawn(self.run(), "otelpg-replayer")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def health(self) -> Health:
        if (
            self.failing_since is not None
            and self._database_ok()
            and time.monotonic() - self.failing_since > STUCK_AFTER
        ):
            return Health((f"spool replay failing: {self.last_error}",))
        return HEALTHY

    def database_lost(self, error: str) -> None:
        return None

    def database_back(self) -> None:
        self.wake()

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
                self._failed(e)
                log.info("spool replay paused: %s", e)
            except Exception as e:  # a bug: retried, but visible in /health while it lasts
                self._failed(e)
                log.exception("spool replay failed; will retry")
                await asyncio.sleep(5)
            else:
                self.failing_since = None
                self.last_error = ""

    def _failed(self, error: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(error).__name__}: {error}"

    async def replay(self) -> int:
        """Replay every sealed segment; return the rows committed."""
        total = 0
        for path in await self._spool.seal():
            rows, records, dead = await self._replay_segment(path)
            self._spool.remove(path)
            total += rows
            self._telemetry.spool_replayed_rows.inc(rows)
            log.info(
                "replayed spool segment %s: %d requests, %d rows%s",
                path.name,
                records,
                rows,
                f", {dead} kept as dead letters" if dead else "",
            )
            self._on_replayed({"segment": path.name, "requests": records, "rows": rows, "dead_letters": dead})
        self._spool.discard_empty()
        return total

    async def _replay_segment(self, path: Path) -> tuple[int, int, int]:
        """Rows committed, records read, records kept as dead letters."""
        records = await asyncio.to_thread(lambda: list(read_segment(path)))
        committed = dead = 0
        pending: list[_Mapped] = []
        npending = 0
        for record in records:
            try:
                mapped = await self._map(record)
            except (DecodeError, ValueError) as e:
                dead += await self._bury(record, "the spooled request can't be decoded", str(e), items=0)
                continue
            pending.append(mapped)
            npending += mapped.nrows
            if npending >= self._batch_rows:
                n, d = await self._write(pending)
                committed, dead = committed + n, dead + d
                pending, npending = [], 0
        if pending:
            n, d = await self._write(pending)
            committed, dead = committed + n, dead + d
        return committed, len(records), dead

    async def _map(self, record: Record) -> _Mapped:
        signal = record.signal
        # Cut as on intake (where the cuts were counted already).
        split = await asyncio.to_thread(
            otlpwire.split, signal.code, record.payload, max_list=self._mapping.mapper.max_attributes
        )
        new_id = request_ids(record.received_ns, record.seed)
        out = _Mapped(record)
        for chunk in split.chunks:
            mapped = await self._mapping.map(signal, chunk, record.received_ns, new_id, native=False)  # row tuples
            for table, rows in mapped.rows.items():
                assert not isinstance(rows, CopyRows)
                out.rows.setdefault(table, []).extend(rows)
                out.nrows += len(rows)
            out.resources.update(mapped.resources)
        return out

    async def _write(self, group: list[_Mapped]) -> tuple[int, int]:
        """Commit a group of records' rows; narrow a permanent refusal down. Rows committed, and
        records kept as dead letters. A transient failure is raised: replay pauses."""
        error = await self._attempt(group)
        if error is None:
            return sum(m.nrows for m in group), 0
        if isinstance(error, RetryableError):
            raise error
        assert isinstance(error, PermanentError)
        committed, failed = 0, [(group[0], error)]
        if len(group) > 1:
            found = await isolate(group, self._attempt, error)
            if found.error is not None:
                raise found.error
            committed, failed = sum(m.nrows for m in found.written), found.failed
        dead = 0
        for mapped, record_error in failed:
            rows = await refused_rows(
                mapped.rows, functools.partial(self._attempt_rows, mapped), record_error, max_writes=MAX_ROW_WRITES
            )
            if rows.error is not None:
                raise rows.error
            committed += len(rows.written)
            refusal = rows.failed[0][1] if rows.failed else record_error
            services = sorted({str(row_service(t, r)) for (t, r), _ in rows.failed})
            dead += await self._bury(mapped.record, str(refusal), refusal.detail, len(rows.failed), services)
        return committed, dead

    async def _attempt(self, group: list[_Mapped]) -> OtelpgError | None:
        resources: dict[int, tuple] = {}
        for m in group:
            resources.update(m.resources)
        return await self._attempt_rows_of([dict(m.rows) for m in group], resources)

    async def _attempt_rows(self, mapped: _Mapped, part: Tables) -> OtelpgError | None:
        return await self._attempt_rows_of([part], mapped.resources)

    async def _attempt_rows_of(self, groups: list[Tables], resources: dict[int, tuple]) -> OtelpgError | None:
        nrows = sum(len(rows) for rows in merge_tables(groups).values())
        try:
            await self._writer.write_groups(groups, resources, nrows, idempotent=True)
        except OtelpgError as e:
            return e
        return None

    async def _bury(
        self, record: Record, reason: str, detail: str, items: int, services: list[str] | None = None
    ) -> int:
        """Keep a spooled request (or the rows of it PostgreSQL refused) as a dead letter."""
        log.warning(
            "spooled %s request of %s kept as a dead letter: %s (%s)",
            record.signal.name,
            ", ".join(services or ["unknown services"]),
            reason,
            detail,
        )
        if self._dead_letter is not None:
            await self._dead_letter.add(
                Letter(
                    record.signal.name,
                    "spool",
                    reason,
                    detail,
                    items,
                    services or [],
                    record.received_ns,
                    record.seed,
                    record.payload,
                )
            )
        return 1
