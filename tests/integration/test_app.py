"""The app in-process against a real PostgreSQL: its components start in order, report in /health,
carry a request end to end, and stop in reverse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from sidecar.app import App
from sidecar.config import load_config

START_ORDER = [
    "database",
    "admin server",
    "mapping thread",
    "dead letters",
    "spool",
    "agent_states",
    "span metrics flush",
    "batcher",
    "events",
    "spool replay",
    "derived rows",
    "database monitor",
    "partition maintenance",
    "system_config",
    "database utilization",
    "OTLP/HTTP receiver",
    "OTLP/gRPC receiver",
]


def _config(db_dsn: str, tmp_path: Path):
    env = {
        "OTELPG_DATABASE_URL": db_dsn,
        "OTELPG_DATA_DIR": str(tmp_path),
        "OTELPG_HTTP_ENDPOINT": "127.0.0.1:0",
        "OTELPG_GRPC_ENDPOINT": "127.0.0.1:0",
        "OTELPG_ADMIN_ENDPOINT": "127.0.0.1:0",
    }
    return load_config(env=env)


async def test_components_start_in_order_serve_and_stop_in_reverse(db_dsn: str, tmp_path: Path) -> None:
    app = App(_config(db_dsn, tmp_path))
    stopped: list[str] = []
    try:
        await app.start()
        assert [c.name for c in app.components] == START_ORDER
        for component in app.components:
            stop = component.stop

            async def recorded(stop=stop, name=component.name) -> None:
                stopped.append(name)
                await stop()

            component.stop = recorded  # type: ignore[method-assign]

        status, body = app.health.health()
        assert status == 200 and body["status"] == "ok", body
        assert body["spool_bytes"] == 0 and body["dead_letter"]["entries"] == 0  # components' figures
        assert body["migrations"] == "applied"

        http = app.addresses["OTLP/HTTP receiver"]
        admin = app.addresses["admin server"]
        record = {"body": {"stringValue": "in process"}}
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "app-test"}}]}
        request = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [record]}]}]}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://{http[0]}:{http[1]}/v1/logs", json=request) as response:
                assert response.status == 200, await response.text()
            async with session.get(f"http://{admin[0]}:{admin[1]}/api/health/ready") as response:
                assert response.status == 200
    finally:
        await app.stop()
    assert stopped == list(reversed(START_ORDER))
    assert app.database.pool._closed  # the database went last

    conn = await asyncpg.connect(db_dsn)
    try:
        logs = await conn.fetch("SELECT payload FROM system_events WHERE event_type = 'log'")
        own = await conn.fetch("SELECT event_type FROM system_events WHERE source = 'otelpg' ORDER BY timestamp")
    finally:
        await conn.close()
    assert [orjson.loads(r["payload"])["body"] for r in logs] == ["in process"]
    assert [r["event_type"] for r in own] == ["started", "stopped"]


async def test_a_component_that_fails_to_stop_does_not_keep_the_others_running(db_dsn: str, tmp_path: Path) -> None:
    app = App(_config(db_dsn, tmp_path))
    await app.start()
    batcher = next(c for c in app.components if c.name == "batcher")

    async def broken() -> None:
        raise RuntimeError("boom")

    batcher.stop = broken  # type: ignore[method-assign]
    await asyncio.wait_for(app.stop(), 30)
    assert app.database.pool._closed


def test_the_native_encoder_follows_the_user_analytics_configuration(tmp_path: Path) -> None:
    """What the encoder does with spans and records naming a user agrees with the batch hook: their
    user_analytics rows (on, ids plain), none (off), or the Python path (ids hashed); and it keeps
    as many recent span errors per resource as agent_states' error log holds."""
    cases = {
        "user_analytics:\n  enabled: true\n": 1,
        "user_analytics:\n  enabled: false\n": 0,
        "user_analytics:\n  hash_user_ids: true\n": 2,
    }
    for yaml_text, expected in cases.items():
        path = tmp_path / "otelpg.yaml"
        path.write_text(yaml_text + "agent_states:\n  error_log_size: 7\n")
        app = App(load_config(str(path), env={"OTELPG_DATA_DIR": str(tmp_path)}))
        for mapper in (app.mapper, app.loop_mapper):
            assert (mapper.user_rows, mapper.recent_errors) == (expected, 7)
