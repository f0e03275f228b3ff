import asyncio
import os

import pytest

from exporters.postgres.spool import Spool, read_segment
from sidecar.errors import BackpressureError


async def test_appends_are_durable_and_read_back_in_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    await asyncio.gather(*(spool.append("logs", i, f"payload-{i}".encode()) for i in range(50)))
    await spool.append("traces", 99, b"t")
    segments = await spool.seal()
    records = [r for path in segments for r in read_segment(path)]
    assert [r.payload for r in records[:50]] == [f"payload-{i}".encode() for i in range(50)]
    assert (records[-1].signal, records[-1].received_ns) == ("traces", 99)
    assert len({(r.segment, r.offset) for r in records}) == 51
    spool.close()


async def test_survives_restart_and_never_appends_to_an_old_segment(tmp_path):
    first = Spool(tmp_path, max_bytes=1 << 20)
    await first.append("metrics", 1, b"a")
    first.close()  # like a crash: nothing sealed
    second = Spool(tmp_path, max_bytes=1 << 20)
    assert second.bytes > 0 and not second.empty
    await second.append("metrics", 2, b"b")
    segments = await second.seal()
    assert len(segments) == 2
    assert [r.payload for p in segments for r in read_segment(p)] == [b"a", b"b"]
    for p in segments:
        second.remove(p)
    assert second.empty and list(tmp_path.iterdir()) == []


async def test_torn_tail_is_ignored(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    await spool.append("logs", 1, b"complete")
    await spool.append("logs", 2, b"also complete")
    (path,) = await spool.seal()
    size = path.stat().st_size
    # A crash mid-write of a third record (never acknowledged).
    path.write_bytes(path.read_bytes() + b"\x40\x00\x00\x00garbage")
    assert [r.payload for r in read_segment(path)] == [b"complete", b"also complete"]
    os.truncate(path, size - 3)  # and a corrupted last record
    assert [r.payload for r in read_segment(path)] == [b"complete"]


async def test_full_spool_refuses_with_backpressure(tmp_path):
    spool = Spool(tmp_path, max_bytes=200)
    await spool.append("logs", 1, b"x" * 100)
    with pytest.raises(BackpressureError, match="spool is full"):
        await spool.append("logs", 2, b"x" * 100)


async def test_rotates_segments(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    for i in range(5):
        await spool.append("logs", i, b"y" * 60)
    segments = await spool.seal()
    assert len(segments) == 3  # a segment takes writes until it reaches segment_bytes: 2 + 2 + 1
    assert sum(1 for p in segments for _ in read_segment(p)) == 5
