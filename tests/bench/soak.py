"""Soak: mixed OTLP load with periodic PostgreSQL restarts; prints acked / stored / lost / duplicated.

    python tests/bench/soak.py --minutes 10 --outage-every 60 --outage-seconds 20

Logs go over OTLP/HTTP protobuf, spans over OTLP/HTTP JSON and metric points over OTLP/gRPC,
each item carrying a unique key. otelpg runs as a subprocess against a PostgreSQL of the
script's own (embedded) that is stopped and restarted on a schedule; at the end every key a
client saw acknowledged is looked up in PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import psutil
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.otelpg_process import OtelpgProcess
from tests.otlp_json import message_to_otlp_json

ITEMS = 20


_CONTROLLER = """
import sys, warnings
warnings.simplefilter("ignore")
from exporters.postgres.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(sys.argv[1])
for line in sys.stdin:
    if line.strip() == "start":
        print(pg.start(), flush=True)
    else:
        pg.stop()
        print("stopped", flush=True)
"""


class PostgresController:
    """Starts and stops PostgreSQL from a process of its own: pg_ctl runs as another user, which
    forces a fork, and forking a process with live gRPC threads can crash the child."""

    def __init__(self, root: Path) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CONTROLLER, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )

    def _say(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def start(self) -> str:
        return self._say("start")

    def stop(self) -> None:
        self._say("stop")


def _service(rs) -> None:
    kv = rs.resource.attributes.add(key="service.name")
    kv.value.string_value = "soak"


def logs_body(keys: list[str]) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    _service(rl)
    scope = rl.scope_logs.add()
    now = time.time_ns()
    for k in keys:
        scope.log_records.add(time_unix_nano=now).body.string_value = k
    return req.SerializeToString()


def spans_json(keys: list[str]) -> bytes:
    import orjson

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _service(rs)
    scope = rs.scope_spans.add()
    now = time.time_ns()
    for k in keys:
        scope.spans.add(
            name=k,
            trace_id=uuid.uuid4().bytes,
            span_id=uuid.uuid4().bytes[:8],
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1000,
        )
    return orjson.dumps(message_to_otlp_json(req))


def metrics_request(keys: list[str]) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    _service(rm)
    metric = rm.scope_metrics.add().metrics.add(name="soak.points")
    now = time.time_ns()
    for k in keys:
        p = metric.gauge.data_points.add(time_unix_nano=now, as_int=1)
        p.attributes.add(key="key").value.string_value = k
    return req


def _rejected(body: bytes, content_type: str) -> int:
    """Items the server said it did not store (partial_success), from an Export*ServiceResponse."""
    import orjson

    if content_type == "application/json":
        partial = orjson.loads(body or b"{}").get("partialSuccess", {})
        return int(partial.get("rejectedLogRecords", 0) or partial.get("rejectedSpans", 0) or 0)
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    return ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records


class Tally:
    def __init__(self) -> None:
        self.acked: dict[str, list[str]] = {"logs": [], "spans": [], "points": []}
        self.statuses: Counter[str] = Counter()


async def http_client(name: str, url: str, make, content_type: str, tally: Tally, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        n = 0
        while not stop.is_set():
            keys = [f"{name}-{n}-{i}" for i in range(ITEMS)]
            n += 1
            try:
                async with session.post(url, data=make(keys), headers={"Content-Type": content_type}) as r:
                    body = await r.read()
                    tally.statuses[f"http {r.status}"] += 1
                    if r.status == 200 and _rejected(body, content_type):
                        tally.statuses["http 200 with partial_success rejects"] += 1
                    elif r.status == 200:
                        tally.acked["logs" if "logs" in url else "spans"].extend(keys)
                    else:
                        await asyncio.sleep(0.2)
            except (aiohttp.ClientError, TimeoutError):
                tally.statuses["http error"] += 1
                await asyncio.sleep(0.2)


async def grpc_client(name: str, target: str, tally: Tally, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        n = 0
        while not stop.is_set():
            keys = [f"{name}-{n}-{i}" for i in range(ITEMS)]
            n += 1
            try:
                reply = await stub.Export(metrics_request(keys), timeout=30)
                tally.statuses["grpc OK"] += 1
                if reply.partial_success.rejected_data_points:
                    tally.statuses["grpc OK with partial_success rejects"] += 1
                else:
                    tally.acked["points"].extend(keys)
            except grpc.aio.AioRpcError as e:
                tally.statuses[f"grpc {e.code().name}"] += 1
                await asyncio.sleep(0.2)


async def stored(dsn: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        logs = await conn.fetch(
            "SELECT payload->>'body' AS k FROM system_events WHERE event_type = 'log' AND service_name = 'soak'"
        )
        spans = await conn.fetch(
            "SELECT name AS k FROM system_events WHERE event_type = 'span' AND service_name = 'soak'"
        )
        points = await conn.fetch("SELECT tags->>'key' AS k FROM performance_metrics WHERE metric_name = 'soak.points'")
    finally:
        await conn.close()
    return {"logs": [r["k"] for r in logs], "spans": [r["k"] for r in spans], "points": [r["k"] for r in points]}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--outage-every", type=float, default=60, help="seconds between database stops")
    ap.add_argument("--outage-seconds", type=float, default=20, help="how long each stop lasts")
    ap.add_argument("--clients", type=int, default=4, help="clients per signal")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="otelpg-soak-"))
    pg = PostgresController(root / "pg")
    dsn = pg.start()
    proc = OtelpgProcess(root / "otelpg", {"OTELPG_DATABASE_URL": dsn, "OTELPG_LOG_LEVEL": "info"})
    (root / "otelpg").mkdir()
    proc.start()
    tally, stop = Tally(), asyncio.Event()
    tasks = []
    for c in range(args.clients):
        tasks.append(
            asyncio.create_task(
                http_client(f"log{c}", proc.url("http", "/v1/logs"), logs_body, "application/x-protobuf", tally, stop)
            )
        )
        tasks.append(
            asyncio.create_task(
                http_client(f"span{c}", proc.url("http", "/v1/traces"), spans_json, "application/json", tally, stop)
            )
        )
        tasks.append(asyncio.create_task(grpc_client(f"pt{c}", proc.grpc_target, tally, stop)))
    started = time.monotonic()
    deadline = started + args.minutes * 60
    next_outage = started + args.outage_every
    outages = 0
    rss_peak = 0
    last_report = started
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            rss_peak = max(rss_peak, psutil.Process(proc.proc.pid).memory_info().rss)
            now = time.monotonic()
            if now >= next_outage and now + args.outage_seconds < deadline:
                outages += 1
                print(f"[{now - started:6.0f}s] stopping PostgreSQL for {args.outage_seconds:g}s", flush=True)
                await asyncio.to_thread(pg.stop)
                await asyncio.sleep(args.outage_seconds)
                await asyncio.to_thread(pg.start)
                print(f"[{time.monotonic() - started:6.0f}s] PostgreSQL back", flush=True)
                next_outage = time.monotonic() + args.outage_every
            if now - last_report >= 60:
                last_report = now
                acked = sum(len(v) for v in tally.acked.values())
                print(
                    f"[{now - started:6.0f}s] acked items {acked:,}  otelpg RSS "
                    f"{psutil.Process(proc.proc.pid).memory_info().rss / 2**20:.0f} MiB",
                    flush=True,
                )
        stop.set()
        await asyncio.gather(*tasks)
        # Let the spool drain, then compare.
        drain_deadline = time.monotonic() + 120
        while True:
            got = await stored(dsn)
            if all(set(tally.acked[k]) <= set(got[k]) for k in got) or time.monotonic() > drain_deadline:
                break
            await asyncio.sleep(1)
    finally:
        code = proc.stop(60)
        pg.stop()
    print(
        f"\nsoak: {args.minutes:g} min, {outages} database outages of {args.outage_seconds:g}s, "
        f"otelpg exit code {code}, peak RSS {rss_peak / 2**20:.0f} MiB"
    )
    print("responses: " + ", ".join(f"{k}={v}" for k, v in sorted(tally.statuses.items())))
    lost_total = dup_total = 0
    for kind in ("logs", "spans", "points"):
        acked, have = tally.acked[kind], got[kind]
        have_set = set(have)
        lost = sum(1 for k in acked if k not in have_set)
        dups = len(have) - len(have_set)
        lost_total += lost
        dup_total += dups
        print(f"{kind:>7}: acked {len(acked):>9,}  stored {len(have):>9,}  lost {lost}  duplicated {dups}")
    print(f"RESULT: {'PASS' if lost_total == 0 else 'FAIL'} (lost {lost_total}, duplicated {dup_total})")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if lost_total == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
