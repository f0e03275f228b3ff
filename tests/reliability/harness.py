"""What the reliability scenarios share: the suite's PostgreSQL, a scenario's stage (fresh schema,
ChaosProxy, data dir, otelpg processes), OTLP request builders, load generators that remember
what was acknowledged, and counting what PostgreSQL stored.

Every item a load client sends carries a unique key (a log record's body, a span's name, a metric
point's `key` tag), so what is stored can be counted exactly: an item is acknowledged when its
request got 200 / OK without a partial_success rejection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import orjson
import psutil
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tests.conftest import with_search_path
from tests.otelpg_process import OtelpgProcess
from tests.otlp_json import message_to_otlp_json
from tests.reliability.proxy import ChaosProxy

REPO = Path(__file__).resolve().parents[2]
ITEMS = 20  # items per load request
PB, JSON = "application/x-protobuf", "application/json"
METRIC = "rel.points"  # the metric of every keyed point

BASE_CONFIG = """\
agent_states:
  flush_interval: 1
prometheus:
  database_stats_interval: 0
shutdown:
  grace_period: 10
"""


# --------------------------------------------------------------------------- PostgreSQL

_CONTROLLER = """
import sys, warnings
warnings.simplefilter("ignore")
from exporters.postgres.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(sys.argv[1])
print(pg.start(), flush=True)
sys.stdin.read()  # until the suite closes stdin, or exits
pg.stop()
"""


class PostgresServer:
    """OTELPG_TEST_DATABASE_URL, else an embedded server started from a helper process: pg_ctl runs
    as another user, which forces a fork, and forking next to live gRPC threads crashed it."""

    def __init__(self) -> None:
        self.dsn = os.environ.get("OTELPG_TEST_DATABASE_URL", "")
        self._proc: subprocess.Popen[str] | None = None
        self._root: Path | None = None

    def start(self) -> str:
        if self.dsn:
            return self.dsn
        self._root = Path(tempfile.mkdtemp(prefix="otelpg-reliability-pg-"))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CONTROLLER, str(self._root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self._proc.stdout is not None
        self.dsn = self._proc.stdout.readline().strip()
        if not self.dsn.startswith("postgres"):
            self.stop()
            raise RuntimeError("the embedded PostgreSQL did not start")
        return self.dsn

    def stop(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    rows = await fetch(dsn, sql, *args)
    return rows[0][0] if rows else None


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    name: str
    acked: int = 0
    stored: int = 0  # acknowledged items found in PostgreSQL
    lost: int = 0
    duplicated: int = 0  # rows beyond the first for a key
    figure: str = ""  # the scenario's own measure
    failures: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def check(self, ok: bool, failure: str) -> bool:
        if not ok:
            self.failures.append(failure)
        return ok

    def note(self, line: str) -> None:
        self.details.append(line)

    def count(self, acked: Iterable[str], stored: Counter[str], what: str = "items") -> None:
        """Compare what clients saw acknowledged with what is stored (keys counted once per row)."""
        want = set(acked)
        have = {k for k in want if stored[k]}
        lost = sorted(want - have)
        dups = {k: c for k, c in stored.items() if c > 1}
        extra = sum(1 for k in stored if k not in want)
        n_dup = sum(c - 1 for c in dups.values())
        self.acked += len(want)
        self.stored += len(have)
        self.lost += len(lost)
        self.duplicated += n_dup
        self.note(
            f"{what}: acked {len(want):,}, stored {len(have):,}, lost {len(lost):,}, duplicated {n_dup:,}; "
            f"stored but never acked (answer not received) {extra:,}"
        )
        self.check(bool(want), f"no {what} acknowledged: the scenario measured nothing")
        self.check(not lost, f"{len(lost):,} acknowledged {what} lost, e.g. {lost[:3]}")
        self.check(not dups, f"{n_dup:,} duplicate {what} rows, e.g. {list(dups.items())[:3]}")

    def report(self) -> str:
        lines = [f"== {self.name}: {self.verdict} in {self.seconds:.1f}s — {self.figure}"]
        lines += [f"   {d}" for d in self.details]
        lines += [f"   FAILED: {f}" for f in self.failures]
        return "\n".join(lines)


def log_excerpt(proc: OtelpgProcess, *needles: str, limit: int = 8, width: int = 400) -> str:
    """otelpg's log lines containing a needle (default: warnings and errors), the last `limit`."""
    needles = needles or ("WARNING", "ERROR", "Traceback")
    lines = [line.rstrip("\n") for line in proc.log_lines if any(n in line for n in needles)]
    shown = [line if len(line) <= width else line[:width] + "…" for line in lines[-limit:]]
    return "\n      | ".join(["", *shown]) if shown else " (no such line)"


