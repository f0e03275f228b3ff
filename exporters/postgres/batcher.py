"""Group commit: rows of concurrent requests merge into batches, one transaction each.

A request's rows go into the open batch. Group commit as PostgreSQL itself does it: as soon as a
writer is free the batch is flushed, after at most `linger` (capped by `max_delay`) for more rows
to join, or at once when it holds `max_rows`. While every writer is busy the batch grows, so
batches are small (low latency) while PostgreSQL keeps up and large (high throughput) when it
is busy, with no fixed wait on an idle pipeline. Every
request waits on its own future, resolved only after the transaction holding its rows has
committed (ack after commit). The queue is bounded in rows and bytes: beyond it `submit`
raises BackpressureError at once.

When PostgreSQL refuses a batch for good, the refusal is narrowed down (isolation.py): the
batch's requests are bisected, and a request refused alone is bisected by rows, so every other
request commits whole and a request loses only the rows PostgreSQL can't store, which `submit`
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from exporters.postgres.isolation import isolate, refused_rows
from exporters.postgres.mapping.common import CopyRows, Tables
from sidecar.pipeline.component import HEALTHY, Health
from sidecar.pipeline.errors import (
    BackpressureError,
    DatabaseUnavailableError,
    OtelpgError,
    PermanentError,
    ShuttingDownError,
)

log = logging.getLogger("otelpg.batcher")

RefusedRow = tuple[str, tuple, PermanentError]  # table, row, why PostgreSQL refused it
# Transactions spent narrowing one request's refusal down to its rows: enough for a few bad rows
# among thousands (~2·log2(n) each); past it the rows not yet narrowed down are refused with them.
MAX_ROW_WRITES = 64


@dataclass(slots=True)
class Request:
    """One client request's rows, waiting for its commit."""

    rows: Tables
    resources: dict[int, tuple]
    nrows: int
    nbytes: int
    future: asyncio.Future[list[RefusedRow]]  # the rows PostgreSQL refused ([] when all are stored)
    # The same rows as tuples, mapped again in Python (same ids), for narrowing a refusal down to
    # rows when some of `rows` are encoded (CopyRows). Called in a thread, on that rare path only.
    remap: Callable[[], Tables] | None = None


@dataclass(slots=True)
class Batch:
    requests: list[Request] = field(default_factory=list)
    nrows: int = 0
    nbytes: int = 0

    def add(self, req: Request) -> None:
        self.requests.append(req)
        self.nrows += req.nrows
        self.nbytes += req.nbytes

    def groups(self) -> list[Tables]:
        """Each request's rows."""
        return [req.rows for req in self.requests]

    def resources(self) -> dict[int, tuple]:
        merged: dict[int, tuple] = {}
        for req in self.requests:
            merged.update(req.resources)
        return merged


def merge_tables(groups: list[Tables]) -> dict[str, list[tuple]]:
    """The row tuples of several requests, table by table, in order (encoded rows: see copy_plan)."""
    merged: dict[str, list[tuple]] = {}
    for group in groups:
        for table, rows in group.items():
            if isinstance(rows, CopyRows):
                raise TypeError(f"encoded {table} rows where row tuples are needed")
            if rows:
                merged.setdefault(table, []).extend(rows)
    return merged


def copy_plan(groups: list[Tables]) -> list[tuple[str, list[tuple] | CopyRows]]:
    """What to COPY for several requests: per table (in order of first appearance), their row
    tuples merged and their encoded rows joined, each once when there are any."""
    tuples: dict[str, list[tuple]] = {}
    encoded: dict[str, list[CopyRows]] = {}
    for group in groups:
        for table, rows in group.items():
            if not rows:
                continue
            if isinstance(rows, CopyRows):
                encoded.setdefault(table, []).append(rows)
            else:
                tuples.setdefault(table, []).extend(rows)
    plan: list[tuple[str, list[tuple] | CopyRows]] = list(tuples.items())
    plan += [(table, CopyRows.join(parts)) for table, parts in encoded.items()]
    return plan


WriteFn = Callable[[Batch], Awaitable[None]]


