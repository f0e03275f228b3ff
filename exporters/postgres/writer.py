"""Writes a batch: resources upserted, then one binary COPY per table, all in one transaction.

Errors are classified here, where they arise: connection trouble is retryable
(DatabaseUnavailableError → 503/UNAVAILABLE); data PostgreSQL rejects is permanent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import asyncpg

from exporters.postgres.batcher import Batch, Tables, copy_plan
from exporters.postgres.mapping.common import CopyRows
from exporters.postgres.schema import (
    COPY_TABLES,
    OTEL_RESOURCES,
    OTEL_SCOPES,
    USER_ANALYTICS,
    USER_ANALYTICS_COLUMNS,
)
from sidecar.pipeline.errors import DatabaseUnavailableError, OtelpgError, PermanentError, RetryableError
from sidecar.pipeline.telemetry import Telemetry

log = logging.getLogger("otelpg.writer")

_UPSERT_RESOURCES = f"""
    INSERT INTO {OTEL_RESOURCES} (resource_id, service_name, attributes, schema_url)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::text[])
    ON CONFLICT (resource_id) DO UPDATE SET last_seen = now()
"""
_UPSERT_SCOPES = f"""
    INSERT INTO {OTEL_SCOPES} (scope_id, name, version, metadata)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[])
    ON CONFLICT (scope_id) DO UPDATE SET last_seen = now()
"""

# SQLSTATE classes that mean the data itself is bad: data exception (22), integrity constraint (23),
# program limit exceeded (54, e.g. a value too large for an index), and syntax or undefined object
# (42: a bug or a schema otelpg didn't create; retrying can't fix it). Everything else — connection
# loss, shutdown and failover (08, 57), resources (53), serialization (40), internal errors — is
# worth retrying, as is any client-side failure that isn't about the data: the Collector's rule,
# where only errors known to be permanent are permanent.
_PERMANENT_CLASSES = ("22", "23", "42", "54")
_KNOWN_RESOURCES_MAX = 100_000
_CLASS_NAMES = {"22": "a value it can't take", "23": "a constraint", "42": "otelpg's schema", "54": "a size limit"}


# The columns of every table the writer COPies: the mapping's, and user_analytics, whose rows the
# native encoder makes with the spans (the batch hook derives them from row tuples otherwise).
_COLUMNS: dict[str, tuple[str, ...]] = {**COPY_TABLES, USER_ANALYTICS: USER_ANALYTICS_COLUMNS}

# PostgreSQL's binary COPY header (signature, flags, no extension) and trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"


def _copy_stream(data: bytes) -> memoryview:
    """Pre-encoded COPY tuples as a binary COPY stream. One buffer, sent as one CopyData message:
    asyncpg waits on each item of an iterable source with a task of its own (slower than copying
    the data once). A memoryview, because asyncpg takes bytes for a file name."""
    return memoryview(b"".join((_COPY_HEADER, data, _COPY_TRAILER)))


class _Upserted:
    """Keys of the lookup rows (resources, scopes) upserted since start, whose rows are skipped
    next time. Bounded: forgetting costs one idempotent upsert."""

    def __init__(self) -> None:
        self._keys: set[int] = set()

    def new(self, rows: Iterable[tuple]) -> list[tuple]:
        """The rows (key first) not upserted yet, once each, sorted by key: concurrent writers
        lock them in the same order (no deadlock)."""
        keys = self._keys
        return sorted({r[0]: r for r in rows if r[0] not in keys}.values())

    def add(self, rows: list[tuple]) -> None:
        if len(self._keys) > _KNOWN_RESOURCES_MAX:
            self._keys.clear()
        self._keys.update(r[0] for r in rows)


def classify(error: BaseException) -> OtelpgError:
    """Map a driver error to RetryableError or PermanentError. A PermanentError's message is for
    clients (partial_success): the kind of refusal, never the table, index or row it was about;
    `detail` keeps PostgreSQL's own message for the logs."""
    if isinstance(error, OtelpgError):
        return error
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", "") or ""
        if sqlstate[:2] in _PERMANENT_CLASSES:
            condition = _condition(error)
            return _permanent(f"PostgreSQL refused it ({_CLASS_NAMES[sqlstate[:2]]}: {condition})", error)
        return DatabaseUnavailableError(f"PostgreSQL: {error}", retry_after=1)
    # asyncpg.DataError (an InterfaceError) and plain ValueError/TypeError/OverflowError come from
    # encoding a value the column type can't take: the data, not the database.
    if isinstance(error, (asyncpg.DataError, ValueError, TypeError, OverflowError)):
        return _permanent(f"a value can't be encoded for PostgreSQL ({type(error).__name__})", error)
    return DatabaseUnavailableError(f"PostgreSQL unavailable: {type(error).__name__}: {error}", retry_after=1)


def _condition(error: BaseException) -> str:
    """asyncpg's class name as PostgreSQL's condition name: CheckViolationError -> check_violation."""
    name = type(error).__name__.removesuffix("Error")
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_") or "error"


def _permanent(message: str, cause: BaseException) -> PermanentError:
    # PostgreSQL's message only: asyncpg's str() adds DETAIL, which for a refused row is "Failing
    # row contains (...)": a client's data, not something to write to logs.
    text = cause.args[0] if isinstance(cause, asyncpg.PostgresError) and cause.args else str(cause)
    return PermanentError(message, detail=f"{type(cause).__name__}: {text}")


# Runs inside a batch's transaction after its COPYs (e.g. rollup upserts), so what it writes
# commits or rolls back with the rows it derives from. It gets the rows grouped by request, so a
# failure can be kept to the request that caused it. The flag says the rows went through the
# idempotent path: some may have been there already (replay, retry) and were skipped.
BatchHook = Callable[[asyncpg.Connection, list[Tables], bool], Awaitable[None]]


