"""The data lifecycle around the write path, as one component with `start()` / `stop()`.

- `batch_hook` runs inside every batch transaction after its COPYs (Writer hooks): performance
  rollups, user_analytics rows from spans and logs, and the lookup tables of metric names and
  event types. What it writes commits or rolls back with the rows it comes from.
- `after_commit` feeds the agent_states tracker once a request is durable.
- `start()` writes the effective configuration to system_config (a `config_updated` event when it
  differs from what was stored) and starts two background loops: partition maintenance every
  `partitions.maintenance_interval` seconds (skipped when another sidecar is running it), and the
  agent_states flush every `agent_states.flush_interval` seconds.
- `stop()` ends the loops and flushes agent_states one last time (call it after the queue drained).

The hook's work runs in a savepoint: if PostgreSQL refuses it for good (a bug, data it can't take),
the derived rows are skipped and logged, and the raw rows still commit — they are the record, the
rest is derived from them. Retryable errors (deadlock, lost connection) fail the whole batch, which
the writer retries, so rollups stay exact.

Spool replay and writer retries write rows that may already be in the table (a segment replayed
twice after a crash between commit and delete, a COMMIT whose answer was lost); the writer skips
those, and so must the hook, or rollups would count them twice: on the idempotent path the hook
keeps only the rows this transaction inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from exporters.postgres.agent_states import AgentTracker
from exporters.postgres.events import event_row
from exporters.postgres.maintenance import MaintenanceReport, maintain
from exporters.postgres.mapping.user_analytics import hash_user_id, user_analytics_rows
from exporters.postgres.rollups import Rollups
from exporters.postgres.schema import (
    EVENT_TYPES,
    METRIC_NAMES,
    PERFORMANCE_METRICS,
    PERFORMANCE_METRICS_1H,
    PERFORMANCE_METRICS_1M,
    SYSTEM_CONFIG,
    SYSTEM_EVENTS,
    SYSTEM_EVENTS_COLUMNS,
    USER_ANALYTICS,
    USER_ANALYTICS_COLUMNS,
)
from exporters.postgres.writer import classify
from sidecar.config import SETTINGS, Config, effective_config
from sidecar.errors import RetryableError

log = logging.getLogger("otelpg.lifecycle")

HASH_KEY_FILE = "user_hash_key"
LOOKUP_REFRESH = 300.0  # seconds between last_seen refreshes of one lookup entry by this process
_LOOKUP_MEMO_MAX = 100_000
_CONFIG_LOCK = "hashtext('otelpg.config.' || current_schema())"

_UPSERT_METRIC_NAMES = f"""
INSERT INTO {METRIC_NAMES} AS t (metric_name, service_name, metric_type, unit)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
ON CONFLICT (metric_name, service_name) DO UPDATE SET
    last_seen = greatest(t.last_seen, EXCLUDED.last_seen), metric_type = EXCLUDED.metric_type, unit = EXCLUDED.unit
