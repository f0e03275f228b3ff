"""OTLP/gRPC receiver (grpc.aio): the three Export services, in the same loop and pipeline as HTTP.

Messages arrive as raw bytes and are decoded here, so undecodable data gets INVALID_ARGUMENT
from our status table rather than grpc's generic error. gzip and deflate are decompressed by
grpc-core before the size limit is applied.
"""

from __future__ import annotations

import hmac
import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from sidecar.config import TlsConfig
from sidecar.consumer import Consumer
from sidecar.errors import UnauthenticatedError
from sidecar.receivers.admission import Admission
from sidecar.receivers.encoding import PROTOBUF, decode_request
from sidecar.receivers.signals import SIGNALS, Signal
from sidecar.receivers.status import Status, status_for
from sidecar.telemetry import Telemetry

log = logging.getLogger("otelpg.grpc")

TRANSPORT = "grpc"


def _trailers(status: Status) -> tuple[tuple[str, bytes], ...]:
    """Rich status in grpc-status-details-bin (Go, Collector) and RetryInfo alone in
    google.rpc.retryinfo-bin, the only place the Python exporter reads a retry delay from."""
    rich = status_pb2.Status(code=status.grpc, message=status.message)
    if status.retry_after is None:
        return (("grpc-status-details-bin", rich.SerializeToString()),)
    info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(
            seconds=int(status.retry_after), nanos=int((status.retry_after % 1) * 1e9)
        )
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
        admission: Admission | None = None,
        bearer_token: str | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        self._consumer = consumer
        self._admission = admission or Admission(1 << 62)
        self._telemetry = telemetry
        self._max = max_message_size
        self._auth = f"Bearer {bearer_token}" if bearer_token else None
        self._tls = tls
        self._server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and serve; return the bound port (useful with port 0)."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
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
        async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._export(signal, body, context)

        handler = grpc.unary_unary_rpc_method_handler(export)  # no (de)serializers: raw bytes
        return grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": handler})

    async def _export(self, signal: Signal, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        items = 0
        try:
            self._authenticate(context)
            with self._admission.hold(len(body)):
                message = decode_request(signal, body, PROTOBUF)
                items = signal.count(message)
                if items == 0:
                    return signal.response().SerializeToString()
                result = await getattr(self._consumer, signal.consume)(message, len(body), body)
        except Exception as e:
            status = status_for(e)
            self._telemetry.refused_requests.labels(TRANSPORT, status.reason).inc()
            if items:
                self._telemetry.refused[signal.item].labels(TRANSPORT, status.reason).inc(items)
            context.set_trailing_metadata(_trailers(status))
            await context.abort(_CODES[status.grpc], status.message)
            raise AssertionError("unreachable") from None  # abort raises
        self._telemetry.accepted[signal.item].labels(TRANSPORT).inc(items - result.rejected)
        if result.rejected:
            self._telemetry.refused[signal.item].labels(TRANSPORT, "invalid_data").inc(result.rejected)
        return signal.response(result.rejected, result.message).SerializeToString()

    def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        if self._auth is None:
            return
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(str(given).encode(), self._auth.encode()):
            raise UnauthenticatedError("missing or invalid bearer token")

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


# grpc.StatusCode by numeric value.
_CODES = {code.value[0]: code for code in grpc.StatusCode}