class Writer:
    """Writes rows in one transaction, retrying transient failures with jittered backoff."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        telemetry: Telemetry,
        *,
        acquire_timeout: float = 5.0,
        copy_timeout: float = 60.0,
        hooks: Sequence[BatchHook] = (),
        retry_delays: Sequence[float] = (0.1, 0.5, 1.5),
        on_unavailable: Callable[[OtelpgError], None] | None = None,
    ) -> None:
        self._pool = pool
        self._hooks = tuple(hooks)
        self._telemetry = telemetry
        self._acquire_timeout = acquire_timeout
        self._copy_timeout = copy_timeout
        self._retry_delays = tuple(retry_delays)
        self._on_unavailable = on_unavailable
        self._resources = _Upserted()
        self._scopes = _Upserted()
        self.last_success = 0.0  # time.monotonic() of the last commit

    async def write(self, batch: Batch) -> None:
        await self.write_groups(batch.groups(), batch.resources(), batch.nrows)

    async def write_rows(
        self, tables: Tables, resources: dict[int, tuple], nrows: int, *, idempotent: bool = False
    ) -> None:
        await self.write_groups([tables], resources, nrows, idempotent=idempotent)

    async def write_groups(
        self, groups: list[Tables], resources: dict[int, tuple], nrows: int, *, idempotent: bool = False
    ) -> None:
        """Commit the rows (grouped by request) or raise RetryableError / PermanentError.
        `idempotent` (spool replay): rows whose key already exists are skipped, so replaying a
        segment twice adds nothing."""
        plan = copy_plan(groups)
        new_resources = self._resources.new(resources.values())
        # Scopes travel with the rows (a table of their own in `tables`): upserted, not COPied.
        new_scopes: list[tuple] = []
        for table, rows in plan:
            if table == OTEL_SCOPES:
                assert not isinstance(rows, CopyRows)
                new_scopes = self._scopes.new(rows)
        plan = [(t, rows) for t, rows in plan if t != OTEL_SCOPES]
        for attempt, delay in enumerate((*self._retry_delays, None)):
            started = time.perf_counter()
            try:
                # A retry may follow a COMMIT whose answer was lost: the rows keep their ids, and the
                # idempotent path skips those already there, so a retried batch adds no duplicates.
                await self._transaction(plan, groups, new_resources, new_scopes, idempotent or attempt > 0)
            except Exception as e:
                error = classify(e)
                if isinstance(error, RetryableError) and delay is not None:
                    self._telemetry.retries.inc()
                    log.info("write failed (%s), retry %d in %.1fs", error, attempt + 1, delay)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter: don't retry in lockstep
                    continue
                if isinstance(error, PermanentError):  # narrowed down, counted and reported by the caller
                    log.debug("batch of %d rows refused: %s", nrows, error.detail)
                else:
                    for table, rows in plan:
                        self._telemetry.send_failed_rows.labels(table, "retryable").inc(len(rows))
                    log.warning("batch of %d rows not written (retryable): %s", nrows, error)
                if isinstance(error, RetryableError) and self._on_unavailable is not None:
                    self._on_unavailable(error)
                raise error from None
            break
        self.last_success = time.monotonic()
        self._telemetry.copy_duration.observe(time.perf_counter() - started)
        self._telemetry.batch_rows.observe(nrows)
        for table, rows in plan:
            self._telemetry.sent_rows.labels(table).inc(len(rows))
        self._resources.add(new_resources)
        self._scopes.add(new_scopes)

    async def _transaction(
        self,
        plan: list[tuple[str, list[tuple] | CopyRows]],
        groups: list[Tables],
        resources: list[tuple],
        scopes: list[tuple],
        idempotent: bool,
    ) -> None:
        async with self._pool.acquire(timeout=self._acquire_timeout) as conn, conn.transaction():
            if resources:
                await conn.execute(_UPSERT_RESOURCES, *map(list, zip(*resources, strict=True)))
            if scopes:
                await conn.execute(_UPSERT_SCOPES, *map(list, zip(*scopes, strict=True)))
            for table, rows in plan:
                if idempotent:
                    await self._copy_skipping_existing(conn, table, rows)
                else:
                    await self._copy(conn, table, rows)
            for hook in self._hooks:
                await hook(conn, groups, idempotent)

    async def _copy(self, conn: asyncpg.Connection, table: str, rows: list[tuple] | CopyRows, into: str = "") -> None:
        """COPY rows into `into` (default: their table): tuples through asyncpg's encoder, encoded
        rows sent as they are, in one binary COPY stream."""
        if isinstance(rows, CopyRows):
            await conn.copy_to_table(
                into or table,
                source=_copy_stream(rows.data),
                columns=_COLUMNS[table],
                format="binary",
                timeout=self._copy_timeout,
            )
        else:
            await conn.copy_records_to_table(
                into or table, records=rows, columns=_COLUMNS[table], timeout=self._copy_timeout
            )

    async def _copy_skipping_existing(self, conn: asyncpg.Connection, table: str, rows: list[tuple] | CopyRows) -> None:
        # COPY has no ON CONFLICT: stage in a temporary table, then insert what isn't there yet.
        stage = f"otelpg_stage_{table}"
        columns = ", ".join(_COLUMNS[table])
        await conn.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        await self._copy(conn, table, rows, into=stage)
        if table == USER_ANALYTICS:  # no key to conflict on: skip the rows of a source row already there
            await conn.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} s WHERE NOT EXISTS "
                f"(SELECT 1 FROM {table} u WHERE u.user_id = s.user_id AND u.timestamp = s.timestamp AND u.id = s.id)"
            )
        else:
            await conn.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT DO NOTHING")
