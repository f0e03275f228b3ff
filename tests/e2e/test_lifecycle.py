"""agent_states, user_analytics and system_config from telemetry the real OpenTelemetry SDK sends to
`otelpg run`; `otelpg maintain` and `otelpg stats` as a user runs them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tests import sdk
from tests.e2e.test_cli import otelpg_cli
from tests.otelpg_process import OtelpgProcess

pytestmark = pytest.mark.e2e

TOKEN = "tok-e2e-s3cret"
HASH_KEY = "hash-e2e-s3cret"


def with_password(dsn: str, password: str) -> tuple[str, str]:
    """The DSN with a password (the test server trusts local connections, so any works), and the
    password it carries."""
    parts = urlsplit(dsn)
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, existing = userinfo.partition(":")
    if existing:
        return dsn, existing
    netloc = f"{user or 'postgres'}:{password}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), password


def send_user_spans(exporter: object) -> None:
    provider = TracerProvider(resource=sdk.RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.web")
    with tracer.start_as_current_span(
        "GET /cart/{id}",
        attributes={"enduser.id": "alice", "url.path": "/cart/42", "http.route": "/cart/{id}", "session.id": "sess-1"},
    ):
        pass
    with tracer.start_as_current_span("POST /pay", attributes={"user.id": 7, "http.route": "/pay"}) as span:
        span.set_status(Status(StatusCode.ERROR, "card declined"))
    with tracer.start_as_current_span("healthcheck"):
        pass
    provider.shutdown()


def send_user_logs(exporter: object) -> None:
    from opentelemetry.sdk._logs import LoggingHandler

    provider = LoggerProvider(resource=sdk.RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger = logging.getLogger(f"otelpg.test.lifecycle.{id(provider)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.info("added to cart", extra={"user.id": "bob", "event.name": "cart.add", "url.path": "/cart"})
    logger.error("payment service down", extra={"order.id": 9})
    logger.removeHandler(handler)
    provider.shutdown()


async def poll(dsn: str, sql: str, until, within: float = 20.0):
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while True:
            value = await conn.fetch(sql)
            if until(value) or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def start(tmp_path: Path, dsn: str, config: str, env: dict[str, str] | None = None) -> OtelpgProcess:
    cfg = tmp_path / "otelpg.yaml"
    cfg.write_text(config)
    proc = OtelpgProcess(
        tmp_path, {"OTELPG_DATABASE_URL": dsn, "OTELPG_BEARER_TOKEN": TOKEN, **(env or {})}, args=("--config", str(cfg))
    )
    proc.start()
    return proc


FAST_AGENTS = "agent_states:\n  flush_interval: 0.2\n  stale_after: 2\n"


async def test_sdk_telemetry_fills_agent_states_user_analytics_and_system_config(db_dsn, tmp_path):
    dsn, password = with_password(db_dsn, "pw-e2e-s3cret")
    proc = start(tmp_path, dsn, FAST_AGENTS, {"OTELPG_USER_HASH_KEY": HASH_KEY})
    try:
        exporters = sdk.http_exporters(proc.url("http"), headers={"Authorization": f"Bearer {TOKEN}"})
        send_user_spans(exporters.spans)
        send_user_logs(exporters.logs)
        sdk.send_metrics(exporters.metrics)

        # user_analytics: ids as sent (hashing is off by default), action, page, session.
        rows = await poll(db_dsn, "SELECT * FROM user_analytics ORDER BY action", lambda r: len(r) >= 3)
        assert [(r["user_id"], r["action"], r["page"], r["session_id"], r["service_name"]) for r in rows] == [
            ("alice", "GET /cart/{id}", "/cart/42", "sess-1", "checkout"),
            ("7", "POST /pay", "/pay", None, "checkout"),
            ("bob", "cart.add", "/cart", None, "checkout"),
        ]
        meta = orjson.loads(rows[0]["metadata"])
        assert meta["signal"] == "span" and meta["service"] == "checkout" and len(meta["trace_id"]) == 32

        # agent_states: one row for checkout/pod-1, upserted within flush_interval.
        agents = await poll(
            db_dsn,
            "SELECT * FROM agent_states",
            lambda r: r and orjson.loads(r[0]["performance_metrics"]).get("metric_points", 0) > 0,
        )
        assert len(agents) == 1
        agent = agents[0]
        assert agent["agent_key"] == "checkout/pod-1" and agent["instance_id"] == "pod-1"
        assert agent["status"] == "active" and agent["current_task"] == "healthcheck"
        perf = orjson.loads(agent["performance_metrics"])
        assert perf["spans"] == 3 and perf["log_records"] == 2 and perf["errors"] == 2 and perf["metric_points"] >= 8
        errors = orjson.loads(agent["error_log"])
        assert {(e["signal"], e["message"]) for e in errors} == {
            ("span", "card declined"),
            ("log", "payment service down"),
        }
        assert abs(agent["last_active"].timestamp() - time.time()) < 30

        # Silent for longer than stale_after: stale.
        agents = await poll(db_dsn, "SELECT status FROM agent_states", lambda r: r[0]["status"] == "stale")
        assert agents[0]["status"] == "stale"

        # system_config: the effective configuration, no secret in it.
        config = {
            r["key"]: orjson.loads(r["value"])
            for r in await poll(db_dsn, "SELECT key, value::text FROM system_config", bool)
        }
        assert config["agent_states.flush_interval"] == 0.2 and config["user_analytics.enabled"] is True
        assert config["auth.bearer_token"] == "***" and config["user_analytics.hash_key"] == "***"
        assert config["database.url"].startswith("postgresql://") and "***" in config["database.url"]
        dump = json.dumps(config)
        assert password not in dump and TOKEN not in dump and HASH_KEY not in dump
    finally:
        assert proc.stop() == 0

    # Restarted with another configuration: system_config follows, with a config_updated event.
    proc = start(tmp_path, dsn, FAST_AGENTS + "batch:\n  max_rows: 777\n", {"OTELPG_USER_HASH_KEY": HASH_KEY})
    try:
        events = await poll(db_dsn, "SELECT payload::text FROM system_events WHERE event_type = 'config_updated'", bool)
        assert len(events) == 1
        assert orjson.loads(events[0]["payload"])["changes"] == {"batch.max_rows": {"old": 5000, "new": 777}}
        assert password not in events[0]["payload"] and TOKEN not in events[0]["payload"]
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("mode", ["hashed", "off"])
async def test_user_analytics_hashed_or_off(db_dsn, tmp_path, mode):
    config = {"hashed": "user_analytics:\n  hash_user_ids: true\n", "off": "user_analytics:\n  enabled: false\n"}[mode]
    proc = start(tmp_path, db_dsn, config)  # no hash key configured: one is generated in the data dir
    try:
        exporters = sdk.grpc_exporters(proc.grpc_target, headers={"authorization": f"Bearer {TOKEN}"})
        send_user_spans(exporters.spans)
        send_user_logs(exporters.logs)
        spans = await poll(db_dsn, "SELECT 1 FROM system_events WHERE event_type = 'span'", lambda r: len(r) == 3)
        assert len(spans) == 3
        rows = await poll(
            db_dsn,
            "SELECT user_id, action FROM user_analytics ORDER BY action",
            lambda r: len(r) >= 3,
            within=2 if mode == "off" else 20,
        )
    finally:
        assert proc.stop() == 0
    if mode == "off":
        assert rows == []
        return
    key = (tmp_path / "user_hash_key").read_bytes().strip()
    expected = {u: hmac.new(key, u.encode(), hashlib.sha256).hexdigest() for u in ("alice", "7", "bob")}
    assert [(r["user_id"], r["action"]) for r in rows] == [
        (expected["alice"], "GET /cart/{id}"),
        (expected["7"], "POST /pay"),
        (expected["bob"], "cart.add"),
    ]
    assert not any(r["user_id"] in ("alice", "7", "bob") for r in rows)


def test_maintain_and_stats_commands(db_dsn):
    env = {"OTELPG_DATABASE_URL": db_dsn}
    out = otelpg_cli("maintain", env=env)
    assert out.returncode == 1 and "otelpg migrate" in out.stderr  # schema not there yet
    assert otelpg_cli("migrate", env=env).returncode == 0
    out = otelpg_cli("maintain", "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # migrate made the daily partitions; maintain adds the monthly one(s) of the 1h rollup.
    assert "performance_metrics_1h_p" + time.strftime("%Y%m", time.gmtime()) in report["created"]
    assert all(p.startswith("performance_metrics_1h_p") for p in report["created"])
    out = otelpg_cli("maintain", env=env)
    assert out.returncode == 0 and out.stdout.startswith("created 0 partitions")
    out = otelpg_cli("stats", "--json", env=env)
    assert out.returncode == 0, out.stderr
    stats = {r["table"]: r for r in json.loads(out.stdout)}
    for table in (
        "otel_spans",
        "otel_span_events",
        "otel_logs",
        "otelpg_events",
        "otel_scopes",
        "performance_metrics",
        "performance_metrics_1m",
        "performance_metrics_1h",
        "user_analytics",
        "agent_states",
        "system_config",
        "otelpg_metric_names",
    ):
        r = stats[table]
        assert r["exists"] and r["rows"] == 0 and {"bytes", "share", "oldest", "newest", "inserted"} <= r.keys()
    assert stats["performance_metrics_1m"]["partitions"] == 6 and stats["total"]["database_bytes"] > 0
    table = otelpg_cli("stats", env=env)
    assert table.returncode == 0 and "performance_metrics_1h" in table.stdout and "share" in table.stdout
