"""The database as a component: the pool (or an embedded PostgreSQL), the schema, and whether
PostgreSQL answers now. The pool is created once, failing fast and clearly when PostgreSQL is
unreachable.

A start while the database is away is allowed only where it can be trusted: `known_database`
records, in the data dir, which database (its DSN without the password, hashed) this otelpg
version last migrated. A restart (OOM kill, node drain) during an outage of that same database
then starts with the spool taking the data, instead of exiting and crash-looping until PostgreSQL
returns; a first start, another database, a bad DSN or a refused login still exit at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Protocol

import asyncpg

from exporters.postgres.config import DatabaseConfig, PartitionsConfig, redact_dsn
from exporters.postgres.embedded import EmbeddedPostgres
from exporters.postgres.maintenance import ensure_partitions
from exporters.postgres.migrate import migrate, schema_digest
from sidecar import __version__
from sidecar.pipeline.component import HEALTHY, Health
from sidecar.pipeline.errors import StartupError
from sidecar.pipeline.telemetry import Telemetry

log = logging.getLogger("otelpg")

MARKER_FILE = "database.json"


class DatabaseUnreachableError(StartupError):
    """No connection at all (refused, timed out, starting up...), as opposed to a refused login,
    an unknown database or a malformed DSN."""


# Failures of reaching the server, not of being let in: the server may just be down.
_UNREACHABLE = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
)


def _scrub(message: str, dsn: str) -> str:
    """Driver messages may echo the DSN: never let its password through."""
    redacted = redact_dsn(dsn) or ""
    return message.replace(dsn, redacted) if dsn else message


async def create_pool(dsn: str, config: DatabaseConfig, *, min_size: int | None = None) -> asyncpg.Pool:
    """A pool whose first connections are open and answer `SELECT 1`, or StartupError (exit 1):
    DatabaseUnreachableError when the server can't be reached at all."""
    timeout = config.connect_timeout
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(dsn, **_pool_options(config, config.pool_min_size if min_size is None else min_size)),
            timeout=timeout,
        )
        await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout=timeout)
    except TimeoutError:
        raise DatabaseUnreachableError(
            f"can't reach PostgreSQL at {redact_dsn(dsn)}: no answer within {timeout:g}s"
        ) from None
    except _UNREACHABLE as e:
        raise DatabaseUnreachableError(f"can't reach PostgreSQL at {redact_dsn(dsn)}: {_scrub(str(e), dsn)}") from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
        raise StartupError(f"can't reach PostgreSQL at {redact_dsn(dsn)}: {_scrub(str(e), dsn)}") from None
    return pool


async def create_idle_pool(dsn: str, config: DatabaseConfig) -> asyncpg.Pool:
    """A pool that opens no connection until one is needed (for a start during an outage)."""
    return await asyncpg.create_pool(dsn, **_pool_options(config, 0))


def _pool_options(config: DatabaseConfig, min_size: int) -> dict[str, object]:
    return {
        "min_size": min_size,
        "max_size": config.pool_max_size,
        "timeout": config.connect_timeout,
        "command_timeout": None,
        "server_settings": {"application_name": "otelpg"},
    }


def _fingerprint(dsn: str, schema: str) -> dict[str, str]:
    """What identifies 'this database, migrated by this otelpg': no password, only a hash."""
    database = hashlib.sha256((redact_dsn(dsn) or "").encode()).hexdigest()[:32]
    return {"database": database, "schema": schema, "otelpg": __version__}


def remember_database(data_dir: str | Path, dsn: str, schema: str) -> None:
    """Record, after a successful migration, that this database is at `schema` for this version."""
    path = Path(data_dir) / MARKER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_fingerprint(dsn, schema)))
    os.replace(tmp, path)


def known_database(data_dir: str | Path, dsn: str, schema: str) -> bool:
    """Whether this otelpg version already migrated this database to `schema` (see the module doc)."""
    try:
        return json.loads((Path(data_dir) / MARKER_FILE).read_text()) == _fingerprint(dsn, schema)
    except (OSError, ValueError):
        return False


async def open_database(config: DatabaseConfig, data_dir: str) -> tuple[asyncpg.Pool, EmbeddedPostgres | None]:
    """The configured database, else an embedded one started in data_dir."""
    embedded = None
    dsn = config.url
    if dsn is None:
        embedded = EmbeddedPostgres(data_dir)
        log.info("no database URL configured: starting the embedded PostgreSQL in %s", embedded.pgdata)
        dsn = await asyncio.to_thread(embedded.start)
        log.info("embedded PostgreSQL is up (development use; set OTELPG_DATABASE_URL for production)")
    else:
        log.info("using PostgreSQL at %s", redact_dsn(dsn))
    try:
        pool = await create_pool(dsn, config)
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    return pool, embedded


