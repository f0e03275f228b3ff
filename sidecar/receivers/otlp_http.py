"""OTLP/HTTP receiver (aiohttp): POST /v1/{traces,metrics,logs}, protobuf or JSON, any of the
OTLP compressions. One handler driven by the signal table; errors translated by `status.py`.
"""

from __future__ import annotations

import asyncio
import hmac
import math

from aiohttp import web

from sidecar.consumer import Consumer
from sidecar.errors import DecodeError, PayloadTooLargeError, UnauthenticatedError, UnsupportedMediaTypeError
from sidecar.receivers.admission import Admission
from sidecar.receivers.compression import decompress
from sidecar.receivers.encoding import PROTOBUF, decode_request, encode_message, media_type, status_body
from sidecar.receivers.signals import SIGNALS, Signal
from sidecar.receivers.status import status_for
from sidecar.telemetry import Telemetry

TRANSPORT = "http"
# Bodies above this are decompressed in a worker thread (zlib and zstd release the GIL).
_THREAD_DECOMPRESS_BYTES = 256 * 1024


class HttpReceiver:
    def __init__(
        self,
        consumer: Consumer,
        telemetry: Telemetry,
        *,
        max_body: int,
        read_timeout: float,
        admission: Admission | None = None,
        bearer_token: str | None = None,
    ) -> None:
        self._consumer = consumer
        self._admission = admission or Admission(1 << 62)
        self._telemetry = telemetry
        self._max_body = max_body
        self._read_timeout = read_timeout
        self._auth = f"Bearer {bearer_token}".encode() if bearer_token else None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body)
        for signal in SIGNALS:
            app.router.add_route("POST", signal.path, self._handler(signal))
            app.router.add_route("*", signal.path, _method_not_allowed)
        app.router.add_route("*", "/{tail:.*}", _not_found)
        return app

    def _handler(self, signal: Signal):
        async def handle(request: web.Request) -> web.Response:
            return await self._handle(signal, request)

        return handle

    async def _handle(self, signal: Signal, request: web.Request) -> web.Response:
        media = _error_media(request)
        items = 0
        try:
            self._authenticate(request)
            media = media_type(request.headers.get("Content-Type"))
            self._admission.check()
            body = await self._read_body(request)
            with self._admission.hold(len(body)):
                message = decode_request(signal, body, media)
                items = signal.count(message)
                if items == 0:
                    return _reply(encode_message(signal.response(), media), media)
                result = await getattr(self._consumer, signal.consume)(
                    message, len(body), body if media == PROTOBUF else None)
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
        accepted = items - result.rejected
        self._telemetry.accepted[signal.item].labels(TRANSPORT).inc(accepted)
        if result.rejected:
            self._telemetry.refused[signal.item].labels(TRANSPORT, "invalid_data").inc(result.rejected)
        return _reply(encode_message(signal.response(result.rejected, result.message), media), media)

    def _authenticate(self, request: web.Request) -> None:
        if self._auth is None:
            return
        # aiohttp decodes header bytes that aren't UTF-8 as surrogates: encode them back the same way,
        # so a garbled header is a 401 like any wrong token, not a UnicodeEncodeError (500).
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._auth):
            raise UnauthenticatedError("missing or invalid bearer token")

    async def _read_body(self, request: web.Request) -> bytes:
        """Read the body within the size limit and read timeout, then decompress it (limit enforced)."""
        length = request.content_length
        if length is not None and length > self._max_body:
            raise PayloadTooLargeError(f"request body of {length} bytes exceeds the limit of {self._max_body}")
        try:
            raw = await asyncio.wait_for(self._read_limited(request), self._read_timeout)
        except TimeoutError:
            raise DecodeError(f"request body not received within {self._read_timeout:g}s") from None
        encoding = request.headers.get("Content-Encoding")
        if encoding and len(raw) > _THREAD_DECOMPRESS_BYTES:
            return await asyncio.to_thread(decompress, raw, encoding, self._max_body)
        return decompress(raw, encoding, self._max_body)

    async def _read_limited(self, request: web.Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(256 * 1024):
            size += len(chunk)
            if size > self._max_body:
                raise PayloadTooLargeError(f"request body exceeds the limit of {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


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
