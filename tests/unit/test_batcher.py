"""Batcher: the group-commit policy (flush when a writer is free, grow while all are busy),
the queue bound, and one request's bad data not failing the requests merged with it."""

from __future__ import annotations

import asyncio
import time

import pytest

from exporters.postgres.batcher import Batch, Batcher
from sidecar.errors import BackpressureError, PermanentError


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


def batcher(write: Recorder, **kw: float) -> Batcher:
    opts = {"max_rows": 100, "max_delay": 5.0, "linger": 0.01, "queue_max_rows": 1000,
            "queue_max_bytes": 1 << 20, "writers": 1} | kw
    b = Batcher(write, **opts)  # type: ignore[arg-type]
    b.start()
    return b


async def test_idle_pipeline_flushes_after_linger_not_max_delay() -> None:
    write = Recorder()
    b = batcher(write, linger=0.01, max_delay=5.0)
    started = time.monotonic()
    await b.submit(rows(3), {}, 3, 10)
    # max_delay is 5 s: an answer well before it means the free writer took the batch after linger.
    assert time.monotonic() - started < 2.0
    assert write.batches == [[3]]
    assert await b.close(1)


async def test_free_writer_flushes_while_another_writes() -> None:
    write = Recorder()
    write.gate.clear()
    b = batcher(write, writers=2, linger=0.01, max_delay=5.0)
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
    b = batcher(write, writers=1)
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
    b = batcher(write, max_rows=10, linger=5.0, max_delay=5.0)
    started = time.monotonic()
    await b.submit(rows(10), {}, 10, 10)
    assert time.monotonic() - started < 2.0
    assert write.batches == [[10]]
    assert await b.close(1)


async def test_queue_bound_refuses_with_backpressure() -> None:
    write = Recorder()
    write.gate.clear()
    b = batcher(write, queue_max_rows=10)
    first = asyncio.create_task(b.submit(rows(8), {}, 8, 10))
    await write.started.wait()
    with pytest.raises(BackpressureError):
        await b.submit(rows(5), {}, 5, 10)
    write.gate.set()
    await first
    await b.submit(rows(5), {}, 5, 10)  # room again once the first batch committed
    assert await b.close(1)


async def test_bad_request_fails_alone_when_merged() -> None:
    write = Recorder()
    write.gate.clear()
    write.fail_rows = 7
    b = batcher(write, writers=1)
    first = asyncio.create_task(b.submit(rows(1), {}, 1, 10))
    await write.started.wait()
    good = asyncio.create_task(b.submit(rows(2), {}, 2, 10))
    bad = asyncio.create_task(b.submit(rows(7), {}, 7, 10))
    await asyncio.sleep(0.05)
    write.gate.set()
    await first
    await good
    with pytest.raises(PermanentError):
        await bad
    # the merged batch failed, then each of its requests was written alone
    assert write.batches == [[1], [2, 7], [2], [7]]
    assert await b.close(1)
