"""Scaling check: does ingest slow down, and do Grafana-style queries stay fast, as the tables fill up?

For each size (default 1M and 20M rows already in the tables) the tables of a schema are filled
to that size with server-side `INSERT ... SELECT generate_series` (fast, no otelpg involved),
spread over the last 30 days as a 30-day retention leaves them: performance_metrics 50%,
system_events 35%, performance_metrics_1m 10%, performance_metrics_1h 5%. Then the real pipeline
is measured: `otelpg run` (rollups, user_analytics, agent_states on) fed OTLP/HTTP protobuf by
load-generator processes, closed loop; acknowledged items/s per signal. Each size has its own
schema and its own `otelpg run`, and the runs alternate between sizes, so that the noise of a
shared machine falls on both alike; the median of --repeat runs counts. Grafana-style queries
(literal time bounds, as $__timeFilter expands them) are timed after the prefill, median of 5.
The ingest rate at the largest size must not fall by more than 20% from the smallest.

    /work/venv/bin/python tests/bench/bench_scaling.py [--sizes 1000000,20000000] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import yaml  # noqa: E402

from tests.bench import _pg  # noqa: E402
from tests.bench._loadgen import ClientSpec, client_main  # noqa: E402
from tests.bench._otlp_gen import ITEM_NAMES, build_templates  # noqa: E402

DAYS = 30
SERIES_METRICS, SERIES_SERVICES, SERIES_ROUTES = 40, 8, 8
SERIES = SERIES_METRICS * SERIES_SERVICES * SERIES_ROUTES
SHARES = {
    "performance_metrics": 0.50,
    "system_events": 0.35,
    "performance_metrics_1m": 0.10,
    "performance_metrics_1h": 0.05,
}
CHUNK = 500_000
MAX_DROP = 0.20

# ---------------------------------------------------------------------------------------- prefill
# Raw tables: $1 first row number, $2 last, $3 first row number of this fill, $4 rows this fill adds,
# $5 window start, $6 window end: each fill spreads its rows evenly over the window (so the tables
# grow denser everywhere, today's partition included), in time order as they would arrive.

_FILL = {
    "performance_metrics": """
INSERT INTO performance_metrics (id, metric_name, value, unit, tags, timestamp, service_name, metric_type,
                                 temporality, is_monotonic, start_timestamp)
SELECT gen_random_uuid(), 'bench.metric.' || (g % {m}), (g % 1000) / 10.0, 's',
       jsonb_build_object('http.route', '/api/r' || (g / {m} % {r}), 'http.request.method', 'GET',
                          'http.response.status_code', 200),
       $5::timestamptz + ($6::timestamptz - $5::timestamptz) * ((g - $3)::float8 / $4),
       'svc-' || (g / ({m} * {r}) % {s}), 'gauge', NULL, NULL, NULL
FROM generate_series($1::bigint, $2::bigint) g
""",
    "system_events": """
INSERT INTO system_events (id, event_type, source, severity, payload, timestamp, metadata, service_name,
                           trace_id, span_id, name, duration_ms)
SELECT gen_random_uuid(), CASE WHEN g % 10 = 0 THEN 'log' ELSE 'span' END, 'svc-' || (g % {s}),
       CASE WHEN g % 50 = 0 THEN 'error' ELSE 'info' END,
       jsonb_build_object('kind', 'SPAN_KIND_SERVER', 'status', jsonb_build_object('code', 'STATUS_CODE_UNSET'),
                          'attributes', jsonb_build_object('http.route', '/api/r' || (g % {r}),
                                                           'http.response.status_code', 200,
                                                           'url.path', '/api/r' || (g % 977))),
       $5::timestamptz + ($6::timestamptz - $5::timestamptz) * ((g - $3)::float8 / $4),
       '{{"scope": {{"name": "bench"}}}}', 'svc-' || (g % {s}),
       md5(g::text)::uuid, substr(md5((g + 1)::text), 1, 16), 'GET /api/r' || (g % {r}), (g % 500) / 3.0
