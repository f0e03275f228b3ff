"""The connection pool: created once, failing fast and clearly when PostgreSQL is unreachable.

A start while the database is away is allowed only where it can be trusted: `known_database`
records, in the data dir, which database (its DSN without the password, hashed) this otelpg
version last migrated. A restart (OOM kill, node drain) during an outage of that same database
then starts with the spool taking the data, instead of exiting and crash-looping until PostgreSQL
returns; a first start, another database, a bad DSN or a refused login still exit at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import asyncpg

from exporters.postgres.config import DatabaseConfig, redact_dsn
from sidecar import __version__
from sidecar.pipeline.errors import StartupError

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
