"""The data lifecycle around the write path, as one component with `start()` / `stop()`.

- `batch_hook` runs inside every batch transaction after its COPYs (Writer hooks): performance
  rollups, user_analytics rows from spans and logs, and the lookup tables of metric names and
  event types. What it writes commits or rolls back with the rows it comes from.
- `after_commit` feeds the agent_states tracker once a request is durable (one of the exporter's
  after-commit observers).
- `start()` writes the effective configuration to system_config (a `config_updated` event when it
  differs from what was stored) and starts two background loops: partition maintenance every
  `partitions.maintenance_interval` seconds (skipped when another sidecar is running it), and the
  agent_states flush every `agent_states.flush_interval` seconds.
- `stop()` ends the loops and flushes agent_states one last time (call it after the queue drained).

Each kind of derived rows (rollups, user_analytics, lookups) is written in a savepoint of its own:
if PostgreSQL refuses it for good (a bug, data it can't take), it is done again request by request,
so only the request that caused it loses those derived rows (counted, logged at WARNING with its
services), and the raw rows still commit — they are the record, the rest is derived from them.
Retryable errors (deadlock, lost connection) fail the whole batch, which the writer retries, so
rollups stay exact.

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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from exporters.postgres.agent_states import AgentTracker
from exporters.postgres.batcher import Tables
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
from exporters.postgres.writer import BatchHook, classify
from sidecar.config import SETTINGS, Config, effective_config
from sidecar.pipeline.errors import PermanentError, RetryableError
from sidecar.pipeline.signals import Signal

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


async def run_maintenance(
    conn: asyncpg.Connection, config: Config, *, wait: bool = True, now: Any = None
) -> MaintenanceReport:
    """One maintenance run with the configured window and retention (`otelpg maintain`)."""
    return await maintain(
        conn,
        days_behind=config.partitions.days_behind,
        days_ahead=config.partitions.days_ahead,
        retention_days=retention_days(config),
        now=now,
        wait=wait,
    )


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


async def _inserted_here(
    conn: asyncpg.Connection, table: str, rows: list[tuple], service_col: int, ts_col: int
) -> set[Any]:
    """The ids of those rows that this transaction inserted."""
    if not rows:
        return set()
    return {
        r["id"]
        for r in await conn.fetch(
            _INSERTED_HERE.format(table=table),
            [r[service_col] for r in rows],
            [r[ts_col] for r in rows],
            [r[0] for r in rows],
        )
    }


async def _nothing() -> None:
    return None


def _flat(groups: list[list[tuple]]) -> list[tuple]:
    return groups[0] if len(groups) == 1 else [r for rows in groups for r in rows]


async def _in_savepoint(
    conn: asyncpg.Connection,
    step: Callable[[list[tuple], list[tuple]], Awaitable[object]],
    events: list[tuple],
    points: list[tuple],
) -> BaseException | None:
    """Run one derivation step in a savepoint: None, or the permanent error that rolled it back.
    Retryable errors (deadlock, lost connection) fail the whole batch, which the writer retries,
    so derived rows stay exact."""
    try:
        async with conn.transaction():
            await step(events, points)
    except Exception as e:
        error = classify(e)
        if isinstance(error, RetryableError):
            raise
        return error if isinstance(e, asyncpg.PostgresError) else e
    return None


def _shown(name: Any, limit: int = 80) -> str:
    s = str(name)
    return s if len(s) <= limit else s[:limit] + "…"


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
        self.agents = (
            AgentTracker(window=a.window, error_log_size=a.error_log_size, max_instances=a.max_instances, clock=clock)
            if a.enabled
            else None
        )
        self._lookups: dict[tuple, float] = {}
        self.derived_failures: dict[str, int] = {}  # rows whose derived rows were not written, by kind
        self.last_derived_failure: float | None = None  # time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_maintenance: MaintenanceReport | None = None

    @property
    def hooks(self) -> list[BatchHook]:
        return [self.batch_hook]

    # ------------------------------------------------------------------ in the batch transaction

    async def batch_hook(self, conn: asyncpg.Connection, groups: list[Tables], idempotent: bool = False) -> None:
        """Rollups, user_analytics and lookups for a batch's rows, each in a savepoint of its own.
        If PostgreSQL refuses one for good, it is done again request by request, so a request
        whose derived rows can't be stored costs no other request its own."""
        events = [g.get(SYSTEM_EVENTS) or [] for g in groups]
        points = [g.get(PERFORMANCE_METRICS) or [] for g in groups]
        if not any(events) and not any(points):
            return
        if idempotent:  # only what this transaction inserted: rows already there were derived before
            new_events = await _inserted_here(conn, SYSTEM_EVENTS, [r for rows in events for r in rows], 7, 5)
            new_points = await _inserted_here(conn, PERFORMANCE_METRICS, [r for rows in points for r in rows], 6, 5)
            events = [[r for r in rows if r[0] in new_events] for rows in events]
            points = [[r for r in rows if r[0] in new_points] for rows in points]
        steps: list[tuple[str, Callable[[list[tuple], list[tuple]], Awaitable[object]]]] = []
        if self.rollups is not None:
            rollups = self.rollups
            steps.append(("rollups", lambda ev, pts: rollups.write(conn, pts) if pts else _nothing()))
        if self.user_analytics:
            steps.append(("user_analytics", lambda ev, pts: self._write_user_analytics(conn, ev)))
        steps.append(("lookups", lambda ev, pts: self._update_lookups(conn, ev, pts)))
        for kind, step in steps:
            error = await _in_savepoint(conn, step, _flat(events), _flat(points))
            if error is None:
                continue
            if len(groups) == 1:
                self._derived_failed(kind, events[0], points[0], error)
                continue
            for ev, pts in zip(events, points, strict=True):
                if ev or pts:
                    error = await _in_savepoint(conn, step, ev, pts)
                    if error is not None:
                        self._derived_failed(kind, ev, pts, error)

    async def _write_user_analytics(self, conn: asyncpg.Connection, events: list[tuple]) -> None:
        rows = user_analytics_rows(events, self._hash_id) if events else []
        if rows:
            await conn.copy_records_to_table(USER_ANALYTICS, records=rows, columns=USER_ANALYTICS_COLUMNS)

    def _derived_failed(self, kind: str, events: list[tuple], points: list[tuple], error: BaseException) -> None:
        services = sorted({r[7] for r in events} | {r[6] for r in points})
        self.derived_failures[kind] = self.derived_failures.get(kind, 0) + len(events) + len(points)
        self.last_derived_failure = time.monotonic()
        detail = error.detail if isinstance(error, PermanentError) else f"{type(error).__name__}: {error}"
        log.warning(
            "%s not written for %d rows of service(s) %s (the rows themselves are stored): %s",
            kind,
            len(events) + len(points),
            ", ".join(_shown(s) for s in services[:5]),
            detail,
            exc_info=not isinstance(error, (asyncpg.PostgresError, PermanentError)),
        )

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

    def after_commit(self, signal: Signal, request: Any) -> None:
        if self.agents is not None:
            self.agents.observe(signal, request)

    # ------------------------------------------------------------------ background

    async def start(self, *, database: bool = True) -> None:
        """`database=False`: started while PostgreSQL is away (call start_with_database when it's back)."""
        if database:
            await self.start_with_database()
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="otelpg-maintenance"))
        if self.agents is not None:
            self._tasks.append(asyncio.create_task(self._agents_loop(), name="otelpg-agent-states"))

    async def start_with_database(self) -> None:
        """What start needs PostgreSQL for (again after a start during an outage)."""
        try:
            await self.write_config()
        except Exception as e:  # bookkeeping: not a reason to refuse telemetry
            log.warning("effective configuration not written to system_config: %s: %s", type(e).__name__, e)

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
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_agents()
            except Exception as e:  # kept in memory and flushed next time
                log.log(
                    logging.INFO if failing else logging.WARNING,
                    "agent_states not flushed: %s: %s",
                    type(e).__name__,
                    e,
                )
                failing = True
            else:
                if failing:
                    log.info("agent_states flushed again")
                failing = False

    # ------------------------------------------------------------------ system_config

    async def write_config(self) -> dict[str, dict[str, Any]]:
        """Store the effective configuration (secrets redacted), one row per key; return what changed
        and record it as a `config_updated` event (not on the first start: nothing was stored)."""
        values = effective_config(self._config)
        helps = {s.key: s.help for s in SETTINGS}
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({_CONFIG_LOCK})")
            stored = {
                r["key"]: orjson.loads(r["value"])
                for r in await conn.fetch(f"SELECT key, value::text FROM {SYSTEM_CONFIG}")
            }
            changes = {
                k: {"old": stored.get(k), "new": v} for k, v in values.items() if k not in stored or stored[k] != v
            }
            changes.update({k: {"old": v, "new": None} for k, v in stored.items() if k not in values})
            if changes:
                changed = sorted(k for k in changes if k in values)
                await conn.execute(
                    f"""INSERT INTO {SYSTEM_CONFIG} AS t (key, value, description, updated_at)
                        SELECT k, v::jsonb, d, now() FROM unnest($1::text[], $2::text[], $3::text[]) AS u(k, v, d)
                        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, description = EXCLUDED.description,
                                                        updated_at = now()""",
                    changed,
                    [orjson.dumps(values[k]).decode() for k in changed],
                    [helps[k] for k in changed],
                )
                removed = sorted(k for k in changes if k not in values)
                if removed:
                    await conn.execute(f"DELETE FROM {SYSTEM_CONFIG} WHERE key = ANY($1::text[])", removed)
                if stored:
                    await conn.copy_records_to_table(
                        SYSTEM_EVENTS,
                        records=[event_row("config_updated", "info", {"changes": changes})],
                        columns=SYSTEM_EVENTS_COLUMNS,
                    )
                    log.info("configuration changed since the last start: %s", ", ".join(sorted(changes)))
        return changes if stored else {}