FROM generate_series($1::bigint, $2::bigint) g
""",
}
# Rollups: one row per (series, bucket): series = g % SERIES, bucket number j = g / SERIES placed at
# (j * $4 mod $3) / $3 of the window ($3 buckets per series at full size, $4 coprime with it), so the
# rows of every fill spread over the window and never collide.
_FILL_ROLLUP = """
INSERT INTO {table} (bucket, metric_name, service_name, series_hash, tags, metric_type, unit, count, sum, min,
                     max, last, last_timestamp)
SELECT b, 'bench.metric.' || (g % {m}), 'svc-' || (g / ({m} * {r}) % {s}), g % {series},
       jsonb_build_object('http.route', '/api/r' || (g / {m} % {r})), 'gauge', 's', 4, 200.0, 1.0, 99.0, 50.0, b
FROM generate_series($1::bigint, $2::bigint) g,
     LATERAL (SELECT date_trunc('{unit}', $5::timestamptz + ($6::timestamptz - $5::timestamptz)
                                           * (((g / {series}) * $4 % $3)::float8 / $3))) AS t(b)
"""


def fill_sql(table: str) -> str:
    fmt = {"m": SERIES_METRICS, "r": SERIES_ROUTES, "s": SERIES_SERVICES, "series": SERIES}
    if table in _FILL:
        return _FILL[table].format(**fmt)
    unit = "minute" if table.endswith("_1m") else "hour"
    return _FILL_ROLLUP.format(table=table, unit=unit, **fmt)


async def table_rows(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in SHARES}


async def fill(dsn: str, size: int, full: int, window: tuple[dt.datetime, dt.datetime]) -> float:
    # `full`: the size the rollups' buckets are spaced for (so later fills of the same schema fit).
    """Grow the tables to `size` rows in total (shares as SHARES); return seconds taken."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        have = await table_rows(conn)
        jobs = []
        for table, share in SHARES.items():
            target, full_rows = int(size * share), int(full * share)
            first = have[table]
            if table in _FILL:
                extra = (first, max(1, target - first))
            else:
                buckets = max(1, math.ceil(full_rows / SERIES))
                step = next(p for p in (7919, 7927, 7933) if math.gcd(p, buckets) == 1)
                extra = (buckets, step)
            while first < target:
                last = min(target, first + CHUNK) - 1
                jobs.append((table, first, last, extra))
                first = last + 1
    finally:
        await conn.close()

    async def worker(queue: asyncio.Queue) -> None:
        c = await asyncpg.connect(dsn)
        try:
            await c.execute("SET synchronous_commit = off")  # the prefill is not what is measured
            while not queue.empty():
                table, first, last, extra = queue.get_nowait()
                await c.execute(fill_sql(table), first, last, *extra, *window)
                done[0] += last - first + 1
                print(f"\r  filled {done[0]:,} rows in {time.monotonic() - started:.0f}s", end="", flush=True)
        finally:
            await c.close()

    done = [0]
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    await asyncio.gather(*(worker(queue) for _ in range(2)))
    conn = await asyncpg.connect(dsn)
    try:
        print(f"\r  filled {done[0]:,} rows in {time.monotonic() - started:.0f}s; VACUUM ANALYZE...", flush=True)
        for table in SHARES:
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------- ingest


def start_otelpg(dsn: str, workdir: Path, derived: str):
    from tests.otelpg_process import OtelpgProcess

    config = {
        "log_level": "info",
        "database": {"pool_min_size": 2, "pool_max_size": 8},
        "rollups": {"enabled": derived == "on"},
        "partitions": {"days_behind": DAYS + 1},
    }  # the prefill's days have partitions
    if derived == "off":  # to measure what the derived tables cost
        config["user_analytics"] = {"enabled": False}
        config["agent_states"] = {"enabled": False}
    cfg = workdir / "otelpg-scaling.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {
        "OTELPG_DATABASE_URL": dsn,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = OtelpgProcess(workdir / "data", env, ("--config", str(cfg)))
    proc.start()
    return proc


_phase = [0]


