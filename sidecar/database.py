"""The connection pool: created once, failing fast and clearly when PostgreSQL is unreachable."""

from __future__ import annotations

import asyncio

import asyncpg

from sidecar.config import DatabaseConfig, redact_dsn
from sidecar.errors import StartupError


def _scrub(message: str, dsn: str) -> str:
    """Driver messages may echo the DSN: never let its password through."""
    redacted = redact_dsn(dsn) or ""
    return message.replace(dsn, redacted) if dsn else message


async def create_pool(dsn: str, config: DatabaseConfig, *, min_size: int | None = None) -> asyncpg.Pool:
    """A pool whose first connections are open and answer `SELECT 1`, or StartupError (exit 1)."""
    timeout = config.connect_timeout
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                dsn,
                min_size=config.pool_min_size if min_size is None else min_size,
                max_size=config.pool_max_size,
                timeout=timeout,
                command_timeout=None,
                server_settings={"application_name": "otelpg"},
            ),
            timeout=timeout,
        )
        await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout=timeout)
    except TimeoutError:
        raise StartupError(f"can't reach PostgreSQL at {redact_dsn(dsn)}: no answer within {timeout:g}s") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
        raise StartupError(f"can't reach PostgreSQL at {redact_dsn(dsn)}: {_scrub(str(e), dsn)}") from None
    return pool
