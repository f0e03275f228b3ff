"""python -m tests.reliability [--quick] [--only NAME ...]: run the scenarios, print each one's
details as it finishes, then one table; exit status 1 if any verdict fails."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.harness import PostgresServer, Result, Suite
from tests.reliability.scenarios import SCENARIOS, run_scenario, table


async def _run(names: list[str], suite: Suite) -> list[Result]:
    results = []
    for name in names:
        print(f"-- {name} ...", flush=True)
        result = await run_scenario(name, suite)
        print(result.report(), flush=True)
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short form: each scenario ≤ ~20 s")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(SCENARIOS), help="run these scenarios")
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    root = Path(tempfile.mkdtemp(prefix="otelpg-reliability-"))
    server = PostgresServer()
    started = time.monotonic()
    try:
        suite = Suite(server.start(), root, quick=args.quick)
        results = asyncio.run(_run(names, suite))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{'quick' if args.quick else 'full'} run, {len(results)} scenarios, "
        f"{time.monotonic() - started:.0f}s\n{table(results)}"
    )
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
