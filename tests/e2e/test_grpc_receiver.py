"""OTLP/gRPC conformance against a real `otelpg run`, with a raw grpc.aio client and with the SDK.

Each case asserts the status code, the rich status in the trailers where otelpg sends one, the
rows in PostgreSQL, and that otelpg still serves afterwards.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import with_search_path
from tests.otelpg_process import OtelpgProcess

pytestmark = pytest.mark.e2e

SIGNALS = ("traces", "metrics", "logs")
STUBS = {
    "traces": trace_service_pb2_grpc.TraceServiceStub,
    "metrics": metrics_service_pb2_grpc.MetricsServiceStub,
    "logs": logs_service_pb2_grpc.LogsServiceStub,
}
METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
REJECTED_FIELD = {"traces": "rejected_spans", "metrics": "rejected_data_points", "logs": "rejected_log_records"}
MAX_RECV = 64 * 1024  # grpc.max_recv_msg_size of the limited process
SERVICE = "grpc-e2e"
NOT_DERIVED = "metric_name NOT LIKE 'traces.span.metrics.%'"  # otelpg's span-derived aggregates
ROOT = Path(__file__).resolve().parents[2]


# --- requests and rows ------------------------------------------------------------------------


def _kv(key: str, value: str | int) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, str):
        kv.value.string_value = value
    else:
        kv.value.int_value = value
    return kv


def build(signal: str, uid: str, n: int = 2, pad: int = 0) -> Message:
    """`n` valid items of `signal`, tagged test.uid=uid; `pad` bytes of attribute on each."""
    now = time.time_ns()
    tags = [_kv("test.uid", uid)] + ([_kv("pad", "p" * pad)] if pad else [])
    if signal == "traces":
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(_kv("service.name", SERVICE))
        ss = rs.scope_spans.add()
        for i in range(n):
            sp = ss.spans.add(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name=f"op-{i}",
                start_time_unix_nano=now,
                end_time_unix_nano=now + 1000,
            )
            sp.attributes.extend(tags)
        return req
    if signal == "logs":
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        rl.resource.attributes.append(_kv("service.name", SERVICE))
        sl = rl.scope_logs.add()
        for i in range(n):
            rec = sl.log_records.add(time_unix_nano=now, severity_number=13)
            rec.body.string_value = f"log {i}"
            rec.attributes.extend(tags)
        return req
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.name", SERVICE))
    metric = rm.scope_metrics.add().metrics.add(name="grpc.e2e.gauge")
    for i in range(n):
        dp = metric.gauge.data_points.add(time_unix_nano=now, as_int=i)
        dp.attributes.extend(tags)
    return req


def uid() -> str:
    return uuid.uuid4().hex


async def stored(db: asyncpg.Connection, signal: str, test_uid: str) -> int:
    if signal == "metrics":
        return await db.fetchval("SELECT count(*) FROM performance_metrics WHERE tags->>'test.uid' = $1", test_uid)
    return await db.fetchval(
        "SELECT count(*) FROM system_events WHERE event_type = $1 AND payload->'attributes'->>'test.uid' = $2",
        "span" if signal == "traces" else "log",
        test_uid,
    )


async def client_rows(db: asyncpg.Connection) -> int:
    """Rows from clients: otelpg's own events and span-derived aggregates are not counted."""
    return await db.fetchval(
        f"SELECT (SELECT count(*) FROM system_events WHERE source <> 'otelpg') "
        f"+ (SELECT count(*) FROM performance_metrics WHERE {NOT_DERIVED})"
    )


# --- gRPC helpers -----------------------------------------------------------------------------


