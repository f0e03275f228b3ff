"""Writes a batch: resources upserted, then one binary COPY per table, all in one transaction.

Errors are classified here, where they arise: connection trouble is retryable
(DatabaseUnavailableError → 503/UNAVAILABLE); data PostgreSQL rejects is permanent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from exporters.postgres.batcher import Batch
from exporters.postgres.schema import COPY_TABLES, OTEL_RESOURCES
from sidecar.errors import DatabaseUnavailableError, OtelpgError, PermanentError, RetryableError
from sidecar.telemetry import Telemetry

log = logging.getLogger("otelpg.writer")

_UPSERT_RESOURCES = f"""
    INSERT INTO {OTEL_RESOURCES} (resource_id, service_name, attributes, schema_url)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::text[])
    ON CONFLICT (resource_id) DO UPDATE SET last_seen = now()
"""

# SQLSTATE classes that mean "try again": connection exceptions, insufficient resources,
# operator intervention (shutdown, failover), transaction rollback (serialization, deadlock).
_RETRYABLE_CLASSES = ("08", "53", "57", "40")


def classify(error: BaseException) -> OtelpgError:
    """Map a driver error to RetryableError or PermanentError."""
    if isinstance(error, OtelpgError):
        return error
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", "") or ""
        if sqlstate[:2] in _RETRYABLE_CLASSES:
            return DatabaseUnavailableError(f"PostgreSQL: {error}", retry_after=1)
        return PermanentError(f"PostgreSQL rejected the data: {error}")
    if isinstance(error, (OSError, TimeoutError, asyncpg.InterfaceError, ConnectionError)):
        return DatabaseUnavailableError(f"PostgreSQL unavailable: {type(error).__name__}: {error}", retry_after=1)
    return PermanentError(f"{type(error).__name__}: {error}")


# Runs inside a batch's transaction after its COPYs (e.g. rollup upserts), so what it writes
# commits or rolls back with the rows it derives from.
BatchHook = Callable[[asyncpg.Connection, dict[str, list[tuple]]], Awaitable[None]]


class Writer:
    def __init__(self, pool: asyncpg.Pool, telemetry: Telemetry, *, acquire_timeout: float = 5.0,
                 copy_timeout: float = 60.0, hooks: Sequence[BatchHook] = ()) -> None:
        self._pool = pool
        self._hooks = tuple(hooks)
        self._telemetry = telemetry
        self._acquire_timeout = acquire_timeout
        self._copy_timeout = copy_timeout
        self._known_resources: set[int] = set()  # upserted since start: skip them next time

    async def write(self, batch: Batch) -> None:
        tables = batch.tables()
        # Sorted, so concurrent writers lock resource rows in the same order (no deadlock).
        resources = sorted(r for rid, r in batch.resources().items() if rid not in self._known_resources)
        started = time.perf_counter()
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as conn, conn.transaction():
                if resources:
                    await conn.execute(_UPSERT_RESOURCES, *map(list, zip(*resources, strict=True)))
                for table, rows in tables.items():
                    await conn.copy_records_to_table(
                        table, records=rows, columns=COPY_TABLES[table], timeout=self._copy_timeout
                    )
                for hook in self._hooks:
                    await hook(conn, tables)
        except Exception as e:
            error = classify(e)
            kind = "retryable" if isinstance(error, RetryableError) else "permanent"
            for table, rows in tables.items():
                self._telemetry.send_failed_rows.labels(table, kind).inc(len(rows))
            log.warning("batch of %d rows not written (%s): %s", batch.nrows, kind, error)
            raise error from None
        self._telemetry.copy_duration.observe(time.perf_counter() - started)
        self._telemetry.batch_rows.observe(batch.nrows)
        for table, rows in tables.items():
            self._telemetry.sent_rows.labels(table).inc(len(rows))
        self._known_resources.update(r[0] for r in resources)
