"""OTLP/HTTP receiver (aiohttp): POST /v1/{traces,metrics,logs}, protobuf or JSON, any of the
OTLP compressions. One handler driven by the signal table; errors translated by `status.py`.

Every step that holds memory is reserved first (admission.py): the body's declared length before
it is read (or each chunk of a chunked body as it arrives), its inflated form while it inflates,
its decoding (intake.py). Authentication and those checks come before the body is read.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from sidecar.pipeline.admission import UNLIMITED, Admission, Reservation
from sidecar.pipeline.consumer import Consumer, ConsumeResult
from sidecar.pipeline.errors import DecodeError, IncompleteRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from sidecar.pipeline.signals import SIGNALS, Signal
from sidecar.pipeline.telemetry import Telemetry
from sidecar.receivers.auth import BearerAuth
from sidecar.receivers.compression import decompress
from sidecar.receivers.encoding import PROTOBUF, encode_message, media_type, status_body
from sidecar.receivers.intake import export_request
from sidecar.receivers.server import HttpServer
from sidecar.receivers.status import status_for

TRANSPORT = "http"
# Compressed bodies are inflated in a worker thread (zlib and zstd release the GIL), except those
# so small that even a bomb can't hold the loop: gzip and deflate inflate at most ~1032:1 (1 KiB
# to 1 MiB, about 1 ms); zstd has no such bound. (69 KB of gzip inflating to 20 MiB took 30-50 ms
# of the loop each, and 13 clients sending them made /health answer in 0.4-1 s.)
_LOOP_INFLATE_MAX_BYTES = 1024
_READ_CHUNK = 256 * 1024


class HttpReceiver(HttpServer):
    def __init__(
        self,
        consumer: Consumer,
        telemetry: Telemetry,
        *,
        max_body: int,
        read_timeout: float,
        admission: Admission = UNLIMITED,
        bearer_token: str | None = None,
        max_list: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        idle_timeout: float = 60.0,
        grace: float = 20.0,
    ) -> None:
        self._consumer = consumer
        self._admission = admission
        self._max_list = max_list  # longest list kept (the mapping's limits.max_attributes)
        self._telemetry = telemetry
        self._max_body = max_body
        self._read_timeout = read_timeout
        self._auth = BearerAuth(bearer_token) if bearer_token else None
        # auto_decompress off: aiohttp would inflate bodies without our size limit (gzip bombs).
        # keepalive_timeout also closes connections whose request never completes (slow loris).
        super().__init__(
            TRANSPORT,
            self.app(),
            host,
            port,
            tls,
            auto_decompress=False,
            keepalive_timeout=idle_timeout,
            shutdown_timeout=grace,
        )

    name = "OTLP/HTTP receiver"  # stop(): requests under way are answered within the grace period

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body)
        for signal in SIGNALS:
            app.router.add_route("POST", signal.path, self._handler(signal))
            app.router.add_route("*", signal.path, _method_not_allowed)
        app.router.add_route("*", "/{tail:.*}", _not_found)
        return app

    def _handler(self, signal: Signal) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self._handle(signal, request)

        return handle

    async def _handle(self, signal: Signal, request: web.Request) -> web.Response:
        media = _error_media(request)
        items = 0
        try:
            if self._auth is not None:
                self._auth.check(request.headers.getall("Authorization", []))
            media = media_type(request.headers.get("Content-Type"))
            length = request.content_length
            if length is not None and length > self._max_body:
                raise PayloadTooLargeError(f"request body of {length} bytes exceeds the limit of {self._max_body}")
            with self._admission.reserve(length or 0) as reservation:
                body = await self._read_body(request, reservation)
                export = await export_request(
                    signal, body, media, reservation, max_body=self._max_body, max_list=self._max_list
                )
                del body
                items = export.items
                if not export.chunks:  # nothing to store: empty, or every item refused by the limits
                    result = ConsumeResult(export.rejected, export.reason)
                else:
                    result = await self._consumer.consume(export)
        except Exception as e:
            status = status_for(e)
            self._telemetry.refused_requests.labels(TRANSPORT, status.reason).inc()
            if items:
                self._telemetry.refused[signal.item].labels(TRANSPORT, status.reason).inc(items)
            headers = {}
            if status.retry_after is not None:
                headers["Retry-After"] = str(max(0, math.ceil(status.retry_after)))
            body = status_body(status.grpc, status.message, media, status.retry_after)
            return _reply(body, media, status.http, headers)
        self._telemetry.accepted[signal.item].labels(TRANSPORT).inc(items - result.rejected)
        if result.rejected:
            self._telemetry.refused[signal.item].labels(TRANSPORT, "invalid_data").inc(result.rejected)
        return _reply(encode_message(signal.response(result.rejected, result.message), media), media)

    async def _read_body(self, request: web.Request, reservation: Reservation) -> bytes:
        """Read the body within the size limit and read timeout, then decompress it (limit enforced);
        the reservation grows with what is read and inflated."""
        try:
            async with asyncio.timeout(self._read_timeout):  # (wait_for would run the read in a task of its own)
                raw = await self._read_limited(request, reservation)
        except TimeoutError:
            raise DecodeError(f"request body not received within {self._read_timeout:g}s") from None
        encoding = request.headers.get("Content-Encoding")
        if encoding and (len(raw) > _LOOP_INFLATE_MAX_BYTES or "zstd" in encoding.lower()):
            body = await asyncio.to_thread(decompress, raw, encoding, self._max_body, reservation.add)
        else:
            body = decompress(raw, encoding, self._max_body, reservation.add)
        if body is not raw:
            reservation.shrink(len(raw))  # the compressed body is dropped now
        return body

    async def _read_limited(self, request: web.Request, reservation: Reservation) -> bytes:
        """The raw body; bytes beyond what the reservation holds (no or a wrong Content-Length) are
        reserved before they are kept."""
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_chunked(_READ_CHUNK):
                size += len(chunk)
                if size > self._max_body:
                    raise PayloadTooLargeError(f"request body exceeds the limit of {self._max_body} bytes")
                if size > reservation.nbytes:
                    reservation.grow(size - reservation.nbytes)
                chunks.append(chunk)
        except ConnectionError:  # the client went away mid-body (aiohttp: "Connection lost")
            raise IncompleteRequestError(f"connection closed after {size} bytes of the request body") from None
        if size < reservation.nbytes:
            reservation.shrink(reservation.nbytes - size)
        if len(chunks) == 1:
            return chunks[0]
        reservation.grow(size)  # the joined copy, while the pieces still exist
        body = b"".join(chunks)
        chunks.clear()
        reservation.shrink(size)
        return body


def _reply(body: bytes, media: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Set Content-Type exactly (no charset), as the OTLP spec and the Collector do.
    response = web.Response(body=body, status=status, headers=headers)
    response.headers["Content-Type"] = media
    return response


def _error_media(request: web.Request) -> str:
    """The encoding of an error body: the request's, if it is protobuf or JSON; otherwise protobuf,
    which the OTLP spec mandates for every 4xx/5xx body (`application/jsonl` is not JSON)."""
    try:
        return media_type(request.headers.get("Content-Type"))
    except UnsupportedMediaTypeError:
        return PROTOBUF


async def _method_not_allowed(request: web.Request) -> web.Response:
    media = _error_media(request)
    body = status_body(12, f"405 method not allowed, supported: [POST] ({request.method} {request.path})", media)
    return _reply(body, media, 405, {"Allow": "POST"})


async def _not_found(request: web.Request) -> web.Response:
    media = _error_media(request)
    paths = ", ".join(s.path for s in SIGNALS)
    body = status_body(5, f"404 unknown path {request.path!r}: OTLP/HTTP paths are {paths}", media)
    return _reply(body, media, 404)