def measure_ingest(
    target: str, signal: str, templates, duration: float, warmup: float, concurrency: int, clients: int
) -> float:
    """Acknowledged items/s over [warmup, warmup + duration], closed loop."""
    _phase[0] += 1
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    for c in range(clients):
        spec = ClientSpec(
            transport="http",
            target=target,
            signal=signal,
            templates=templates,
            client=c,
            clients=clients,
            id_base=_phase[0] * 50_000_000,
            concurrency=concurrency,
            pool=1500,
        )
        parent, child = ctx.Pipe()
        p = ctx.Process(target=client_main, args=(spec, child), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(parent)
    for pipe in pipes:
        if not pipe.poll(300):
            raise RuntimeError("load generator did not get ready")
        pipe.recv()
    start = time.monotonic() + 0.3
    w0, w1 = start + warmup, start + warmup + duration
    for pipe in pipes:
        pipe.send((start, w1))
    items = failed = 0
    for pipe, p in zip(pipes, procs, strict=True):
        result = pipe.recv()
        p.join()
        for t, n, ok in zip(result.done, result.items, result.ok, strict=True):
            if w0 <= t <= w1:
                if ok:
                    items += n
                else:
                    failed += 1
    if failed:
        print(f"    ({failed} requests failed)")
    return items / duration


# ---------------------------------------------------------------------------------------- queries


def grafana_queries(now: dt.datetime) -> dict[str, str]:
    """Dashboard panels as Grafana sends them once $__timeFilter / $__timeGroup are expanded."""

    def between(delta: dt.timedelta) -> str:
        return f"BETWEEN '{(now - delta).isoformat()}' AND '{now.isoformat()}'"

    return {
        "raw metric, 6h, avg per minute by service": f"""
            SELECT floor(extract(epoch FROM timestamp) / 60) * 60 AS "time", service_name, avg(value)
            FROM performance_metrics
            WHERE metric_name = 'bench.metric.7' AND timestamp {between(dt.timedelta(hours=6))}
            GROUP BY 1, 2 ORDER BY 1""",
        "1h rollup, 30 days, hourly avg by service": f"""
            SELECT bucket AS "time", service_name, sum(sum) / sum(count) AS avg, max(max)
            FROM performance_metrics_1h
            WHERE metric_name = 'bench.metric.7' AND bucket {between(dt.timedelta(days=30))}
            GROUP BY 1, 2 ORDER BY 1""",
        "1m rollup, 24h, 5-minute max": f"""
            SELECT floor(extract(epoch FROM bucket) / 300) * 300 AS "time", max(max)
            FROM performance_metrics_1m
            WHERE metric_name = 'bench.metric.7' AND bucket {between(dt.timedelta(hours=24))}
            GROUP BY 1 ORDER BY 1""",
        "spans, 24h, errors per 5 minutes": f"""
            SELECT floor(extract(epoch FROM timestamp) / 300) * 300 AS "time", count(*) AS spans,
                   count(*) FILTER (WHERE severity = 'error') AS errors
            FROM system_events
            WHERE event_type = 'span' AND timestamp {between(dt.timedelta(hours=24))}
            GROUP BY 1 ORDER BY 1""",
        "variable: metric names": "SELECT DISTINCT metric_name FROM otelpg_metric_names ORDER BY 1",
    }


async def time_queries(dsn: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for name, sql in grafana_queries(dt.datetime.now(dt.UTC)).items():
            await conn.fetch(sql)  # warm
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                await conn.fetch(sql)
                runs.append(time.perf_counter() - t0)
            out[name] = statistics.median(runs) * 1e3
        return out
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", help="PostgreSQL DSN (default: an embedded server in a temp dir)")
    p.add_argument("--sizes", default="1000000,20000000", help="rows already in the tables, ascending")
    p.add_argument("--signals", default="metrics,traces")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=5, help="runs per signal and size, interleaved; the median counts")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument(
        "--derived",
        choices=("on", "no-rollups", "off"),
        default="on",
        help="rollups, user_analytics and agent_states: all on, rollups off, or all off",
    )
    p.add_argument("--keep", action="store_true", help="keep the schemas")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    signals = args.signals.split(",")

    server = _pg.Server(args.database_url)
    base_dsn = server.start()
    workdir = Path(tempfile.mkdtemp(prefix="otelpg-scaling-"))
    now = dt.datetime.now(dt.UTC)
    window = (now - dt.timedelta(days=DAYS), now)
    templates = {s: build_templates(s, 4, {"traces": 500, "metrics": 1000, "logs": 500}[s]) for s in signals}
    schemas: dict[int, str] = {}
    procs: dict[int, object] = {}
    rates: dict[tuple[int, str], list[float]] = {(size, s): [] for size in sizes for s in signals}
    latencies: dict[int, dict[str, float]] = {}
    try:
        print(
            f"PostgreSQL {asyncio.run(_server_version(base_dsn))}; {os.cpu_count()} CPUs; "
            f"derived tables {args.derived}; "
            f"{args.duration:g}s per run after {args.warmup:g}s of warm-up; {args.repeat} runs per size and "
            "signal, sizes interleaved (the machine is shared: alternating spreads its noise over both)"
        )
        for size in sizes:
            print(f"\n== schema with {size:,} rows already in the tables")
            schemas[size] = dsn = asyncio.run(_pg.fresh_schema(base_dsn, "scaling", migrated=True))
            asyncio.run(_maintain(dsn, now))  # partitions for the window, as 30 days of running leave them
            fill_s = asyncio.run(fill(dsn, size, size, window))
            counts = asyncio.run(_counts(dsn))
            print(f"  prefill took {fill_s:.0f}s; " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
            latencies[size] = asyncio.run(time_queries(dsn))
            for name, ms in latencies[size].items():
                print(f"  query {name}: {ms:.1f} ms (median of 5)")
        for size in sizes:
            (workdir / str(size)).mkdir()
            procs[size] = start_otelpg(schemas[size], workdir / str(size), args.derived)
        print(
            "\n== ingest through otelpg run (OTLP/HTTP protobuf, closed loop, "
            f"concurrency {args.concurrency}), acknowledged items/s"
        )
        for r in range(args.repeat):
            for signal in signals:
                for size in sizes:
                    rate = measure_ingest(
                        procs[size].url("http"),
                        signal,
                        templates[signal],
                        args.duration,
                        args.warmup,
                        args.concurrency,
                        args.clients,
                    )
                    rates[(size, signal)].append(rate)
                    print(
                        f"  run {r + 1} {signal:<8} {size:>11,} rows: {rate:>9,.0f} {ITEM_NAMES[signal]}/s "
                        f"(load avg {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
    finally:
        for proc in procs.values():
            proc.stop()
        if not args.keep:
            for dsn in schemas.values():
                asyncio.run(_pg.drop_schema(base_dsn, dsn))
            shutil.rmtree(workdir, ignore_errors=True)
        server.stop()

    first, last = sizes[0], sizes[-1]
    print(f"\n== {first:,} vs {last:,} rows already in the tables")
    ok = True
    for signal in signals:
        a, b = statistics.median(rates[(first, signal)]), statistics.median(rates[(last, signal)])
        change = b / a - 1
        passed = change >= -MAX_DROP
        ok &= passed
        print(
            f"  ingest {signal}: median {a:,.0f} -> {b:,.0f} {ITEM_NAMES[signal]}/s ({change:+.1%}; best "
            f"{max(rates[(first, signal)]):,.0f} -> {max(rates[(last, signal)]):,.0f}) "
            f"{'PASS' if passed else 'FAIL'} (must not fall by more than {MAX_DROP:.0%})"
        )
    for name in latencies[first]:
        print(f"  query {name}: {latencies[first][name]:.1f} -> {latencies[last][name]:.1f} ms")
    return 0 if ok else 1


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


async def _maintain(dsn: str, now: dt.datetime) -> None:
    from exporters.postgres.maintenance import maintain

    conn = await asyncpg.connect(dsn)
    try:
        await maintain(conn, days_behind=DAYS + 1, days_ahead=3, retention_days={}, now=now)
    finally:
        await conn.close()


async def _counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await table_rows(conn)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
