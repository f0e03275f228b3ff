"""The admin server: /metrics, /health and /api/health/ready (aiohttp)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry

from exporters.prometheus.exposition import render
from sidecar.health import HealthState
from sidecar.receivers.server import HttpServer


def make_admin_app(registry: CollectorRegistry, health: HealthState) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        # Rendering a large exposition takes a while: do it off the event loop so ingest never stalls.
        body, headers = await asyncio.to_thread(
            render, registry, request.headers.get("Accept"), request.headers.get("Accept-Encoding")
        )
        return web.Response(body=body, headers=headers)

    async def health_handler(request: web.Request) -> web.Response:
        status, body = health.health()
        return web.json_response(body, status=status)

    async def ready_handler(request: web.Request) -> web.Response:
        status, body = health.ready()
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health_handler)
    app.router.add_get("/api/health/ready", ready_handler)
    return app


class AdminServer(HttpServer):
    name = "admin server"

    def __init__(self, registry: CollectorRegistry, health: HealthState, host: str, port: int) -> None:
        super().__init__("admin", make_admin_app(registry, health), host, port, None)
