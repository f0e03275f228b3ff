"""The real OpenTelemetry SDK exporters send all three signals to `otelpg run`; rows are asserted."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests import sdk

pytestmark = pytest.mark.e2e


def _exporters(otelpg, transport: str, compression: str | None) -> sdk.Exporters:
    if transport == "grpc":
        return sdk.grpc_exporters(otelpg.grpc_target, compression)
    return sdk.http_exporters(otelpg.url("http"), compression)


def _j(v):
    return json.loads(v) if isinstance(v, str) else v


TRANSPORTS = [("http", None), ("http", "gzip"), ("http", "deflate"), ("grpc", None), ("grpc", "gzip")]


@pytest.mark.parametrize(("transport", "compression"), TRANSPORTS)
async def test_spans_are_stored(otelpg, db_dsn, transport, compression):
    sdk.send_spans(_exporters(otelpg, transport, compression).spans)
    conn = await asyncpg.connect(db_dsn)
    try:
        spans = {r["name"]: r for r in await conn.fetch("SELECT * FROM system_events WHERE event_type = 'span'")}
        events = await conn.fetch("SELECT * FROM system_events WHERE event_type = 'span_event' ORDER BY name")
        resources = await conn.fetch("SELECT * FROM otel_resources")
    finally:
        await conn.close()
    assert set(spans) == {"GET /cart", "SELECT carts", "charge"}
    root, child, charge = spans["GET /cart"], spans["SELECT carts"], spans["charge"]
    assert root["source"] == root["service_name"] == "checkout"
    assert root["severity"] == "info" and charge["severity"] == "error"
    assert child["trace_id"] == root["trace_id"] == charge["trace_id"]
    assert child["parent_span_id"] == root["span_id"] and root["parent_span_id"] is None
    assert len(root["span_id"]) == 16
    assert root["duration_ms"] >= 0
    payload = _j(root["payload"])
    assert payload["kind"] == "SPAN_KIND_SERVER"
    assert payload["attributes"] == {"http.route": "/cart", "http.status_code": 200}
    assert _j(charge["payload"])["status"]["code"] == "STATUS_CODE_ERROR"
    assert _j(charge["payload"])["attributes"]["amount"] == 12.5
    links = _j(child["payload"])["links"]
    assert [link["span_id"] for link in links] == [root["span_id"]]
    assert _j(root["metadata"])["scope"]["name"] == "shop.tracer"
    assert [e["name"] for e in events] == ["cache.miss", "exception"]
    exc = next(e for e in events if e["name"] == "exception")
    assert exc["span_id"] == charge["span_id"]
    assert _j(exc["payload"])["attributes"]["exception.type"] == "ValueError"
    assert len(resources) == 1
    assert _j(resources[0]["attributes"])["k8s.pod.name"] == "p1"
    assert root["resource_id"] == resources[0]["resource_id"]


@pytest.mark.parametrize(("transport", "compression"), TRANSPORTS)
async def test_logs_are_stored(otelpg, db_dsn, transport, compression):
    sdk.send_logs(_exporters(otelpg, transport, compression).logs)
    conn = await asyncpg.connect(db_dsn)
    try:
        logs = await conn.fetch("SELECT * FROM system_events WHERE event_type = 'log' ORDER BY timestamp")
    finally:
        await conn.close()
    assert [r["severity"] for r in logs] == [name for _, name in sdk.SEVERITIES]
    for r, (_, name) in zip(logs, sdk.SEVERITIES, strict=True):
        payload = _j(r["payload"])
        assert payload["body"] == f"message at {name}"
        assert payload["attributes"]["order.id"] == 42
        assert r["service_name"] == "checkout"
    error = logs[3]
    assert error["trace_id"] is not None and error["span_id"] is not None
    assert logs[0]["trace_id"] is None


@pytest.mark.parametrize(("transport", "compression"), TRANSPORTS)
async def test_every_metric_instrument_is_stored(otelpg, db_dsn, transport, compression):
    sdk.send_metrics(_exporters(otelpg, transport, compression).metrics)
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = {r["metric_name"]: r for r in await conn.fetch("SELECT * FROM performance_metrics")}
    finally:
        await conn.close()
    assert set(rows) == {
        "orders",
        "queue.depth",
        "request.duration",
        "payload.size",
        "temperature",
        "memory.usage",
        "cpu.time",
        "connections",
    }
    orders = rows["orders"]
    assert (orders["metric_type"], orders["temporality"], orders["is_monotonic"]) == ("sum", "cumulative", True)
    assert orders["value"] == 5 and orders["unit"] == "{order}"
    assert _j(orders["tags"]) == {"region": "eu"}
    assert orders["service_name"] == "checkout"
    assert (rows["queue.depth"]["metric_type"], rows["queue.depth"]["is_monotonic"]) == ("sum", False)
    assert rows["queue.depth"]["value"] == -3
    hist = rows["request.duration"]
    assert hist["metric_type"] == "histogram" and hist["count"] == 1 and hist["sum"] == 0.25
    assert hist["min"] == hist["max"] == 0.25
    assert len(hist["bucket_counts"]) == len(hist["bucket_bounds"]) + 1 and sum(hist["bucket_counts"]) == 1
    exp = rows["payload.size"]
    assert exp["metric_type"] == "exponential_histogram" and exp["count"] == 1 and exp["sum"] == 1500
    assert sum(exp["bucket_counts"]) == 1 and "scale" in _j(exp["details"])
    assert rows["temperature"]["metric_type"] == "gauge" and rows["temperature"]["value"] == 21.5
    assert rows["memory.usage"]["value"] == 7_000_000_000  # beyond 10^9: DOUBLE PRECISION, not DECIMAL(15,6)
    assert rows["cpu.time"]["is_monotonic"] is True and rows["cpu.time"]["value"] == 3.5
    assert rows["connections"]["value"] == 4
