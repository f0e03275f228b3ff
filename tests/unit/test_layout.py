"""The packages' dependencies point one way (see docs/architecture.md):

    sidecar.pipeline  <-  sidecar.receivers, exporters.postgres, exporters.prometheus  <-  the service

The core imports no component; a component imports the core and itself, never another component
nor the service (app, cli, config composition, admin, health); only the service wires them.
Checked on the source's import statements, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = "sidecar.pipeline"
COMPONENTS = ("sidecar.receivers", "exporters.postgres", "exporters.prometheus")
OURS = ("sidecar", "exporters")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The modules of ours that a source file imports (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in OURS}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _room(module: str) -> str:
    if _within(module, CORE):
        return CORE
    return next((c for c in COMPONENTS if _within(module, c)), "service")


def _allowed(importer: str, imported: str) -> bool:
    if imported == "sidecar.__version__":  # the distribution's version, from the package root
        return True
    room = _room(importer)
    if room == "service":
        return True
    if room == CORE:
        return _within(imported, CORE)
    return _within(imported, CORE) or _within(imported, room)


SOURCES = sorted(p for top in OURS for p in (ROOT / top).rglob("*.py"))


def test_every_module_is_in_a_room() -> None:
    service = sorted(_module(p) for p in SOURCES if _room(_module(p)) == "service")
    # The service is the app shell only: a new module belongs in the core or a component.
    assert service == [
        "exporters",
        "sidecar",
        "sidecar.admin",
        "sidecar.app",
        "sidecar.cli",
        "sidecar.config",
        "sidecar.health",
        "sidecar.heap",
        "sidecar.logging_setup",
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    module = _module(path)
    wrong = sorted(name for name in _imports(path) if not _allowed(module, name))
    assert not wrong, f"{module} ({_room(module)}) must not import {wrong}"


def test_the_rule_catches_a_wrong_import() -> None:
    assert not _allowed("exporters.postgres.writer", "sidecar.config.Config")
    assert not _allowed("exporters.postgres.writer", "exporters.prometheus.series.Hist")
    assert not _allowed("sidecar.receivers.otlp_http", "exporters.postgres.exporter.PostgresExporter")
    assert not _allowed("sidecar.pipeline.consumer", "sidecar.receivers.intake.export_request")
    assert _allowed("sidecar.app", "exporters.postgres.exporter.PostgresExporter")
    assert _allowed("exporters.postgres.writer", "sidecar.pipeline.errors.RetryableError")
