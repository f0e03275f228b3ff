"""Does scraping a large /metrics stall ingestion? Ingest ack latency with and without scrapes.

Starts PostgreSQL (--database-url, else an embedded one in a temporary directory) and a real
`otelpg run` whose caps hold the series, fills `--series` series (cumulative counters and 10-bucket
histograms, 2000 per metric), then measures OTLP/HTTP ack latency of small metric requests (closed
loop, `--concurrency` senders, each request updating `--points` existing counter series) in three
phases: no scrape, a back-to-back scrape loop in another process (Prometheus' Accept header and
gzip, i.e. OpenMetrics, the heaviest rendering), and no scrape again. Prints p50/p90/p99/max per
phase and the scrapes' duration and size.

    /work/venv/bin/python tests/bench/bench_scrape_latency.py --series 50000 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import psutil  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality  # noqa: E402

from tests.conftest import with_search_path  # noqa: E402
from tests.e2e.prometheus_helpers import PROMETHEUS_ACCEPT, families, otelpg_with_config, scrape  # noqa: E402

PER_METRIC = 2000
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
START_NS = time.time_ns()
MiB = 1024 * 1024


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _request() -> tuple[ExportMetricsServiceRequest, object]:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend([_kv("service.name", "bench"), _kv("service.instance.id", "bench-1")])
    return request, rm.scope_metrics.add(scope={"name": "bench", "version": "1"})


def counter_request(metric: int, series: range, value: float) -> bytes:
    request, sm = _request()
    m = sm.metrics.add(name=f"bench.requests.{metric}", unit="{request}", description="Bench counter.")
    m.sum.aggregation_temporality, m.sum.is_monotonic = CUMULATIVE, True
    now = time.time_ns()
    for s in series:
        m.sum.data_points.add(
            as_double=value,
            start_time_unix_nano=START_NS,
            time_unix_nano=now,
            attributes=[_kv("user", f"user-{s:05d}"), _kv("route", f"/r/{s % 50}")],
        )
    return request.SerializeToString()


def histogram_request(metric: int, series: range) -> bytes:
    request, sm = _request()
    m = sm.metrics.add(name=f"bench.latency.{metric}", unit="s", description="Bench histogram.")
    m.histogram.aggregation_temporality = CUMULATIVE
    now = time.time_ns()
    counts = [1] * (len(BOUNDS) + 1)
    for s in series:
        m.histogram.data_points.add(
            count=sum(counts),
            sum=1.5,
            bucket_counts=counts,
            explicit_bounds=BOUNDS,
            start_time_unix_nano=START_NS,
            time_unix_nano=now,
            attributes=[_kv("user", f"user-{s:05d}")],
        )
    return request.SerializeToString()


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"POST {url}: {r.status}")


async def fill(http: str, counters: int, histograms: int) -> None:
    async with aiohttp.ClientSession() as session:
        for m in range(counters):
            await post(session, f"{http}/v1/metrics", counter_request(m, range(PER_METRIC), 1.0))
        for m in range(histograms):
            await post(session, f"{http}/v1/metrics", histogram_request(m, range(PER_METRIC)))


async def ingest(http: str, seconds: float, concurrency: int, points: int, counters: int) -> list[float]:
    """Closed loop: each sender posts its next request when the previous one is acknowledged."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    value = [2.0]

    async def sender(k: int, session: aiohttp.ClientSession) -> None:
        i = k
        while time.monotonic() < deadline:
            metric, first = i % counters, (i * points) % PER_METRIC
            value[0] += 1
            body = counter_request(metric, range(first, min(first + points, PER_METRIC)), value[0])
            started = time.perf_counter()
            await post(session, f"{http}/v1/metrics", body)
            latencies.append(time.perf_counter() - started)
            i += concurrency

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(sender(k, session) for k in range(concurrency)))
    return latencies


def scrape_loop(url: str, stop, results) -> None:  # another process: its work doesn't share our GIL
    durations, sizes = [], []
    while not stop.is_set():
        started = time.perf_counter()
        got = scrape(url, accept=PROMETHEUS_ACCEPT, accept_encoding="gzip", timeout=60)
        durations.append(time.perf_counter() - started)
        sizes.append(len(got.body))
    results.put((durations, sizes))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, latencies: list[float], seconds: float, points: int) -> None:
    ms = [x * 1000 for x in latencies]
    print(
        f"  {name:<28} {len(ms) / seconds:7.0f} req/s {len(ms) * points / seconds:9.0f} points/s   "
        f"p50 {pct(ms, 0.5):6.1f}  p90 {pct(ms, 0.9):6.1f}  p99 {pct(ms, 0.99):6.1f}  max {max(ms):6.1f} ms"
    )


