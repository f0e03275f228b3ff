"""The scenarios, in the order they run, and how one is run: timed, its failures caught.

Each scenario is an async function of the Suite returning a Result; `suite.quick` picks its short
form (each ≤ ~20 s) or its full form (longer outages and loads, each ≤ ~2 min).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable

from tests.reliability.durability import kill9_load, kill9_replay, outage, restart_outage, sigterm_load, spool_disk_full
from tests.reliability.harness import Result, Suite
from tests.reliability.hostile import log_injection, memory, poison, stall

Scenario = Callable[[Suite], Awaitable[Result]]

SCENARIOS: dict[str, Scenario] = {
    "outage": outage,
    "kill9_load": kill9_load,
    "kill9_replay": kill9_replay,
    "sigterm": sigterm_load,
    "spool_disk_full": spool_disk_full,
    "poison": poison,
    "memory": memory,
    "stall": stall,
    "log_injection": log_injection,
    "restart_outage": restart_outage,
}


async def run_scenario(name: str, suite: Suite) -> Result:
    """Run one scenario; an exception or overrun is a failed Result, never a crash of the suite."""
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(SCENARIOS[name](suite), suite.pick(150, 420))
    except TimeoutError:
        result = Result(name, failures=[f"did not finish within {suite.pick(150, 420):g}s"])
    except Exception as e:
        tail = str(e)[-3000:]
        result = Result(
            name, failures=[f"{type(e).__name__}: {tail}"], details=traceback.format_exc(limit=6).rstrip().splitlines()
        )
    result.seconds = time.monotonic() - started
    return result


def table(results: list[Result]) -> str:
    """One line per scenario: scenario | acked | stored | lost | duplicated | figure | verdict."""
    head = ("scenario", "acked", "stored", "lost", "duplicated", "figure", "verdict")
    rows = [head] + [
        (
            r.name,
            f"{r.acked:,}",
            f"{r.stored:,}",
            f"{r.lost:,}",
            f"{r.duplicated:,}",
            r.figure,
            f"{r.verdict} ({r.seconds:.0f}s)",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    right = {1, 2, 3, 4}
    lines = [
        " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