# --------------------------------------------------------------------------- a scenario's stage


@dataclass
class Suite:
    server_dsn: str
    root: Path
    quick: bool

    def pick(self, quick: float, full: float) -> float:
        return quick if self.quick else full


class Stage:
    """One scenario's world: a fresh schema, a ChaosProxy in front of the server, a data dir, and
    the otelpg processes it starts (halted on exit)."""

    def __init__(self, suite: Suite, name: str) -> None:
        self.suite = suite
        self.schema = f"rel_{name}_{uuid.uuid4().hex[:8]}"
        self.dir = suite.root / f"{name}-{uuid.uuid4().hex[:6]}"
        self.data_dir = self.dir / "data"
        self.proxy = ChaosProxy(suite.server_dsn)
        self.procs: list[OtelpgProcess] = []
        self.cleanups: list[Callable[[], None]] = []

    @property
    def dsn(self) -> str:
        """otelpg's DSN: through the proxy, in the scenario's schema."""
        return with_search_path(self.proxy.dsn, self.schema)

    @property
    def direct_dsn(self) -> str:
        """The suite's own DSN (never cut), in the scenario's schema."""
        return with_search_path(self.suite.server_dsn, self.schema)

    async def __aenter__(self) -> Stage:
        self.dir.mkdir(parents=True)
        await fetch(self.suite.server_dsn, f'CREATE SCHEMA "{self.schema}"')
        await self.proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            await asyncio.to_thread(halt, proc)
        for cleanup in reversed(self.cleanups):
            cleanup()
        await self.proxy.close()
        with contextlib.suppress(Exception):
            await fetch(self.suite.server_dsn, f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        shutil.rmtree(self.dir, ignore_errors=True)

    def otelpg(
        self,
        config: str = BASE_CONFIG,
        *,
        data_dir: Path | None = None,
        dsn: str | None = None,
        env: dict[str, str] | None = None,
    ) -> OtelpgProcess:
        """An `otelpg run` (not started) with this config, on the stage's data dir and DSN by default."""
        path = self.dir / f"otelpg-{len(self.procs)}.yaml"
        path.write_text(config)
        proc = OtelpgProcess(
            data_dir or self.data_dir,
            {"OTELPG_DATABASE_URL": dsn or self.dsn, **(env or {})},
            args=("--config", str(path)),
        )
        self.procs.append(proc)
        return proc

    async def start(self, config: str = BASE_CONFIG, **kwargs: Any) -> OtelpgProcess:
        proc = self.otelpg(config, **kwargs)
        await asyncio.to_thread(proc.start)
        return proc

    async def migrate(self, config: str = BASE_CONFIG) -> None:
        """`otelpg migrate` on the stage's database (e.g. to alter the schema before a start)."""
        proc = self.otelpg(config)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "sidecar.cli", "migrate", *proc.args],
            env=proc.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            raise RuntimeError(f"otelpg migrate exited with {done.returncode}: {done.stdout}{done.stderr}")

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await fetch(self.direct_dsn, sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await fetchval(self.direct_dsn, sql, *args)


def halt(proc: OtelpgProcess) -> None:
    """SIGTERM, then SIGKILL: whatever a scenario left running."""
    if proc.proc is None or proc.proc.poll() is not None:
        return
    proc.proc.send_signal(signal.SIGTERM)
    try:
        proc.proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def sigkill(proc: OtelpgProcess) -> None:
    assert proc.proc is not None
    proc.proc.kill()
    await asyncio.to_thread(proc.proc.wait)


async def sigterm(proc: OtelpgProcess, within: float = 60) -> tuple[int | None, float]:
    """Exit status (None: still running after `within` seconds, then killed) and seconds to exit."""
    assert proc.proc is not None
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = await asyncio.to_thread(proc.proc.wait, within)
    except subprocess.TimeoutExpired:
        code = None
        proc.kill()
    return code, time.monotonic() - started


def alive(proc: OtelpgProcess) -> bool:
    return proc.proc is not None and proc.proc.poll() is None


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url) as r:
        return r.status, orjson.loads(await r.read() or b"{}")