async def fresh_schema(server_dsn: str) -> str:
    schema = f"bench_scrape_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return with_search_path(server_dsn, schema)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="PostgreSQL server DSN (default: an embedded one)")
    parser.add_argument("--series", type=int, default=50_000, help="series to fill (80%% counters, 20%% histograms)")
    parser.add_argument("--seconds", type=float, default=15, help="duration of each measured phase")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent ingest senders")
    parser.add_argument("--points", type=int, default=100, help="metric points per ingest request")
    parser.add_argument(
        "--max-delay",
        type=float,
        default=0.02,
        help="otelpg batch.max_delay: the floor of ack latency (default config: 0.2)",
    )
    args = parser.parse_args()

    metrics = max(1, args.series // PER_METRIC)
    histograms = max(1, metrics // 5)
    counters = metrics - histograms
    work = Path(tempfile.mkdtemp(prefix="otelpg-bench-scrape-"))
    embedded = None
    server_dsn = args.database_url
    if server_dsn is None:
        from exporters.postgres.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(work / "pg")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server_dsn = embedded.start()
    proc = otelpg_with_config(
        work,
        asyncio.run(fresh_schema(server_dsn)),
        (
            f"prometheus:\n  max_series_per_metric: {PER_METRIC}\n  max_series_total: {metrics * PER_METRIC + 1000}\n"
            f"batch:\n  max_delay: {args.max_delay}\nlog_level: warning\n"
        ),
    )
    proc.env["OTELPG_LOG_LEVEL"] = "info"  # the test harness finds the ports in the log
    proc.start()
    try:
        http, metrics_url = proc.url("http"), proc.url("admin", "/metrics")
        started = time.perf_counter()
        asyncio.run(fill(http, counters, histograms))
        fams = families(scrape(metrics_url).text)
        series = fams["otelpg_prometheus_active_series"].samples[0].value
        print(
            f"otelpg with {series:.0f} series ({counters} counters and {histograms} histograms of {PER_METRIC} "
            f"series) filled in {time.perf_counter() - started:.1f}s; batch.max_delay {args.max_delay}s, "
            f"{args.concurrency} senders x {args.points} points per request, {args.seconds:.0f}s per phase"
        )
        for accept, encoding, label in ((None, None, "text 0.0.4"), (PROMETHEUS_ACCEPT, "gzip", "OpenMetrics+gzip")):
            t = time.perf_counter()
            got = scrape(metrics_url, accept=accept, accept_encoding=encoding, timeout=120)
            print(
                f"  one scrape, idle, {label:<17}: {time.perf_counter() - t:5.2f}s, {len(got.body) / MiB:5.1f} MiB"
                + (f", {got.text.count(chr(10))} lines" if encoding is None else "")
            )

        asyncio.run(ingest(http, 2, args.concurrency, args.points, counters))  # warm-up
        print("ingest ack latency:")
        quiet = asyncio.run(ingest(http, args.seconds, args.concurrency, args.points, counters))
        report("no scrape", quiet, args.seconds, args.points)

        ctx = mp.get_context("spawn")
        stop, results = ctx.Event(), ctx.Queue()
        scraper = ctx.Process(target=scrape_loop, args=(metrics_url, stop, results))
        scraper.start()
        otelpg_cpu = psutil.Process(proc.proc.pid).cpu_times()
        busy = asyncio.run(ingest(http, args.seconds, args.concurrency, args.points, counters))
        stop.set()
        durations, sizes = results.get(timeout=120)
        scraper.join(30)
        cpu = psutil.Process(proc.proc.pid).cpu_times()
        report("back-to-back scrapes", busy, args.seconds, args.points)
        again = asyncio.run(ingest(http, args.seconds, args.concurrency, args.points, counters))
        report("no scrape (again)", again, args.seconds, args.points)
        print(
            f"scrapes during the loaded phase: {len(durations)}, duration p50 {statistics.median(durations):.2f}s "
            f"max {max(durations):.2f}s, {statistics.median(sizes) / MiB:.1f} MiB gzipped; otelpg CPU in that "
            f"phase {(cpu.user + cpu.system - otelpg_cpu.user - otelpg_cpu.system) / args.seconds:.2f} cores"
        )
        p99_ratio = pct(busy, 0.99) / max(pct(quiet, 0.99), pct(again, 0.99))
        print(f"p99 with scrapes / p99 without: {p99_ratio:.2f}x")
    finally:
        proc.stop()
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
