"""Nothing acknowledged is lost: database outages, SIGKILL and SIGTERM under load.

Each test gets its own PostgreSQL server (it gets stopped) and counts, by a unique attribute,
every log record a client saw acknowledged with 200.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from exporters.postgres.embedded import EmbeddedPostgres
from tests.otelpg_process import OtelpgProcess

pytestmark = pytest.mark.e2e

RECORDS_PER_REQUEST = 20


class StoppableServer:
    """A PostgreSQL server of the test's own, stopped and started at will."""

    def __init__(self, root: Path) -> None:
        self.server = EmbeddedPostgres(root)
        self.dsn = ""

    def start(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.dsn = self.server.start()
        return self.dsn

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def pg() -> Iterator[StoppableServer]:
    root = Path(tempfile.mkdtemp(prefix="otelpg-durability-"))
    server = StoppableServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _request(client: int, seq: int) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    attr = rl.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", "durability"
    scope = rl.scope_logs.add()
    now = time.time_ns()
    for i in range(RECORDS_PER_REQUEST):
        rec = scope.log_records.add()
        rec.time_unix_nano = now
        rec.body.string_value = f"{client}:{seq}:{i}"
    return req.SerializeToString()


class Load:
    """Clients sending logs as fast as they are answered; remembers what was acknowledged."""

    def __init__(self, url: str, clients: int = 8) -> None:
        self.url = url
        self.clients = clients
        self.acked: list[str] = []
        self.statuses: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def retarget(self, url: str) -> None:
        self.url = url

    async def _client(self, client: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            seq = 0
            while not self._stop.is_set():
                seq += 1
                try:
                    async with session.post(
                        self.url, data=_request(client, seq), headers={"Content-Type": "application/x-protobuf"}
                    ) as r:
                        await r.read()
                        self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                        if r.status == 200:
                            self.acked.extend(f"{client}:{seq}:{i}" for i in range(RECORDS_PER_REQUEST))
                        else:
                            await asyncio.sleep(0.05)
                except (aiohttp.ClientError, TimeoutError):
                    self.statuses[0] = self.statuses.get(0, 0) + 1  # connection refused: otelpg down
                    await asyncio.sleep(0.1)


async def _stored(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT payload->>'body' AS b FROM system_events WHERE event_type = 'log'")
    finally:
        await conn.close()
    return [r["b"] for r in rows]


# Replay's time grows with what was spooled: since intake got faster (native encoder), a 30 s outage
# spools about twice the requests; on a loaded 2-core CI machine replaying them took over 60 s.
async def _wait_until_all_stored(dsn: str, acked: list[str], within: float = 150) -> list[str]:
    deadline = time.monotonic() + within
    while True:
        stored = await _stored(dsn)
        if set(acked) <= set(stored) or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.5)


def _assert_exactly_once(acked: list[str], stored: list[str]) -> None:
    assert acked, "no request was acknowledged: the test measured nothing"
    stored_set = set(stored)
    missing = [a for a in acked if a not in stored_set]
    assert not missing, f"{len(missing)} acknowledged records missing, e.g. {missing[:3]}"
    assert len(stored) == len(stored_set), f"{len(stored) - len(stored_set)} duplicate records"


async def test_database_outage_of_30s_loses_nothing_acknowledged(pg, tmp_path):
    proc = OtelpgProcess(tmp_path, {"OTELPG_DATABASE_URL": pg.dsn})
    proc.start()
    load = Load(proc.url("http", "/v1/logs"))
    try:
        load.start()
        await asyncio.sleep(3)
        before_outage = len(load.acked)
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(30)
        during_outage = len(load.acked) - before_outage
        await asyncio.to_thread(pg.start)
        await asyncio.sleep(5)
        await load.stop()
        stored = await _wait_until_all_stored(pg.dsn, load.acked)
    finally:
        code = proc.stop()
    _assert_exactly_once(load.acked, stored)
    assert during_outage > 0, "requests during the outage should have been spooled and acknowledged"
    assert code == 0
    events = await _events(pg.dsn)
    assert {"database_unavailable", "database_recovered", "spool_replayed"} <= events, events


async def _events(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT DISTINCT event_type FROM system_events WHERE source = 'otelpg'")
    finally:
        await conn.close()
    return {r["event_type"] for r in rows}


async def test_sigkill_during_outage_then_restart_replays_everything_once(pg, tmp_path):
    proc = OtelpgProcess(tmp_path, {"OTELPG_DATABASE_URL": pg.dsn})
    proc.start()
    load = Load(proc.url("http", "/v1/logs"))
    load.start()
    await asyncio.sleep(2)
    await asyncio.to_thread(pg.stop)
    await asyncio.sleep(5)  # requests now go to the spool
    os.kill(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait()
    await load.stop()
    spool_files = list((tmp_path / "spool").glob("*.spool"))
    assert spool_files and any(p.stat().st_size for p in spool_files)
    await asyncio.to_thread(pg.start)
    restarted = OtelpgProcess(tmp_path, {"OTELPG_DATABASE_URL": pg.dsn})
    restarted.start()
    try:
        stored = await _wait_until_all_stored(pg.dsn, load.acked)
    finally:
        assert restarted.stop() == 0
    _assert_exactly_once(load.acked, stored)
    assert "replaying" in restarted.log


async def test_sigkill_under_normal_load_loses_nothing(pg, tmp_path):
    proc = OtelpgProcess(tmp_path, {"OTELPG_DATABASE_URL": pg.dsn})
    proc.start()
    load = Load(proc.url("http", "/v1/logs"))
    load.start()
    await asyncio.sleep(4)
    os.kill(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait()
    await load.stop()
    stored = await _stored(pg.dsn)
    _assert_exactly_once(load.acked, stored)


async def test_sigterm_under_load_exits_0_within_grace_and_loses_nothing(pg, tmp_path):
    cfg = tmp_path / "otelpg.yaml"
    cfg.write_text("shutdown:\n  grace_period: 10\n")
    proc = OtelpgProcess(tmp_path, {"OTELPG_DATABASE_URL": pg.dsn}, args=("--config", str(cfg)))
    proc.start()
    load = Load(proc.url("http", "/v1/logs"), clients=16)
    load.start()
    await asyncio.sleep(3)
    started = time.monotonic()
    code = await asyncio.to_thread(proc.stop, 30)
    elapsed = time.monotonic() - started
    await load.stop()
    assert code == 0 and elapsed < 10 + 5
    stored = await _stored(pg.dsn)
    _assert_exactly_once(load.acked, stored)
    assert "stopped" in await _events(pg.dsn)
