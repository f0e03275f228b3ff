"""Rows derived from a batch's rows, written in the batch's own transaction (a Writer hook):
performance rollups, user_analytics rows from spans and logs, and the lookup tables of metric
names and event types. What it writes commits or rolls back with the rows it comes from.

Each kind of derived rows is written in a savepoint of its own: if PostgreSQL refuses it for
good (a bug, data it can't take), it is done again request by request, so only the request that
caused it loses those derived rows (counted, logged at WARNING with its services), and the raw
rows still commit — they are the record, the rest is derived from them. Retryable errors
(deadlock, lost connection) fail the whole batch, which the writer retries, so rollups stay exact.

Spool replay and writer retries write rows that may already be in the table (a segment replayed
twice after a crash between commit and delete, a COMMIT whose answer was lost); the writer skips
those, and so must the hook, or rollups would count them twice: on the idempotent path the hook
keeps only the rows this transaction inserted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from exporters.postgres.batcher import Tables
from exporters.postgres.config import RollupsConfig, UserAnalyticsConfig
from exporters.postgres.hash_key import user_hash_key
from exporters.postgres.mapping.common import CopyRows
from exporters.postgres.mapping.user_analytics import hash_user_id, user_analytics_rows
from exporters.postgres.rollups import Rollups
from exporters.postgres.schema import (
    EVENT_TYPES,
    LOG,
    METRIC_NAMES,
    OTEL_LOGS,
    OTEL_SPAN_EVENTS,
    OTEL_SPANS,
    OTELPG_EVENTS,
    PERFORMANCE_METRICS,
    PM,
    SE,
    SERVICE_NAME_AT,
    TIMESTAMP_AT,
    USER_ANALYTICS,
    USER_ANALYTICS_COLUMNS,
    row_service,
)
from exporters.postgres.writer import classify
from sidecar.pipeline.component import HEALTHY, Health
from sidecar.pipeline.errors import PermanentError, RetryableError

log = logging.getLogger("otelpg.derived")

LOOKUP_REFRESH = 300.0  # seconds between last_seen refreshes of one lookup entry by this process
FAILURE_SHOWN_FOR = 300.0  # seconds /health reports derived rows that were not written
_LOOKUP_MEMO_MAX = 100_000

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


# The tables whose rows are events (system_events' rows), and the event type of one of their rows.
EVENT_TABLES = (OTEL_SPANS, OTEL_SPAN_EVENTS, OTEL_LOGS, OTELPG_EVENTS)
_EVENT_TYPE: dict[str, Callable[[tuple], str]] = {
    OTEL_SPANS: lambda r: "span",
    OTEL_SPAN_EVENTS: lambda r: "span_event",
    OTEL_LOGS: lambda r: r[LOG.EVENT_TYPE],
    OTELPG_EVENTS: lambda r: r[SE.EVENT_TYPE],
}
Event = tuple[str, tuple]  # (table, row)


async def _inserted_here(conn: asyncpg.Connection, table: str, rows: list[tuple]) -> set[Any]:
    """The ids of those rows that this transaction inserted."""
    if not rows:
        return set()
    service, ts = SERVICE_NAME_AT[table], TIMESTAMP_AT[table]
    return {
        r["id"]
        for r in await conn.fetch(
            _INSERTED_HERE.format(table=table),
            [r[service] for r in rows],
            [r[ts] for r in rows],
            [r[0] for r in rows],
        )
    }


async def _new_events(conn: asyncpg.Connection, events: list[list[Event]]) -> list[list[Event]]:
    """Of each group's events, those this transaction inserted."""
    new: set[Any] = set()
    for table in EVENT_TABLES:
        new |= await _inserted_here(conn, table, [r for group in events for t, r in group if t == table])
    return [[(t, r) for t, r in group if r[0] in new] for group in events]


def _tuples(rows: list[tuple] | CopyRows | None) -> list[tuple]:
    return rows if isinstance(rows, list) else []


async def _nothing() -> None:
    return None


def _flat(groups: list[list[Any]]) -> list[Any]:
    return groups[0] if len(groups) == 1 else [r for rows in groups for r in rows]


