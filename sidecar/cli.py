"""`otelpg` command line: run | migrate | check-config | stats | maintain. Thin: parse, then call the app.

The only place that exits the process: StartupError → its exit code (2 for bad config, 1
for everything else, e.g. an unreachable database) with one clear line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import yaml

from sidecar import __version__
from sidecar.config import Config, effective_config, load_config, nested
from sidecar.logging_setup import setup_logging
from sidecar.pipeline.errors import StartupError

log = logging.getLogger("otelpg")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otelpg",
        description="OpenTelemetry sidecar: OTLP in, PostgreSQL rows out, Prometheus aggregates on /metrics.",
    )
    parser.add_argument("--version", action="version", version=f"otelpg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", metavar="FILE", help="YAML config file (default: $OTELPG_CONFIG)")
        return p

    command(
        "run",
        "Migrate, then receive OTLP and serve until SIGTERM/SIGINT (embedded PostgreSQL when no database URL is set).",
    )
    command("migrate", "Apply pending schema migrations and exit.")
    command("check-config", "Validate the configuration and print it, secrets redacted.")
    stats = command(
        "stats",
        "Database utilization: rows, bytes, partitions, time range and share of the database per table; ingest totals.",
    )
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    maintain = command(
        "maintain",
        "Run partition maintenance once (create ahead, move rows out of the default "
        "partitions, drop past retention) and exit; for cron.",
    )
    maintain.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner where it is installed (its loop, in C, spends about a third less per socket
    event than asyncio's; OTELPG_EVENT_LOOP=asyncio opts out), else asyncio's."""
    if os.environ.get("OTELPG_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        setup_logging(config.log_level)
        if args.command == "check-config":
            print(yaml.safe_dump(nested(effective_config(config)), sort_keys=False), end="")
            return 0
        return _event_loop_runner()(_COMMANDS[args.command](config, args))
    except StartupError as e:
        print(f"otelpg: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


async def _run(config: Config, args: argparse.Namespace) -> int:
    from sidecar.app import run
    from sidecar.heap import return_large_buffers_to_os

    return_large_buffers_to_os()

    await run(config)
    return 0


async def _migrate(config: Config, args: argparse.Namespace) -> int:
    from exporters.postgres.database import open_database, prepare_schema
    from exporters.postgres.legacy import convert_legacy_rows

    pool, embedded = await open_database(config.database, config.data_dir)
    try:
        applied = await prepare_schema(pool, config.database, config.partitions, config.data_dir)
        async with pool.acquire() as conn:  # rows a schema-2 otelpg stored, into the lean tables
            converted = await convert_legacy_rows(conn)
    finally:
        await pool.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    if converted.partitions:
        print(
            f"converted {converted.rows} rows stored before schema 3 ({converted.spans} spans, "
            f"{converted.span_events} span events, {converted.logs} log records) from "
            f"{converted.partitions} partitions in {converted.seconds:.1f} s"
        )
    return 0


async def _stats(config: Config, args: argparse.Namespace) -> int:
    from exporters.postgres.database import open_database
    from exporters.postgres.stats import format_local, format_stats, local_stats, table_stats

    pool, embedded = await open_database(config.database, config.data_dir)
    try:
        async with pool.acquire() as conn:
            rows = await table_stats(conn)
    finally:
        await pool.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    local = await asyncio.to_thread(local_stats, config.data_dir)
    print(
        json.dumps(rows + local, indent=2, default=str)
        if args.json
        else f"{format_stats(rows)}\n\n{format_local(local)}"
    )
    return 0


async def _maintain(config: Config, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from exporters.postgres.database import open_database
    from exporters.postgres.migrate import pending
    from exporters.postgres.partition_maintenance import run_maintenance

    pool, embedded = await open_database(config.database, config.data_dir)
    try:
        async with pool.acquire() as conn:
            todo = await pending(conn)
            if todo:
                raise StartupError(f"schema not up to date ({len(todo)} pending migrations): run otelpg migrate first")
            report = await run_maintenance(conn, config.partitions, config.retention)
    finally:
        await pool.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 0


_COMMANDS = {"run": _run, "migrate": _migrate, "stats": _stats, "maintain": _maintain}


if __name__ == "__main__":
    sys.exit(main())