async def export(
    target: str,
    signal: str,
    request: Message | bytes,
    *,
    compression: grpc.Compression | None = None,
    method: str | None = None,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> Message | bytes:
    """One unary Export call; bytes in, bytes out when `request` is bytes (no serializers)."""
    async with grpc.aio.insecure_channel(target) as channel:
        if isinstance(request, bytes):
            call = channel.unary_unary(method or METHODS[signal])
            return await call(request, compression=compression, metadata=metadata, timeout=10)
        stub = STUBS[signal](channel)
        return await stub.Export(request, compression=compression, metadata=metadata, timeout=10)


async def export_error(target: str, signal: str, request: Message | bytes, **kwargs) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await export(target, signal, request, **kwargs)
    return info.value


def trailer(error: grpc.aio.AioRpcError, key: str) -> bytes | None:
    for k, v in error.trailing_metadata() or ():
        if k == key:
            return v
    return None


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    raw = trailer(error, "grpc-status-details-bin")
    assert raw is not None, error.trailing_metadata()
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    return status


def assert_empty_response(response: Message) -> None:
    assert response.ListFields() == []  # no partial_success: full success


async def assert_still_serves(proc: OtelpgProcess, db: asyncpg.Connection) -> None:
    assert proc.proc is not None and proc.proc.poll() is None, proc.log
    u = uid()
    assert_empty_response(await export(proc.grpc_target, "traces", build("traces", u, 1)))
    assert await stored(db, "traces", u) == 1


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def scrape(proc: OtelpgProcess) -> str:
    async with aiohttp.ClientSession() as session, session.get(proc.url("admin", "/metrics")) as r:
        assert r.status == 200
        return await r.text()


# --- fixtures ---------------------------------------------------------------------------------


async def create_schema(pg_server_dsn: str) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return schema


async def drop_schema(pg_server_dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


def start_otelpg(tmp: Path, dsn: str, config: str | None = None) -> OtelpgProcess:
    args: tuple[str, ...] = ()
    if config is not None:
        (tmp / "otelpg.yaml").write_text(config)
        args = ("--config", str(tmp / "otelpg.yaml"))
    proc = OtelpgProcess(tmp, {"OTELPG_DATABASE_URL": dsn}, args=args)
    proc.start()
    return proc


@pytest.fixture(scope="module")
async def limited_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    schema = await create_schema(pg_server_dsn)
    yield with_search_path(pg_server_dsn, schema)
    await drop_schema(pg_server_dsn, schema)


@pytest.fixture(scope="module")
def server(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    # Batches flush after 20 ms instead of 200: group commit isn't under test here, speed is.
    proc = start_otelpg(tmp_path_factory.mktemp("otelpg-grpc"), module_dsn, "batch:\n  max_delay: 0.02\n")
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


@pytest.fixture(scope="module")
def limited(limited_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    config = f"grpc:\n  max_recv_msg_size: {MAX_RECV}\nbatch:\n  max_delay: 0.02\n"
    proc = start_otelpg(tmp_path_factory.mktemp("otelpg-grpc-limited"), limited_dsn, config)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


@pytest.fixture
async def db(module_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(module_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def limited_db(limited_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(limited_dsn)
    try:
        yield conn
    finally:
        await conn.close()


# --- tests ------------------------------------------------------------------------------------


COMPRESSIONS = {"none": None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


@pytest.mark.parametrize("compression", list(COMPRESSIONS))
@pytest.mark.parametrize("signal", SIGNALS)
async def test_export_is_ok_with_an_empty_response_and_stored(server, db, signal, compression):
    u = uid()
    response = await export(
        server.grpc_target, signal, build(signal, u, 3, pad=2000), compression=COMPRESSIONS[compression]
    )
    assert_empty_response(response)
    assert await stored(db, signal, u) == 3


@pytest.mark.parametrize("signal", SIGNALS)
async def test_empty_request_is_ok_and_stores_nothing(server, db, signal):
    before = await client_rows(db)
    assert_empty_response(await export(server.grpc_target, signal, build(signal, uid(), 0)))
    assert await export(server.grpc_target, signal, b"") == b""  # raw bytes: an empty Export*Response
    assert await client_rows(db) == before


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05abc"],
    ids=["garbage", "absurd-length", "truncated"],
)
@pytest.mark.parametrize("signal", SIGNALS)
async def test_undecodable_bytes_are_invalid_argument(server, db, signal, body):
    before = await client_rows(db)
    error = await export_error(server.grpc_target, signal, body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid protobuf" in error.details()
    assert rich_status(error).code == 3
    assert trailer(error, "google.rpc.retryinfo-bin") is None  # not retryable: no retry hint
    assert await client_rows(db) == before
    await assert_still_serves(server, db)


def _partial(signal: str, u: str) -> Message:
    request = build(signal, u, 1)
    now = time.time_ns()
    if signal == "traces":
        bad = (
            request.resource_spans[0]
            .scope_spans[0]
            .spans.add(trace_id=b"\x01\x02\x03\x04", span_id=os.urandom(8), name="bad", start_time_unix_nano=now)
        )
        bad.attributes.append(_kv("test.uid", u))
    elif signal == "logs":
        bad = request.resource_logs[0].scope_logs[0].log_records.add(trace_id=b"\x01\x02\x03\x04", time_unix_nano=now)
        bad.attributes.append(_kv("test.uid", u))
    else:
        hist = request.resource_metrics[0].scope_metrics[0].metrics.add(name="grpc.e2e.histogram")
        dp = hist.histogram.data_points.add(time_unix_nano=now, count=3)
        dp.explicit_bounds.extend([1.0, 2.0, 3.0])
        dp.bucket_counts.extend([3])  # needs len(bounds) + 1 = 4 counts
        dp.attributes.append(_kv("test.uid", u))
    return request


@pytest.mark.parametrize("signal", SIGNALS)
async def test_partial_success(server, db, signal):
    u = uid()
    response = await export(server.grpc_target, signal, _partial(signal, u))
    assert response.HasField("partial_success")
    assert getattr(response.partial_success, REJECTED_FIELD[signal]) == 1
    assert response.partial_success.error_message.strip()
    assert await stored(db, signal, u) == 1


@pytest.mark.parametrize(
    "method",
    [
        "/opentelemetry.proto.collector.trace.v1.TraceService/Bogus",
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        "/opentelemetry.proto.collector.trace.v2.TraceService/Export",
        "/grpc.health.v1.Health/Check",
    ],
)
async def test_unknown_method_is_unimplemented(server, db, method):
    error = await export_error(
        server.grpc_target, "traces", build("traces", uid(), 1).SerializeToString(), method=method
    )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    await assert_still_serves(server, db)


async def test_self_metrics_count_grpc_exactly(server, db):
    before = await scrape(server)
    target = server.grpc_target
    await export(target, "traces", build("traces", uid(), 4))
    await export(target, "traces", build("traces", uid(), 2), compression=grpc.Compression.Gzip)
    await export(target, "traces", _partial("traces", uid()))  # 1 accepted, 1 invalid_data
    for _ in range(3):
        await export_error(target, "logs", b"\xff\xff")
    after = await scrape(server)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("otelpg_receiver_accepted_spans_total", transport="grpc") == 7
    assert delta("otelpg_receiver_refused_spans_total", transport="grpc", reason="invalid_data") == 1
    assert delta("otelpg_receiver_refused_requests_total", transport="grpc", reason="decode_error") == 3
    assert delta("otelpg_receiver_accepted_spans_total", transport="http") == 0


# --- message size limit (own process) ---------------------------------------------------------


async def test_message_over_max_recv_size_is_resource_exhausted_and_not_stored(limited, limited_db):
    u = uid()
    small = build("logs", u, 2, pad=MAX_RECV // 8)
    assert small.ByteSize() < MAX_RECV
    assert_empty_response(await export(limited.grpc_target, "logs", small))
    assert await stored(limited_db, "logs", u) == 2
    u = uid()
    big = build("logs", u, 2, pad=MAX_RECV)
    assert big.ByteSize() > MAX_RECV
    error = await export_error(limited.grpc_target, "logs", big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert await stored(limited_db, "logs", u) == 0
    await assert_still_serves(limited, limited_db)


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
async def test_compressed_message_inflating_past_max_recv_size_is_resource_exhausted(limited, limited_db, compression):
    u = uid()
    big = build("traces", u, 1, pad=16 * MAX_RECV)  # 1 MiB of one letter: compresses to ~1 KiB
    assert len(gzip.compress(big.SerializeToString())) < MAX_RECV // 16
    error = await export_error(limited.grpc_target, "traces", big, compression=COMPRESSIONS[compression])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert await stored(limited_db, "traces", u) == 0
    await assert_still_serves(limited, limited_db)


# --- database unavailable ---------------------------------------------------------------------


async def test_database_unavailable_is_unavailable_with_retry_info_in_both_trailers(pg_server_dsn, tmp_path):
    name = f"otelpg_grpc_outage_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    p = urlsplit(pg_server_dsn)
    dsn = urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, p.fragment))
    proc = start_otelpg(tmp_path, dsn, "spool:\n  enabled: false\n")
    try:
        assert_empty_response(await export(proc.grpc_target, "traces", build("traces", uid(), 1)))
        conn = await asyncpg.connect(pg_server_dsn)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        deadline = time.monotonic() + 15
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(proc.url("admin", "/health")) as r:
                    if r.status == 503:
                        break
                assert time.monotonic() < deadline, "otelpg never noticed the database went away"
                await asyncio.sleep(0.25)
        for signal in SIGNALS:
            error = await export_error(proc.grpc_target, signal, build(signal, uid(), 2))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            status = rich_status(error)
            assert status.code == 14 and len(status.details) == 1
            detailed = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(detailed)
            raw = trailer(error, "google.rpc.retryinfo-bin")  # where the Python exporter looks
            assert raw is not None
            alone = error_details_pb2.RetryInfo.FromString(raw)
            assert alone == detailed
            assert alone.retry_delay.ToNanoseconds() >= 1_000_000_000
        text = await scrape(proc)
        assert (
            metric_value(
                text, "otelpg_receiver_refused_requests_total", transport="grpc", reason="database_unavailable"
            )
            == 3
        )
    finally:
        assert proc.stop() == 0, proc.log


# --- the SDK with nothing but environment variables -------------------------------------------


SDK_DEFAULTS_SCRIPT = textwrap.dedent("""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from tests import sdk

    sdk.send_spans(OTLPSpanExporter())
    sdk.send_logs(OTLPLogExporter())
    sdk.send_metrics(OTLPMetricExporter())
""")


async def test_sdk_default_grpc_exporters_configured_by_environment_only(server, db):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELPG_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.ports['grpc']}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "PYTHONPATH": str(ROOT),
        }
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SDK_DEFAULTS_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Failed to export" not in out.stderr, out.stderr
    spans = await db.fetchval(
        "SELECT count(*) FROM system_events WHERE event_type = 'span' AND service_name = 'checkout'"
    )
    logs = await db.fetchval(
        "SELECT count(*) FROM system_events WHERE event_type = 'log' AND service_name = 'checkout'"
    )
    metrics = await db.fetch("SELECT DISTINCT metric_name FROM performance_metrics WHERE service_name = 'checkout'")
    assert (spans, logs) == (3, 5)
    assert {r["metric_name"] for r in metrics} == {
        "orders",
        "queue.depth",
        "request.duration",
        "payload.size",
        "temperature",
        "memory.usage",
        "cpu.time",
        "connections",
    }


async def test_accepted_counters_equal_the_rows_in_postgres(server, db):
    """Every item the module's process counted as accepted is in PostgreSQL, and nothing else is."""
    for signal in SIGNALS:
        await export(server.grpc_target, signal, build(signal, uid(), 2))
    text = await scrape(server)

    def accepted(item: str) -> float:
        return metric_value(text, f"otelpg_receiver_accepted_{item}_total", transport="grpc")

    spans = await db.fetchval("SELECT count(*) FROM system_events WHERE event_type = 'span'")
    logs = await db.fetchval("SELECT count(*) FROM system_events WHERE event_type = 'log' AND source <> 'otelpg'")
    points = await db.fetchval(f"SELECT count(*) FROM performance_metrics WHERE {NOT_DERIVED}")
    assert (accepted("spans"), accepted("log_records"), accepted("metric_points")) == (spans, logs, points)
