"""What a refused request leaves behind, in-process: nothing held (its body is freed as soon as it is
answered, not when the cyclic GC runs), nothing logged as an error when the client simply left."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import tracemalloc

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client import CollectorRegistry

from sidecar.pipeline.consumer import ConsumeResult, ExportRequest
from sidecar.pipeline.errors import BackpressureError
from sidecar.pipeline.signals import LOGS, TRACES
from sidecar.pipeline.telemetry import Telemetry
from sidecar.receivers.otlp_grpc import GrpcReceiver
from sidecar.receivers.otlp_http import HttpReceiver

MiB = 1 << 20


class Refusing:
    """A consumer that is always full: every request is refused with UNAVAILABLE / 503."""

    async def consume(self, request: ExportRequest) -> ConsumeResult:
        raise BackpressureError("full", retry_after=1)


def _request_of_size(size: int) -> bytes:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for _ in range(size // 1100):
        records.add().body.string_value = "x" * 1024
    return request.SerializeToString()


@pytest.fixture
def grpc_receiver():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    telemetry = Telemetry(CollectorRegistry())
    receiver = GrpcReceiver(Refusing(), telemetry, max_message_size=4 * MiB, grace=0)
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
    port = receiver.address[1]
    yield port, telemetry
    asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_grpc_refused_requests_are_freed_without_the_cyclic_gc(grpc_receiver):
    port, telemetry = grpc_receiver
    body = _request_of_size(MiB)
    gc.collect()
    gc.disable()  # what is only freed by a collection stays: the test sees it
    tracemalloc.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(f"/{LOGS.grpc_service}/Export")
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as refused:
                    export(body, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    # 20 requests of 1 MiB, each read, split and refused: none of them may still be held
    assert held < 4 * MiB, f"{held / MiB:.1f} MiB still held after 20 refused 1 MiB requests"
    assert telemetry.refused_requests.labels("grpc", "backpressure")._value.get() == 20


def test_http_client_leaving_mid_body_is_counted_not_logged_as_an_error(caplog):
    telemetry = Telemetry(CollectorRegistry())
    receiver = HttpReceiver(Refusing(), telemetry, max_body=4 * MiB, read_timeout=5, grace=0.0)

    async def run() -> None:
        await receiver.start()
        host, port = receiver.address
        try:
            head = (
                f"POST {TRACES.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                f"Content-Length: {MiB}\r\n\r\n"
            ).encode()
            _reader, writer = await asyncio.open_connection(host, port)
            writer.write(head + b"\x0a" * 4096)
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.transport.get_extra_info("socket").setsockopt(  # RST, as a crashing client would
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            writer.close()
            for _ in range(100):
                if telemetry.refused_requests.labels("http", "incomplete")._value.get():
                    break
                await asyncio.sleep(0.02)
        finally:
            await receiver.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
    assert telemetry.refused_requests.labels("http", "incomplete")._value.get() == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
