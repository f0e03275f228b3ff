"""OTLP/HTTP and OTLP/gRPC conformance against a real `otelpg run` and a real PostgreSQL.

One suite for both receivers where they promise the same thing (success, empty requests,
undecodable bodies, partial success, a database outage, counters that agree with the rows), then
what only one transport has (media types, methods and paths, Content-Encoding, 413s, the gzip
bomb and the full queue for HTTP; unknown methods, max_recv_msg_size and the SDK configured by
environment for gRPC). Every case asserts the status (and the body or the rich status in the
trailers), the rows in PostgreSQL, and that otelpg still serves afterwards. One otelpg process
serves both transports for the module; limits and the database outage get their own processes.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import psutil
import pytest
import zstandard
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import connected, fresh_schema
from tests.otelpg_process import OtelpgProcess
from tests.otlp_json import message_to_otlp_json

pytestmark = pytest.mark.e2e

PB = "application/x-protobuf"
JS = "application/json"
MEDIA = (PB, JS)
SIGNALS = ("traces", "metrics", "logs")
PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
RESPONSES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceResponse,
    "metrics": ExportMetricsServiceResponse,
    "logs": ExportLogsServiceResponse,
}
REJECTED_FIELD = {"traces": "rejected_spans", "metrics": "rejected_data_points", "logs": "rejected_log_records"}
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE = 3, 8, 14
LIMIT = 1024 * 1024  # http.max_request_body_size of the limited HTTP process
MAX_RECV = 64 * 1024  # grpc.max_recv_msg_size of the limited gRPC process
NOT_DERIVED = "metric_name NOT LIKE 'traces.span.metrics.%'"  # otelpg's span-derived aggregates


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
ROOT = Path(__file__).resolve().parents[2]
COMPRESSIONS = {"none": None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


# --- requests ---------------------------------------------------------------------------------


def _kv(key: str, value: str | int) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, str):
        kv.value.string_value = value
    else:
        kv.value.int_value = value
    return kv


def build(signal: str, uid: str, n: int = 2, pad: int = 0) -> Message:
    """A request of `n` valid items of `signal`, each tagged test.uid=uid and test.seq=i (and
    `pad` bytes of attribute)."""
    now = time.time_ns()
    padding = [_kv("pad", "p" * pad)] if pad else []
    if signal == "traces":
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(_kv("service.name", "receiver-e2e"))
        ss = rs.scope_spans.add()
        for i in range(n):
            sp = ss.spans.add(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name=f"op-{i}",
                kind=2,
                start_time_unix_nano=now,
                end_time_unix_nano=now + 1_000_000,
            )
            sp.attributes.extend([_kv("test.uid", uid), _kv("test.seq", i), *padding])
        return req
    if signal == "logs":
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        rl.resource.attributes.append(_kv("service.name", "receiver-e2e"))
        sl = rl.scope_logs.add()
        for i in range(n):
            rec = sl.log_records.add(time_unix_nano=now, severity_number=9)
            rec.body.string_value = f"log {i}"
            rec.attributes.extend([_kv("test.uid", uid), _kv("test.seq", i), *padding])
        return req
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.name", "receiver-e2e"))
    metric = rm.scope_metrics.add().metrics.add(name="e2e.gauge", unit="1")
    for i in range(n):
        dp = metric.gauge.data_points.add(time_unix_nano=now, as_double=i + 0.5)
        dp.attributes.extend([_kv("test.uid", uid), _kv("test.seq", i), *padding])
    return req


def encode(message: Message, media: str) -> bytes:
    if media == JS:
        return json.dumps(message_to_otlp_json(message)).encode()
    return message.SerializeToString()


def uid() -> str:
    return uuid.uuid4().hex


# --- PostgreSQL -------------------------------------------------------------------------------


async def stored(db: asyncpg.Connection, signal: str, test_uid: str) -> int:
    """Rows of `signal` carrying test.uid = test_uid."""
    if signal == "metrics":
        return await db.fetchval("SELECT count(*) FROM performance_metrics WHERE tags->>'test.uid' = $1", test_uid)
    event_type = "span" if signal == "traces" else "log"
    return await db.fetchval(
        "SELECT count(*) FROM system_events WHERE event_type = $1 AND payload->'attributes'->>'test.uid' = $2",
        event_type,
        test_uid,
    )


async def total_rows(db: asyncpg.Connection) -> int:
    """Rows from clients: otelpg's own events and span-derived aggregates are not counted."""
    return await db.fetchval(
        f"SELECT (SELECT count(*) FROM system_events WHERE source <> 'otelpg') "
        f"+ (SELECT count(*) FROM performance_metrics WHERE {NOT_DERIVED})"
    )


