"""Fuzz both receivers in-process: whatever the bytes, the answer is a 2xx/4xx (OK/INVALID_ARGUMENT),
never a 500/INTERNAL or a crash. The consumer runs the real mapping (rows are discarded)."""

from __future__ import annotations

import asyncio
import gzip
import threading

import grpc
import pytest
from aiohttp import ClientSession, ClientTimeout
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporters.postgres.ids import request_ids
from exporters.postgres.mapping_thread import map_chunk
from sidecar.pipeline.consumer import ConsumeResult, ExportRequest
from sidecar.pipeline.signals import SIGNALS
from sidecar.pipeline.telemetry import Telemetry
from sidecar.receivers.otlp_grpc import GrpcReceiver
from sidecar.receivers.otlp_http import HttpReceiver


class MappingConsumer:
    """Decodes and maps every chunk with the real mapping functions and keeps nothing."""

    async def consume(self, request: ExportRequest) -> ConsumeResult:
        new_id = request_ids(1, 1)
        rejected, messages = request.rejected, [request.reason]
        for chunk in request.chunks:
            mapped = map_chunk(request.signal, chunk, 1, new_id)
            rejected += mapped.rejected
            messages.append(mapped.message)
        return ConsumeResult(rejected, "; ".join(m for m in messages if m))


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

# Mutations of valid requests reach deeper than uniform random bytes.
_VALID = {s.path: s.request_type() for s in SIGNALS}
_span = (
    _VALID["/v1/traces"]
    .resource_spans.add()
    .scope_spans.add()
    .spans.add(name="n", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
)
_span.attributes.add(key="k").value.string_value = "v"
_VALID["/v1/metrics"].resource_metrics.add().scope_metrics.add().metrics.add(name="m").gauge.data_points.add(as_int=1)
_VALID["/v1/logs"].resource_logs.add().scope_logs.add().log_records.add().body.string_value = "b"
SEEDS = {path: msg.SerializeToString() for path, msg in _VALID.items()}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(sorted(SEEDS)))
    if draw(st.booleans()):
        return path, draw(st.binary(max_size=512))
    seed = bytearray(SEEDS[path])
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(seed)))
        if draw(st.booleans()) and at < len(seed):
            seed[at] = draw(st.integers(0, 255))
        else:
            seed[at:at] = draw(st.binary(min_size=1, max_size=8))
    return path, bytes(seed)


@pytest.fixture(scope="module")
def http_client():
    loop = asyncio.new_event_loop()
    receiver = HttpReceiver(
        MappingConsumer(), Telemetry(CollectorRegistry()), max_body=1 << 20, read_timeout=5, grace=0.0
    )
    loop.run_until_complete(receiver.start())  # served as otelpg serves it: no aiohttp decompression
    host, port = receiver.address
    client = loop.run_until_complete(_session(f"http://{host}:{port}"))
    yield loop, client
    loop.run_until_complete(client.close())
    loop.run_until_complete(receiver.stop())
    loop.close()


async def _session(base_url: str) -> ClientSession:
    return ClientSession(base_url=base_url, timeout=ClientTimeout(total=10))


@FUZZ
@given(case=bodies(), media=st.sampled_from(["application/x-protobuf", "application/json"]), gz=st.booleans())
def test_http_never_answers_500(http_client, case, media, gz):
    loop, client = http_client
    path, body = case
    headers = {"Content-Type": media}
    if gz:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"

    async def post() -> int:
        async with client.post(path, data=body, headers=headers) as r:
            await r.read()
            return r.status

    assert loop.run_until_complete(post()) in (200, 400, 413)


@FUZZ
@given(text=st.text(max_size=300))
def test_http_json_text_never_answers_500(http_client, text):
    loop, client = http_client

    async def post() -> int:
        async with client.post("/v1/logs", data=text.encode(), headers={"Content-Type": "application/json"}) as r:
            await r.read()
            return r.status

    assert loop.run_until_complete(post()) in (200, 400)


@pytest.fixture(scope="module")
def grpc_channel():
    """The gRPC receiver on its own event loop in a background thread; a blocking channel to it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    receiver = GrpcReceiver(MappingConsumer(), Telemetry(CollectorRegistry()), max_message_size=1 << 20, grace=0)
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
    port = receiver.address[1]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


_METHOD = {s.path: f"/{s.grpc_service}/Export" for s in SIGNALS}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=bodies())
def test_grpc_never_answers_internal(grpc_channel, case):
    path, body = case
    call = grpc_channel.unary_unary(_METHOD[path], request_serializer=None, response_deserializer=None)
    try:
        call(body, timeout=10)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
