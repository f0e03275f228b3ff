"""The OTLP/HTTP receiver in-process, against a recording consumer: what it hands the consumer,
and how it answers (status, Content-Type, body, headers, self-metrics) for everything it owns."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import pytest
import zstandard
from aiohttp import ClientResponse, ClientSession, ClientTimeout
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from sidecar.pipeline.admission import Admission
from sidecar.pipeline.consumer import ConsumeResult
from sidecar.pipeline.errors import (
    BackpressureError,
    DatabaseUnavailableError,
    DecodeError,
    PermanentError,
    ShuttingDownError,
)
from sidecar.pipeline.signals import LOGS, METRICS, SIGNALS, TRACES, Signal
from sidecar.pipeline.telemetry import Telemetry
from sidecar.receivers.otlp_http import HttpReceiver
from tests.otlp_json import otlp_json
from tests.unit.receivers.fakes import RecordingConsumer, build, counter, items_of, nested_span, new_telemetry

PB = "application/x-protobuf"
JS = "application/json"
MEDIA = (PB, JS)
LIMIT = 64 * 1024
TOKEN = "s3cret"
PATHS = ", ".join(s.path for s in SIGNALS)


@dataclass
class Http:
    receiver: HttpReceiver
    client: ClientSession
    consumer: RecordingConsumer
    telemetry: Telemetry

    async def post(
        self,
        path: str,
        body: object,
        content_type: str | None = PB,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> Reply:
        all_headers = dict(headers or {})
        skip: list[str] = []
        if content_type is None:
            skip.append("Content-Type")
        else:
            all_headers["Content-Type"] = content_type
        async with self.client.request(
            method, path, data=body, headers=all_headers, skip_auto_headers=skip
        ) as response:
            return await Reply.of(response)

    def counter(self, name: str, **labels: str) -> float:
        return counter(self.telemetry, name, transport="http", **labels)


@dataclass
class Reply:
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    @classmethod
    async def of(cls, response: ClientResponse) -> Reply:
        return cls(
            response.status, response.headers.get("Content-Type", ""), dict(response.headers), await response.read()
        )

    def status_message(self, media: str = PB) -> status_pb2.Status:
        """The google.rpc.Status of an error reply, in `media`."""
        assert self.content_type == media, (self.content_type, self.body[:200])
        if media == JS:
            return json_format.ParseDict(orjson.loads(self.body), status_pb2.Status())
        return status_pb2.Status.FromString(self.body)


MakeHttp = Callable[..., Awaitable[Http]]


@pytest.fixture
async def make_http() -> AsyncIterator[MakeHttp]:
    """Receivers served as otelpg serves them (`HttpReceiver.start`, its own server options: no
    aiohttp decompression), on a free port, each with its consumer, telemetry and a client."""
    made: list[Http] = []

    async def make(**options: object) -> Http:
        consumer = RecordingConsumer()
        telemetry = new_telemetry()
        kwargs: dict = {"max_body": LIMIT, "read_timeout": 5.0, "grace": 0.0, **options}
        receiver = HttpReceiver(consumer, telemetry, **kwargs)
        await receiver.start()
        host, port = receiver.address
        client = ClientSession(base_url=f"http://{host}:{port}", timeout=ClientTimeout(total=10))
        made.append(Http(receiver, client, consumer, telemetry))
        return made[-1]

    yield make
    for http in made:
        await http.client.close()
        await http.receiver.stop()


@pytest.fixture
async def http(make_http: MakeHttp) -> Http:
    return await make_http()


def encode(signal: Signal, n: int, media: str) -> tuple[bytes, bytes]:
    """(the body in `media`, the request as protobuf)."""
    request = build(signal, n)
    protobuf = request.SerializeToString()
    return (otlp_json(request) if media == JS else protobuf), protobuf


# --- what the consumer gets --------------------------------------------------------------------


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.name)
async def test_each_path_hands_its_signal_to_the_consumer_and_answers_an_empty_response(http, signal, media):
    body, protobuf = encode(signal, 3, media)
    reply = await http.post(signal.path, body, media)
    assert (reply.status, reply.content_type) == (200, media)
    assert reply.body == (b"{}" if media == JS else b"")
    request = http.consumer.only
    assert request.signal is signal
    assert request.body == protobuf  # JSON arrives re-encoded as protobuf
    assert request.chunks == [protobuf]
    assert (request.items, request.rejected, request.reason, request.truncated) == (3, 0, "", 0)
    assert http.counter(f"otelpg_receiver_accepted_{signal.item}_total") == 3


@pytest.mark.parametrize(
    ("content_type", "media"),
    [
        ("application/json; charset=utf-8", JS),
        ("Application/Json ; Charset=UTF-8", JS),
        ("APPLICATION/X-PROTOBUF", PB),
        ("application/protobuf", PB),
        ("application/x-protobuf; charset=binary", PB),
    ],
)
async def test_content_type_variants_are_answered_in_the_canonical_media_type(http, content_type, media):
    body, protobuf = encode(LOGS, 1, media)
    reply = await http.post(LOGS.path, body, content_type)
    assert (reply.status, reply.content_type) == (200, media)
    assert http.consumer.only.body == protobuf


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "identity": lambda b: b,
    "gzip, zstd": lambda b: zstandard.ZstdCompressor().compress(gzip.compress(b)),
}


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize("coding", list(COMPRESSORS))
async def test_compressed_bodies_reach_the_consumer_inflated(http, coding, media):
    body, protobuf = encode(METRICS, 4, media)
    reply = await http.post(METRICS.path, COMPRESSORS[coding](body), media, {"Content-Encoding": coding})
    assert reply.status == 200, reply.body
    assert http.consumer.only.body == protobuf
    assert http.consumer.only.items == 4


async def test_a_large_request_reaches_the_consumer_in_chunks_holding_every_item(make_http):
    http = await make_http(max_body=4 << 20)
    protobuf = build(TRACES, 10_000).SerializeToString()
    reply = await http.post(TRACES.path, protobuf)
    assert reply.status == 200, reply.body
    request = http.consumer.only
    assert request.body == protobuf
    assert len(request.chunks) == 2
    assert request.items == items_of(TRACES, request.chunks) == 10_000


async def test_attribute_lists_are_cut_to_max_list(make_http):
    http = await make_http(max_list=1)
    request = build(TRACES, 2)
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.attributes.add(key="extra").value.int_value = 1
    assert (await http.post(TRACES.path, request.SerializeToString())).status == 200
    consumed = http.consumer.only
    assert consumed.truncated == 2
    spans = TRACES.decode(consumed.chunks[0]).resource_spans[0].scope_spans[0].spans
    assert [len(s.attributes) for s in spans] == [1, 1]


@pytest.mark.parametrize(
    ("media", "body"), [(PB, b""), (JS, b""), (JS, b"{}"), (PB, build(LOGS, 0).SerializeToString())]
)
async def test_a_request_without_items_is_answered_without_the_consumer(http, media, body):
    reply = await http.post(LOGS.path, body, media)
    assert (reply.status, reply.body) == (200, b"{}" if media == JS else b"")
    assert http.consumer.requests == []


async def test_items_the_splitter_refuses_are_a_partial_success_without_the_consumer(http):
    reply = await http.post(TRACES.path, nested_span(40))
    assert reply.status == 200
    partial = TRACES.response_type.FromString(reply.body).partial_success
    assert (partial.rejected_spans, partial.error_message) == (1, "1 span rejected: nested more than 64 levels")
    assert http.consumer.requests == []
    assert http.counter("otelpg_receiver_refused_spans_total", reason="invalid_data") == 1
    assert http.counter("otelpg_receiver_accepted_spans_total") == 0


# --- what the consumer answers -----------------------------------------------------------------


@pytest.mark.parametrize("media", MEDIA)
async def test_partial_success_from_the_consumer_is_returned_and_counted(http, media):
    http.consumer.result = ConsumeResult(1, "1 span rejected: invalid trace id")
    body, _ = encode(TRACES, 3, media)
    reply = await http.post(TRACES.path, body, media)
    assert (reply.status, reply.content_type) == (200, media)
    if media == JS:
        assert orjson.loads(reply.body) == {
            "partialSuccess": {"rejectedSpans": "1", "errorMessage": "1 span rejected: invalid trace id"}
        }
    else:
        partial = TRACES.response_type.FromString(reply.body).partial_success
        assert (partial.rejected_spans, partial.error_message) == (1, "1 span rejected: invalid trace id")
    assert http.counter("otelpg_receiver_accepted_spans_total") == 2
    assert http.counter("otelpg_receiver_refused_spans_total", reason="invalid_data") == 1


CONSUMER_ERRORS = [
    # error, HTTP status, gRPC code in the body, reason label, Retry-After
    (BackpressureError("queue full", retry_after=1.5), 503, 14, "backpressure", "2"),
    (BackpressureError("queue full", retry_after=0), 503, 14, "backpressure", "0"),
    (DatabaseUnavailableError("database down"), 503, 14, "database_unavailable", "1"),
    (ShuttingDownError("shutting down", retry_after=3), 503, 14, "shutting_down", "3"),
    (DecodeError("invalid chunk"), 400, 3, "decode_error", None),
    (PermanentError("refused for good"), 500, 13, "permanent", None),
    (RuntimeError("boom"), 500, 13, "internal", None),
]


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize(
    ("error", "http_status", "code", "reason", "retry_after"),
    CONSUMER_ERRORS,
    ids=[f"{type(e[0]).__name__}-{e[4]}" for e in CONSUMER_ERRORS],
)
async def test_consumer_errors_map_to_a_status(http, media, error, http_status, code, reason, retry_after):
    http.consumer.error = error
    body, _ = encode(LOGS, 2, media)
    reply = await http.post(LOGS.path, body, media)
    assert reply.status == http_status
    status = reply.status_message(media)
    assert status.code == code
    message = "internal error: RuntimeError" if isinstance(error, RuntimeError) else str(error)
    assert status.message == message
    assert reply.headers.get("Retry-After") == retry_after
    if retry_after is None:
        assert list(status.details) == []
    else:
        info = error_details_pb2.RetryInfo()
        assert len(status.details) == 1 and status.details[0].Unpack(info)
        assert info.retry_delay.ToNanoseconds() == round(error.retry_after * 1e9)
    if media == JS:
        assert orjson.loads(reply.body)["code"] == code
    assert http.counter("otelpg_receiver_refused_requests_total", reason=reason) == 1
    assert http.counter("otelpg_receiver_refused_log_records_total", reason=reason) == 2
    assert http.counter("otelpg_receiver_accepted_log_records_total") == 0


# --- refused before the consumer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("media", "body", "message"),
    [
        (PB, b"\xff\xff\xff\xff", "(ExportTraceServiceRequest)"),
        (JS, b"{not json", "invalid JSON: "),
        (JS, b'{"resourceSpans": 5}', "invalid resourceSpans 5: expected an array"),
    ],
)
async def test_undecodable_bodies_are_400_in_the_request_encoding(http, media, body, message):
    reply = await http.post(TRACES.path, body, media)
    assert reply.status == 400
    status = reply.status_message(media)
    assert status.code == 3
    assert message in status.message
    assert http.consumer.requests == []
    assert http.counter("otelpg_receiver_refused_requests_total", reason="decode_error") == 1


@pytest.mark.parametrize(
    ("coding", "body", "message"),
    [
        ("gzip", b"not gzip at all", "gzip: invalid header"),
        ("gzip", gzip.compress(b"x" * 100)[:-8], "gzip: unexpected EOF"),
        ("deflate", b"not deflate", "deflate: invalid header"),
        ("zstd", b"not zstd!", "zstd: Unknown frame descriptor"),
        ("br", b"x", 'unsupported Content-Encoding "br" (supported: gzip, deflate, zlib, zstd, identity)'),
    ],
)
async def test_bad_content_encoding_is_400(http, coding, body, message):
    reply = await http.post(TRACES.path, body, PB, {"Content-Encoding": coding})
    assert reply.status == 400
    status = reply.status_message(PB)
    assert (status.code, status.message) == (3, message)
    assert http.consumer.requests == []


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [(None, "missing"), ("text/plain", '"text/plain"'), ("application/jsonl", '"application/jsonl"')],
)
async def test_unsupported_content_type_is_415_with_a_protobuf_status(http, content_type, shown):
    reply = await http.post(TRACES.path, build(TRACES, 1).SerializeToString(), content_type)
    assert reply.status == 415
    status = reply.status_message(PB)  # the spec's default error encoding
    assert status.code == 3
    assert status.message == f"unsupported Content-Type {shown}; supported: application/x-protobuf, application/json"
    assert http.consumer.requests == []
    assert http.counter("otelpg_receiver_refused_requests_total", reason="unsupported_media_type") == 1


@pytest.mark.parametrize("media", MEDIA)
async def test_body_over_the_limit_is_413_with_a_content_length(http, media):
    body = b" " * (LIMIT + 1)
    reply = await http.post(TRACES.path, body, media)
    assert reply.status == 413
    status = reply.status_message(media)
    assert (status.code, status.message) == (8, f"request body of {LIMIT + 1} bytes exceeds the limit of {LIMIT}")
    assert http.consumer.requests == []
    assert http.counter("otelpg_receiver_refused_requests_total", reason="too_large") == 1


async def test_body_at_the_limit_is_accepted(http):
    request = build(TRACES, 1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    base = request.ByteSize()
    for n in range(LIMIT - base - 8, LIMIT - base):  # length varints grow by a byte at 3 levels
        span.name = "x" * n
        if request.ByteSize() == LIMIT:
            break
    protobuf = request.SerializeToString()
    assert len(protobuf) == LIMIT
    reply = await http.post(TRACES.path, protobuf)
    assert reply.status == 200, reply.body
    assert http.consumer.only.body == protobuf


async def test_chunked_body_over_the_limit_is_413(http):
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length to check up front
        for _ in range(3):
            yield b"\0" * (LIMIT // 2)

    reply = await http.post(TRACES.path, chunks())
    assert reply.status == 413
    status = reply.status_message()
    assert (status.code, status.message) == (8, f"request body exceeds the limit of {LIMIT} bytes")
    assert http.consumer.requests == []


@pytest.mark.parametrize("coding", ["gzip", "deflate", "zstd"])
async def test_body_inflating_past_the_limit_is_413(http, coding):
    reply = await http.post(TRACES.path, COMPRESSORS[coding](b"\0" * (LIMIT + 1)), PB, {"Content-Encoding": coding})
    assert reply.status == 413
    status = reply.status_message()
    assert (status.code, status.message) == (
        8,
        f"request body exceeds the limit of {LIMIT} bytes (after decompression)",
    )
    assert http.consumer.requests == []


async def test_a_body_that_never_arrives_is_400_after_the_read_timeout(make_http):
    http = await make_http(read_timeout=0.2)
    reader, writer = await asyncio.open_connection(*http.receiver.address)
    try:
        writer.write(
            f"POST {TRACES.path} HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\nContent-Length: 100\r\n\r\n".encode()
            + b"\x0a" * 10
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 400 "), head
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1])
        status = status_pb2.Status.FromString(await reader.readexactly(length))
    finally:
        writer.close()
    assert (status.code, status.message) == (3, "request body not received within 0.2s")
    assert http.consumer.requests == []


async def test_a_request_over_the_memory_budget_is_503_while_another_holds_it(make_http):
    http = await make_http(admission=Admission(LIMIT))
    http.consumer.hold = asyncio.Event()  # the first request keeps its reservation until released
    first = asyncio.create_task(http.post(TRACES.path, build(TRACES, 1).SerializeToString()))
    await asyncio.wait_for(http.consumer.called.wait(), 5)
    reply = await http.post(TRACES.path, b"\0" * (LIMIT - 10))
    http.consumer.hold.set()
    assert reply.status == 503
    assert reply.headers.get("Retry-After") == "1"
    status = reply.status_message()
    message = f"otelpg is handling its maximum of {LIMIT} bytes of requests, retry later"
    assert (status.code, status.message) == (14, message)
    assert (await first).status == 200
    assert len(http.consumer.requests) == 1
    assert http.counter("otelpg_receiver_refused_requests_total", reason="backpressure") == 1


# --- bearer auth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong"}, "invalid bearer token"),
        ({"Authorization": "Basic czNjcmV0"}, "Authorization is not a bearer token"),
        ({"Authorization": "Bearer "}, "Authorization is not a bearer token"),
    ],
)
async def test_requests_without_the_bearer_token_are_401(make_http, headers, message):
    http = await make_http(bearer_token=TOKEN)
    # Authentication comes first: the unsupported Content-Type isn't looked at.
    reply = await http.post(TRACES.path, build(TRACES, 1).SerializeToString(), "text/plain", headers)
    assert reply.status == 401
    status = reply.status_message(PB)
    assert (status.code, status.message) == (16, message)
    assert http.consumer.requests == []
    assert http.counter("otelpg_receiver_refused_requests_total", reason="unauthenticated") == 1


async def test_two_authorization_headers_are_401(make_http):
    http = await make_http(bearer_token=TOKEN)
    async with http.client.post(
        TRACES.path,
        data=b"",
        headers=[("Content-Type", JS), ("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")],
    ) as response:
        reply = await Reply.of(response)
    assert reply.status == 401
    assert reply.status_message(JS).message == "multiple Authorization headers"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_bearer_token_is_accepted(make_http, scheme):
    http = await make_http(bearer_token=TOKEN)
    reply = await http.post(
        TRACES.path, build(TRACES, 1).SerializeToString(), PB, {"Authorization": f"{scheme} {TOKEN}"}
    )
    assert reply.status == 200
    assert http.consumer.only.items == 1


# --- paths and methods -------------------------------------------------------------------------


@pytest.mark.parametrize("media", MEDIA)
@pytest.mark.parametrize("path", ["/", "/v1/trace", "/v1/traces/extra", "/v1/profiles", "/v2/traces"])
async def test_unknown_path_is_404_in_the_request_encoding(http, path, media):
    reply = await http.post(path, b"{}" if media == JS else b"", media)
    assert reply.status == 404
    status = reply.status_message(media)
    assert (status.code, status.message) == (5, f"404 unknown path {path!r}: OTLP/HTTP paths are {PATHS}")
    assert http.consumer.requests == []


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_wrong_method_is_405_with_allow_post(http, method):
    reply = await http.post(TRACES.path, b"{}", JS, method=method)
    assert reply.status == 405
    assert reply.headers.get("Allow") == "POST"
    status = reply.status_message(JS)
    assert (status.code, status.message) == (12, f"405 method not allowed, supported: [POST] ({method} /v1/traces)")
    assert http.consumer.requests == []


async def test_error_without_a_content_type_is_a_protobuf_status(http):
    reply = await http.post("/v1/logs", None, None, method="GET")
    assert reply.status == 405
    assert reply.status_message(PB).code == 12
