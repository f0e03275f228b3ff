"""Hostile input: each gets the right status, otelpg keeps serving, later valid data is stored."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import zstandard
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import with_search_path
from tests.otelpg_process import OtelpgProcess

pytestmark = pytest.mark.e2e

LIMIT = 8 * 1024 * 1024
CONFIG = f"""
http:
  max_request_body_size: {LIMIT}
  idle_timeout: 2
  read_timeout: 2
limits:
  max_attributes: 100
  max_attribute_value_length: 1000
"""
PB = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def schema_dsn(pg_server_dsn: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(pg_server_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE SCHEMA "{schema}"'))
    yield with_search_path(pg_server_dsn, schema)
    asyncio.run(run(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(scope="module")
def proc(schema_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    cfg = tmp / "otelpg.yaml"
    cfg.write_text(CONFIG)
    p = OtelpgProcess(tmp, {"OTELPG_DATABASE_URL": schema_dsn}, args=("--config", str(cfg)))
    p.start()
    yield p
    assert p.stop() == 0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


def _log_request(body: str, **attrs: object) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.time_unix_nano = time.time_ns()
    rec.body.string_value = body
    for k, v in attrs.items():
        kv = rec.attributes.add()
        kv.key = k
        kv.value.string_value = str(v)
    return req


async def _post(
    session: aiohttp.ClientSession, proc: OtelpgProcess, path: str, data: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict]:
    async with session.post(proc.url("http", path), data=data, headers={**PB, **(headers or {})}) as r:
        return r.status, await r.read(), dict(r.headers)


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _still_serves(session: aiohttp.ClientSession, proc: OtelpgProcess, dsn: str) -> None:
    """otelpg is alive and a valid request sent now is stored."""
    marker = f"alive-{uuid.uuid4().hex}"
    status, _, _ = await _post(session, proc, "/v1/logs", _log_request(marker).SerializeToString())
    assert status == 200
    rows = await _fetch(dsn, "SELECT 1 FROM system_events WHERE payload->>'body' = $1", marker)
    assert len(rows) == 1
    assert proc.proc is not None and proc.proc.poll() is None


def _status(body: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(body)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_compression_bombs_are_refused_without_inflating(proc, schema_dsn, session, encoding):
    import psutil

    zeros = b"\0" * (256 * 1024 * 1024)  # 256 MiB of zeros: a few hundred KB compressed
    bomb = gzip.compress(zeros, 9) if encoding == "gzip" else zstandard.ZstdCompressor(level=19).compress(zeros)
    del zeros
    rss_before = psutil.Process(proc.proc.pid).memory_info().rss
    status, body, _ = await _post(session, proc, "/v1/logs", bomb, {"Content-Encoding": encoding})
    assert status == 413 and _status(body).code == 8
    assert psutil.Process(proc.proc.pid).memory_info().rss - rss_before < 64 * 1024 * 1024
    await _still_serves(session, proc, schema_dsn)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\xff\xff\xff\xff\x0f",
        b"\x12\x34garbage\xff" * 10,
        ExportTraceServiceRequest().SerializeToString() + b"\x0a",
    ],
    ids=["truncated", "garbage", "dangling-field"],
)
async def test_truncated_and_garbage_protobuf_get_400(proc, schema_dsn, session, payload):
    status, body, headers = await _post(session, proc, "/v1/traces", payload)
    assert status == 400 and headers["Content-Type"] == "application/x-protobuf"
    assert _status(body).code == 3 and _status(body).message
    await _still_serves(session, proc, schema_dsn)


async def test_deeply_nested_json_gets_400_and_a_deeply_nested_anyvalue_only_its_item_rejected(
    proc, schema_dsn, session
):
    nested = b'{"resourceLogs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, body, _ = await _post(session, proc, "/v1/logs", nested, {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["code"] == 3
    # In protobuf: an AnyValue nested 10,000 kvlists deep, next to a valid record in the same request.
    marker = f"beside-{uuid.uuid4().hex}"
    req = _log_request("x")
    value = req.resource_logs[0].scope_logs[0].log_records[0].body
    for _ in range(10_000):
        value = value.kvlist_value.values.add(key="k").value
    req.resource_logs[0].scope_logs[0].log_records.add().body.string_value = marker
    status, body, _ = await _post(session, proc, "/v1/logs", req.SerializeToString())
    assert status == 200
    response = ExportLogsServiceResponse.FromString(body)
    assert response.partial_success.rejected_log_records == 1
    assert "nested" in response.partial_success.error_message
    assert len(await _fetch(schema_dsn, "SELECT 1 FROM system_events WHERE payload->>'body' = $1", marker)) == 1
    await _still_serves(session, proc, schema_dsn)


async def test_huge_attribute_values_and_counts_are_truncated_and_counted(proc, schema_dsn, session):
    marker = f"huge-{uuid.uuid4().hex}"
    req = _log_request(marker, big="v" * 1_000_000)
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    for i in range(100_000):
        kv = rec.attributes.add()
        kv.key, kv.value.int_value = f"k{i}", i
    status, _, _ = await _post(session, proc, "/v1/logs", req.SerializeToString())
    assert status == 200
    (row,) = await _fetch(schema_dsn, "SELECT payload FROM system_events WHERE payload->>'body' = $1", marker)
    attributes = json.loads(row["payload"])["attributes"]
    assert len(attributes) == 100 and len(attributes["big"]) == 1000
    async with session.get(proc.url("admin", "/metrics")) as r:
        text = await r.text()
    assert 'otelpg_mapping_truncated_total{what="attributes"}' in text
    assert 'otelpg_mapping_truncated_total{what="attribute_values"}' in text


async def test_invalid_utf8_gets_400_and_nul_bytes_are_stored_sanitised(proc, schema_dsn, session):
    raw = bytearray(_log_request("XXXX").SerializeToString())
    at = raw.index(b"XXXX")
    raw[at : at + 4] = b"\xff\xfe\xc3\x28"  # invalid UTF-8 in a proto3 string field
    status, _, _ = await _post(session, proc, "/v1/logs", bytes(raw))
    assert status == 400
    status, _, _ = await _post(
        session, proc, "/v1/logs", b'{"resourceLogs": [\xff\xfe]}', {"Content-Type": "application/json"}
    )
    assert status == 400
    marker = f"nul-{uuid.uuid4().hex}"
    status, _, _ = await _post(
        session, proc, "/v1/logs", _log_request(marker + "\x00end", **{"a\x00b": "c\x00d"}).SerializeToString()
    )
    assert status == 200
    rows = await _fetch(schema_dsn, "SELECT payload FROM system_events WHERE payload->>'body' LIKE $1", marker + "%")
    payload = json.loads(rows[0]["payload"])
    assert payload["body"] == marker + "\ufffdend" and payload["attributes"] == {"a\ufffdb": "c\ufffdd"}
    await _still_serves(session, proc, schema_dsn)


async def test_absurd_timestamps_and_non_finite_values_are_stored(proc, schema_dsn, session):
    marker = f"ts-{uuid.uuid4().hex}"
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add()
    for i, (start, end) in enumerate([(0, 0), ((1 << 64) - 1, (1 << 64) - 1), (1, (1 << 64) - 1)]):
        sp = spans.spans.add(
            name=f"{marker}-{i}",
            trace_id=uuid.uuid4().bytes,
            span_id=uuid.uuid4().bytes[:8],
            start_time_unix_nano=start,
            end_time_unix_nano=end,
        )
        sp.attributes.add(key="x").value.double_value = float("nan")
    status, _, _ = await _post(session, proc, "/v1/traces", req.SerializeToString())
    assert status == 200
    rows = await _fetch(
        schema_dsn, "SELECT name, timestamp, payload FROM system_events WHERE name LIKE $1 ORDER BY name", marker + "%"
    )
    assert len(rows) == 3
    assert rows[1]["timestamp"].year == 2554 and json.loads(rows[0]["payload"])["attributes"]["x"] == "NaN"
    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name=marker)
    for v in (float("nan"), float("inf"), float("-inf"), 1e300, 2e9):
        m.gauge.data_points.add(time_unix_nano=time.time_ns(), as_double=v)
    status, _, _ = await _post(session, proc, "/v1/metrics", metrics.SerializeToString())
    assert status == 200
    rows = await _fetch(schema_dsn, "SELECT value FROM performance_metrics WHERE metric_name = $1", marker)
    values = sorted(str(r["value"]) for r in rows)
    assert values == sorted(["nan", "inf", "-inf", "1e+300", "2000000000.0"])


async def test_a_request_with_100k_label_sets_is_stored(proc, schema_dsn, session):
    marker = f"labels-{uuid.uuid4().hex}"
    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name=marker)
    now = time.time_ns()
    for i in range(100_000):
        p = m.gauge.data_points.add(time_unix_nano=now, as_int=i)
        p.attributes.add(key="user").value.string_value = f"u{i}"
    status, _, _ = await _post(session, proc, "/v1/metrics", metrics.SerializeToString())
    assert status == 200
    rows = await _fetch(schema_dsn, "SELECT count(*) AS n FROM performance_metrics WHERE metric_name = $1", marker)
    assert rows[0]["n"] == 100_000
    await _still_serves(session, proc, schema_dsn)


async def test_slow_loris_connections_are_closed_and_others_served(proc, schema_dsn, session):
    def trickle() -> float:
        """Send a request line and headers a byte at a time, never finishing; time until closed."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", proc.ports["http"]), timeout=10) as s:
            try:
                s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n")
                for ch in b"Content-Type: application/x-protobuf\r\n" * 10:
                    s.sendall(bytes([ch]))
                    time.sleep(0.05)
                    if time.monotonic() - started > 8:
                        break
                return time.monotonic() - started if s.recv(1024) == b"" else -1.0
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - started

    slow = [asyncio.to_thread(trickle) for _ in range(20)]
    await asyncio.sleep(0.5)
    await _still_serves(session, proc, schema_dsn)  # while 20 slow clients hold connections
    closed_after = await asyncio.gather(*slow)
    assert all(0 <= t < 8 for t in closed_after), closed_after
    # A body that never finishes is cut off by the read timeout with 400.
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.ports["http"])
    writer.write(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\nabc"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert b" 400 " in status_line
    await _still_serves(session, proc, schema_dsn)


async def test_an_oversized_chunked_body_gets_413_not_a_connection_reset(proc, schema_dsn, session):
    """No Content-Length: the limit is found while reading; the client must still read a 413."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(25 * 1024):  # 25 MiB, 1 KiB at a time, far over the limit
            yield b"\0" * 1024

    async with session.post(proc.url("http", "/v1/logs"), data=chunks(), headers=PB) as r:
        assert r.status == 413
        assert _status(await r.read()).code == 8  # RESOURCE_EXHAUSTED
    await _still_serves(session, proc, schema_dsn)


async def test_an_oversized_body_with_a_content_length_is_413_before_it_is_read(proc, schema_dsn):
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.ports["http"])
    try:
        writer.write(
            b"POST /v1/logs HTTP/1.1\r\nHost: otelpg\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 26214400\r\n\r\n"
        )  # and no body at all
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 ")