async def health(proc: OtelpgProcess) -> tuple[int, dict[str, Any]]:
    return await get_json(proc.url("admin", "/health"))


async def wait_for(check: Callable[[], Any], within: float, every: float = 0.2) -> bool:
    """Await `check()` (sync or async) until truthy or `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return bool(value)
        await asyncio.sleep(every)


async def database_down(proc: OtelpgProcess, within: float = 10) -> bool:
    """Wait until otelpg noticed the outage (/health says the database is unhealthy)."""

    async def down() -> bool:
        try:
            return (await health(proc))[1].get("database") == "unhealthy"
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    return await wait_for(down, within)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file()) if path.exists() else 0


class RssSampler:
    """otelpg's resident memory, sampled from a thread every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self._process = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.samples: list[int] = []

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.samples.append(self._process.memory_info().rss)
            except psutil.Error:
                return

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- OTLP requests


def set_attrs(attrs: Any, values: dict[str, str]) -> None:
    for key, value in values.items():
        attrs.add(key=key).value.string_value = value


def logs_request(
    service: str, bodies: Iterable[str], *, resource: dict[str, str] | None = None, attrs: dict[str, str] | None = None
) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, {"service.name": service, **(resource or {})})
    scope = rl.scope_logs.add()
    now = time.time_ns()
    for body in bodies:
        rec = scope.log_records.add(time_unix_nano=now)
        rec.body.string_value = body
        set_attrs(rec.attributes, attrs or {})
    return req


