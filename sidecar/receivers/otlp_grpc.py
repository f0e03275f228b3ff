"""OTLP/gRPC receiver (grpc.aio): the three Export services, in the same loop and pipeline as HTTP.

Each Export method is served as a client-stream handler (the wire is the same as a unary call),
so the call is authenticated and admitted before its message is read: grpc-core then holds only
its flow-control window of a request it hasn't been asked to read (BDP probing off: it would
grow that window to megabytes per call), and reading one reserves `max_recv_msg_size` of the
memory budget until its real size is known. Messages arrive as raw bytes and are split, not
decoded, here (intake.py); gzip and deflate are decompressed by grpc-core before the size
limit is applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from sidecar.pipeline.admission import UNLIMITED, Admission
from sidecar.pipeline.component import HEALTHY, Health
from sidecar.pipeline.consumer import Consumer, ConsumeResult
from sidecar.pipeline.errors import DecodeError, PayloadTooLargeError
from sidecar.pipeline.signals import SIGNALS, Signal
from sidecar.pipeline.telemetry import Telemetry
from sidecar.receivers.auth import BearerAuth
from sidecar.receivers.config import TlsConfig
from sidecar.receivers.encoding import PROTOBUF
from sidecar.receivers.intake import export_request
from sidecar.receivers.status import Status, status_for

log = logging.getLogger("otelpg.grpc")

TRANSPORT = "grpc"


def _trailers(status: Status) -> tuple[tuple[str, bytes], ...]:
    """Rich status in grpc-status-details-bin (Go, Collector) and RetryInfo alone in
    google.rpc.retryinfo-bin, the only place the Python exporter reads a retry delay from."""
    rich = status_pb2.Status(code=status.grpc, message=status.message)
    if status.retry_after is None:
        return (("grpc-status-details-bin", rich.SerializeToString()),)
    info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=int(status.retry_after), nanos=int((status.retry_after % 1) * 1e9))
    )
    rich.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", rich.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class GrpcReceiver:
    def __init__(
        self,
        consumer: Consumer,
        telemetry: Telemetry,
        *,
        max_message_size: int,
        read_timeout: float = 30.0,
        admission: Admission = UNLIMITED,
        bearer_token: str | None = None,
        max_list: int | None = None,
        tls: TlsConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        grace: float = 20.0,
    ) -> None:
        self._consumer = consumer
        self._admission = admission
        self._max_list = max_list  # longest list kept (the mapping's limits.max_attributes)
        self._telemetry = telemetry
        self._max = max_message_size
        self._read_timeout = read_timeout
        self._auth = BearerAuth(bearer_token) if bearer_token else None
        self._tls = tls
        self._server: grpc.aio.Server | None = None
        self._grace = grace
        self.address = (host, port)  # the bound port once started (port 0: any free one)

    name = "OTLP/gRPC receiver"

    async def start(self) -> None:
        host, port = self.address
        self.address = (host, await self._serve(host, port))
        log.info("%s listening on %s:%d", TRANSPORT, host, self.address[1])

    def health(self) -> Health:
        return HEALTHY

    async def _serve(self, host: str, port: int) -> int:
        """Bind and serve; return the bound port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
                # Without BDP probing a call's unread data stays within the initial window (64 KiB):
                # with it, 40 calls waiting to be admitted held 420 MiB here instead of 116.
                ("grpc.http2.bdp_probe", 0),
            ]
        )
        server.add_generic_rpc_handlers([self._service(s) for s in SIGNALS])
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self._tls is not None and self._tls.cert_file:
            bound = server.add_secure_port(address, self._credentials())
        else:
            bound = server.add_insecure_port(address)
        await server.start()
        self._server = server
        return bound

    def _credentials(self) -> grpc.ServerCredentials:
        assert self._tls is not None and self._tls.cert_file and self._tls.key_file
        with open(self._tls.key_file, "rb") as f:
            key = f.read()
        with open(self._tls.cert_file, "rb") as f:
            cert = f.read()
        ca = None
        if self._tls.client_ca_file:
            with open(self._tls.client_ca_file, "rb") as f:
                ca = f.read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def _service(self, signal: Signal) -> grpc.GenericRpcHandler:
        async def export(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
            return await self._export(signal, context)

        # No (de)serializers: raw bytes. A client-stream handler: we decide when the message is read.
        handler = grpc.stream_unary_rpc_method_handler(export)
        return grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": handler})

    async def _export(self, signal: Signal, context: grpc.aio.ServicerContext) -> bytes:
        seen = [0]  # the request's items, once known
        try:
            result = await self._handle(signal, context, seen)
        except Exception as e:
            status = status_for(e)
        else:
            items = seen[0]
            self._telemetry.accepted[signal.item].labels(TRANSPORT).inc(items - result.rejected)
            if result.rejected:
                self._telemetry.refused[signal.item].labels(TRANSPORT, "invalid_data").inc(result.rejected)
            return signal.response(result.rejected, result.message).SerializeToString()
        # Aborted outside the `except` block: the error, and with it the frames of its traceback
        # (a request's body and chunks), is freed now, not whenever the cyclic GC would collect
        # the cycle that abort's exception would make with it (hundreds of MiB under load).
        self._telemetry.refused_requests.labels(TRANSPORT, status.reason).inc()
        if seen[0]:
            self._telemetry.refused[signal.item].labels(TRANSPORT, status.reason).inc(seen[0])
        context.set_trailing_metadata(_trailers(status))
        await context.abort(_CODES[status.grpc], status.message)
        raise AssertionError("unreachable")  # abort raises

    async def _handle(self, signal: Signal, context: grpc.aio.ServicerContext, seen: list[int]) -> ConsumeResult:
        """What became of the request's items (counted in `seen[0]`); a refusal is raised."""
        if self._auth is not None:
            self._auth.check([v for k, v in context.invocation_metadata() or () if k == "authorization"])
        with self._admission.reserve(self._max) as reservation:  # the largest message it may read
            body = await self._read(context)
            reservation.resize(len(body))
            export = await export_request(
                signal, body, PROTOBUF, reservation, max_body=self._max, max_list=self._max_list
            )
            del body
            seen[0] = export.items
            if not export.chunks:  # nothing to store: empty, or every item refused by the limits
                return ConsumeResult(export.rejected, export.reason)
            return await self._consumer.consume(export)

    async def _read(self, context: grpc.aio.ServicerContext) -> bytes:
        """The call's one message, within the read timeout."""
        try:
            async with asyncio.timeout(self._read_timeout):  # (wait_for would read in a task of its own)
                message = await context.read()
        except TimeoutError:
            raise DecodeError(f"request message not received within {self._read_timeout:g}s") from None
        except grpc.aio.AioRpcError as e:  # e.g. larger than grpc.max_recv_msg_size
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise PayloadTooLargeError(e.details() or "message too large") from None
            raise DecodeError(e.details() or str(e.code())) from None
        if message is grpc.aio.EOF:
            return b""  # a call without a message is an empty request
        return message

    async def stop(self) -> None:
        """Stop taking calls; those under way are answered (within the grace period)."""
        if self._server is not None:
            await self._server.stop(self._grace)
            self._server = None


# grpc.StatusCode by numeric value.
_CODES = {code.value[0]: code for code in grpc.StatusCode}
