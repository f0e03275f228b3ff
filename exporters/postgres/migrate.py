"""Versioned SQL migrations: `migrations/NNNN_name.sql`, applied in order, one transaction each.

They are read from `OTELPG_MIGRATIONS_DIR` if set, else from the checkout's `migrations/` (a
source tree or an editable install), else from the installed package (`exporters/postgres/migrations`,
where a wheel carries them: see setup.py).

Applied versions are recorded with a checksum in `schema_migrations`; an applied file that
changed is an error. A session advisory lock serialises sidecars starting at once.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from sidecar.pipeline.errors import StartupError


def _migrations_dir() -> Traversable:
    if os.environ.get("OTELPG_MIGRATIONS_DIR"):
        return Path(os.environ["OTELPG_MIGRATIONS_DIR"])
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if checkout.is_dir():
        return checkout
    return resources.files("exporters.postgres") / "migrations"


MIGRATIONS_DIR = _migrations_dir()
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Advisory lock keys are per schema, so databases shared by several schemas don't serialise.
_LOCK_SQL = "SELECT pg_advisory_lock(hashtext('otelpg.migrate.' || current_schema()))"
_UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtext('otelpg.migrate.' || current_schema()))"


class MigrationError(StartupError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    files = sorted(directory.iterdir(), key=lambda f: f.name) if directory.is_dir() else []
    for path in files:
        if not path.name.endswith(".sql"):
            continue
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(int(m[1]), m[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    if not found:
        raise MigrationError(f"no migrations found in {directory}")
    return found


def schema_digest(migrations: list[Migration] | None = None) -> str:
    """One hash of every migration this otelpg ships: the schema it migrates a database to."""
    migrations = discover() if migrations is None else migrations
    return hashlib.sha256("".join(f"{m.version}:{m.checksum}\n" for m in migrations).encode()).hexdigest()[:32]


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    return {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}


def _check(applied: dict[int, str], migrations: list[Migration]) -> list[Migration]:
    """The pending migrations, after verifying the applied ones are unchanged."""
    known = {m.version: m for m in migrations}
    for version, checksum in sorted(applied.items()):
        m = known.get(version)
        if m is None:
            raise MigrationError(f"database has migration {version:04d}, unknown to this otelpg (newer version?)")
        if m.checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{m.name}.sql changed after it was applied "
                f"(checksum {checksum[:12]} in the database, {m.checksum[:12]} on disk)"
            )
    return [m for m in migrations if m.version not in applied]


async def pending(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    migrations = discover() if migrations is None else migrations
    return _check(await _applied(conn), migrations)


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply pending migrations; return those applied by this call."""
    migrations = discover() if migrations is None else migrations
    await conn.execute(_LOCK_SQL)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version     INTEGER PRIMARY KEY,
                   name        TEXT NOT NULL,
                   checksum    TEXT NOT NULL,
                   applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
               )"""
        )
        todo = _check(await _applied(conn), migrations)
        for m in todo:
            try:
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
            except asyncpg.PostgresError as e:
                raise MigrationError(f"migration {m.version:04d}_{m.name}.sql failed: {e}") from None
        return todo
    finally:
        await conn.execute(_UNLOCK_SQL)
