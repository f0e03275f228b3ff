"""PostgreSQL side of the ingest benchmark: the server, fresh schemas, and the two references
otelpg is compared with (raw binary COPY of the same rows, and a naive row-by-row INSERT loop)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import psutil

from exporters.postgres.maintenance import ensure_partitions
from exporters.postgres.migrate import migrate
from exporters.postgres.schema import COPY_TABLES


def with_search_path(dsn: str, schema: str) -> str:
    """The DSN with the schema as search_path (as tests/conftest.py does)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class Server:
    """`--database-url`, else an embedded PostgreSQL in a temporary directory (removed on stop)."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.embedded = None
        self.tmp: Path | None = None
        self.dsn = url or ""

    def start(self) -> str:
        if self.url:
            return self.url
        from exporters.postgres.embedded import EmbeddedPostgres

        self.tmp = Path(tempfile.mkdtemp(prefix="otelpg-bench-pg-"))
        self.embedded = EmbeddedPostgres(self.tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.dsn = self.embedded.start()
        return self.dsn

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def processes(self) -> list[psutil.Process]:
        """The server's processes (postmaster and backends) for CPU accounting, when on this machine."""
        if self.embedded is not None:
            pidfile = self.embedded.pgdata / "postmaster.pid"
            try:
                master = psutil.Process(int(pidfile.read_text().split()[0]))
                return [master, *master.children(recursive=True)]
            except (OSError, ValueError, psutil.Error):
                return []
        found = []
        for p in psutil.process_iter(["name"]):
            if p.info["name"] in ("postgres", "postmaster"):
                found.append(p)
        return found

    def cpu_seconds(self) -> float:
        """user+sys of the server's live processes (otelpg's pooled backends live for the whole run)."""
        total = 0.0
        for p in self.processes():
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total


async def fresh_schema(dsn: str, prefix: str, *, migrated: bool) -> str:
    """Create an empty schema (migrated like `otelpg run` does when asked); return its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    schema_dsn = with_search_path(dsn, name)
    if migrated:
        conn = await asyncpg.connect(schema_dsn)
        try:
            await migrate(conn)
            await ensure_partitions(conn, 1, 3)
        finally:
            await conn.close()
    return schema_dsn


async def drop_schema(dsn: str, schema_dsn: str) -> None:
    name = dict(parse_qsl(urlsplit(schema_dsn).query))["search_path"]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def settings(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {"server_version": await conn.fetchval("SHOW server_version")}
        for name in (
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "wal_level",
            "max_wal_size",
            "checkpoint_timeout",
            "full_page_writes",
        ):
            out[name] = await conn.fetchval(f"SHOW {name}")
        return out
    finally:
        await conn.close()


async def checkpoint(dsn: str) -> bool:
    """CHECKPOINT, so a phase doesn't pay for the WAL an earlier one wrote (pgbench does the same).
    False if not allowed (PostgreSQL 15+: superuser or pg_checkpoint)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
        return True
    except asyncpg.InsufficientPrivilegeError:
        return False
    finally:
        await conn.close()


async def table_rows(schema_dsn: str, table: str) -> int:
    conn = await asyncpg.connect(schema_dsn)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


async def raw_copy(
    schema_dsn: str,
    table: str,
    rows: list[tuple],
    batch_rows: int,
    connections: int,
    probe: Callable[[], Any] = lambda: None,
) -> tuple[float, Any, Any]:
    """Seconds to COPY `rows` in batches of `batch_rows` (one transaction each, as otelpg commits
    a batch), over `connections` connections taking batches in turn; and `probe()` called just
    before and after (while the connections' backends are alive, so their CPU can be read)."""
    columns = COPY_TABLES[table]
    batches = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
    conns = [await asyncpg.connect(schema_dsn) for _ in range(connections)]
    try:
        for c in conns:  # warm the codec/type caches outside the timing
            await c.copy_records_to_table(table, records=[], columns=columns)
        queue = iter(batches)

        async def worker(conn: asyncpg.Connection) -> None:
            for batch in queue:
                await conn.copy_records_to_table(table, records=batch, columns=columns)

        before = probe()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - t0
        return elapsed, before, probe()
    finally:
        for c in conns:
            await c.close()


async def naive_insert(schema_dsn: str, table: str, rows: list[tuple]) -> tuple[float, int]:
    """(seconds, rows timed) inserting `rows` one `INSERT ... VALUES ($1, ...)` at a time, autocommit."""
    columns = COPY_TABLES[table]
    names = ", ".join(f'"{c}"' for c in columns)
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    sql = f"INSERT INTO {table} ({names}) VALUES ({params})"
    conn = await asyncpg.connect(schema_dsn)
    try:
        await conn.execute(sql, *rows[0])  # prepare + warm, not timed
        t0 = time.perf_counter()
        for row in rows[1:]:
            await conn.execute(sql, *row)
        return time.perf_counter() - t0, len(rows) - 1
    finally:
        await conn.close()