"""
_UPSERT_EVENT_TYPES = f"""
INSERT INTO {EVENT_TYPES} AS t (event_type, service_name)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (event_type, service_name) DO UPDATE SET last_seen = greatest(t.last_seen, EXCLUDED.last_seen)
"""
# Rows of `table` among the given keys that this transaction inserted (xmin = our transaction id).
_INSERTED_HERE = """
SELECT p.id FROM unnest($1::text[], $2::timestamptz[], $3::uuid[]) AS u(service_name, ts, id)
JOIN {table} p ON p.service_name = u.service_name AND p.timestamp = u.ts AND p.id = u.id
WHERE p.xmin::text::bigint = txid_current() % 4294967296
"""


def retention_days(config: Config) -> dict[str, int]:
    r = config.retention
    return {
        SYSTEM_EVENTS: r.system_events_days,
        PERFORMANCE_METRICS: r.performance_metrics_days,
        USER_ANALYTICS: r.user_analytics_days,
        PERFORMANCE_METRICS_1M: r.performance_metrics_1m_days,
        PERFORMANCE_METRICS_1H: r.performance_metrics_1h_days,
    }


async def run_maintenance(conn: asyncpg.Connection, config: Config, *, wait: bool = True,
                          now: Any = None) -> MaintenanceReport:
    """One maintenance run with the configured window and retention (`otelpg maintain`)."""
    return await maintain(conn, days_behind=config.partitions.days_behind, days_ahead=config.partitions.days_ahead,
                          retention_days=retention_days(config), now=now, wait=wait)


def user_hash_key(config: Config) -> bytes:
    """The key of the user-id hash: `user_analytics.hash_key`, else one generated once and kept in
    the data dir (0600), so hashes stay the same across restarts. Sidecars sharing a database
    should be given the same key in the config."""
    if config.user_analytics.hash_key:
        return config.user_analytics.hash_key.encode()
    path = Path(config.data_dir) / HASH_KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("generated the user id hash key in %s (set user_analytics.hash_key to share it)", path)
    return key


async def _inserted_here(conn: asyncpg.Connection, table: str, rows: list[tuple], service_col: int,
                         ts_col: int) -> list[tuple]:
    if not rows:
        return rows
    ids = {r["id"] for r in await conn.fetch(
        _INSERTED_HERE.format(table=table),
        [r[service_col] for r in rows], [r[ts_col] for r in rows], [r[0] for r in rows],
    )}
    return [r for r in rows if r[0] in ids]


class Lifecycle:
    def __init__(self, pool: asyncpg.Pool, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._config = config
        self._clock = clock
        self.rollups = Rollups() if config.rollups.enabled else None
        ua = config.user_analytics
        self.user_analytics = ua.enabled
        self._hash_id = hash_user_id(user_hash_key(config)) if ua.enabled and ua.hash_user_ids else None
        a = config.agent_states
        self.agents = AgentTracker(window=a.window, error_log_size=a.error_log_size, clock=clock) if a.enabled else None
        self._lookups: dict[tuple, float] = {}
        self._last_hook_error = -1e18
        self._tasks: list[asyncio.Task[None]] = []
        self.last_maintenance: MaintenanceReport | None = None

    @property
    def hooks(self) -> list[Callable[[asyncpg.Connection, dict[str, list[tuple]]], Any]]:
        return [self.batch_hook]

    # ------------------------------------------------------------------ in the batch transaction

    async def batch_hook(self, conn: asyncpg.Connection, tables: dict[str, list[tuple]],
                         idempotent: bool = False) -> None:
        events = tables.get(SYSTEM_EVENTS) or []
        points = tables.get(PERFORMANCE_METRICS) or []
        if not events and not points:
            return
        try:
            async with conn.transaction():  # a savepoint
                await self._derive(conn, events, points, idempotent)
        except Exception as e:
            if isinstance(classify(e), RetryableError):
                raise  # the writer retries the batch, the hook with it
            now = time.monotonic()
            if now - self._last_hook_error > 60:
                self._last_hook_error = now
                log.error("rollups / user_analytics / lookups not written for a batch (its rows are): %s: %s",
                          type(e).__name__, e, exc_info=not isinstance(e, asyncpg.PostgresError))

    async def _derive(self, conn: asyncpg.Connection, events: list[tuple], points: list[tuple],
                      idempotent: bool) -> None:
        if idempotent:
            events = await _inserted_here(conn, SYSTEM_EVENTS, events, 7, 5)
            points = await _inserted_here(conn, PERFORMANCE_METRICS, points, 6, 5)
        if points and self.rollups is not None:
            await self.rollups.write(conn, points)
        if events and self.user_analytics:
            rows = user_analytics_rows(events, self._hash_id)
            if rows:
                await conn.copy_records_to_table(USER_ANALYTICS, records=rows, columns=USER_ANALYTICS_COLUMNS)
        await self._update_lookups(conn, events, points)

    async def _update_lookups(self, conn: asyncpg.Connection, events: list[tuple], points: list[tuple]) -> None:
        """Upsert the (metric, service) and (event type, service) pairs not refreshed lately by this
        process. (A batch that rolls back after this leaves its new pairs for the next refresh.)"""
        now = time.monotonic()
        seen = self._lookups
        if len(seen) > _LOOKUP_MEMO_MAX:
            seen.clear()
        stale = now - LOOKUP_REFRESH
        # One entry per key (a statement can't upsert a row twice): the last type and unit win.
        metrics = sorted({
            (r[1], r[6]): (r[1], r[6], r[8], r[3]) for r in points if seen.get((r[1], r[6]), -1e18) < stale
        }.values())  # fmt: skip
        types = sorted({("e", r[1], r[7]) for r in events if seen.get(("e", r[1], r[7]), -1e18) < stale})
        if metrics:
            await conn.execute(_UPSERT_METRIC_NAMES, *map(list, zip(*metrics, strict=True)))
            for m in metrics:
                seen[(m[0], m[1])] = now
        if types:
            await conn.execute(_UPSERT_EVENT_TYPES, [t[1] for t in types], [t[2] for t in types])
            for t in types:
                seen[t] = now

    # ------------------------------------------------------------------ after commit

    def after_commit(self, signal: str, request: Any) -> None:
        if self.agents is not None:
            self.agents.observe(signal, request)

    def observing(self, after_commit: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
        """`after_commit`, then this component's own (for PostgresExporter's after_commit)."""
        if self.agents is None:
            return after_commit

        def both(signal: str, request: Any) -> None:
            after_commit(signal, request)
            try:  # the request is committed: nothing here may fail it (the client would resend it)
                self.after_commit(signal, request)
            except Exception:
                log.exception("agent_states: request not accounted")

        return both

    # ------------------------------------------------------------------ background

    async def start(self) -> None:
        try:
            await self.write_config()
        except Exception as e:  # bookkeeping: not a reason to refuse telemetry
            log.warning("effective configuration not written to system_config: %s: %s", type(e).__name__, e)
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="otelpg-maintenance"))
        if self.agents is not None:
            self._tasks.append(asyncio.create_task(self._agents_loop(), name="otelpg-agent-states"))

    async def stop(self, flush_timeout: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.agents is not None:
            try:
                await asyncio.wait_for(self.flush_agents(), flush_timeout)
            except Exception as e:
                log.info("agent_states not flushed at shutdown: %s", e)

    async def maintain_once(self, *, wait: bool = False, now: Any = None) -> MaintenanceReport:
        async with self._pool.acquire() as conn:
            report = await run_maintenance(conn, self._config, wait=wait, now=now)
        self.last_maintenance = report
        if report.created or report.dropped or report.moved_rows or report.expired_default_rows:
            log.info("partition maintenance: %s", report.summary())
        return report

    async def flush_agents(self, now: float | None = None) -> tuple[int, int]:
        assert self.agents is not None
        async with self._pool.acquire() as conn:
            return await self.agents.flush(conn, self._config.agent_states.stale_after, now)

    async def _maintenance_loop(self) -> None:
        interval = max(1.0, self._config.partitions.maintenance_interval)
        while True:
            try:
                await self.maintain_once()
            except Exception as e:  # PostgreSQL away, a lock timeout...: next run
                log.warning("partition maintenance failed: %s: %s", type(e).__name__, e)
            await asyncio.sleep(interval)

    async def _agents_loop(self) -> None:
        interval = max(0.1, self._config.agent_states.flush_interval)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_agents()
            except Exception as e:
                log.info("agent_states not flushed: %s: %s", type(e).__name__, e)

    # ------------------------------------------------------------------ system_config

    async def write_config(self) -> dict[str, dict[str, Any]]:
        """Store the effective configuration (secrets redacted), one row per key; return what changed
        and record it as a `config_updated` event (not on the first start: nothing was stored)."""
        values = effective_config(self._config)
        helps = {s.key: s.help for s in SETTINGS}
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({_CONFIG_LOCK})")
            stored = {r["key"]: orjson.loads(r["value"])
                      for r in await conn.fetch(f"SELECT key, value::text FROM {SYSTEM_CONFIG}")}
            changes = {k: {"old": stored.get(k), "new": v} for k, v in values.items()
                       if k not in stored or stored[k] != v}
            changes.update({k: {"old": v, "new": None} for k, v in stored.items() if k not in values})
            if changes:
                changed = sorted(k for k in changes if k in values)
                await conn.execute(
                    f"""INSERT INTO {SYSTEM_CONFIG} AS t (key, value, description, updated_at)
                        SELECT k, v::jsonb, d, now() FROM unnest($1::text[], $2::text[], $3::text[]) AS u(k, v, d)
                        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, description = EXCLUDED.description,
                                                        updated_at = now()""",
                    changed, [orjson.dumps(values[k]).decode() for k in changed], [helps[k] for k in changed],
                )
                removed = sorted(k for k in changes if k not in values)
                if removed:
                    await conn.execute(f"DELETE FROM {SYSTEM_CONFIG} WHERE key = ANY($1::text[])", removed)
                if stored:
                    await conn.copy_records_to_table(
                        SYSTEM_EVENTS, records=[event_row("config_updated", "info", {"changes": changes})],
                        columns=SYSTEM_EVENTS_COLUMNS,
                    )
                    log.info("configuration changed since the last start: %s", ", ".join(sorted(changes)))
        return changes if stored else {}