# --- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes | None,
    content_type: str | None = PB,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Reply:
    all_headers = dict(headers or {})
    skip: tuple[str, ...] = ()
    if content_type is None:
        skip = ("Content-Type",)
    else:
        all_headers["Content-Type"] = content_type
    async with session.request(method, url, data=body, headers=all_headers, skip_auto_headers=skip) as r:
        return Reply(r.status, r.headers, await r.read())


def decode_status(body: bytes, media: str) -> status_pb2.Status:
    """A google.rpc.Status body in `media` (protojson for JSON)."""
    if media == JS:
        return json_format.ParseDict(json.loads(body), status_pb2.Status())
    return status_pb2.Status.FromString(body)


def assert_status_reply(reply: Reply, http: int, code: int, media: str) -> status_pb2.Status:
    assert reply.status == http, (reply.status, reply.body[:300])
    assert reply.content_type == media
    status = decode_status(reply.body, media)
    assert status.code == code, status
    assert status.message
    if media == JS:
        assert json.loads(reply.body)["code"] == code
    return status


def decode_response(signal: str, body: bytes, media: str) -> Message:
    if media == JS:
        return json_format.ParseDict(json.loads(body), RESPONSES[signal]())
    return RESPONSES[signal].FromString(body)


def assert_full_success(reply: Reply, signal: str, media: str) -> None:
    assert reply.status == 200, (reply.status, reply.body[:300])
    assert reply.content_type == media
    if media == JS:
        assert json.loads(reply.body) == {}
    else:
        assert reply.body == b""  # an empty Export*ServiceResponse serializes to nothing
    assert not decode_response(signal, reply.body, media).HasField("partial_success")


async def assert_still_serves(session: aiohttp.ClientSession, proc: OtelpgProcess, db: asyncpg.Connection) -> None:
    """otelpg answers a fresh valid request with 200 and stores it."""
    assert proc.proc is not None and proc.proc.poll() is None, proc.log
    u = uid()
    reply = await post(session, proc.url("http", "/v1/traces"), encode(build("traces", u, 1), PB))
    assert_full_success(reply, "traces", PB)
    assert await stored(db, "traces", u) == 1


