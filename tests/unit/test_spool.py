import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from exporters.postgres.spool import Spool, read_segment
from sidecar.pipeline.errors import BackpressureError
from sidecar.pipeline.signals import LOGS, METRICS, TRACES


async def test_appends_are_durable_and_read_back_in_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    await asyncio.gather(*(spool.append(LOGS, i, f"payload-{i}".encode()) for i in range(50)))
    await spool.append(TRACES, 99, b"t")
    segments = await spool.seal()
    records = [r for path in segments for r in read_segment(path)]
    assert [r.payload for r in records[:50]] == [f"payload-{i}".encode() for i in range(50)]
    assert (records[-1].signal, records[-1].received_ns) == (TRACES, 99)
    assert len({(r.segment, r.offset) for r in records}) == 51
    spool.close()


async def test_survives_restart_and_never_appends_to_an_old_segment(tmp_path):
    first = Spool(tmp_path, max_bytes=1 << 20)
    await first.append(METRICS, 1, b"a")
    first.close()  # like a crash: nothing sealed
    second = Spool(tmp_path, max_bytes=1 << 20)
    assert second.bytes > 0 and not second.empty
    await second.append(METRICS, 2, b"b")
    segments = await second.seal()
    assert len(segments) == 2
    assert [r.payload for p in segments for r in read_segment(p)] == [b"a", b"b"]
    for p in segments:
        second.remove(p)
    assert second.empty and list(tmp_path.iterdir()) == []


