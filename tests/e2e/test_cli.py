"""The CLI as a user runs it: exit codes, messages, and `otelpg run` lifecycle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.otelpg_process import OtelpgProcess

pytestmark = pytest.mark.e2e


def otelpg_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTELPG_") and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_version_and_help():
    out = otelpg_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("otelpg ")
    for command in ("run", "migrate", "check-config", "stats"):
        out = otelpg_cli(command, "--help")
        assert out.returncode == 0 and "--config" in out.stdout, command


def test_check_config_prints_effective_config_with_secrets_redacted():
    out = otelpg_cli(
        "check-config",
        env={
            "OTELPG_DATABASE_URL": "postgresql://me:hunter2@db.internal/app",
            "OTELPG_BEARER_TOKEN": "tok-secret",
            "OTELPG_HTTP_ENDPOINT": "0.0.0.0:4318",
        },
    )
    assert out.returncode == 0, out.stderr
    assert "hunter2" not in out.stdout + out.stderr and "tok-secret" not in out.stdout + out.stderr
    assert "postgresql://me:***@db.internal/app" in out.stdout
    assert "endpoint: 0.0.0.0:4318" in out.stdout


def test_invalid_config_exits_2_with_one_line_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("batch:\n  max_rows: -5\n")
    for args, env in (
        (("check-config", "--config", str(cfg)), {}),
        (("run",), {"OTELPG_HTTP_ENDPOINT": "nohost"}),
        (("migrate",), {"OTELPG_LOG_LEVEL": "verbose"}),
    ):
        out = otelpg_cli(*args, env=env)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("otelpg: invalid config:"), out.stderr


def test_unreachable_database_fails_fast_without_the_password(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connection refused
    started = time.monotonic()
    out = otelpg_cli(
        "run",
        env={"OTELPG_DATABASE_URL": f"postgresql://app:hunter2@127.0.0.1:{port}/db", "OTELPG_DATA_DIR": str(tmp_path)},
    )
    assert out.returncode == 1
    assert time.monotonic() - started < 10
    assert "hunter2" not in out.stdout + out.stderr
    assert f"postgresql://app:***@127.0.0.1:{port}/db" in out.stderr
    assert not (tmp_path / "pgdata").exists()  # never silently replaced by the embedded server


def test_silent_database_times_out_within_the_limit(tmp_path):
    """A server that accepts connections and never answers (a black hole) still fails fast."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(listener.accept()[0] for _ in range(16)), daemon=True).start()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("database:\n  connect_timeout: 2\n")
    started = time.monotonic()
    out = otelpg_cli(
        "migrate",
        "--config",
        str(cfg),
        env={"OTELPG_DATABASE_URL": f"postgresql://app:hunter2@127.0.0.1:{listener.getsockname()[1]}/db"},
    )
    elapsed = time.monotonic() - started
    listener.close()
    assert out.returncode == 1 and elapsed < 10, (elapsed, out.stderr)
    assert "no answer within 2s" in out.stderr and "hunter2" not in out.stderr


def test_migrate_and_stats(db_dsn):
    out = otelpg_cli("migrate", env={"OTELPG_DATABASE_URL": db_dsn})
    assert out.returncode == 0, out.stderr
    assert "applied: 0001_init" in out.stdout
    assert "up to date" in otelpg_cli("migrate", env={"OTELPG_DATABASE_URL": db_dsn}).stdout
    out = otelpg_cli("stats", "--json", env={"OTELPG_DATABASE_URL": db_dsn})
    assert out.returncode == 0, out.stderr
    stats = {r["table"]: r for r in json.loads(out.stdout)}
    for table in ("otel_spans", "otel_span_events", "otel_logs", "otelpg_events"):
        assert stats[table]["partitions"] >= 5 and stats[table]["rows"] == 0, table
    assert stats["performance_metrics"]["exists"]
    table = otelpg_cli("stats", env={"OTELPG_DATABASE_URL": db_dsn})
    assert table.returncode == 0 and "otel_spans" in table.stdout