def metric_value(text: str, name: str, **labels: str) -> float:
    """Value of the sample `name` whose labels include `labels`, summed; 0 when absent."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def scrape(session: aiohttp.ClientSession, proc: OtelpgProcess) -> str:
    async with session.get(proc.url("admin", "/metrics")) as r:
        assert r.status == 200
        return await r.text()


# --- gRPC -------------------------------------------------------------------------------------


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


async def assert_grpc_still_serves(proc: OtelpgProcess, db: asyncpg.Connection) -> None:
    assert proc.proc is not None and proc.proc.poll() is None, proc.log
    u = uid()
    assert_empty_response(await export(proc.grpc_target, "traces", build("traces", u, 1)))
    assert await stored(db, "traces", u) == 1


async def still_serves(
    transport: str, session: aiohttp.ClientSession, proc: OtelpgProcess, db: asyncpg.Connection
) -> None:
    if transport == "http":
        await assert_still_serves(session, proc, db)
    else:
        await assert_grpc_still_serves(proc, db)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def limited_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    async with fresh_schema(pg_server_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def grpc_limited_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    async with fresh_schema(pg_server_dsn) as dsn:
        yield dsn


def start_otelpg(tmp: Path, dsn: str, config: str | None = None) -> OtelpgProcess:
    args: tuple[str, ...] = ()
    if config is not None:
        (tmp / "otelpg.yaml").write_text(config)
        args = ("--config", str(tmp / "otelpg.yaml"))
    proc = OtelpgProcess(tmp, {"OTELPG_DATABASE_URL": dsn}, args=args)
    proc.start()
    return proc


@pytest.fixture(scope="module")
def server(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    # Batches flush after 20 ms instead of 200: group commit isn't under test here, speed is.
    proc = start_otelpg(tmp_path_factory.mktemp("otelpg-receivers"), module_dsn, "batch:\n  max_delay: 0.02\n")
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


@pytest.fixture(scope="module")
async def limited(limited_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OtelpgProcess]:
    """A 1 MiB body limit; a one-row queue whose batches always wait 0.5 s and no spool (503 on demand)."""
    config = (
        f"http:\n  max_request_body_size: {LIMIT}\n"
        "queue:\n  max_rows: 1\n"
        "batch:\n  max_delay: 0.5\n  linger: 0.5\n"
        "spool:\n  enabled: false\n"
        "prometheus:\n  span_metrics_flush_interval: 3600\n"  # no flush may take the one-row queue
    )
    proc = start_otelpg(tmp_path_factory.mktemp("otelpg-http-limited"), limited_dsn, config)
    try:
        # otelpg's own "started" event takes the one-row queue for a moment: wait until it is written.
        async with connected(limited_dsn) as conn:
            deadline = time.monotonic() + 10
            while not await conn.fetchval("SELECT count(*) FROM system_events WHERE source = 'otelpg'"):
                assert time.monotonic() < deadline, proc.log
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


@pytest.fixture(scope="module")
def grpc_limited(grpc_limited_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    config = f"grpc:\n  max_recv_msg_size: {MAX_RECV}\nbatch:\n  max_delay: 0.02\n"
    proc = start_otelpg(tmp_path_factory.mktemp("otelpg-grpc-limited"), grpc_limited_dsn, config)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


@pytest.fixture
async def grpc_limited_db(grpc_limited_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(grpc_limited_dsn) as conn:
        yield conn


@pytest.fixture
def db(module_db: asyncpg.Connection) -> asyncpg.Connection:
    return module_db  # this module's tests share one otelpg process and its schema


@pytest.fixture
async def limited_db(limited_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(limited_dsn) as conn:
        yield conn


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


# --- both transports: success -----------------------------------------------------------------


# How a request is sent: HTTP in each encoding, gRPC with each compression.
VARIANTS = ["http-protobuf", "http-json", "grpc-none", "grpc-gzip", "grpc-deflate"]


async def send_ok(
    session: aiohttp.ClientSession, proc: OtelpgProcess, variant: str, signal: str, request: Message
) -> Message:
    """Send `request` the `variant` way; assert a 200 / OK; return the Export*Response."""
    transport, how = variant.split("-")
    if transport == "grpc":
        response = await export(proc.grpc_target, signal, request, compression=COMPRESSIONS[how])
        assert isinstance(response, Message)
        return response
    media = PB if how == "protobuf" else JS
    reply = await post(session, proc.url("http", PATHS[signal]), encode(request, media), media)
    assert reply.status == 200, reply.body
    assert reply.content_type == media
    return decode_response(signal, reply.body, media)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("signal", SIGNALS)
async def test_valid_request_is_acknowledged_with_an_empty_response_and_stored(server, session, db, signal, variant):
    u = uid()
    if variant.startswith("http"):
        media = PB if variant == "http-protobuf" else JS
        reply = await post(session, server.url("http", PATHS[signal]), encode(build(signal, u, 3), media), media)
        assert_full_success(reply, signal, media)
    else:
        request = build(signal, u, 3, pad=2000)  # worth compressing
        assert_empty_response(await send_ok(session, server, variant, signal, request))
    assert await stored(db, signal, u) == 3


@pytest.mark.parametrize(
    ("transport", "media", "body"),
    [
        ("http", PB, b""),
        ("http", JS, b"{}"),
        ("http", JS, b""),
        ("http", JS, b'{"resourceSpans": [], "resourceMetrics": [], "resourceLogs": []}'),
        ("grpc", PB, b""),
    ],
    ids=["http-protobuf-0-bytes", "http-json-{}", "http-json-0-bytes", "http-json-empty-lists", "grpc-0-bytes"],
)
@pytest.mark.parametrize("signal", SIGNALS)
async def test_empty_request_succeeds_and_stores_nothing(server, session, db, signal, transport, media, body):
    before = await total_rows(db)
    if transport == "http":
        reply = await post(session, server.url("http", PATHS[signal]), body, media)
        assert_full_success(reply, signal, media)
    else:
        assert await export(server.grpc_target, signal, body) == b""  # raw bytes: an empty Export*Response
    assert await total_rows(db) == before
    await still_serves(transport, session, server, db)


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("signal", SIGNALS)
async def test_envelopes_without_items_succeed_and_store_nothing(server, session, db, signal, transport):
    request = build(signal, uid(), 0)  # a resource and a scope (and a metric), no items
    assert request.ByteSize() > 0
    before = await total_rows(db)
    if transport == "http":
        reply = await post(session, server.url("http", PATHS[signal]), request.SerializeToString(), PB)
        assert_full_success(reply, signal, PB)
    else:
        assert_empty_response(await export(server.grpc_target, signal, request))
    assert await total_rows(db) == before


# --- both transports: undecodable protobuf ----------------------------------------------------


UNDECODABLE_PROTOBUF = {
    "garbage": b"\xff\xff\xff\xff\xff",
    "absurd-length": b"\x0a\xff\xff\xff\xff\x0f",  # field 1, absurd length
    "truncated": b"\x0a\x05abc",
    "truncated-request": "truncated-request",
}


@pytest.mark.parametrize("kind", list(UNDECODABLE_PROTOBUF))
@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("signal", SIGNALS)
async def test_undecodable_protobuf_is_invalid_argument(server, session, db, signal, transport, kind):
    body = UNDECODABLE_PROTOBUF[kind]
    if body == "truncated-request":
        body = build(signal, uid(), 2).SerializeToString()[:-7]
    before = await total_rows(db)
    if transport == "http":
        reply = await post(session, server.url("http", PATHS[signal]), body, PB)
        status = assert_status_reply(reply, 400, INVALID_ARGUMENT, PB)
        assert "invalid protobuf" in status.message
        assert list(status.details) == []  # not retryable: no retry hint
    else:
        error = await export_error(server.grpc_target, signal, body)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid protobuf" in error.details()
        assert rich_status(error).code == INVALID_ARGUMENT
        assert trailer(error, "google.rpc.retryinfo-bin") is None  # not retryable: no retry hint
    assert await total_rows(db) == before
    await still_serves(transport, session, server, db)


# --- both transports: partial success ---------------------------------------------------------


def _partial(signal: str, u: str) -> Message:
    """One valid item and one the mapper rejects (4-byte trace id; histogram with bad buckets)."""
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
        hist = request.resource_metrics[0].scope_metrics[0].metrics.add(name="e2e.histogram")
        hist.histogram.aggregation_temporality = 2
        dp = hist.histogram.data_points.add(time_unix_nano=now, count=3, sum=1.5)
        dp.explicit_bounds.extend([1.0, 2.0])
        dp.bucket_counts.extend([1, 2])  # needs len(bounds) + 1 = 3 counts
        dp.attributes.append(_kv("test.uid", u))
    return request


@pytest.mark.parametrize("variant", ["http-protobuf", "http-json", "grpc-none"])
@pytest.mark.parametrize("signal", SIGNALS)
async def test_partial_success_reports_the_rejected_item_and_stores_the_rest(server, session, db, signal, variant):
    u = uid()
    response = await send_ok(session, server, variant, signal, _partial(signal, u))
    assert response.HasField("partial_success")
    assert getattr(response.partial_success, REJECTED_FIELD[signal]) == 1
    assert response.partial_success.error_message.strip()
    assert await stored(db, signal, u) == 1  # the valid one only
    if signal == "metrics":
        assert (
            await db.fetchval(
                "SELECT count(*) FROM performance_metrics WHERE metric_name = 'e2e.histogram' "
                "AND tags->>'test.uid' = $1",
                u,
            )
            == 0
        )


# --- HTTP only --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "media"),
    [
        ("application/json; charset=utf-8", JS),
        ("APPLICATION/JSON", JS),
        ("Application/Json ; Charset=UTF-8", JS),
        ("APPLICATION/X-PROTOBUF", PB),
        ("application/x-protobuf; charset=binary", PB),
        ("application/protobuf", PB),
    ],
)
async def test_content_type_variants_are_accepted_and_answered_canonically(server, session, db, content_type, media):
    u = uid()
    reply = await post(session, server.url("http", "/v1/logs"), encode(build("logs", u, 2), media), content_type)
    assert_full_success(reply, "logs", media)  # response Content-Type exactly, no charset
    assert await stored(db, "logs", u) == 2


UNDECODABLE_JSON = [
    (JS, b"{not json"),
    (JS, b"[1, 2, 3]"),
    (JS, b'{"resourceSpans": 5}'),
    (JS, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "W47/95gDgQPSabYzgT/GDA=="}]}]}]}'),  # base64
    (JS, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "zzzzzzzzzzzzzzzz"}]}]}]}'),
    (JS, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}'),
    (JS, b"\xff\xfe{}"),  # not UTF-8
]


@pytest.mark.parametrize(
    ("media", "body"), UNDECODABLE_JSON, ids=[f"{m.split('/')[1]}-{i}" for i, (m, _) in enumerate(UNDECODABLE_JSON)]
)
async def test_undecodable_json_is_400_invalid_argument_in_json(server, session, db, media, body):
    before = await total_rows(db)
    reply = await post(session, server.url("http", "/v1/traces"), body, media)
    assert_status_reply(reply, 400, INVALID_ARGUMENT, media)
    assert await total_rows(db) == before
    await assert_still_serves(session, server, db)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/octet-stream",
        "application/xml",
        "application/jsonl",
        "multipart/form-data; boundary=x",
        "json",
    ],
)
async def test_unsupported_content_type_is_415_with_a_protobuf_status(server, session, db, content_type):
    u = uid()
    # A body that would be valid in either encoding: only the Content-Type is wrong.
    reply = await post(session, server.url("http", "/v1/traces"), encode(build("traces", u, 1), PB), content_type)
    status = assert_status_reply(reply, 415, INVALID_ARGUMENT, PB)
    assert "Content-Type" in status.message
    assert await stored(db, "traces", u) == 0
    await assert_still_serves(session, server, db)


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_wrong_method_is_405(server, session, db, method, media):
    u = uid()
    reply = await post(
        session, server.url("http", "/v1/traces"), encode(build("traces", u, 1), media), media, method=method
    )
    assert reply.headers.get("Allow") == "POST"
    status = assert_status_reply(reply, 405, 12, media)  # UNIMPLEMENTED
    assert "POST" in status.message
    assert await stored(db, "traces", u) == 0
    await assert_still_serves(session, server, db)


@pytest.mark.parametrize(
    ("method", "path", "code"), [("GET", "/v1/traces", 405), ("GET", "/", 404), ("POST", "/v1/profiles", 404)]
)
async def test_error_body_without_a_content_type_is_a_protobuf_status(server, session, db, method, path, code):
    reply = await post(session, server.url("http", path), None, None, method=method)
    assert_status_reply(reply, code, {405: 12, 404: 5}[code], PB)  # the spec's default error encoding
    await assert_still_serves(session, server, db)


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize("path", ["/v1/trace", "/v2/traces", "/", "/v1/traces/extra", "/v1development/profiles"])
async def test_unknown_path_is_404(server, session, db, path, media):
    u = uid()
    reply = await post(session, server.url("http", path), encode(build("traces", u, 1), media), media)
    assert_status_reply(reply, 404, 5, media)  # NOT_FOUND
    assert await stored(db, "traces", u) == 0
    await assert_still_serves(session, server, db)


# --- compression ------------------------------------------------------------------------------


COMPRESSORS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # what the Python SDK sends: zlib-wrapped
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "identity": lambda b: b,
    "gzip, zstd": lambda b: zstandard.ZstdCompressor().compress(gzip.compress(b)),
}


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize("coding", list(COMPRESSORS))
async def test_compressed_body_is_accepted_and_stored(server, session, db, coding, media):
    u = uid()
    body = COMPRESSORS[coding](encode(build("metrics", u, 4), media))
    reply = await post(session, server.url("http", "/v1/metrics"), body, media, {"Content-Encoding": coding})
    assert_full_success(reply, "metrics", media)
    assert await stored(db, "metrics", u) == 4


def _corrupt_gzip() -> bytes:
    good = gzip.compress(build("traces", uid(), 2).SerializeToString())
    return good[:10] + bytes(b ^ 0x5A for b in good[10:20]) + good[20:]


BAD_STREAMS = [
    ("gzip", "not gzip at all"),
    ("gzip", "corrupt"),
    ("gzip", "truncated"),
    ("deflate", "not deflate"),
    ("zstd", "not zstd"),
]


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize(("coding", "kind"), BAD_STREAMS)
async def test_corrupt_compressed_body_is_400(server, session, db, coding, kind, media):
    if kind == "corrupt":
        body = _corrupt_gzip()
    elif kind == "truncated":
        body = gzip.compress(encode(build("traces", uid(), 2), media))[:-12]
    else:
        body = kind.encode() * 4
    reply = await post(session, server.url("http", "/v1/traces"), body, media, {"Content-Encoding": coding})
    status = assert_status_reply(reply, 400, INVALID_ARGUMENT, media)
    assert coding in status.message
    await assert_still_serves(session, server, db)


@pytest.mark.parametrize("coding", ["br", "snappy", "compress", "lz4", "gzip, br"])
async def test_unknown_content_encoding_is_400(server, session, db, coding):
    u = uid()
    reply = await post(
        session, server.url("http", "/v1/traces"), encode(build("traces", u, 1), PB), PB, {"Content-Encoding": coding}
    )
    status = assert_status_reply(reply, 400, INVALID_ARGUMENT, PB)
    assert "Content-Encoding" in status.message
    assert await stored(db, "traces", u) == 0
    await assert_still_serves(session, server, db)


@pytest.mark.parametrize("kind", ["double", "histogram-count"])
async def test_extreme_but_valid_values_repeated_in_one_series_are_stored(server, session, db, kind):
    u = uid()
    for attempt in range(2):
        request = build("metrics", u, 1)
        metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
        if kind == "double":
            metric.gauge.data_points[0].as_double = 1e308
        else:
            point = metric.gauge.data_points[0]
            hist = request.resource_metrics[0].scope_metrics[0].metrics.add(name="e2e.big.histogram")
            hist.histogram.aggregation_temporality = 2
            hist.histogram.data_points.add(
                time_unix_nano=point.time_unix_nano, count=2**63 - 1, attributes=point.attributes
            )
        reply = await post(session, server.url("http", "/v1/metrics"), request.SerializeToString())
        assert_full_success(reply, "metrics", PB)
        assert await stored(db, "metrics", u) == (attempt + 1) * len(metric.gauge.data_points) * (
            1 if kind == "double" else 2
        )


# --- self-metrics -----------------------------------------------------------------------------


async def test_self_metrics_count_exactly_what_was_accepted_and_refused(server, session, db):
    before = await scrape(session, server)
    url = server.url("http", "/v1/traces")
    sent = 0
    for media, n in ((PB, 5), (JS, 7), (PB, 1)):
        assert (await post(session, url, encode(build("traces", uid(), n), media), media)).status == 200
        sent += n
    # partial success: 1 accepted, 1 refused as invalid_data
    assert (await post(session, url, encode(_partial("traces", uid()), PB), PB)).status == 200
    sent += 1
    decode_errors = 0
    for media, body in ((PB, b"\xff\xff\xff"), (JS, b"{nope"), (JS, b'{"resourceSpans": 1}')):
        assert (await post(session, url, body, media)).status == 400
        decode_errors += 1
    gz = {"Content-Encoding": "gzip"}
    assert (await post(session, url, b"garbage", PB, gz)).status == 400  # a decompression error is a decode error
    decode_errors += 1
    # Refused for other reasons: not decode errors, and none of it accepted.
    assert (await post(session, url, b"{}", "text/plain")).status == 415
    assert (
        await post(session, server.url("http", "/v1/metrics"), encode(build("metrics", uid(), 3), PB))
    ).status == 200
    after = await scrape(session, server)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("otelpg_receiver_accepted_spans_total", transport="http") == sent
    assert delta("otelpg_receiver_refused_spans_total", transport="http", reason="invalid_data") == 1
    assert delta("otelpg_receiver_refused_requests_total", transport="http", reason="decode_error") == decode_errors
    assert delta("otelpg_receiver_refused_requests_total", transport="http", reason="unsupported_media_type") == 1
    assert delta("otelpg_receiver_accepted_metric_points_total", transport="http") == 3
    assert delta("otelpg_receiver_accepted_spans_total", transport="grpc") == 0


# --- size limit, gzip bomb, backpressure (own process) ----------------------------------------


def _request_of_size(size: int, u: str) -> bytes:
    """A valid one-span request whose protobuf encoding is exactly `size` bytes."""
    request = build("traces", u, 1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    pad = span.attributes.add(key="pad")
    pad.value.string_value = ""
    estimate = size - request.ByteSize()
    name = span.name
    for extra in range(8):  # a length varint that grows a byte can skip `size`: shift by the name
        span.name = name + "y" * extra
        for n in range(max(0, estimate - 24), estimate + 1):
            pad.value.string_value = "x" * n
            if request.ByteSize() == size:
                return request.SerializeToString()
            if request.ByteSize() > size:
                break
    raise AssertionError(f"no request of {size} bytes")


async def test_body_at_the_limit_is_accepted_and_one_byte_more_is_413(limited, session, limited_db):
    url = limited.url("http", "/v1/traces")
    u = uid()
    reply = await post(session, url, _request_of_size(LIMIT, u))
    assert_full_success(reply, "traces", PB)
    assert await stored(limited_db, "traces", u) == 1
    u = uid()
    reply = await post(session, url, _request_of_size(LIMIT + 1, u))
    status = assert_status_reply(reply, 413, RESOURCE_EXHAUSTED, PB)
    assert str(LIMIT) in status.message
    assert await stored(limited_db, "traces", u) == 0
    await assert_still_serves(session, limited, limited_db)


@pytest.mark.parametrize("media", MEDIA)
async def test_oversized_body_is_413_with_or_without_content_length(limited, session, limited_db, media):
    u = uid()
    body = encode(build("logs", u, 1), media)
    body = body[:-1] + b" " * (3 * LIMIT) + body[-1:] if media == JS else _request_of_size(3 * LIMIT, u)
    url = limited.url("http", "/v1/logs")
    reply = await post(session, url, body, media)
    assert_status_reply(reply, 413, RESOURCE_EXHAUSTED, media)

    async def chunks() -> AsyncIterator[bytes]:  # chunked transfer: no Content-Length to check up front
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    reply = await post(session, url, chunks(), media)  # type: ignore[arg-type]
    assert_status_reply(reply, 413, RESOURCE_EXHAUSTED, media)
    assert await stored(limited_db, "logs", u) == 0
    await assert_still_serves(session, limited, limited_db)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "zstd"])
async def test_compressed_body_inflating_past_the_limit_is_413(limited, session, limited_db, coding):
    u = uid()
    body = _request_of_size(LIMIT + 100, u)
    compressed = COMPRESSORS[coding](body)
    assert len(compressed) < LIMIT // 10
    reply = await post(session, limited.url("http", "/v1/traces"), compressed, PB, {"Content-Encoding": coding})
    assert_status_reply(reply, 413, RESOURCE_EXHAUSTED, PB)
    assert await stored(limited_db, "traces", u) == 0
    await assert_still_serves(session, limited, limited_db)


def _peak_rss_reset(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of `pid` to its current RSS; False if unsupported."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_gzip_bomb_is_refused_quickly_without_inflating_it(limited, session, limited_db):
    inflated = 20 * 1024 * 1024
    bomb = gzip.compress(b"\0" * inflated, 9)
    assert len(bomb) < 25 * 1024  # ~20 KB on the wire, 20 MiB once inflated
    assert limited.proc is not None
    sidecar = psutil.Process(limited.proc.pid)
    # Warm up the code path so one-time allocations don't count against the bomb.
    await post(
        session, limited.url("http", "/v1/traces"), gzip.compress(b"\0" * (2 * LIMIT)), PB, {"Content-Encoding": "gzip"}
    )
    rss_before = sidecar.memory_info().rss
    peak_tracked = _peak_rss_reset(sidecar.pid)  # RSS after the fact can't show a freed 20 MiB buffer
    started = time.monotonic()
    reply = await post(session, limited.url("http", "/v1/traces"), bomb, PB, {"Content-Encoding": "gzip"})
    elapsed = time.monotonic() - started
    assert_status_reply(reply, 413, RESOURCE_EXHAUSTED, PB)
    assert elapsed < 1.0, elapsed
    growth = sidecar.memory_info().rss - rss_before
    # Measured: inflating the bomb whole (with a 64 MiB limit) raises the peak by ~41 MB; refused, ~1.5 MB.
    peak_growth = _peak_rss(sidecar.pid) - rss_before
    await assert_still_serves(session, limited, limited_db)
    assert growth < 8 * 1024 * 1024, growth
    if not peak_tracked:
        pytest.skip("the peak RSS can't be reset here (/proc/<pid>/clear_refs): memory bound not checked")
    assert peak_growth < 8 * 1024 * 1024, peak_growth


async def test_full_queue_is_503_with_retry_after(limited, session, limited_db):
    """queue.max_rows is 1 and batches wait 0.5 s: a second request while one is queued is refused."""
    url = limited.url("http", "/v1/logs")
    first_uid, second_uid = uid(), uid()
    first = asyncio.create_task(post(session, url, encode(build("logs", first_uid, 1), PB)))
    await asyncio.sleep(0.2)
    for media in MEDIA:
        started = time.monotonic()
        reply = await post(session, url, encode(build("logs", second_uid, 1), media), media)
        assert time.monotonic() - started < 0.4  # refused at once, not queued
        status = assert_status_reply(reply, 503, UNAVAILABLE, media)
        assert reply.headers.get("Retry-After") == "1"
        _assert_retry_info(status, 1.0)
    assert_full_success(await first, "logs", PB)
    assert await stored(limited_db, "logs", first_uid) == 1
    assert await stored(limited_db, "logs", second_uid) == 0
    await assert_still_serves(session, limited, limited_db)


def _assert_retry_info(status: status_pb2.Status, retry_after: float) -> None:
    """The Status carries a RetryInfo agreeing with Retry-After (whole seconds, rounded up)."""
    assert len(status.details) == 1
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    delay = info.retry_delay.ToNanoseconds() / 1e9
    assert retry_after - 1 < delay <= retry_after, (delay, retry_after)


# --- gRPC only --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "/opentelemetry.proto.collector.trace.v1.TraceService/Bogus",
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        "/opentelemetry.proto.collector.trace.v2.TraceService/Export",
        "/grpc.health.v1.Health/Check",
    ],
)
async def test_grpc_unknown_method_is_unimplemented(server, db, method):
    error = await export_error(
        server.grpc_target, "traces", build("traces", uid(), 1).SerializeToString(), method=method
    )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    await assert_grpc_still_serves(server, db)


async def test_self_metrics_count_grpc_exactly(server, session, db):
    before = await scrape(session, server)
    target = server.grpc_target
    await export(target, "traces", build("traces", uid(), 4))
    await export(target, "traces", build("traces", uid(), 2), compression=grpc.Compression.Gzip)
    await export(target, "traces", _partial("traces", uid()))  # 1 accepted, 1 invalid_data
    for _ in range(3):
        await export_error(target, "logs", b"\xff\xff")
    after = await scrape(session, server)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("otelpg_receiver_accepted_spans_total", transport="grpc") == 7
    assert delta("otelpg_receiver_refused_spans_total", transport="grpc", reason="invalid_data") == 1
    assert delta("otelpg_receiver_refused_requests_total", transport="grpc", reason="decode_error") == 3
    assert delta("otelpg_receiver_accepted_spans_total", transport="http") == 0


async def test_grpc_message_over_max_recv_size_is_resource_exhausted_and_not_stored(grpc_limited, grpc_limited_db):
    u = uid()
    small = build("logs", u, 2, pad=MAX_RECV // 8)
    assert small.ByteSize() < MAX_RECV
    assert_empty_response(await export(grpc_limited.grpc_target, "logs", small))
    assert await stored(grpc_limited_db, "logs", u) == 2
    u = uid()
    big = build("logs", u, 2, pad=MAX_RECV)
    assert big.ByteSize() > MAX_RECV
    error = await export_error(grpc_limited.grpc_target, "logs", big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert await stored(grpc_limited_db, "logs", u) == 0
    await assert_grpc_still_serves(grpc_limited, grpc_limited_db)


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
async def test_grpc_compressed_message_inflating_past_max_recv_size_is_resource_exhausted(
    grpc_limited, grpc_limited_db, compression
):
    u = uid()
    big = build("traces", u, 1, pad=16 * MAX_RECV)  # 1 MiB of one letter: compresses to ~1 KiB
    assert len(gzip.compress(big.SerializeToString())) < MAX_RECV // 16
    error = await export_error(grpc_limited.grpc_target, "traces", big, compression=COMPRESSIONS[compression])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert await stored(grpc_limited_db, "traces", u) == 0
    await assert_grpc_still_serves(grpc_limited, grpc_limited_db)


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


# --- both transports: database unavailable (own process on a throwaway database) ------------


async def wait_until_unhealthy(session: aiohttp.ClientSession, proc: OtelpgProcess) -> None:
    deadline = time.monotonic() + 15
    while True:
        async with session.get(proc.url("admin", "/health")) as r:
            if r.status == 503 and (await r.json())["database"] == "unhealthy":
                return
        assert time.monotonic() < deadline, "otelpg never noticed the database went away"
        await asyncio.sleep(0.25)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("spool:\n  enabled: false\n", "database_unavailable"),
        ("spool:\n  enabled: true\n  max_bytes: 64\n", "backpressure"),
    ],  # the spool can't hold a request
    ids=["no-spool", "spool-full"],
)
async def test_database_unavailable_is_refused_as_retryable_with_retry_info(
    pg_server_dsn, session, tmp_path, config, reason
):
    name = f"otelpg_http_outage_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    p = urlsplit(pg_server_dsn)
    proc = start_otelpg(tmp_path, urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, p.fragment)), config)
    try:
        url = proc.url("http", "/v1/traces")
        assert_full_success(await post(session, url, encode(build("traces", uid(), 2), PB)), "traces", PB)
        conn = await asyncpg.connect(pg_server_dsn)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        await wait_until_unhealthy(session, proc)
        for signal in SIGNALS:
            for media in MEDIA:
                reply = await post(
                    session, proc.url("http", PATHS[signal]), encode(build(signal, uid(), 2), media), media
                )
                status = assert_status_reply(reply, 503, UNAVAILABLE, media)
                retry_after = reply.headers.get("Retry-After")
                assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
                _assert_retry_info(status, float(retry_after))
        for signal in SIGNALS:
            error = await export_error(proc.grpc_target, signal, build(signal, uid(), 2))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            status = rich_status(error)
            assert status.code == UNAVAILABLE and len(status.details) == 1
            detailed = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(detailed)
            raw = trailer(error, "google.rpc.retryinfo-bin")  # where the Python exporter looks
            assert raw is not None
            alone = error_details_pb2.RetryInfo.FromString(raw)
            assert alone == detailed
            assert alone.retry_delay.ToNanoseconds() >= 1_000_000_000
        text = await scrape(session, proc)
        assert metric_value(text, "otelpg_receiver_refused_requests_total", transport="grpc", reason=reason) == 3
        assert metric_value(text, "otelpg_receiver_refused_requests_total", transport="http", reason=reason) == 6
        assert metric_value(text, "otelpg_receiver_refused_spans_total", transport="http", reason=reason) == 4
        assert metric_value(text, "otelpg_receiver_accepted_spans_total", transport="http") == 2
    finally:
        assert proc.stop() == 0, proc.log


# --- last: the counters agree with PostgreSQL --------------------------------------------------


async def test_accepted_counters_equal_the_rows_in_postgres(server, session, db):
    """Every item the module's process counted as accepted, over either transport, is in
    PostgreSQL, and nothing else is."""
    for signal in SIGNALS:
        assert (
            await post(session, server.url("http", PATHS[signal]), encode(build(signal, uid(), 2), PB))
        ).status == 200
        await export(server.grpc_target, signal, build(signal, uid(), 2))
    text = await scrape(session, server)

    def accepted(item: str) -> float:
        return sum(metric_value(text, f"otelpg_receiver_accepted_{item}_total", transport=t) for t in ("http", "grpc"))

    spans = await db.fetchval("SELECT count(*) FROM system_events WHERE event_type = 'span'")
    logs = await db.fetchval("SELECT count(*) FROM system_events WHERE event_type = 'log' AND source <> 'otelpg'")
    points = await db.fetchval(f"SELECT count(*) FROM performance_metrics WHERE {NOT_DERIVED}")
    assert (accepted("spans"), accepted("log_records"), accepted("metric_points")) == (spans, logs, points)
    assert min(metric_value(text, "otelpg_receiver_accepted_spans_total", transport=t) for t in ("http", "grpc")) > 0