def spans_request(
    service: str, names: Iterable[str], *, resource: dict[str, str] | None = None, attrs: dict[str, str] | None = None
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    set_attrs(rs.resource.attributes, {"service.name": service, **(resource or {})})
    scope = rs.scope_spans.add()
    now = time.time_ns()
    for name in names:
        span = scope.spans.add(
            name=name,
            trace_id=uuid.uuid4().bytes,
            span_id=uuid.uuid4().bytes[:8],
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1000,
        )
        set_attrs(span.attributes, attrs or {})
    return req


def points_request(
    service: str, keys: Iterable[str], *, metric: str = METRIC, resource: dict[str, str] | None = None
) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    set_attrs(rm.resource.attributes, {"service.name": service, **(resource or {})})
    gauge = rm.scope_metrics.add().metrics.add(name=metric).gauge
    now = time.time_ns()
    for key in keys:
        set_attrs(gauge.data_points.add(time_unix_nano=now, as_int=1).attributes, {"key": key})
    return req


_RESPONSES = {
    "/v1/logs": (ExportLogsServiceResponse, "rejected_log_records", "rejectedLogRecords"),
    "/v1/traces": (ExportTraceServiceResponse, "rejected_spans", "rejectedSpans"),
    "/v1/metrics": (ExportMetricsServiceResponse, "rejected_data_points", "rejectedDataPoints"),
}


def partial_success(path: str, body: bytes, content_type: str) -> tuple[int, str]:
    """(rejected items, error message) of an OTLP/HTTP 200 response."""
    response, field_name, json_name = _RESPONSES[path]
    if content_type == JSON:
        partial = orjson.loads(body or b"{}").get("partialSuccess", {})
        return int(partial.get(json_name, 0) or 0), str(partial.get("errorMessage", ""))
    partial = response.FromString(body).partial_success
    return getattr(partial, field_name), partial.error_message


# --------------------------------------------------------------------------- load


class Target:
    """Where load goes: the current otelpg process (replaced after a restart: new ports)."""

    def __init__(self, proc: OtelpgProcess) -> None:
        self.proc = proc

    def url(self, path: str) -> str:
        return self.proc.url("http", path)

    @property
    def grpc(self) -> str:
        return self.proc.grpc_target


class Tally:
    """Keys acknowledged, and every answer received."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.statuses: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.acked)

    def refused(self) -> int:
        """Answers that told the client to retry (503 / UNAVAILABLE)."""
        return self.statuses["http 503"] + self.statuses["grpc UNAVAILABLE"]

    def summary(self) -> str:
        return "answers: " + ", ".join(f"{k}={v:,}" for k, v in sorted(self.statuses.items()))


async def http_client(
    name: str, path: str, target: Target, tally: Tally, stop: asyncio.Event, service: str, pad: int = 0
) -> None:
    """Keyed logs (protobuf) or spans (OTLP/JSON), as fast as they are answered; new keys per attempt.
    `pad`: bytes of an attribute added to every item (bigger requests)."""
    content_type = PB if path == "/v1/logs" else JSON
    attrs = {"pad": "p" * pad} if pad else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        n = 0
        while not stop.is_set():
            keys = [f"{name}-{n}-{i}" for i in range(ITEMS)]
            n += 1
            if path == "/v1/logs":
                body = logs_request(service, keys, attrs=attrs).SerializeToString()
            else:
                body = orjson.dumps(message_to_otlp_json(spans_request(service, keys, attrs=attrs)))
            try:
                async with session.post(target.url(path), data=body, headers={"Content-Type": content_type}) as r:
                    data = await r.read()
                tally.statuses[f"http {r.status}"] += 1
                if r.status == 200:
                    if partial_success(path, data, content_type)[0]:
                        tally.statuses["http 200 with rejections"] += 1
                    else:
                        tally.acked.extend(keys)
                    continue
            except (aiohttp.ClientError, TimeoutError, OSError):
                tally.statuses["http no answer"] += 1
            await asyncio.sleep(0.1)


async def grpc_client(name: str, target: Target, tally: Tally, stop: asyncio.Event, service: str) -> None:
    """Keyed metric points over OTLP/gRPC; follows the target to a restarted process."""
    channel: grpc.aio.Channel | None = None
    stub: Any = None
    at = ""
    n = 0
    try:
        while not stop.is_set():
            if at != target.grpc:
                if channel is not None:
                    await channel.close()
                at = target.grpc
                channel = grpc.aio.insecure_channel(at)
                stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            keys = [f"{name}-{n}-{i}" for i in range(ITEMS)]
            n += 1
            try:
                reply = await stub.Export(points_request(service, keys), timeout=30)
            except grpc.aio.AioRpcError as e:
                tally.statuses[f"grpc {e.code().name}"] += 1
                await asyncio.sleep(0.1)
                continue
            tally.statuses["grpc OK"] += 1
            if reply.partial_success.rejected_data_points:
                tally.statuses["grpc OK with rejections"] += 1
            else:
                tally.acked.extend(keys)
    finally:
        if channel is not None:
            await channel.close()


class _Recording(SpanExporter):
    """An SDK exporter's results: a span is acknowledged when its batch's export() succeeded."""

    def __init__(self, inner: SpanExporter, tally: Tally) -> None:
        self._inner = inner
        self._tally = tally

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        self._tally.statuses[f"sdk {result.name}"] += 1
        if result is SpanExportResult.SUCCESS:
            self._tally.acked.extend(str(s.name) for s in spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class SdkLoad:
    """Spans made by the real OpenTelemetry SDK and sent by its OTLP/HTTP and OTLP/gRPC exporters
    (BatchSpanProcessor, retries and all), from a thread of their own."""

    def __init__(self, target: Target, tally: Tally, per_second: int = 400) -> None:
        self._target = target
        self._tally = tally
        self._per_tick = max(1, per_second // 40)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdk-load", daemon=True)

    def start(self) -> None:
        logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # its retry warnings: counted instead
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 60)

    def _run(self) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporters: dict[str, SpanExporter] = {
            "sdkh": HttpSpanExporter(endpoint=self._target.url("/v1/traces"), timeout=10),
            "sdkg": GrpcSpanExporter(endpoint=f"http://{self._target.grpc}", insecure=True, timeout=10),
        }
        providers = []
        for name, exporter in exporters.items():
            provider = TracerProvider(resource=Resource.create({"service.name": f"rel-{name}"}))
            provider.add_span_processor(
                BatchSpanProcessor(
                    _Recording(exporter, self._tally), schedule_delay_millis=100, max_export_batch_size=100
                )
            )
            providers.append((name, provider.get_tracer("reliability"), provider))
        n = 0
        while not self._stop.wait(0.025):
            for name, tracer, _ in providers:
                for _ in range(self._per_tick):
                    tracer.start_span(f"{name}-{n}").end()
                    n += 1
        for _, _, provider in providers:
            provider.shutdown()


_LOADS = itertools.count()


class Load:
    """Keyed load: HTTP protobuf logs, HTTP JSON spans, gRPC metric points, optionally SDK spans."""

    def __init__(
        self,
        target: Target,
        tally: Tally | None = None,
        *,
        logs: int = 2,
        spans: int = 1,
        points: int = 2,
        sdk: bool = False,
        pad: int = 0,
    ) -> None:
        self.target = target
        self.tally = tally or Tally()
        self._counts = (logs, spans, points)
        self._pad = pad
        self._gen = next(_LOADS)  # in every key: two loads of a scenario never send the same one
        self._sdk = SdkLoad(target, self.tally) if sdk else None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Load:
        logs, spans, points = self._counts
        t, tally, stop, pad, g = self.target, self.tally, self._stop, self._pad, self._gen
        self._tasks = [
            *(
                asyncio.create_task(http_client(f"log{g}.{c}", "/v1/logs", t, tally, stop, "rel-logs", pad))
                for c in range(logs)
            ),
            *(
                asyncio.create_task(http_client(f"span{g}.{c}", "/v1/traces", t, tally, stop, "rel-spans", pad))
                for c in range(spans)
            ),
            *(asyncio.create_task(grpc_client(f"pt{g}.{c}", t, tally, stop, "rel-points")) for c in range(points)),
        ]
        if self._sdk is not None:
            self._sdk.start()
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._sdk is not None:
            await self._sdk.stop()


async def innocent_client(
    target: Target,
    tally: Tally,
    stop: asyncio.Event,
    latencies: list[float],
    gave_up: list[str],
    *,
    service: str = "rel-innocent",
    give_up_after: float = 60,
) -> None:
    """An ordinary service: a small keyed logs request at a time, retried like an SDK on 503 (after
    Retry-After) until acknowledged; `latencies` holds each request's time from first try to ack."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        n = 0
        while not stop.is_set():
            keys = [f"inn-{n}-{i}" for i in range(ITEMS)]
            n += 1
            body = logs_request(service, keys).SerializeToString()
            started = time.monotonic()
            while True:
                wait = 0.2
                try:
                    async with session.post(target.url("/v1/logs"), data=body, headers={"Content-Type": PB}) as r:
                        data = await r.read()
                    tally.statuses[f"http {r.status}"] += 1
                    if r.status == 200 and not partial_success("/v1/logs", data, PB)[0]:
                        tally.acked.extend(keys)
                        latencies.append(time.monotonic() - started)
                        break
                    if r.status == 503:
                        wait = min(5.0, float(r.headers.get("Retry-After", "1")))
                    elif r.status != 200:
                        gave_up.append(f"inn-{n - 1}: HTTP {r.status}")
                        break
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    # The answer is lost, not a refusal: resending these keys could store them twice.
                    tally.statuses["http no answer"] += 1
                    gave_up.append(f"inn-{n - 1}: {type(e).__name__}")
                    break
                if time.monotonic() - started > give_up_after:
                    gave_up.append(f"inn-{n - 1}: not acknowledged within {give_up_after:g}s")
                    break
                await asyncio.sleep(wait)
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- what is stored

TRACKED_SQL = f"""
SELECT payload->>'body' AS k FROM system_events WHERE event_type = 'log' AND service_name LIKE 'rel-%'
UNION ALL SELECT name FROM system_events WHERE event_type = 'span' AND service_name LIKE 'rel-%'
UNION ALL SELECT tags->>'key' FROM performance_metrics WHERE metric_name = '{METRIC}'
"""


async def stored_keys(dsn: str) -> Counter[str]:
    """Every keyed item stored, with its number of rows."""
    return Counter(r["k"] for r in await fetch(dsn, TRACKED_SQL))


async def wait_stored(dsn: str, acked: Iterable[str], within: float) -> tuple[Counter[str], float]:
    """What is stored once every acknowledged key is (or `within` seconds have passed), and when."""
    want = set(acked)
    started = time.monotonic()
    while True:
        late = time.monotonic() - started > within
        if late or await fetchval(dsn, f"SELECT count(*) FROM ({TRACKED_SQL}) t") >= len(want):
            stored = await stored_keys(dsn)
            if late or want <= stored.keys():
                return stored, time.monotonic() - started
        await asyncio.sleep(0.5)