def test_stats_shows_the_spool_and_the_dead_letters_of_the_data_dir(db_dsn, tmp_path):
    import asyncio

    from exporters.postgres.dead_letter import DeadLetter, Letter

    env = {"OTELPG_DATABASE_URL": db_dsn, "OTELPG_DATA_DIR": str(tmp_path)}
    assert otelpg_cli("migrate", env=env).returncode == 0
    assert "dead letters: none" in otelpg_cli("stats", env=env).stdout
    letter = Letter(
        "logs",
        "spool",
        "PostgreSQL refused it (a constraint: check_violation)",
        "detail",
        3,
        ["checkout"],
        1,
        2,
        b"payload",
    )
    asyncio.run(DeadLetter(tmp_path / "dead-letter", max_bytes=1 << 20).add(letter))
    out = otelpg_cli("stats", env=env)
    assert out.returncode == 0, out.stderr
    assert "dead letters: 1 (3 items" in out.stdout and "checkout: PostgreSQL refused it" in out.stdout
    rows = {r["table"]: r for r in json.loads(otelpg_cli("stats", "--json", env=env).stdout)}
    assert rows["dead_letter"]["rows"] == 1 and rows["dead_letter"]["latest"]["source"] == "spool"
    assert rows["spool"]["rows"] == 0


def test_run_serves_health_and_readiness_then_exits_0_on_sigterm(otelpg):
    status, body = get_json(otelpg.url("admin", "/health"))
    assert status == 200 and body["ok"] is True and body["database"] == "healthy"
    assert body["embedded_database"] is False
    status, body = get_json(otelpg.url("admin", "/api/health/ready"))
    assert status == 200 and body == {"ready": True}
    with urllib.request.urlopen(otelpg.url("admin", "/metrics"), timeout=10) as r:
        text = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/plain")
    assert "otelpg_build_info{" in text and "process_resident_memory_bytes" in text
    for name in ("http", "grpc", "admin"):
        assert f"{name} listening on 127.0.0.1:{otelpg.ports[name]}" in otelpg.log
    assert otelpg.stop() == 0
    assert "stopped" in otelpg.log


def test_health_turns_unhealthy_when_the_database_goes_away(pg_server_dsn, db_dsn, tmp_path):
    """Dropping otelpg's database (a throwaway one) makes every health check fail."""
    import asyncio

    import asyncpg

    async def make_db() -> str:
        conn = await asyncpg.connect(pg_server_dsn)
        await conn.execute("DROP DATABASE IF EXISTS otelpg_health_test")
        await conn.execute("CREATE DATABASE otelpg_health_test")
        await conn.close()
        from urllib.parse import urlsplit, urlunsplit

        p = urlsplit(pg_server_dsn)
        return urlunsplit((p.scheme, p.netloc, "/otelpg_health_test", p.query, p.fragment))

    async def drop_db() -> None:
        conn = await asyncpg.connect(pg_server_dsn)
        await conn.execute("DROP DATABASE otelpg_health_test WITH (FORCE)")
        await conn.close()

    dsn = asyncio.run(make_db())
    proc = OtelpgProcess(tmp_path, {"OTELPG_DATABASE_URL": dsn})
    proc.start()
    try:
        assert get_json(proc.url("admin", "/health"))[0] == 200
        asyncio.run(drop_db())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status, body = get_json(proc.url("admin", "/health"))
            if status == 503:
                break
            time.sleep(0.5)
        assert status == 503 and body["database"] == "unhealthy"
        status, body = get_json(proc.url("admin", "/api/health/ready"))
        assert status == 503 and "database unavailable" in body["reasons"]
    finally:
        assert proc.stop() == 0


def test_embedded_database_starts_and_persists_across_restarts(tmp_path):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.string_value = "persist me"
    rec.time_unix_nano = time.time_ns()
    env = {"OTELPG_DATABASE_URL": ""}
    first = OtelpgProcess(tmp_path, env)
    first.start()
    try:
        assert "starting the embedded PostgreSQL" in first.log
        status, body = get_json(first.url("admin", "/health"))
        assert status == 200 and body["embedded_database"] is True
        http = urllib.request.Request(
            first.url("http", "/v1/logs"),
            data=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(http, timeout=10) as r:
            assert r.status == 200
    finally:
        assert first.stop() == 0
    assert "embedded PostgreSQL stopped" in first.log
    out = otelpg_cli("stats", "--json", env={"OTELPG_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    # The log record, and otelpg's own `started` and `stopped` events.
    stats = {r["table"]: r for r in json.loads(out.stdout)}
    assert stats["otel_logs"]["rows"] == 1 and stats["otelpg_events"]["rows"] == 2
