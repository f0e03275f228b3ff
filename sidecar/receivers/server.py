"""An aiohttp application served on host:port, as a component: the base of the OTLP/HTTP receiver
and the admin server. Stopping closes the listening socket first, then waits up to
`shutdown_timeout` for the requests under way to be answered."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiohttp import web

from sidecar.pipeline.component import HEALTHY, Health

log = logging.getLogger("otelpg")


class HttpServer:
    name = "HTTP server"  # the component's name; `label` names it in the 'listening on' log line

    def __init__(
        self, label: str, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None, **options: Any
    ) -> None:
        self._label = label
        self._app = app
        self._host, self._port = host, port
        self._tls = tls
        self._options = options
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] = (host, port)

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False, **self._options)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._tls, reuse_address=True)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0][1] if runner.addresses else self._port
        self.address = (self._host, bound)
        log.info("%s listening on %s:%d", self._label, self._host, bound)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def health(self) -> Health:
        return HEALTHY
