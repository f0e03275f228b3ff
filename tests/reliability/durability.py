"""Scenarios of a bad day: the database goes away, otelpg is killed or stopped, the disk fills up.

Each returns a Result: what clients saw acknowledged vs what PostgreSQL stored, and its own bound.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time
from pathlib import Path

import aiohttp
import asyncpg

from tests.conftest import with_search_path
from tests.otelpg_process import OtelpgProcess
from tests.reliability.harness import (
    BASE_CONFIG,
    Load,
    Result,
    Stage,
    Suite,
    Target,
    alive,
    database_down,
    dir_bytes,
    get_json,
    health,
    log_excerpt,
    sigkill,
    sigterm,
    wait_for,
    wait_stored,
)
from tests.reliability.proxy import ChaosProxy, Mode


def _config(grace: float) -> str:
    return BASE_CONFIG.replace("grace_period: 10", f"grace_period: {grace:g}")


async def outage(suite: Suite) -> Result:
    """HTTP, gRPC and SDK clients under load; the database cut off; every acked item stored once."""
    r = Result("outage")
    cut_for = suite.pick(5, 30)
    async with Stage(suite, "outage") as st:
        proc = await st.start()
        load = Load(Target(proc), sdk=True).start()
        await asyncio.sleep(suite.pick(2, 5))
        before = len(load.tally)
        await st.proxy.cut()
        cut_at = time.monotonic()
        await database_down(proc)
        status, body = await health(proc)
        r.note(f"/health during the outage: {status} status={body.get('status')!r} problems={body.get('problems')}")
        await asyncio.sleep(max(0.0, cut_for - (time.monotonic() - cut_at)))
        during = len(load.tally) - before
        spooled = dir_bytes(st.data_dir / "spool")
        await st.proxy.restore()
        restored_at = time.monotonic()
        await asyncio.sleep(suite.pick(2, 5))
        await load.stop()
        stored, _ = await wait_stored(st.direct_dsn, load.tally.acked, suite.pick(30, 120))
        drained = time.monotonic() - restored_at
        code, _ = await sigterm(proc)
    r.count(load.tally.acked, stored)
    r.note(load.tally.summary())
    r.note(f"spool held {spooled / 2**20:.1f} MiB at the end of the outage")
    r.check(during > 0, "nothing acknowledged during the outage: the spool took nothing")
    r.check(load.tally.statuses["sdk SUCCESS"] > 0, "the SDK exporters never succeeded")
    r.check(code == 0, f"otelpg exit status {code} after SIGTERM" + log_excerpt(proc))
    r.figure = f"{during:,} acked during a {cut_for:g}s outage; all stored {drained:.1f}s after restore"
    return r


async def kill9_load(suite: Suite) -> Result:
    """SIGKILL under load, restart on the same data dir: every acked item stored once."""
    r = Result("kill9_load")
    async with Stage(suite, "kill9_load") as st:
        proc = await st.start()
        target = Target(proc)
        load = Load(target).start()
        await asyncio.sleep(suite.pick(4, 20))
        at_kill = len(load.tally)
        await sigkill(proc)
        killed = time.monotonic()
        target.proc = proc2 = await st.start()
        back_in = time.monotonic() - killed
        await asyncio.sleep(suite.pick(3, 15))
        await load.stop()
        stored, _ = await wait_stored(st.direct_dsn, load.tally.acked, suite.pick(30, 60))
        code, _ = await sigterm(proc2)
    r.count(load.tally.acked, stored)
    r.note(load.tally.summary())
    r.check(len(load.tally) > at_kill, "nothing acknowledged after the restart")
    r.check(code == 0, f"restarted otelpg exit status {code}" + log_excerpt(proc2))
    r.figure = f"SIGKILL after {at_kill:,} acked; serving again {back_in:.1f}s later"
    return r


async def kill9_replay(suite: Suite) -> Result:
    """An outage spools a lot; once the database is back, SIGKILL while the spool is replayed."""
    r = Result("kill9_replay")
    cut_for = suite.pick(5, 30)
    async with Stage(suite, "kill9_replay") as st:
        proc = await st.start()
        target = Target(proc)
        load = Load(target, logs=3).start()
        await asyncio.sleep(2)
        await st.proxy.cut()
        await database_down(proc)
        cut_at, before = dt.datetime.now(dt.UTC), len(load.tally)
        await asyncio.sleep(cut_for)
        # Items made in the last second may still be in flight: answered, and committed, after the restore.
        window = (cut_at, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        spooled = dir_bytes(st.data_dir / "spool")
        during = len(load.tally) - before
        await st.proxy.restore()
        replayed, done = await _kill_during_replay(st, proc, window, within=suite.pick(30, 90))
        r.check(not done, "the replay finished before the SIGKILL landed: nothing interrupted")
        r.check(replayed is not None, "the replay never started (no outage row stored)" + log_excerpt(proc))
        target.proc = proc2 = await st.start()
        await asyncio.sleep(suite.pick(2, 10))
        await load.stop()
        stored, _ = await wait_stored(st.direct_dsn, load.tally.acked, suite.pick(40, 120))
        code, _ = await sigterm(proc2)
    r.count(load.tally.acked, stored)
    r.note(load.tally.summary())
    r.check("replaying" in proc2.log, "the restarted otelpg did not say it replays its spool")
    r.check(code == 0, f"restarted otelpg exit status {code}" + log_excerpt(proc2))
    r.note("restart:" + log_excerpt(proc2, "from an earlier run", "otelpg.replayer"))
    r.figure = (
        f"{during:,} acked / {spooled / 2**20:.1f} MiB spooled in {cut_for:g}s; SIGKILL with "
        f"{replayed or 0:,} of those logs replayed" + (" (replay already done)" if done else ", mid-segment")
    )
    return r


async def _kill_during_replay(
    st: Stage, proc: OtelpgProcess, window: tuple[dt.datetime, dt.datetime], within: float
) -> tuple[int | None, bool]:
    """SIGKILL once some of the outage's log rows are stored while a spool segment still exists.
    (rows replayed at the kill or None, whether the replay had already finished)."""
    spool = st.data_dir / "spool"
    conn = await asyncpg.connect(st.direct_dsn)
    deadline = time.monotonic() + within
    replayed: int | None = None
    try:
        while time.monotonic() < deadline:
            n = await conn.fetchval(
                "SELECT count(*) FROM system_events WHERE service_name = 'rel-logs' AND timestamp BETWEEN $1 AND $2",
                *window,
            )
            segments = [p for p in spool.glob("segment-*.spool") if p.stat().st_size]
            if n and segments:
                await sigkill(proc)
                return n, False
            if n and not segments:
                replayed = n
                break
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    await sigkill(proc)
    return replayed, replayed is not None


async def sigterm_load(suite: Suite) -> Result:
    """SIGTERM under load: exit 0 within the grace period, every acked item stored."""
    r = Result("sigterm")
    grace = suite.pick(5, 15)
    async with Stage(suite, "sigterm") as st:
        proc = await st.start(_config(grace))
        load = Load(Target(proc), logs=6, spans=2, points=4).start()
        await asyncio.sleep(suite.pick(4, 20))
        code, took = await sigterm(proc, within=grace + 30)
        await load.stop()
        stored, _ = await wait_stored(st.direct_dsn, load.tally.acked, 10)
        events = {
            row[0] for row in await st.fetch("SELECT DISTINCT event_type FROM system_events WHERE source = 'otelpg'")
        }
    r.count(load.tally.acked, stored)
    r.note(load.tally.summary())
    r.note("shutdown:" + log_excerpt(proc, "shutting down", "drained", "not drained", "stopped", "spool"))
    r.check(code == 0, f"exit status {code} after SIGTERM" + log_excerpt(proc))
    r.check(took <= grace + 1, f"took {took:.1f}s to exit, grace period {grace:g}s")
    r.check("stopped" in events, f"no 'stopped' event stored (events: {sorted(events)})")
    r.figure = f"exit {code} {took:.1f}s after SIGTERM (grace {grace:g}s) with 12 clients sending"
    return r


async def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` on `path`: None, or why it could not be mounted."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited with {done.returncode}")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def spool_disk_full(suite: Suite) -> Result:
    """During an outage the spool's filesystem fills up: 503 (no ack for what isn't on disk), a
    WARNING, otelpg keeps running, and everything acked is stored after the outage."""
    r = Result("spool_disk_full")
    cut_for = suite.pick(5, 30)
    async with Stage(suite, "spool_disk_full") as st:
        spool = st.data_dir / "spool"
        spool.mkdir(parents=True)
        why_not = await _mount_tmpfs(spool, "2m")
        config = BASE_CONFIG
        if why_not is None:
            st.cleanups.append(lambda: _umount(spool))
            r.note("spool on a 2 MiB tmpfs (mount -t tmpfs -o size=2m)")
        else:
            config += "spool:\n  max_bytes: 2097152\n"
            r.note(f"FALLBACK: can't mount a tmpfs ({why_not}): spool.max_bytes = 2 MiB instead of a full disk")
        proc = await st.start(config)
        load = Load(Target(proc), pad=2000).start()  # ~40 KB requests: the spool fills within a second
        await asyncio.sleep(2)
        before, refused_before = len(load.tally), load.tally.refused()
        await st.proxy.cut()
        cut_at = time.monotonic()
        await database_down(proc)
        full = await wait_for(lambda: load.tally.refused() > refused_before, cut_for)
        r.note(f"spool full (first refusal) {time.monotonic() - cut_at:.1f}s into the outage")
        status, body = await health(proc)
        r.note(f"/health with the spool full: {status} status={body.get('status')!r} problems={body.get('problems')}")
        await asyncio.sleep(max(0.0, cut_for - (time.monotonic() - cut_at)))
        during, refused = len(load.tally) - before, load.tally.refused() - refused_before
        running = alive(proc)
        await st.proxy.restore()
        restored = len(load.tally)
        await asyncio.sleep(suite.pick(4, 10))
        after = len(load.tally) - restored
        await load.stop()
        stored, _ = await wait_stored(st.direct_dsn, load.tally.acked, suite.pick(30, 60))
        code, _ = await sigterm(proc)
    warnings = [line for line in proc.log_lines if "WARNING" in line and "spool" in line]
    r.count(load.tally.acked, stored)
    r.note(load.tally.summary())
    r.note("warnings:" + log_excerpt(proc, "otelpg.spool", "replayed", limit=4))
    r.check(full, "no request was refused during the outage: the spool never filled up")
    r.check(why_not is not None or bool(warnings), "no WARNING about the spool's failing writes")
    r.check(running, "otelpg died during the outage" + log_excerpt(proc))
    r.check(after > 0, "nothing acknowledged after the database came back")
    r.check(code == 0, f"exit status {code}" + log_excerpt(proc))
    r.figure = f"during a {cut_for:g}s outage {during:,} acked then {refused:,} requests refused (503/UNAVAILABLE)"
    return r


async def restart_outage(suite: Suite) -> Result:
    """Restarted while its database is away: otelpg starts anyway and spools; a first start against
    an unreachable database exits 1 within ~15 s."""
    r = Result("restart_outage")
    async with Stage(suite, "restart_outage") as st:
        first_starts = asyncio.gather(_first_start(st, "refuse"), _first_start(st, "blackhole"))
        proc = await st.start()
        load = Load(Target(proc), spans=0, points=1).start()
        await asyncio.sleep(2)
        await load.stop()
        code1, _ = await sigterm(proc)
        await st.proxy.cut()
        proc2 = st.otelpg()
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(proc2.start, 30)
        except RuntimeError as e:
            r.check(False, f"otelpg did not start while its database is away: {str(e)[-1500:]}")
            await st.proxy.restore()
            await first_starts
            return r
        started_in = time.monotonic() - t0
        ready_status, ready = await get_json(proc2.url("admin", "/api/health/ready"))
        health_status, body = await health(proc2)
        r.note(
            f"during the outage: /api/health/ready {ready_status} {ready}; /health {health_status} "
            f"status={body.get('status')!r} problems={body.get('problems')}"
        )
        load = Load(Target(proc2), load.tally).start()  # one tally: what both processes acknowledged
        before = len(load.tally)
        await asyncio.sleep(suite.pick(3, 20))
        spooled = len(load.tally) - before
        await st.proxy.restore()
        back = await wait_for(lambda: _ready(proc2), 30, every=0.5)
        await asyncio.sleep(2)
        await load.stop()
        stored, _ = await wait_stored(st.direct_dsn, load.tally.acked, suite.pick(30, 60))
        code2, _ = await sigterm(proc2)
        firsts = await first_starts
    r.count(load.tally.acked, stored)
    r.note(load.tally.summary())
    r.check(code1 == 0, f"first otelpg exit status {code1}")
    r.check("starts anyway" in proc2.log, "the log does not say otelpg starts anyway" + log_excerpt(proc2))
    r.check(ready_status == 503, f"/api/health/ready answered {ready_status} during the outage")
    r.check(body.get("status") == "degraded", f"/health status {body.get('status')!r} during the outage")
    r.check(spooled > 0, "nothing acknowledged while the database was away")
    r.check(back, "/api/health/ready not 200 within 30s of the database coming back")
    r.check(code2 == 0, f"exit status {code2}" + log_excerpt(proc2))
    for mode, (code, took, tail) in zip(("refuse", "blackhole"), firsts, strict=True):
        r.note(f"first start, database {mode}d: exit {code} after {took:.1f}s: {tail}")
        r.check(code == 1 and took <= 15, f"first start against a {mode}d database: exit {code} after {took:.1f}s")
    r.figure = (
        f"started in {started_in:.1f}s with the database away, {spooled:,} acked while away; "
        f"first starts exit {firsts[0][0]} in {firsts[0][1]:.1f}s / {firsts[1][0]} in {firsts[1][1]:.1f}s"
    )
    return r


async def _ready(proc: OtelpgProcess) -> bool:
    try:
        return (await get_json(proc.url("admin", "/api/health/ready")))[0] == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


async def _first_start(st: Stage, mode: Mode) -> tuple[int | None, float, str]:
    """`otelpg run` with an empty data dir against a database that refuses connections, or accepts
    them and never answers: (exit status, seconds, last log line)."""
    proxy = await ChaosProxy(st.suite.server_dsn).start()
    await proxy.cut(mode)
    proc = st.otelpg(data_dir=st.dir / f"first-{mode}", dsn=with_search_path(proxy.dsn, st.schema))
    started = time.monotonic()
    try:
        await asyncio.to_thread(proc.start, 40)
    except RuntimeError:
        pass
    took = time.monotonic() - started
    code = proc.proc.poll() if proc.proc is not None else None
    await proxy.close()
    return code, took, (proc.log_lines[-1].strip() if proc.log_lines else "")
