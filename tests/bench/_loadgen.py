"""The load generator: one process per client, sending pre-encoded OTLP requests.

Each client process builds its pool of request bodies before the clock starts, waits for the
common start time, then sends over one keep-alive HTTP connection per concurrent sender
(aiohttp) or one HTTP/2 channel (grpc.aio, raw bytes: no protobuf work in the client), either
closed-loop (`concurrency` senders, each sending its next request when the previous one is
acknowledged) or open-loop (`rate` requests/s on a fixed schedule; latency is measured from
the scheduled send time, so a stalled server can't hide its queueing). It returns one record
per request: completion time, latency, items, success, status.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from tests.bench._otlp_gen import GRPC_METHODS, HTTP_PATHS, Template

OK_HTTP = 200
OK_GRPC = 0


@dataclass
class ClientSpec:
    transport: str  # http | grpc
    target: str  # http://host:port | host:port
    signal: str
    templates: list[Template]
    client: int  # index of this client process
    clients: int  # number of client processes
    id_base: int  # request k = id_base + seq * clients + client: distinct ids across clients and phases
    concurrency: int  # closed loop: concurrent senders; open loop: bound on requests in flight
    rate: float | None = None  # open loop: requests/s from this process; None: closed loop
    requests: int | None = None  # stop after this many requests from this process...
    pool: int = 256  # bodies encoded before the start (later ones are made on the fly)
    timeout: float = 10.0  # seconds a request may take (the OTel SDK exporters' default is 10 s)


@dataclass
class ClientResult:
    done: array = field(default_factory=lambda: array("d"))  # completion time (time.monotonic)
    latency: array = field(default_factory=lambda: array("d"))  # seconds
    items: array = field(default_factory=lambda: array("l"))
    ok: array = field(default_factory=lambda: array("b"))
    status: array = field(default_factory=lambda: array("l"))  # HTTP status or gRPC code, -1 transport error
    skipped: int = 0  # open loop: sends not made because `concurrency` requests were in flight
    made_on_the_fly: int = 0
    first_send: float = 0.0


class _Bodies:
    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec
        self.seq = 0
        self.pool = [self._make(i) for i in range(spec.pool)]
        self.on_the_fly = 0

    def _make(self, seq: int) -> tuple[bytes, int]:
        s = self.spec
        template = s.templates[seq % len(s.templates)]
        k = s.id_base + seq * s.clients + s.client
        return template.make(k, seq), template.items

    def next(self) -> tuple[bytes, int]:
        seq = self.seq
        self.seq += 1
        if seq < len(self.pool):
            body = self.pool[seq]
            self.pool[seq] = None  # type: ignore[call-overload]  # sent once: free it
            return body
        self.on_the_fly += 1
        return self._make(seq)


def client_main(spec: ClientSpec, conn: Connection) -> None:
    """Process entry point: build bodies, report ready, wait for (start, stop), run, send results."""
    bodies = _Bodies(spec)
    conn.send("ready")
    start, stop = conn.recv()
    result = asyncio.run(_run(spec, bodies, start, stop))
    result.made_on_the_fly = bodies.on_the_fly
    conn.send(result)
    conn.close()


async def _run(spec: ClientSpec, bodies: _Bodies, start: float, stop: float | None) -> ClientResult:
    if spec.transport == "http":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=spec.concurrency, limit_per_host=spec.concurrency)
        session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=spec.timeout),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )  # fmt: skip
        url = spec.target + HTTP_PATHS[spec.signal]
        headers = {"Content-Type": "application/x-protobuf"}

        async def send(body: bytes) -> tuple[bool, int]:
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status == OK_HTTP, resp.status
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False, -1

        async def close() -> None:
            await session.close()
    else:
        import grpc

        channel = grpc.aio.insecure_channel(spec.target, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ])  # fmt: skip
        call = channel.unary_unary(GRPC_METHODS[spec.signal])  # no serializers: bytes in, bytes out

        async def send(body: bytes) -> tuple[bool, int]:
            try:
                await call(body, timeout=spec.timeout)
                return True, OK_GRPC
            except grpc.aio.AioRpcError as e:
                return False, e.code().value[0]

        async def close() -> None:
            await channel.close()

    result = ClientResult()
    now = time.monotonic
    delay = start - now()
    if delay > 0:
        await asyncio.sleep(delay)
    result.first_send = now()
    try:
        if spec.rate:
            await _open_loop(spec, bodies, send, result, stop)
        else:
            await _closed_loop(spec, bodies, send, result, stop)
    finally:
        await close()
    return result


def _record(result: ClientResult, t_done: float, latency: float, items: int, ok: bool, status: int) -> None:
    result.done.append(t_done)
    result.latency.append(latency)
    result.items.append(items)
    result.ok.append(ok)
    result.status.append(status)


async def _closed_loop(spec: ClientSpec, bodies: _Bodies, send, result: ClientResult, stop: float | None) -> None:
    now = time.monotonic
    remaining = [spec.requests if spec.requests is not None else -1]

    async def sender() -> None:
        while True:
            if stop is not None and now() >= stop:
                return
            if remaining[0] == 0:
                return
            remaining[0] -= 1
            body, items = bodies.next()
            t0 = now()
            ok, status = await send(body)
            t1 = now()
            _record(result, t1, t1 - t0, items, ok, status)
            if not ok:
                await asyncio.sleep(0.02)  # refused (backpressure): don't spin

    await asyncio.gather(*(sender() for _ in range(spec.concurrency)))


async def _open_loop(spec: ClientSpec, bodies: _Bodies, send, result: ClientResult, stop: float | None) -> None:
    now = time.monotonic
    interval = 1.0 / spec.rate  # type: ignore[operator]
    t_start = now()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(body: bytes, items: int, scheduled: float) -> None:
        ok, status = await send(body)
        t1 = now()
        _record(result, t1, t1 - scheduled, items, ok, status)

    i = 0
    while True:
        scheduled = t_start + i * interval
        if stop is not None and scheduled >= stop:
            break
        if spec.requests is not None and i >= spec.requests:
            break
        i += 1
        delay = scheduled - now()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= spec.concurrency:
            result.skipped += 1
            continue
        body, items = bodies.next()
        task = asyncio.create_task(one(body, items, scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)
