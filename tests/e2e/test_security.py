"""Bearer-token auth and TLS/mTLS on both receivers, against a real `otelpg run`.

Certificates are made in the test with the `openssl` CLI: a throwaway CA, a server certificate for
127.0.0.1/localhost and a client certificate, all signed by that CA.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2
from multidict import CIMultiDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from tests import sdk
from tests.otelpg_process import OtelpgProcess
from tests.otlp_json import message_to_otlp_json

pytestmark = pytest.mark.e2e

TOKEN = f"tok-{uuid.uuid4().hex}"
PB = "application/x-protobuf"
JS = "application/json"
UNAUTHENTICATED = 16


# --- helpers ----------------------------------------------------------------------------------


def spans(uid: str, n: int = 1) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value={"string_value": "security-e2e"}))
    now = time.time_ns()
    for i in range(n):
        sp = rs.scope_spans.add().spans.add(
            trace_id=uuid.uuid4().bytes,
            span_id=uuid.uuid4().bytes[:8],
            name=f"op-{i}",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1,
        )
        sp.attributes.append(KeyValue(key="test.uid", value={"string_value": uid}))
    return req


def encode(message: Message, media: str) -> bytes:
    return json.dumps(message_to_otlp_json(message)).encode() if media == JS else message.SerializeToString()


async def stored(db: asyncpg.Connection, uid: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM system_events WHERE event_type = 'span' AND payload->'attributes'->>'test.uid' = $1", uid
    )


async def post(
    url: str,
    body: bytes,
    media: str = PB,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(url, data=body, headers={"Content-Type": media, **(headers or {})}, ssl=ssl_context or True) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def grpc_export(
    channel: grpc.aio.Channel, request: Message, metadata: tuple[tuple[str, str], ...] | None = None
) -> Message:
    return await trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, metadata=metadata, timeout=10)


def uid() -> str:
    return uuid.uuid4().hex


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by another CA: must be refused under mTLS
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> Certs:
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.crt",
            "-days",
            "2",
            "-subj",
            f"/CN=otelpg test {ca}",
            cwd=d,
        )
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (
        ("server", "ca", "server.ext"),
        ("client", "ca", "client.ext"),
        ("other-client", "other-ca", "client.ext"),
    ):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.crt",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            ext,
            cwd=d,
        )
    return Certs(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "other-client.crt",
        d / "other-client.key",
    )


def client_context(certs: Certs, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def grpc_credentials(certs: Certs, cert: Path | None = None, key: Path | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def https(proc: OtelpgProcess, path: str = "/v1/traces") -> str:
    return f"https://127.0.0.1:{proc.ports['http']}{path}"


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def db(module_db: asyncpg.Connection) -> asyncpg.Connection:
    return module_db  # this module's tests share one otelpg process and its schema


def start(tmp: Path, dsn: str, config: str = "", env: dict[str, str] | None = None) -> OtelpgProcess:
    (tmp / "otelpg.yaml").write_text("batch:\n  max_delay: 0.02\n" + config)
    proc = OtelpgProcess(tmp, {"OTELPG_DATABASE_URL": dsn, **(env or {})}, args=("--config", str(tmp / "otelpg.yaml")))
    proc.start()
    return proc


@pytest.fixture(scope="module")
def authed(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    """OTELPG_BEARER_TOKEN set; debug logging, so a token leaking into any log line is seen."""
    proc = start(
        tmp_path_factory.mktemp("otelpg-auth"),
        module_dsn,
        env={"OTELPG_BEARER_TOKEN": TOKEN, "OTELPG_LOG_LEVEL": "debug"},
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(module_dsn: str, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    proc = start(
        tmp_path_factory.mktemp("otelpg-tls"),
        module_dsn,
        f"tls:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n",
    )
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


@pytest.fixture(scope="module")
def mtls_server(module_dsn: str, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    proc = start(
        tmp_path_factory.mktemp("otelpg-mtls"),
        module_dsn,
        f"tls:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n  client_ca_file: {certs.ca}\n",
    )
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


# --- bearer token -----------------------------------------------------------------------------


def decode_status(body: bytes, media: str) -> status_pb2.Status:
    if media == JS:
        return json_format.ParseDict(json.loads(body), status_pb2.Status())
    return status_pb2.Status.FromString(body)


@pytest.mark.parametrize("media", [PB, JS])
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        TOKEN,
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer{TOKEN}",
    ],
)
async def test_http_without_the_right_token_is_401_with_a_status(authed, db, media, authorization):
    u = uid()
    headers = {} if authorization is None else {"Authorization": authorization}
    status, content_type, body = await post(authed.url("http", "/v1/traces"), encode(spans(u), media), media, headers)
    assert status == 401, body
    assert content_type == media
    rpc_status = decode_status(body, media)
    assert rpc_status.code == UNAUTHENTICATED and rpc_status.message
    assert TOKEN not in body.decode("utf-8", "replace")
    assert await stored(db, u) == 0


@pytest.mark.parametrize(
    "garbled", [b"Bearer \xff\xfe", "Bearer s\u00e9cret".encode("latin-1"), b"Bearer " + TOKEN.encode() + b"\x80"]
)
async def test_http_authorization_header_that_is_not_utf8_is_401_not_500(authed, db, garbled):
    """Raw bytes on the wire (a client library would refuse to send them)."""
    u = uid()
    body = spans(u).SerializeToString()
    reader, writer = await asyncio.open_connection("127.0.0.1", authed.ports["http"])
    try:
        writer.write(
            b"POST /v1/traces HTTP/1.1\r\nHost: otelpg\r\nContent-Type: application/x-protobuf\r\n"
            b"Authorization: " + garbled + b"\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert b"Content-Type: application/x-protobuf" in head
    assert status_pb2.Status.FromString(payload).code == UNAUTHENTICATED
    assert await stored(db, u) == 0
    assert "unexpected error" not in authed.log


@pytest.mark.parametrize("media", [PB, JS])
async def test_http_with_the_right_token_is_200_and_stored(authed, db, media):
    u = uid()
    status, content_type, body = await post(
        authed.url("http", "/v1/traces"), encode(spans(u, 2), media), media, {"Authorization": f"Bearer {TOKEN}"}
    )
    assert (status, content_type) == (200, media), body
    assert await stored(db, u) == 2


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "BEARER ", "Bearer  ", "bEaReR\t"])
async def test_http_bearer_scheme_is_case_insensitive_and_may_take_more_blanks(authed, db, scheme):
    """RFC 6750 §2.1 / RFC 7235 §2.1: `credentials = auth-scheme 1*SP token`, the scheme case-insensitive."""
    u = uid()
    status, _, body = await post(
        authed.url("http", "/v1/traces"), encode(spans(u), PB), PB, {"Authorization": f"{scheme}{TOKEN}"}
    )
    assert status == 200, body
    assert await stored(db, u) == 1


@pytest.mark.parametrize("order", ["right-first", "wrong-first", "right-twice"])
async def test_several_authorization_headers_are_refused_over_both_transports(authed, db, order):
    """One request, one set of credentials: HTTP used to read the first header and gRPC the last."""
    values = {
        "right-first": [f"Bearer {TOKEN}", "Bearer wrong"],
        "wrong-first": ["Bearer wrong", f"Bearer {TOKEN}"],
        "right-twice": [f"Bearer {TOKEN}"] * 2,
    }[order]
    u = uid()
    headers = CIMultiDict([("Content-Type", PB), *(("Authorization", v) for v in values)])
    async with (
        aiohttp.ClientSession() as session,
        session.post(authed.url("http", "/v1/traces"), data=encode(spans(u), PB), headers=headers) as r,
    ):
        assert r.status == 401
        assert "multiple" in status_pb2.Status.FromString(await r.read()).message
    async with grpc.aio.insecure_channel(authed.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_export(channel, spans(u), tuple(("authorization", v) for v in values))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await stored(db, u) == 0


@pytest.mark.parametrize(
    "metadata",
    [None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),), (("x-api-key", f"Bearer {TOKEN}"),)],
)
async def test_grpc_without_the_right_token_is_unauthenticated(authed, db, metadata):
    u = uid()
    async with grpc.aio.insecure_channel(authed.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_export(channel, spans(u), metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    details = dict(info.value.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert details is not None and status_pb2.Status.FromString(details).code == UNAUTHENTICATED
    assert await stored(db, u) == 0


async def test_grpc_with_the_right_token_is_ok_and_stored(authed, db):
    u = uid()
    async with grpc.aio.insecure_channel(authed.grpc_target) as channel:
        response = await grpc_export(channel, spans(u, 3), (("authorization", f"Bearer {TOKEN}"),))
    assert response.ListFields() == []
    assert await stored(db, u) == 3


async def _service_rows(db: asyncpg.Connection, event_type: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM system_events WHERE service_name = 'checkout' AND event_type = $1", event_type
    )


async def test_sdk_exporters_pass_with_the_token_header_and_fail_without(authed, db):
    base = authed.url("http")
    before = (await _service_rows(db, "span"), await _service_rows(db, "log"))
    sdk.send_spans(sdk.http_exporters(base).spans)  # no header: refused (401 is not retried)
    sdk.send_logs(sdk.grpc_exporters(authed.grpc_target).logs)  # no metadata: UNAUTHENTICATED, not retried
    assert (await _service_rows(db, "span"), await _service_rows(db, "log")) == before
    sdk.send_spans(sdk.http_exporters(base, headers={"Authorization": f"Bearer {TOKEN}"}).spans)
    sdk.send_logs(sdk.grpc_exporters(authed.grpc_target, headers={"authorization": f"Bearer {TOKEN}"}).logs)
    after = (await _service_rows(db, "span"), await _service_rows(db, "log"))
    assert after == (before[0] + 3, before[1] + len(sdk.SEVERITIES))


async def test_the_token_never_appears_in_logs_metrics_or_the_database(authed, db):
    # Refused attempts first, with the token in places a careless log line would echo.
    await post(authed.url("http", "/v1/traces"), b"\xff", PB, {"Authorization": f"Bearer {TOKEN}x"})
    await post(authed.url("http", "/v1/traces"), b"\xff", PB, {"Authorization": f"Bearer {TOKEN}"})
    async with aiohttp.ClientSession() as session, session.get(authed.url("admin", "/metrics")) as r:
        metrics = await r.text()
    assert "otelpg_receiver_refused_requests_total" in metrics
    assert TOKEN not in metrics
    rows = await db.fetch("SELECT payload::text AS p, metadata::text AS m FROM system_events")
    assert rows and not [r for r in rows if TOKEN in r["p"] + r["m"]]
    if await db.fetchval("SELECT to_regclass('system_config') IS NOT NULL"):
        assert TOKEN not in "".join(str(tuple(r)) for r in await db.fetch("SELECT * FROM system_config"))
    assert authed.stop() == 0
    log = authed.log
    assert "otelpg ready" in log and "stopped" in log and "DEBUG" in log  # the whole, verbose log
    assert TOKEN not in log
    assert "Traceback" not in log


# --- TLS --------------------------------------------------------------------------------------


async def test_https_with_the_ca_trusted_is_200_and_stored(tls_server, certs, db):
    u = uid()
    status, content_type, _ = await post(https(tls_server), encode(spans(u), PB), ssl_context=client_context(certs))
    assert (status, content_type) == (200, PB)
    assert await stored(db, u) == 1


async def test_https_is_really_tls_with_our_certificate(tls_server, certs, db):
    u = uid()
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the default trust store doesn't know our CA
        await post(https(tls_server), encode(spans(u), PB), ssl_context=ssl.create_default_context())
    with pytest.raises(aiohttp.ClientError):  # plaintext to the TLS port
        await post(tls_server.url("http", "/v1/traces"), encode(spans(u), PB))
    assert await stored(db, u) == 0


async def test_grpc_over_tls_with_the_ca_trusted_is_ok_and_stored(tls_server, certs, db):
    u = uid()
    async with grpc.aio.secure_channel(tls_server.grpc_target, grpc_credentials(certs)) as channel:
        assert (await grpc_export(channel, spans(u, 2))).ListFields() == []
    async with grpc.aio.insecure_channel(tls_server.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_export(channel, spans(uid()))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await stored(db, u) == 2


async def test_sdk_exporters_over_tls(tls_server, certs, db):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    before = await _service_rows(db, "log")
    credentials = grpc_credentials(certs)
    sdk.send_logs(OTLPLogExporter(endpoint=tls_server.grpc_target, credentials=credentials, timeout=10))
    assert await _service_rows(db, "log") == before + len(sdk.SEVERITIES)


async def test_mtls_refuses_a_client_without_a_certificate_and_accepts_ours(mtls_server, certs, db):
    refused = uid()
    with pytest.raises(aiohttp.ClientError):
        await post(https(mtls_server), encode(spans(refused), PB), ssl_context=client_context(certs))
    with pytest.raises(aiohttp.ClientError):  # a certificate from another CA
        await post(
            https(mtls_server),
            encode(spans(refused), PB),
            ssl_context=client_context(certs, certs.other_client_cert, certs.other_client_key),
        )
    for credentials in (
        grpc_credentials(certs),
        grpc_credentials(certs, certs.other_client_cert, certs.other_client_key),
    ):
        async with grpc.aio.secure_channel(mtls_server.grpc_target, credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await grpc_export(channel, spans(refused))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await stored(db, refused) == 0

    u = uid()
    status, content_type, _ = await post(
        https(mtls_server), encode(spans(u), PB), ssl_context=client_context(certs, certs.client_cert, certs.client_key)
    )
    assert (status, content_type) == (200, PB)
    credentials = grpc_credentials(certs, certs.client_cert, certs.client_key)
    async with grpc.aio.secure_channel(mtls_server.grpc_target, credentials) as channel:
        assert (await grpc_export(channel, spans(u, 2))).ListFields() == []
    assert await stored(db, u) == 3
    # And a logs request through the same mTLS channel type, JSON over HTTPS, for good measure.
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=time.time_ns())
    rec.attributes.append(KeyValue(key="test.uid", value={"string_value": u}))
    status, content_type, _ = await post(
        https(mtls_server, "/v1/logs"),
        encode(req, JS),
        JS,
        ssl_context=client_context(certs, certs.client_cert, certs.client_key),
    )
    assert (status, content_type) == (200, JS)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM system_events WHERE event_type = 'log' AND payload->'attributes'->>'test.uid' = $1", u
        )
        == 1
    )
