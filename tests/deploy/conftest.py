"""Two databases, built once per session for the dashboard tests (each in its own schema).

- `filled_db`: telemetry sent with the real OpenTelemetry SDK to a real `otelpg run` (the `otelpg`
  fixture's setup, shared by every panel test instead of started per test), then `fill.derive`.
- `history_db`: migrated schema with thirteen days of daily partitions and synthetic rows in each day,
  for EXPLAIN (partition pruning) and for the rollup tiers over multi-day ranges.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from exporters.postgres.migrate import migrate
from tests.conftest import with_search_path
from tests.deploy import fill
from tests.otelpg_process import OtelpgProcess


@dataclass(frozen=True)
class DashboardDB:
    dsn: str
    now: dt.datetime  # the data lies before this instant
    error_trace_id: str  # 32 hex digits of a trace with an error span


async def _schema(server_dsn: str, prefix: str) -> tuple[str, str]:
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return schema, with_search_path(server_dsn, schema)


async def _drop(server_dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


async def _error_trace(conn: asyncpg.Connection) -> str:
    return await conn.fetchval(
        "SELECT replace(trace_id::text, '-', '') FROM system_events "
        "WHERE event_type = 'span' AND severity = 'error' ORDER BY timestamp DESC LIMIT 1"
    )


@pytest.fixture(scope="session")
async def filled_db(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DashboardDB]:
    schema, dsn = await _schema(pg_server_dsn, "t_dash")
    proc = OtelpgProcess(tmp_path_factory.mktemp("otelpg-dashboards"), {"OTELPG_DATABASE_URL": dsn})
    proc.start()
    try:
        await asyncio.to_thread(fill.send_telemetry, proc.url("http"), proc.grpc_target)
    finally:
        assert proc.stop() == 0, proc.log
    now = dt.datetime.now(dt.UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await fill.derive(conn)
        trace = await _error_trace(conn)
    finally:
        await conn.close()
    yield DashboardDB(dsn, now, trace)
    await _drop(pg_server_dsn, schema)


@pytest.fixture(scope="session")
async def history_db(pg_server_dsn: str) -> AsyncIterator[DashboardDB]:
    schema, dsn = await _schema(pg_server_dsn, "t_hist")
    today = dt.datetime.now(dt.UTC).date()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await fill.add_history(conn, today - dt.timedelta(days=12), today)
        await fill.derive(conn)
        trace = await _error_trace(conn)
    finally:
        await conn.close()
    yield DashboardDB(dsn, dt.datetime.combine(today, dt.time(), dt.UTC), trace)
    await _drop(pg_server_dsn, schema)