async def prepare_schema(
    pool: asyncpg.Pool, config: DatabaseConfig, partitions: PartitionsConfig, data_dir: str
) -> list[str]:
    """Apply pending migrations and create the partitions around today; remember, in the data dir,
    that this database is migrated (what allows a later start while it is away)."""
    async with pool.acquire() as conn:
        applied = await migrate(conn)
        await ensure_partitions(conn, partitions.days_behind, partitions.days_ahead)
    if config.url is not None:
        try:
            await asyncio.to_thread(remember_database, data_dir, config.url, schema_digest())
        except OSError as e:  # e.g. a read-only data dir for `otelpg migrate`: only a later outage start is lost
            log.warning("can't record the migrated database in %s: %s", data_dir, e)
    return [f"{m.version:04d}_{m.name}" for m in applied]


class DatabaseObserver(Protocol):
    """What wants to know when PostgreSQL goes away or comes back (events, spool replay)."""

    def database_lost(self, error: str) -> None: ...

    def database_back(self) -> None: ...


class Database:
    """Opens the pool (or starts the embedded PostgreSQL) and applies the schema at start; closes
    them at stop. `ok` says whether PostgreSQL answers now (kept current by the writer's failures
    and `DatabaseMonitor`); `schema_ready` is set once the schema is applied.

    `may_start_without`: a restart during an outage of the database this otelpg version already
    migrated may serve (the spool taking the data) and migrate-check when it is back; anything
    else (a first start, another database, no spool) still fails fast."""

    name = "database"

    def __init__(
        self,
        config: DatabaseConfig,
        partitions: PartitionsConfig,
        data_dir: str,
        telemetry: Telemetry,
        *,
        may_start_without: bool,
    ) -> None:
        self._config = config
        self._partitions = partitions
        self._data_dir = data_dir
        self._telemetry = telemetry
        self._may_start_without = may_start_without
        self._pool: asyncpg.Pool | None = None
        self.embedded: EmbeddedPostgres | None = None
        self.ok = False
        self.error = ""  # why it is not ok (an exception's type name)
        self.schema_ready = asyncio.Event()
        self.observers: list[DatabaseObserver] = []

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the database component is not started"
        return self._pool

    async def start(self) -> None:
        try:
            self._pool, self.embedded = await open_database(self._config, self._data_dir)
        except DatabaseUnreachableError as e:
            self._pool = await self._start_without(e)
        else:
            await self.prepare_schema()

    async def stop(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            log.info("embedded PostgreSQL stopped")

    def health(self) -> Health:
        return HEALTHY  # /health reports the database itself, with the spool's state

    async def prepare_schema(self) -> None:
        applied = await prepare_schema(self.pool, self._config, self._partitions, self._data_dir)
        log.info("schema ready%s", f" (applied {', '.join(applied)})" if applied else "")
        self.schema_ready.set()
        self.back()

    def lost(self, error: Exception) -> None:
        """PostgreSQL failed a write or a check: requests go to the spool at once."""
        if self.ok:
            log.warning("PostgreSQL unavailable: %s", error)
            for observer in self.observers:
                observer.database_lost(str(error))
        self.ok = False
        self.error = type(error).__name__
        self._telemetry.database_up.set(0)

    def back(self) -> None:
        """PostgreSQL answers (again)."""
        if not self.ok and self.error:  # it was lost, not just starting
            log.info("PostgreSQL available again")
            for observer in self.observers:
                observer.database_back()
        self.ok = True
        self.error = ""
        self._telemetry.database_up.set(1)

    async def _start_without(self, error: DatabaseUnreachableError) -> asyncpg.Pool:
        dsn = self._config.url
        assert dsn is not None
        known = await asyncio.to_thread(known_database, self._data_dir, dsn, schema_digest())
        if not (known and self._may_start_without):
            raise error
        log.warning(
            "%s; it is the database this otelpg last migrated, so otelpg starts anyway: the spool "
            "keeps what it receives until PostgreSQL is back",
            error,
        )
        self.error = type(error).__name__
        self._telemetry.database_up.set(0)
        return await create_idle_pool(dsn, self._config)
