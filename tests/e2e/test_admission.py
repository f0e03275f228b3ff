"""Admission control (queue.max_inflight_bytes) against a real `otelpg run` and PostgreSQL.

The bound is 1 byte, so a request is admitted only while no other is being handled, and every
batch lingers 0.5 s: a request sent while another waits for its commit must be refused at once
with 503 / UNAVAILABLE and a retry delay, over both transports, even with the spool enabled
(the bound protects memory, the spool durability); the held request is still stored, the
refusal is counted, and otelpg keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import grpc
import pytest

from tests.e2e import test_receivers as g
from tests.e2e import test_receivers as h
from tests.otelpg_process import OtelpgProcess

pytestmark = pytest.mark.e2e

CONFIG = (
    "queue:\n  max_inflight_bytes: 1\n"
    "batch:\n  max_delay: 0.5\n  linger: 0.5\n"
    "prometheus:\n  span_metrics_flush_interval: 3600\n"
)


@pytest.fixture(scope="module")
def server(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    proc = h.start_otelpg(tmp_path_factory.mktemp("otelpg-admission"), module_dsn, CONFIG)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


async def test_http_request_beyond_the_bound_is_503_at_once(server, module_db):
    db = module_db
    url = server.url("http", "/v1/logs")
    held, refused = h.uid(), h.uid()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        first = asyncio.create_task(h.post(session, url, h.encode(h.build("logs", held, 1), h.PB)))
        await asyncio.sleep(0.2)  # the first request now lingers in its batch, holding its bytes
        for media in h.MEDIA:
            started = time.monotonic()
            reply = await h.post(session, url, h.encode(h.build("logs", refused, 1), media), media)
            assert time.monotonic() - started < 0.4  # refused at once, not queued behind the first
            status = h.assert_status_reply(reply, 503, h.UNAVAILABLE, media)
            assert "retry later" in status.message
            assert reply.headers.get("Retry-After") == "1"
        h.assert_full_success(await first, "logs", h.PB)
        assert await h.stored(db, "logs", held) == 1
        assert await h.stored(db, "logs", refused) == 0
        metrics = await h.scrape(session, server)
        assert (
            h.metric_value(metrics, "otelpg_receiver_refused_requests_total", transport="http", reason="backpressure")
            >= 2
        )
        assert h.metric_value(metrics, "otelpg_receiver_inflight_capacity_bytes") == 1
        assert h.metric_value(metrics, "otelpg_receiver_inflight_bytes") == 0  # all answered: nothing held
        await h.assert_still_serves(session, server, db)


async def test_grpc_request_beyond_the_bound_is_unavailable_with_retry_info(server, module_db):
    db = module_db
    held, refused = g.uid(), g.uid()
    first = asyncio.create_task(g.export(server.grpc_target, "logs", g.build("logs", held, 1)))
    await asyncio.sleep(0.2)
    error = await g.export_error(server.grpc_target, "logs", g.build("logs", refused, 1))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert g.trailer(error, "google.rpc.retryinfo-bin") is not None  # SDKs retry only with RetryInfo
    assert len(g.rich_status(error).details) == 1
    g.assert_empty_response(await first)
    assert await g.stored(db, "logs", held) == 1
    assert await g.stored(db, "logs", refused) == 0
    await g.assert_grpc_still_serves(server, db)
