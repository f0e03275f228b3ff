"""agent_states against a real PostgreSQL: one instance's row can't keep the others' out.

A key PostgreSQL can't index is cut to a storable one; a row PostgreSQL refuses for good is
dropped alone (logged, counted) while every other row of the flush is written; a transient
failure still keeps every row for the next flush.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os

import asyncpg
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporters.postgres.agent_states import AgentTracker
from exporters.postgres.mapping.common import KEY_MAX_BYTES
from sidecar.pipeline.signals import TRACES
from tests.unit.mapping.builders import resource

NOW = 1_900_000_000.0


def traces(*instances: tuple[str, str], error: str = "") -> ExportTraceServiceRequest:
    """One span per (service.name, service.instance.id); status ERROR with `error` as message if set."""
    req = ExportTraceServiceRequest()
    for service, instance in instances:
        rs = req.resource_spans.add(resource=resource({"service.name": service, "service.instance.id": instance}))
        span = rs.scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name=f"op {service}",
                                              start_time_unix_nano=int(NOW * 1e9))  # fmt: skip
        if error:
            span.status.code, span.status.message = 2, error
    return req


async def stored(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    return {r["agent_key"]: r for r in await pool.fetch("SELECT * FROM agent_states")}


INNOCENT = [("web", "w-1"), ("api", "a-1"), ("zeta", "z-1")]


async def test_a_10kb_instance_id_is_stored_cut_and_every_innocent_row_is_written(pool):
    tracker = AgentTracker(clock=lambda: NOW)
    huge = os.urandom(5000).hex()  # 10 KB PostgreSQL can't compress: an index entry it can't store
    wide = "é" * 5000 + "x"  # 10 KB of UTF-8, cut at a character boundary
    tracker.observe(TRACES, traces(INNOCENT[0], ("evil", huge), ("evil", wide), *INNOCENT[1:]))
    async with pool.acquire() as conn:
        assert await tracker.flush(conn, stale_after=60) == (5, 0)
    rows = await stored(pool)
    assert {"web/w-1", "api/a-1", "zeta/z-1"} <= set(rows)
    assert rows[f"evil/{huge[:KEY_MAX_BYTES]}"]["instance_id"] == huge[:KEY_MAX_BYTES]
    assert rows[f"evil/{'é' * (KEY_MAX_BYTES // 2)}"]["instance_id"] == "é" * (KEY_MAX_BYTES // 2)
    assert tracker.failed_rows == 0

    # Kept current from then on, like any other instance.
    tracker.observe(TRACES, traces(("evil", huge), INNOCENT[0], error="boom"))
    async with pool.acquire() as conn:
        assert await tracker.flush(conn, stale_after=60) == (2, 0)
    rows = await stored(pool)
    assert [e["message"] for e in orjson.loads(rows[f"evil/{huge[:KEY_MAX_BYTES]}"]["error_log"])] == ["boom"]
    assert [e["message"] for e in orjson.loads(rows["web/w-1"]["error_log"])] == ["boom"]


async def test_a_row_postgresql_refuses_for_good_is_dropped_alone(pool, caplog):
    long_instance = "i" * 400
    await pool.execute("ALTER TABLE agent_states ADD CONSTRAINT refuse_evil "
                       "CHECK (agent_key <> 'evil/e-1' AND length(agent_key) < 300)")  # fmt: skip
    tracker = AgentTracker(clock=lambda: NOW)
    tracker.observe(TRACES, traces(INNOCENT[0], ("evil", "e-1"), ("long", long_instance), *INNOCENT[1:]),
                    now=NOW)  # fmt: skip
    caplog.set_level(logging.WARNING, logger="otelpg.agent_states")
    async with pool.acquire() as conn:
        assert await tracker.flush(conn, stale_after=60, now=NOW) == (3, 0)
        assert set(await stored(pool)) == {"web/w-1", "api/a-1", "zeta/z-1"}
        assert tracker.failed_rows == 2

        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2 and all("\n" not in w for w in warnings)
        (evil,) = [w for w in warnings if "evil/e-1" in w]
        assert "check_violation" in evil or "CheckViolation" in evil
        (long,) = [w for w in warnings if "long/" in w]
        assert long_instance not in long and f"long/{'i' * 90}" in long and len(long) < 400

        # Dropped, not restored: nothing to write next time; the others keep updating.
        caplog.clear()
        assert await tracker.flush(conn, stale_after=60, now=NOW + 5) == (0, 0)
        tracker.observe(TRACES, traces(INNOCENT[1], ("evil", "e-1"), error="later"), now=NOW + 10)
        assert await tracker.flush(conn, stale_after=60, now=NOW + 10) == (1, 0)
        assert tracker.failed_rows == 3
        (again,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert again.count("evil/e-1") == 1
    rows = await stored(pool)
    assert [e["message"] for e in orjson.loads(rows["api/a-1"]["error_log"])] == ["later"]
    assert "evil/e-1" not in rows


async def test_a_transient_failure_keeps_every_row_for_the_next_flush(pool):
    tracker = AgentTracker(clock=lambda: NOW)
    tracker.observe(TRACES, traces(*INNOCENT, error="kept"), now=NOW)
    async with pool.acquire() as holder, pool.acquire() as conn:
        await conn.execute("SET lock_timeout = '100ms'")
        async with holder.transaction():
            await holder.execute("LOCK TABLE agent_states IN EXCLUSIVE MODE")
            with pytest.raises(asyncpg.LockNotAvailableError):  # 55P03: retryable
                await tracker.flush(conn, stale_after=60, now=NOW)
        assert tracker.failed_rows == 0
        assert await tracker.flush(conn, stale_after=60, now=NOW + 1) == (3, 0)
    rows = await stored(pool)
    assert set(rows) == {"web/w-1", "api/a-1", "zeta/z-1"}
    assert all([e["message"] for e in orjson.loads(r["error_log"])] == ["kept"] for r in rows.values())


async def test_rows_already_written_are_not_written_twice_when_marking_stale_fails(pool):
    """The upsert committed, then marking silent rows stale failed: those rows' errors are in the
    table and must not be prepended again by the next flush."""
    tracker = AgentTracker(clock=lambda: NOW)
    tracker.observe(TRACES, traces(INNOCENT[0], error="once"), now=NOW)
    async with pool.acquire() as holder, pool.acquire() as conn:
        await conn.execute("SET lock_timeout = '100ms'")
        async with holder.transaction():
            # Row locks on every row but the one being upserted: the stale UPDATE waits, then gives up.
            await holder.execute("INSERT INTO agent_states (agent_key, service_name, last_active) "
                                 "VALUES ('old', 'old', now() - interval '1 day')")  # fmt: skip
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM agent_states WHERE agent_key = 'old' FOR UPDATE")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await tracker.flush(conn, stale_after=60, now=NOW)
        assert await tracker.flush(conn, stale_after=60, now=NOW + 1) == (0, 1)
    rows = await stored(pool)
    assert [e["message"] for e in orjson.loads(rows["web/w-1"]["error_log"])] == ["once"]


async def test_concurrent_flushes_of_two_trackers_with_a_bad_row_both_finish(pool):
    await pool.execute("ALTER TABLE agent_states ADD CONSTRAINT refuse_evil CHECK (agent_key <> 'evil/e-1')")
    trackers = [AgentTracker(clock=lambda: NOW) for _ in range(2)]
    for t in trackers:
        t.observe(TRACES, traces(*INNOCENT, ("evil", "e-1")), now=NOW)

    async def flush(t: AgentTracker) -> tuple[int, int]:
        async with pool.acquire() as conn:
            return await t.flush(conn, stale_after=60, now=NOW)

    assert await asyncio.wait_for(asyncio.gather(*map(flush, trackers)), 30) == [(3, 0), (3, 0)]
    assert [t.failed_rows for t in trackers] == [1, 1]
    assert set(await stored(pool)) == {"web/w-1", "api/a-1", "zeta/z-1"}
    assert dt.datetime.fromtimestamp(NOW, dt.UTC) == (await stored(pool))["web/w-1"]["last_active"]