async def test_torn_tail_is_ignored(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    await spool.append(LOGS, 1, b"complete")
    await spool.append(LOGS, 2, b"also complete")
    (path,) = await spool.seal()
    size = path.stat().st_size
    # A crash mid-write of a third record (never acknowledged).
    path.write_bytes(path.read_bytes() + b"\x40\x00\x00\x00garbage")
    assert [r.payload for r in read_segment(path)] == [b"complete", b"also complete"]
    os.truncate(path, size - 3)  # and a corrupted last record
    assert [r.payload for r in read_segment(path)] == [b"complete"]


async def test_full_spool_refuses_with_backpressure(tmp_path):
    spool = Spool(tmp_path, max_bytes=200)
    await spool.append(LOGS, 1, b"x" * 100)
    with pytest.raises(BackpressureError, match="spool is full"):
        await spool.append(LOGS, 2, b"x" * 100)


async def test_rotates_segments(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    for i in range(5):
        await spool.append(LOGS, i, b"y" * 60)
    segments = await spool.seal()
    assert len(segments) == 3  # a segment takes writes until it reaches segment_bytes: 2 + 2 + 1
    assert sum(1 for p in segments for _ in read_segment(p)) == 5


# --------------------------------------------------------------------------- full, exactly as before


async def test_full_is_exact_and_not_a_write_failure(tmp_path):
    record = 8 + 17 + 100  # header, meta, payload
    spool = Spool(tmp_path, max_bytes=2 * record)
    await spool.append(LOGS, 1, b"x" * 100)
    await spool.append(LOGS, 2, b"x" * 100)  # exactly max_bytes: accepted
    assert spool.bytes == 2 * record and spool.fill() == 1.0
    with pytest.raises(BackpressureError, match="spool is full") as e:
        await spool.append(LOGS, 3, b"")
    assert e.value.retry_after == 5
    assert spool.bytes == 2 * record and spool.write_failures == 0 and spool.last_write_error is None
    (path,) = await spool.seal()
    assert [r.received_ns for r in read_segment(path)] == [1, 2]
    spool.close()


# --------------------------------------------------------------------------- stray files


async def test_files_named_like_segments_that_are_not_are_ignored_with_one_warning_each(tmp_path, caplog):
    first = Spool(tmp_path, max_bytes=1 << 20)
    await first.append(LOGS, 1, b"real")
    first.close()
    (real,) = list(tmp_path.iterdir())
    arabic_indic_3 = "\u0660" * 11 + "\u0663"
    strays = {
        "segment-abc.spool": "file",
        "segment-.spool": "file",
        "segment-0000000000001.spool": "file",  # 13 digits
        "segment-00000000001.spool": "file",  # 11
        f"segment-{arabic_indic_3}.spool": "file",  # int() reads these digits, the spool never writes them
        "segment-000000000007.spool": "dir",
        "segment-000000000008.spool": "symlink",  # to the real segment: not a regular file
        "segment-000000000009.spool": "dangling",
    }
    for name, kind in strays.items():
        path = tmp_path / name
        if kind == "file":
            path.write_bytes(b"not a spool record at all")
        elif kind == "dir":
            path.mkdir()
            (path / "inside").write_bytes(b"x")
        elif kind == "symlink":
            path.symlink_to(real)
        else:
            path.symlink_to(tmp_path / "nowhere")
    before = {p.name for p in tmp_path.iterdir()}

    caplog.set_level(logging.WARNING, logger="otelpg.spool")
    spool = Spool(tmp_path, max_bytes=1 << 20)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(strays)
    for name in strays:
        assert sum(name in w for w in warnings) == 1, name
    assert spool.bytes == real.stat().st_size

    await spool.append(LOGS, 2, b"new")  # never into a stray's name, numbered or not
    segments = await spool.seal()
    assert [p.name for p in segments] == [real.name, "segment-000000000010.spool"]
    assert [r.payload for p in segments for r in read_segment(p)] == [b"real", b"new"]
    for p in segments:
        spool.remove(p)
    spool.discard_empty()
    assert spool.empty and {p.name for p in tmp_path.iterdir()} == before - {real.name}
    spool.close()


def _child(script: str, tmp: Path, *, timeout: float = 30) -> dict:
    """Run `script` in a fresh interpreter (the repo on sys.path); it prints one JSON object last."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "SPOOL_DIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {**json.loads(proc.stdout.splitlines()[-1]), "log": proc.stderr}


def test_an_unreadable_segment_is_ignored_with_a_warning(tmp_path):
    # World-accessible, so that the child can drop root (root reads any file) and still list it.
    spool_dir = Path(tempfile.mkdtemp(prefix="otelpg-spool-"))
    try:
        spool_dir.chmod(0o777)
        unreadable = spool_dir / "segment-000000000004.spool"
        unreadable.write_bytes(b"\x00" * 64)
        unreadable.chmod(0)
        result = _child(
            """
            import asyncio, concurrent.futures.thread, json, logging, os  # no lazy import once not root
            from exporters.postgres.spool import Spool, read_segment
            from sidecar.pipeline.signals import LOGS, METRICS, TRACES
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)

            async def main():
                spool = Spool(os.environ["SPOOL_DIR"], max_bytes=1 << 20)
                before = spool.bytes
                await spool.append(TRACES, 1, b"ok")
                segments = await spool.seal()
                spool.discard_empty()
                return {"before": before, "segments": [p.name for p in segments],
                        "payloads": [r.payload.decode() for p in segments for r in read_segment(p)]}

            print(json.dumps(asyncio.run(main())))
            """,
            spool_dir,
        )
        assert result["before"] == 0
        assert result["segments"] == ["segment-000000000005.spool"] and result["payloads"] == ["ok"]
        warnings = [line for line in result["log"].splitlines() if line.startswith("WARNING")]
        assert len(warnings) == 1 and unreadable.name in warnings[0], result["log"]
        assert unreadable.exists()  # ignored, not deleted
    finally:
        shutil.rmtree(spool_dir)


# --------------------------------------------------------------------------- disk full


def test_disk_full_is_logged_counted_and_refused(tmp_path):
    """A real write failure: RLIMIT_FSIZE makes write() fail with EFBIG past 8 KiB (SIGXFSZ ignored),
    after a short write for the record that straddles the limit."""
    result = _child(
        """
        import asyncio, errno, json, logging, os, resource, signal
        from exporters.postgres.spool import Spool, read_segment
        from sidecar.pipeline.errors import BackpressureError
        from sidecar.pipeline.signals import LOGS, METRICS, TRACES
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        async def main():
            clock = [1000.0]
            seen = []
            spool = Spool(os.environ["SPOOL_DIR"], max_bytes=1 << 20, clock=lambda: clock[0],
                          on_write_error=lambda e: seen.append(e.errno))
            for i in range(3):
                await spool.append(LOGS, i, b"a" * 2000)  # 3 x 2025 bytes
            out = {"ok_bytes": spool.bytes, "refused": [], "failures": [], "errors": []}
            for t in (1000.0, 1001.0, 1009.9, 1010.0, 1012.0):
                clock[0] = t
                try:
                    await spool.append(LOGS, 99, b"b" * 4000)  # doesn't fit under 8 KiB
                except BackpressureError as e:
                    out["refused"].append(str(e))
                out["failures"].append(spool.write_failures)
                out["errors"].append(spool.last_write_error)
            await spool.append(LOGS, 100, b"c" * 100)  # still fits: the failed writes left nothing behind
            out["bytes"] = spool.bytes
            out["callbacks"] = [errno.errorcode[n] for n in seen]
            segments = await spool.seal()
            out["sizes"] = [p.stat().st_size for p in segments]
            out["records"] = [r.received_ns for p in segments for r in read_segment(p)]
            return out

        print(json.dumps(asyncio.run(main())))
        """,
        tmp_path,
    )
    assert result["ok_bytes"] == 3 * 2025
    assert len(result["refused"]) == 5
    assert all("can't write its spool" in m and "File too large" in m for m in result["refused"])
    assert result["failures"] == [1, 2, 3, 4, 5]
    assert [t for t, _ in result["errors"]] == [1000.0, 1001.0, 1009.9, 1010.0, 1012.0]
    assert all("File too large" in msg and str(tmp_path) in msg for _, msg in result["errors"])
    assert result["callbacks"] == ["EFBIG"] * 5
    # Nothing of the refused requests is on disk; the spool takes what still fits.
    assert result["records"] == [0, 1, 2, 100]
    assert result["bytes"] == sum(result["sizes"]) == 3 * 2025 + 125
    # At most one WARNING per 10 s while it keeps failing, saying how many it didn't log.
    warnings = [line for line in result["log"].splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2, result["log"]
    assert all("File too large" in w and str(tmp_path) in w for w in warnings)
    assert "suppressed" not in warnings[0] and "2 more failures suppressed" in warnings[1]