class Batcher:
    def __init__(
        self,
        write: WriteFn,
        *,
        max_rows: int,
        max_delay: float,
        queue_max_rows: int,
        queue_max_bytes: int,
        writers: int = 2,
        linger: float = 0.01,
        grace: float = 20.0,
    ) -> None:
        self._write = write
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.linger = linger
        self._grace = grace
        self.queue_max_rows = queue_max_rows
        self.queue_max_bytes = queue_max_bytes
        self._open = Batch()
        self._queued_rows = 0  # rows in the open batch and in batches being written
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._writers = asyncio.Semaphore(writers)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def fill(self) -> float:
        """Fraction of the queue in use (rows or bytes, whichever is fuller)."""
        return max(self._queued_rows / self.queue_max_rows, self._queued_bytes / self.queue_max_bytes)

    name = "batcher"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="otelpg-batcher")

    async def stop(self) -> None:
        """Stop taking requests; write what's queued within the grace period."""
        if await self.close(self._grace):
            log.info("queue drained")
        else:
            log.warning("queue not drained within %gs: the rest was refused (spooled, or 503)", self._grace)

    def health(self) -> Health:
        return HEALTHY

    async def submit(
        self,
        rows: Tables,
        resources: dict[int, tuple],
        nrows: int,
        nbytes: int,
        *,
        continuation: bool = False,
        remap: Callable[[], Tables] | None = None,
    ) -> list[RefusedRow]:
        """Queue a request's rows and return once they are committed: [], or the rows PostgreSQL
        refused for good (all the others are committed). Raises if they can't be written now.
        `continuation`: the next chunk of a request already being written, let past a full queue
        (its memory is already admitted), so a request is never refused halfway."""
        if self._closed:
            raise ShuttingDownError("otelpg is shutting down", retry_after=5)
        if (
            not continuation
            and self._queued_rows
            and (self._queued_rows + nrows > self.queue_max_rows or self._queued_bytes + nbytes > self.queue_max_bytes)
        ):
            raise BackpressureError("otelpg's write queue is full, retry later", retry_after=1)
        fut: asyncio.Future[list[RefusedRow]] = asyncio.get_running_loop().create_future()
        self._open.add(Request(rows, resources, nrows, nbytes, fut, remap))
        self._queued_rows += nrows
        self._queued_bytes += nbytes
        self._wakeup.set()
        if self._open.nrows >= self.max_rows:
            self._full.set()
        # shield: a client that disconnects must not cancel the future other code resolves.
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._open.requests:
                self._wakeup.clear()
                if self._closed:
                    return
                continue
            if self._open.nrows < self.max_rows and not self._closed and not self._writers.locked():
                # A writer is free: give concurrent requests `linger` to join, then write.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), min(self.linger, self.max_delay))
            # Wait for a free writer before taking the batch: it keeps growing meanwhile (bigger COPYs
            # under load), and a cancelled wait leaves it in place to be failed by close().
            await self._writers.acquire()
            batch, self._open = self._open, Batch()
            self._full.clear()
            task = asyncio.create_task(self._flush(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _flush(self, batch: Batch) -> None:
        try:
            error = await self._attempt(batch)
            if isinstance(error, PermanentError):
                await self._isolate(batch.requests, error)
            else:
                self._resolve(batch.requests, error)
        finally:
            self._writers.release()
            self._queued_rows -= batch.nrows
            self._queued_bytes -= batch.nbytes

    async def _isolate(self, requests: list[Request], error: PermanentError) -> None:
        """One request's bad data must not fail the others merged with it: bisect the requests,
        then the rows of each request refused alone."""
        if len(requests) > 1:
            found = await isolate(requests, self._attempt_requests, error, on_written=self._resolve)
            self._resolve(found.unwritten, found.error)
            refused = found.failed
        else:
            refused = [(requests[0], error)]
        for req, req_error in refused:
            await self._salvage(req, req_error)

    async def _salvage(self, req: Request, error: PermanentError) -> None:
        async def write(part: dict[str, list[tuple]]) -> OtelpgError | None:
            nrows = sum(len(rows) for rows in part.values())
            return await self._attempt(_single(Request(dict(part), req.resources, nrows, 0, req.future)))

        rows = req.rows
        if req.remap is not None and any(isinstance(r, CopyRows) for r in rows.values()):
            rows = await asyncio.to_thread(req.remap)
        found = await refused_rows(merge_tables([rows]), write, error, max_writes=MAX_ROW_WRITES)
        if req.future.done():
            return
        if found.error is not None:  # rows not tried yet: the request isn't stored whole, it is retried
            self._resolve([req], found.error)
        else:
            req.future.set_result([(table, row, e) for (table, row), e in found.failed])

    async def _attempt_requests(self, requests: list[Request]) -> OtelpgError | None:
        batch = Batch()
        for req in requests:
            batch.add(req)
        return await self._attempt(batch)

    async def _attempt(self, batch: Batch) -> OtelpgError | None:
        try:
            await self._write(batch)
        except asyncio.CancelledError:  # shutdown ran out of grace: the transaction rolled back
            return DatabaseUnavailableError("not written before shutdown", retry_after=1)
        except OtelpgError as e:
            return e
        except Exception as e:  # a bug must fail these requests, not kill the flusher
            log.exception("batch write failed")
            return PermanentError(f"internal error writing batch: {type(e).__name__}: {e}")
        return None

    @staticmethod
    def _resolve(requests: list[Request], error: OtelpgError | None = None) -> None:
        for req in requests:
            if req.future.done():  # cancelled: the client went away
                continue
            if error is None:
                req.future.set_result([])
            else:
                req.future.set_exception(error)
                req.future.exception()  # retrieved: a client that left must not log "never retrieved"

    async def close(self, grace: float) -> bool:
        """Stop taking requests and write what's queued within `grace` seconds. True if all was written;
        otherwise the writes still under way are cancelled (rolled back) and their requests fail with
        a RetryableError, so the exporter can spool them before acknowledging."""
        self._closed = True
        self._wakeup.set()
        self._full.set()
        try:
            if self._task is not None:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            if self._inflight:
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*self._inflight, return_exceptions=True)), grace)
            return True
        except TimeoutError:
            pass
        tasks = [*self._inflight, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._resolve(self._open.requests, DatabaseUnavailableError("not written before shutdown", retry_after=1))
        return False


def _single(req: Request) -> Batch:
    batch = Batch()
    batch.add(req)
    return batch
