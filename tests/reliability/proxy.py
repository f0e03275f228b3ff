"""ChaosProxy: a TCP proxy in front of PostgreSQL that cuts the database off at once.

otelpg connects to 127.0.0.1:<port> (`dsn`); each connection is forwarded to the server's Unix
socket (the embedded server's DSN names its directory in `?host=`) or host:port. `cut()` closes
every connection and stops listening, so new connections are refused: an outage that starts and
ends instantly, PostgreSQL itself untouched. `cut("blackhole")` closes every connection too but
then accepts new ones and never answers them (a network partition: clients wait for their
timeouts). `restore()` forwards again, on the same port.

The proxy runs its own event loop in a thread, so a load generator that keeps the caller's loop
busy does not slow the database down.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

Mode = Literal["refuse", "blackhole"]


def upstream_of(dsn: str) -> tuple[str, int] | str:
    """Where a libpq-style DSN points: (host, port), or the path of a Unix socket."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or (unquote(parts.hostname) if parts.hostname else "") or "/tmp"
    port = int(query.get("port") or parts.port or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


class _Half(asyncio.Protocol):
    """One side of a proxied connection: what it receives is written to the other side."""

    def __init__(self, proxy: ChaosProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.close()  # the PostgreSQL protocol never half-closes
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:  # the other side reads no faster than this one writes
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def close(self) -> None:
        for half in (self, self.peer):
            if half is not None:
                if half.transport is not None and not half.transport.is_closing():
                    half.transport.abort()
                self.proxy._halves.discard(half)


class _Client(_Half):
    """The side otelpg connected to: opens the upstream connection, or not (blackhole)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.proxy._halves.add(self)
        self.proxy.connections += 1
        assert self.transport is not None
        self.transport.pause_reading()  # until the upstream side is there
        if self.proxy.mode is None:
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = _Half(self.proxy)
        try:
            if isinstance(self.proxy.upstream, str):
                await loop.create_unix_connection(lambda: upstream, self.proxy.upstream)
            else:
                await loop.create_connection(lambda: upstream, *self.proxy.upstream)
        except OSError:
            self.close()
            return
        if self.transport is None or self.transport.is_closing() or self.proxy.mode is not None:
            upstream.close()
            self.close()
            return
        self.peer, upstream.peer = upstream, self
        self.proxy._halves.add(upstream)
        self.transport.resume_reading()


class ChaosProxy:
    def __init__(self, upstream_dsn: str) -> None:
        self.upstream_dsn = upstream_dsn
        self.upstream = upstream_of(upstream_dsn)
        self.port = 0
        self.mode: Mode | None = None  # None: forwarding
        self.connections = 0  # accepted in total
        self.cuts = 0
        self._halves: set[_Half] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)

    @property
    def dsn(self) -> str:
        """The upstream DSN, pointed at the proxy (user, password, database and options kept)."""
        parts = urlsplit(self.upstream_dsn)
        user = parts.netloc.rpartition("@")[0]
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))

    async def start(self) -> ChaosProxy:
        self._thread.start()
        await self._call(self._listen())
        return self

    async def cut(self, mode: Mode = "refuse") -> None:
        """Close every connection; refuse new ones, or (blackhole) accept them and never answer."""
        await self._call(self._cut(mode))

    async def restore(self) -> None:
        """Forward again, on the same port; blackholed connections are closed."""
        await self._call(self._restore())

    async def close(self) -> None:
        await self._call(self._cut("refuse"))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 5)

    async def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _listen(self) -> None:
        self._server = await self._loop.create_server(lambda: _Client(self), "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def _drop_all(self) -> None:
        for half in list(self._halves):
            half.close()

    async def _cut(self, mode: Mode) -> None:
        self.cuts += self.mode is None
        self.mode = mode
        if mode == "refuse" and self._server is not None:
            self._server.close()
            self._server = None
        elif mode == "blackhole" and self._server is None:
            await self._listen()
        self._drop_all()

    async def _restore(self) -> None:
        self.mode = None
        self._drop_all()
        if self._server is None:
            await self._listen()
