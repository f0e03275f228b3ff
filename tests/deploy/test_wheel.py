"""A regular (wheel) install carries what `otelpg` needs at run time: the SQL migrations included.

The wheel is built from this checkout and installed with pip into a fresh virtualenv, whose
`otelpg` then migrates and serves a real PostgreSQL from a directory with no checkout around it.
Its dependencies come from this environment (no network): a `.pth` line adds this environment's
site-packages as a plain path, so the editable install of the checkout there is not picked up."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import asyncpg
import pytest

from tests.otelpg_process import OtelpgProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=600,
    )
    (found,) = out.glob("otelpg-*.whl")
    return found


def test_the_wheel_carries_the_migrations(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("exporters/postgres/migrations/"))
    assert shipped == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))


def test_an_installed_otelpg_finds_its_migrations_without_a_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import exporters.postgres.migrate as m; print(m.MIGRATIONS_DIR); print(' '.join(x.name for x in m.discover()))"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    # -S keeps this environment's editable install (the checkout) out; its dependencies are added back.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env["PYTHONPATH"] = ":".join([str(site), *deps])
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    where, names = result.stdout.splitlines()
    assert where.startswith(str(site)), where  # the package data, not the checkout
    assert names.split() == [p.stem.split("_", 1)[1] for p in sorted((ROOT / "migrations").glob("*.sql"))]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel pip-installed: its bin directory."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "dependencies.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    return venv / "bin"


def test_the_installed_otelpg_migrates_and_serves_a_real_database(installed: Path, db_dsn: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OTELPG_DATABASE_URL": db_dsn, "OTELPG_DATA_DIR": str(tmp_path / "data")}
    where = subprocess.run(
        [str(installed / "python"), "-c", "import exporters.postgres.migrate as m; print(m.MIGRATIONS_DIR)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(installed.parent)), where.stdout + where.stderr  # the wheel's, not ours
    migrated = subprocess.run(
        [str(installed / "otelpg"), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("applied: 0001_"), migrated.stdout

    proc = OtelpgProcess(tmp_path / "data", {"OTELPG_DATABASE_URL": db_dsn}, command=(str(installed / "otelpg"),))
    proc.start()
    try:
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "wheel"}}]}
        records = [{"body": {"stringValue": "from the wheel"}}]
        log = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": records}]}]}
        request = urllib.request.Request(
            proc.url("http", "/v1/logs"), data=json.dumps(log).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    finally:
        assert proc.stop() == 0, proc.log
    rows = asyncio.run(_fetch(db_dsn, "SELECT service_name, payload FROM system_events WHERE event_type = 'log'"))
    assert [(r["service_name"], json.loads(r["payload"])["body"]) for r in rows] == [("wheel", "from the wheel")]


async def _fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()
