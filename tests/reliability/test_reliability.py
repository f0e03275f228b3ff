"""The reliability scenarios' quick form (each ≤ ~20 s): every verdict must pass.

A failing scenario's assertion message is its whole report: what was acknowledged, stored, lost
and duplicated, its own figures, and otelpg's log lines about the failure.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import PostgresServer, Suite
from tests.reliability.scenarios import SCENARIOS, run_scenario

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    root = Path(tempfile.mkdtemp(prefix="otelpg-reliability-"))
    server = PostgresServer()
    try:
        yield Suite(server.start(), root, quick=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario(suite: Suite, name: str) -> None:
    result = await run_scenario(name, suite)
    print(result.report())
    assert result.passed, result.report()