async def _in_savepoint(
    conn: asyncpg.Connection,
    step: Callable[[list[Event], list[tuple]], Awaitable[object]],
    events: list[Event],
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


class DerivedRows:
    """The batch hook and what it failed to write (a component: /health shows recent failures)."""

    name = "derived rows"

    def __init__(
        self,
        *,
        rollups: bool,
        user_analytics: bool,
        hash_id: Callable[[str], str] | None = None,
        truncated: dict[str, int] | None = None,
    ) -> None:
        self.rollups = Rollups() if rollups else None
        self.user_analytics = user_analytics
        self._hash_id = hash_id
        self._truncated = truncated  # user ids cut to an indexable length are counted in ["keys"]
        self._lookups: dict[tuple, float] = {}
        self.failures: dict[str, int] = {}  # rows whose derived rows were not written, by kind
        self.last_failure: float | None = None  # time.monotonic()

    @classmethod
    def configured(
        cls,
        rollups: RollupsConfig,
        user_analytics: UserAnalyticsConfig,
        data_dir: str,
        truncated: dict[str, int] | None = None,
    ) -> DerivedRows:
        ua = user_analytics
        hash_id = hash_user_id(user_hash_key(ua, data_dir)) if ua.enabled and ua.hash_user_ids else None
        return cls(rollups=rollups.enabled, user_analytics=ua.enabled, hash_id=hash_id, truncated=truncated)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        if self.last_failure is not None and time.monotonic() - self.last_failure < FAILURE_SHOWN_FOR:
            return Health(("derived rows (rollups, user_analytics, lookups) not written for some requests lately",))
        return HEALTHY

    async def batch_hook(self, conn: asyncpg.Connection, groups: list[Tables], idempotent: bool = False) -> None:
        """Rollups, user_analytics and lookups for a batch's rows, each in a savepoint of its own.
        If PostgreSQL refuses one for good, it is done again request by request, so a request
        whose derived rows can't be stored costs no other request its own."""
        # Encoded rows (the native encoder's) bring their event types; their user_analytics rows
        # are encoded with them (a table of the batch), so only row tuples are derived here.
        events = [[(t, r) for t in EVENT_TABLES for r in _tuples(g.get(t))] for g in groups]
        points = [_tuples(g.get(PERFORMANCE_METRICS)) for g in groups]
        encoded_types = {
            pair
            for g in groups
            for t in EVENT_TABLES
            if isinstance(enc := g.get(t), CopyRows)
            for pair in enc.event_types
        }
        if not any(events) and not any(points) and not encoded_types:
            return
        if idempotent:  # only what this transaction inserted: rows already there were derived before
            events = await _new_events(conn, events)
            new_points = await _inserted_here(conn, PERFORMANCE_METRICS, [r for rows in points for r in rows])
            points = [[r for r in rows if r[PM.ID] in new_points] for rows in points]
        steps: list[tuple[str, Callable[[list[Event], list[tuple]], Awaitable[object]]]] = []
        if self.rollups is not None:
            rollups = self.rollups
            steps.append(("rollups", lambda ev, pts: rollups.write(conn, pts) if pts else _nothing()))
        if self.user_analytics:
            steps.append(("user_analytics", lambda ev, pts: self._write_user_analytics(conn, ev)))
        steps.append(("lookups", lambda ev, pts: self._update_lookups(conn, ev, pts, encoded_types)))
        for kind, step in steps:
            error = await _in_savepoint(conn, step, _flat(events), _flat(points))
            if error is None:
                continue
            if len(groups) == 1:
                self._failed(kind, events[0], points[0], error)
                continue
            for ev, pts in zip(events, points, strict=True):
                if ev or pts:
                    error = await _in_savepoint(conn, step, ev, pts)
                    if error is not None:
                        self._failed(kind, ev, pts, error)

    async def _write_user_analytics(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        rows = user_analytics_rows(events, self._hash_id, self._truncated) if events else []
        if rows:
            await conn.copy_records_to_table(USER_ANALYTICS, records=rows, columns=USER_ANALYTICS_COLUMNS)

    def _failed(self, kind: str, events: list[Event], points: list[tuple], error: BaseException) -> None:
        services = sorted({row_service(t, r) for t, r in events} | {r[PM.SERVICE_NAME] for r in points})
        self.failures[kind] = self.failures.get(kind, 0) + len(events) + len(points)
        self.last_failure = time.monotonic()
        detail = error.detail if isinstance(error, PermanentError) else f"{type(error).__name__}: {error}"
        log.warning(
            "%s not written for %d rows of service(s) %s (the rows themselves are stored): %s",
            kind,
            len(events) + len(points),
            ", ".join(_shown(s) for s in services[:5]),
            detail,
            exc_info=not isinstance(error, (asyncpg.PostgresError, PermanentError)),
        )

    async def _update_lookups(
        self,
        conn: asyncpg.Connection,
        events: list[Event],
        points: list[tuple],
        encoded_types: set[tuple[str, str]] | None = None,
    ) -> None:
        """Upsert the (metric, service) and (event type, service) pairs not refreshed lately by this
        process. (A batch that rolls back after this leaves its new pairs for the next refresh.)"""
        now = time.monotonic()
        seen = self._lookups
        if len(seen) > _LOOKUP_MEMO_MAX:
            seen.clear()
        stale = now - LOOKUP_REFRESH
        # One entry per key (a statement can't upsert a row twice): the last type and unit win.
        metrics = sorted({
            (r[PM.METRIC_NAME], r[PM.SERVICE_NAME]):
            (r[PM.METRIC_NAME], r[PM.SERVICE_NAME], r[PM.METRIC_TYPE], r[PM.UNIT])
        for r in points
        if seen.get((r[PM.METRIC_NAME], r[PM.SERVICE_NAME]), -1e18) < stale
        }.values())  # fmt: skip
        pairs = [(_EVENT_TYPE[t](r), row_service(t, r)) for t, r in events] + list(encoded_types or ())
        types = sorted({key for pair in pairs if seen.get(key := ("e", *pair), -1e18) < stale})
        if metrics:
            await conn.execute(_UPSERT_METRIC_NAMES, *map(list, zip(*metrics, strict=True)))
            for m in metrics:
                seen[(m[0], m[1])] = now
        if types:
            await conn.execute(_UPSERT_EVENT_TYPES, [t[1] for t in types], [t[2] for t in types])
            for t in types:
                seen[t] = now
