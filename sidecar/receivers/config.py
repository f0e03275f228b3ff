"""The receivers' settings: the OTLP/HTTP and OTLP/gRPC servers, bearer auth and TLS."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sidecar.pipeline.errors import ConfigError
from sidecar.pipeline.settings import setting

_ENDPOINT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s\[\]]*):(?P<port>\d{1,5})$")


def parse_endpoint(value: str, key: str = "endpoint") -> tuple[str, int]:
    """'host:port' → (host, port); port 0 means any free port. '[::1]:4317' for IPv6."""
    m = _ENDPOINT.match(value or "")
    if not m or int(m["port"]) > 65535:
        raise ConfigError(key, f"expected host:port, got {value!r}")
    host = m["host"].strip("[]") or "0.0.0.0"
    return host, int(m["port"])


@dataclass(frozen=True)
class HttpReceiverConfig:
    enabled: bool = setting(True, "Serve OTLP/HTTP.")
    endpoint: str = setting("127.0.0.1:4318", "OTLP/HTTP listen host:port.", env=("OTELPG_HTTP_ENDPOINT",))
    max_request_body_size: int = setting(
        20 * 1024 * 1024, "Largest request body in bytes, after decompression (413 beyond).", positive=True
    )
    read_timeout: float = setting(30.0, "Seconds a client may take to send its request body.")
    idle_timeout: float = setting(
        60.0, "Seconds before closing a connection that sends nothing (or a request that never completes)."
    )

    def validate(self) -> None:
        parse_endpoint(self.endpoint, "endpoint")


@dataclass(frozen=True)
class GrpcReceiverConfig:
    enabled: bool = setting(True, "Serve OTLP/gRPC.")
    endpoint: str = setting("127.0.0.1:4317", "OTLP/gRPC listen host:port.", env=("OTELPG_GRPC_ENDPOINT",))
    max_recv_msg_size: int = setting(
        4 * 1024 * 1024,
        "Largest message in bytes, after decompression (RESOURCE_EXHAUSTED beyond); the Collector's default. "
        "Reading a message reserves this much of queue.max_inflight_bytes until its real size is known.",
        positive=True,
    )
    read_timeout: float = setting(30.0, "Seconds a client may take to send its request message.")

    def validate(self) -> None:
        parse_endpoint(self.endpoint, "endpoint")


@dataclass(frozen=True)
class AuthConfig:
    bearer_token: str | None = setting(
        None,
        "When set, both receivers require 'Authorization: Bearer <token>'.",
        env=("OTELPG_BEARER_TOKEN",),
        secret=True,
    )


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str | None = setting(None, "PEM certificate: serve both receivers over TLS.")
    key_file: str | None = setting(None, "PEM private key for cert_file.")
    client_ca_file: str | None = setting(None, "PEM CA bundle: require client certificates (mTLS).")

    def validate(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("key_file", "tls.cert_file and tls.key_file must be set together")
        for key in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                raise ConfigError(key, f"no such file: {path}")
