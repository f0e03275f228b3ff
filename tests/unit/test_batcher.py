"""Batcher: the group-commit policy (flush when a writer is free, grow while all are busy),
the queue bound, and one request's bad data not failing the requests merged with it."""

from __future__ import annotations

import asyncio
import time

import pytest

from exporters.postgres.batcher import MAX_ROW_WRITES, Batch, Batcher
from sidecar.pipeline.errors import BackpressureError, DatabaseUnavailableError, PermanentError


class Recorder:
    """The write function: records each batch's request sizes; can be held to keep writers busy."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.fail_rows: int | None = None  # a request of this many rows is "bad data"

    async def __call__(self, batch: Batch) -> None:
        self.batches.append([r.nrows for r in batch.requests])
        self.started.set()
        await self.gate.wait()
        if self.fail_rows is not None and any(r.nrows == self.fail_rows for r in batch.requests):
            raise PermanentError("bad value")


def rows(n: int) -> dict[str, list[tuple]]:
    return {"t": [(i,) for i in range(n)]}


async def batcher(write: Recorder, **kw: float) -> Batcher:
    opts = {
        "max_rows": 100,
        "max_delay": 5.0,
        "linger": 0.01,
        "queue_max_rows": 1000,
        "queue_max_bytes": 1 << 20,
        "writers": 1,
    } | kw
    b = Batcher(write, **opts)  # type: ignore[arg-type]
    await b.start()
    return b


async def test_idle_pipeline_flushes_after_linger_not_max_delay() -> None:
    write = Recorder()
    b = await batcher(write, linger=0.01, max_delay=5.0)
    started = time.monotonic()
    await b.submit(rows(3), {}, 3, 10)
    # max_delay is 5 s: an answer well before it means the free writer took the batch after linger.
    assert time.monotonic() - started < 2.0
    assert write.batches == [[3]]
    assert await b.close(1)


async def test_free_writer_flushes_while_another_writes() -> None:
    write = Recorder()
    write.gate.clear()
    b = await batcher(write, writers=2, linger=0.01, max_delay=5.0)
    first = asyncio.create_task(b.submit(rows(1), {}, 1, 10))
    await write.started.wait()
    second = asyncio.create_task(b.submit(rows(2), {}, 2, 10))
    for _ in range(100):  # the second writer must take it after linger, not after max_delay (5 s)
        if len(write.batches) == 2:
            break
        await asyncio.sleep(0.01)
    assert write.batches == [[1], [2]]
    write.gate.set()
    await asyncio.gather(first, second)
    assert await b.close(1)


async def test_batch_grows_while_every_writer_is_busy() -> None:
    write = Recorder()
    write.gate.clear()
    b = await batcher(write, writers=1)
    first = asyncio.create_task(b.submit(rows(1), {}, 1, 10))
    await write.started.wait()  # the only writer is now busy with the first batch
    later = [asyncio.create_task(b.submit(rows(n), {}, n, 10)) for n in (2, 3, 4)]
    await asyncio.sleep(0.1)  # far beyond linger: they must still wait for the writer, together
    assert len(write.batches) == 1
    write.gate.set()
    await asyncio.gather(first, *later)
    assert write.batches == [[1], [2, 3, 4]]
    assert await b.close(1)


async def test_full_batch_flushes_at_once() -> None:
    write = Recorder()
    b = await batcher(write, max_rows=10, linger=5.0, max_delay=5.0)
    started = time.monotonic()
    await b.submit(rows(10), {}, 10, 10)
    assert time.monotonic() - started < 2.0
    assert write.batches == [[10]]
    assert await b.close(1)


async def test_queue_bound_refuses_with_backpressure() -> None:
    write = Recorder()
    write.gate.clear()
    b = await batcher(write, queue_max_rows=10)
    first = asyncio.create_task(b.submit(rows(8), {}, 8, 10))
    await write.started.wait()
    with pytest.raises(BackpressureError):
        await b.submit(rows(5), {}, 5, 10)
    write.gate.set()
    await first
    await b.submit(rows(5), {}, 5, 10)  # room again once the first batch committed
    assert await b.close(1)


class RowRecorder:
    """A write function over real rows: a batch holding a row ("bad",) fails as PostgreSQL would
    (permanently), or with `transient` set, any batch fails as if the database went away.
    Committed rows are recorded."""

    def __init__(self) -> None:
        self.committed: list[tuple] = []
        self.writes = 0
        self.transient_after: int | None = None  # fail every write after this many

    async def __call__(self, batch: Batch) -> None:
        self.writes += 1
        if self.transient_after is not None and self.writes > self.transient_after:
            raise DatabaseUnavailableError("gone")
        rows = [row for req in batch.requests for table_rows in req.rows.values() for row in table_rows]
        if ("bad",) in rows:
            raise PermanentError("refused")
        self.committed.extend(rows)


def tagged(name: str, n: int, bad: int = 0) -> dict[str, list[tuple]]:
    return {"t": [(name, i) for i in range(n)] + [("bad",)] * bad}


async def test_a_bad_row_costs_only_itself_when_merged_with_other_requests() -> None:
    write = RowRecorder()
    b = await batcher(write, writers=1, linger=0.2)
    results = await asyncio.gather(
        *(b.submit(tagged(f"r{k}", 50), {}, 50, 10) for k in range(7)), b.submit(tagged("x", 40, bad=1), {}, 41, 10)
    )
    assert results[:7] == [[]] * 7  # every other request is stored whole
    refused = results[7]
    assert [(table, row) for table, row, _ in refused] == [("t", ("bad",))]
    assert isinstance(refused[0][2], PermanentError)
    expected = [r for k in range(7) for r in tagged(f"r{k}", 50)["t"]] + tagged("x", 40)["t"]
    assert sorted(write.committed) == sorted(expected)  # each once, the bad row never
    # bisection, not a write per request and per row: ~2·log2(n) writes per bad unit
    assert write.writes <= 1 + 2 * 3 + 2 * 6
    assert await b.close(1)


async def test_many_bad_rows_in_one_request_are_refused_within_a_bounded_number_of_writes() -> None:
    write = RowRecorder()
    b = await batcher(write, writers=1)
    rows_ = {"t": [("bad",) if i % 2 else ("ok", i) for i in range(400)]}
    refused = await b.submit(rows_, {}, 400, 10)
    assert write.writes <= 1 + MAX_ROW_WRITES
    assert len(refused) + len(write.committed) == 400  # every row either stored or refused
    assert ("bad",) not in write.committed
    assert await b.close(1)


async def test_database_lost_while_narrowing_fails_what_was_not_written_yet() -> None:
    write = RowRecorder()
    write.transient_after = 2  # the merged write and the first half, then the database is gone
    b = await batcher(write, writers=1, linger=0.2)
    results = await asyncio.gather(
        b.submit(tagged("a", 5), {}, 5, 10),
        b.submit(tagged("b", 5), {}, 5, 10),
        b.submit(tagged("c", 5, bad=1), {}, 6, 10),
        b.submit(tagged("d", 5), {}, 5, 10),
        return_exceptions=True,
    )
    assert results[:2] == [[], []]  # the first half committed
    assert all(isinstance(r, DatabaseUnavailableError) for r in results[2:])  # retried or spooled by the caller
    assert await b.close(1)
