"""Fixtures of the integration tests: a migrated schema and a pool on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from exporters.postgres.migrate import migrate


@pytest.fixture
async def pool(db_dsn: str, db: asyncpg.Connection) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's fresh schema, migrated to the latest version."""
    await migrate(db)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=6)
    try:
        yield pool
    finally:
        await pool.close()
