"""A regular (wheel) install carries what `otelpg` needs at run time: the SQL migrations included.

The wheel is built from this checkout, unpacked as site-packages would hold it, and imported from
a directory with no checkout around it (the installed dependencies come from this environment)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
