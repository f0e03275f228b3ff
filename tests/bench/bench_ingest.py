"""End-to-end ingest benchmark: OTLP over HTTP or gRPC into a real `otelpg run`, into PostgreSQL.

Starts PostgreSQL (--database-url, else an embedded one in a temporary directory), migrates a
fresh schema for otelpg and one for the reference measurements, starts `otelpg run` as a
subprocess with the batch settings given here, and drives it from separate load-generator
processes with realistic, pre-encoded requests (distinct ids per request). Per signal it
prints acknowledged requests/s, items/s, rows/s committed (from otelpg's /metrics), ack
latency, and the CPU and memory otelpg used; then the raw binary COPY rate of the same rows
(mapped before timing) into identical tables, and the ratio. Options add a naive row-by-row
INSERT baseline (--baseline), latency at a fraction of the maximum throughput (--latency-at)
and a soak printing RSS every minute (--soak-minutes). Targets: docs/performance.md §3.

    /work/venv/bin/python tests/bench/bench_ingest.py --transport http --signal metrics --duration 25
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import yaml  # noqa: E402

from tests.bench import _pg  # noqa: E402
from tests.bench._loadgen import ClientResult, ClientSpec, client_main  # noqa: E402
from tests.bench._otlp_gen import (  # noqa: E402
    DEFAULT_ITEMS,
    ITEM_NAMES,
    REQUEST_TYPES,
    SIGNALS,
    Template,
    build_templates,
)
from tests.bench._rotel import Rotel, find_rotel  # noqa: E402
from tests.bench._rotel import version as rotel_version  # noqa: E402

MiB = 1024 * 1024
TABLE_OF = {"traces": "otel_spans", "metrics": "performance_metrics", "logs": "otel_logs"}
TARGET_SPANS_PER_S = 50_000
TARGET_COPY_RATIO = 0.7
TARGET_P99_MS = 250
TARGET_RSS_MIB = 300
TARGET_NAIVE_X = 20
TARGET_ROTEL_X = 2.0  # otelpg's CPU per item at most this multiple of Rotel's (blackhole exporter)


# --------------------------------------------------------------------------- output


class Out:
    """Plain text lines (stdout, or stderr with --json) and the JSON document."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.doc: dict[str, Any] = {
            "phases": [],
            "copy": [],
            "baseline": [],
            "soak": [],
            "reference": [],
            "targets": [],
        }
        self.stream = sys.stderr if as_json else sys.stdout

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.as_json:
            print(json.dumps(self.doc, indent=2, default=str))


def fmt_n(x: float) -> str:
    return f"{x:,.0f}"


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


# --------------------------------------------------------------------------- otelpg process


SCRAPE_TIMEOUT = 30.0
FAILED = "_scrape_failed"


def scrape(url: str) -> dict[str, float]:
    """The otelpg self-metrics the benchmark reads, summed over label sets by name+key label.

    `_scrape_seconds` is how long /metrics took to answer; when it did not answer within
    SCRAPE_TIMEOUT (an overloaded event loop), the dict holds only `_scrape_failed`."""
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as resp:
            text = resp.read().decode()
    except (OSError, TimeoutError):
        return {FAILED: 1.0, "_scrape_seconds": time.monotonic() - t0}
    out: dict[str, float] = {"_scrape_seconds": time.monotonic() - t0}
    wanted = ("otelpg_exporter_sent_rows_total", "otelpg_copy_duration_seconds_sum",
              "otelpg_copy_duration_seconds_count", "otelpg_batch_rows_sum", "otelpg_batch_rows_count",
              "otelpg_receiver_accepted_", "otelpg_receiver_refused_requests_total",
              "otelpg_exporter_send_failed_rows_total")  # fmt: skip
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            v = float(value)
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + v
        m = re.search(r'table="([^"]+)"', name_labels)
        if m:
            out[f"{name}:{m[1]}"] = out.get(f"{name}:{m[1]}", 0.0) + v
    return out


class Monitor:
    """Samples otelpg's RSS every 0.2 s; CPU (user+sys) of otelpg, PostgreSQL and the load
    generators on demand."""

    def __init__(self, pid: int, server: _pg.Server) -> None:
        self.proc = psutil.Process(pid)
        self.server = server
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def reset_peak(self) -> None:
        self.peak_rss = self.rss()

    def rss(self) -> int:
        try:
            return self.proc.memory_info().rss
        except psutil.Error:
            return 0

    def hwm(self) -> int:
        """VmHWM: peak RSS since otelpg started."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def cpu(self) -> float:
        c = self.proc.cpu_times()
        return c.user + c.system

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Sample:
    t: float
    otelpg_cpu: float
    pg_cpu: float
    client_cpu: float
    machine_busy: float  # CPU seconds every process on the machine used (idle and iowait excluded)
    metrics: dict[str, float]


def machine_busy() -> float:
    c = psutil.cpu_times()
    return sum(c) - c.idle - getattr(c, "iowait", 0.0) - getattr(c, "guest", 0.0) - getattr(c, "guest_nice", 0.0)


def wait_quiet(out: Out, max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to max_wait s) until the machine's CPU use over 2 s is below `threshold` cores:
    other processes on a shared 2-core machine skew every figure. Returns the last load seen."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_busy(), time.monotonic()
        time.sleep(2.0)
        load = (machine_busy() - b0) / (time.monotonic() - t0)
        if load < threshold or time.monotonic() >= deadline:
            if load >= threshold:
                out.line(f"  (machine still busy: {load:.2f} cores in use by other processes; measuring anyway)")
            return load


def take_sample(mon: Monitor, clients: list[psutil.Process], metrics_url: str) -> Sample:
    client_cpu = 0.0
    for p in clients:
        try:
            c = p.cpu_times()
            client_cpu += c.user + c.system
        except psutil.Error:
            pass
    return Sample(
        time.monotonic(), mon.cpu(), mon.server.cpu_seconds(), client_cpu, machine_busy(), scrape(metrics_url)
    )


def _c_converter() -> str:
    from exporters.postgres.mapping.common import FAST_AVAILABLE, NATIVE_AVAILABLE

    return ("built" if FAST_AVAILABLE else "NOT built (pure Python mapping)") + (
        ", native encoder (traces, logs): built" if NATIVE_AVAILABLE else ", native encoder: NOT built"
    )


def start_otelpg(args: argparse.Namespace, dsn: str, workdir: Path):
    from tests.otelpg_process import OtelpgProcess

    config = {
        "log_level": "info",  # OtelpgProcess finds the bound ports in the info-level 'listening on' lines
        "database": {"pool_min_size": 2, "pool_max_size": args.db_pool_size},
        "batch": {"max_rows": args.batch_max_rows, "max_delay": args.batch_max_delay, "writers": args.batch_writers},
        "queue": {"max_rows": args.queue_max_rows, "max_bytes": args.queue_max_bytes},
    }
    if args.no_rollups:
        config["rollups"] = {"enabled": False}
    cfg_path = workdir / "otelpg-bench.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        "OTELPG_DATABASE_URL": dsn,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = OtelpgProcess(workdir / "data", env, ("--config", str(cfg_path)))
    proc.start()
    return proc, config


# --------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    name: str
    signal: str
    transport: str
    mode: str
    concurrency: int
    clients: int
    window_s: float
    requests_ok: int
    requests_refused: int
    statuses: dict[str, int]
    items_ok: int
    req_per_s: float
    items_per_s: float
    rows_per_s: float  # every table otelpg wrote
    rows_written: float
    table_rows_per_s: float  # the signal's own table (system_events / performance_metrics)
    rows_by_table: dict[str, float]
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    otelpg_cpu_s: float
    otelpg_cores: float
    peak_rss_mib: float
    pg_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float  # CPU used by other processes on the machine during the window
    batches: float
    avg_batch_rows: float
    avg_batch_write_ms: float
    skipped: int = 0
    made_on_the_fly: int = 0
    offered_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_phase_counter = [0]


def spawn_clients(
    args: argparse.Namespace,
    target: str,
    signal: str,
    templates: list[Template],
    *,
    concurrency: int,
    rate: float | None,
    duration: float | None,
    requests: int | None,
    warmup: float,
) -> tuple[list[Any], list[Any]]:
    """Start the load-generator processes (args.clients of them, args.transport) against `target` and wait
    until each has encoded its pool of bodies. Returns (processes, pipes); send (start, stop) to start them."""
    _phase_counter[0] += 1
    id_base = _phase_counter[0] * 50_000_000
    clients = args.clients
    per_client_conc = max(1, math.ceil(concurrency / clients))
    body_len = len(templates[0].body)
    if requests is not None:
        expected = math.ceil(requests / clients)
    elif rate:
        expected = math.ceil(rate / clients * (warmup + (duration or 0)) * 1.05) + 8
    else:
        expected = args.pool
    pool = max(1, min(expected, args.pool, (args.pool_mib * MiB) // body_len))
    mpctx = mp.get_context("spawn")
    procs, pipes = [], []
    for c in range(clients):
        spec = ClientSpec(
            transport=args.transport, target=target, signal=signal, templates=templates, client=c, clients=clients,
            id_base=id_base, concurrency=per_client_conc if not rate else args.max_in_flight,
            rate=rate / clients if rate else None,
            requests=math.ceil(requests / clients) if requests is not None else None, pool=pool,
            timeout=args.client_timeout,
        )  # fmt: skip
        parent_end, child_end = mpctx.Pipe()
        p = mpctx.Process(target=client_main, args=(spec, child_end), daemon=True, name=f"loadgen-{c}")
        p.start()
        procs.append(p)
        pipes.append(parent_end)
    for pipe in pipes:
        if not pipe.poll(300):
            raise RuntimeError("load generator did not get ready")
        assert pipe.recv() == "ready"
    return procs, pipes


def tally(results: list[ClientResult], w0: float, w1: float) -> tuple[int, int, int, dict[str, int], list[float]]:
    """Requests completed within [w0, w1]: (ok, refused, items acked, count by status, sorted ok latencies)."""
    lat: list[float] = []
    items_ok = ok = refused = 0
    statuses: dict[str, int] = {}
    for r in results:
        for t_done, latency, items, good, status in zip(r.done, r.latency, r.items, r.ok, r.status, strict=True):
            if not (w0 <= t_done <= w1):
                continue
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if good:
                ok += 1
                items_ok += items
                lat.append(latency)
            else:
                refused += 1
    lat.sort()
    return ok, refused, items_ok, statuses, lat


def run_phase(
    args: argparse.Namespace,
    out: Out,
    ctx: dict[str, Any],
    signal: str,
    templates: list[Template],
    *,
    name: str,
    rate: float | None = None,
    duration: float | None = None,
    requests: int | None = None,
    warmup: float = 0.0,
    concurrency: int | None = None,
    spy: str | None = None,
    per_minute: bool = False,
) -> PhaseResult:
    """Run the load generators against otelpg; measure over [start + warmup, start + warmup + duration]."""
    otelpg, mon = ctx["otelpg"], ctx["monitor"]
    if not asyncio.run(_pg.checkpoint(ctx["server"].dsn)) and not ctx.get("checkpoint_warned"):
        ctx["checkpoint_warned"] = True
        out.line("  (CHECKPOINT not allowed for this role: a phase may pay for an earlier phase's WAL)")
    if args.wait_quiet:
        wait_quiet(out, args.wait_quiet)
    metrics_url = otelpg.url("admin", "/metrics")
    target = otelpg.url("http") if args.transport == "http" else otelpg.grpc_target
    clients = args.clients
    concurrency = concurrency or args.concurrency
    procs, pipes = spawn_clients(
        args, target, signal, templates, concurrency=concurrency, rate=rate, duration=duration, requests=requests,
        warmup=warmup,
    )  # fmt: skip
    client_ps = [psutil.Process(p.pid) for p in procs]

    start = time.monotonic() + 0.3
    stop = start + warmup + duration if duration is not None else None
    for pipe in pipes:
        pipe.send((start, stop))
    w0 = start + warmup
    if requests is None:
        time.sleep(max(0.0, w0 - time.monotonic()))
    mon.reset_peak()
    waits = PgWaits(ctx["server"].dsn) if args.pg_waits else None
    spy_proc = start_py_spy(args, otelpg.proc.pid, spy, duration or 0) if spy and duration else None
    s0 = take_sample(mon, client_ps, metrics_url)
    minute_marks = []
    interval = args.soak_interval
    if per_minute and stop is not None:
        next_mark = w0 + interval
        last = s0
        while next_mark <= stop + 0.01:
            time.sleep(max(0.0, next_mark - time.monotonic()))
            s = take_sample(mon, client_ps, metrics_url)
            if FAILED in s.metrics or FAILED in last.metrics:
                rss = mon.rss() / MiB
                out.line(
                    f"  {(len(minute_marks) + 1) * interval / 60:5.1f} min: RSS {rss:6.1f} MiB "
                    f"(peak so far {mon.peak_rss / MiB:6.1f} MiB)  /metrics did not answer within "
                    f"{SCRAPE_TIMEOUT:.0f} s"
                )
                minute_marks.append(
                    {
                        "minute": len(minute_marks) + 1,
                        "rss_mib": round(rss, 1),
                        "peak_rss_mib": round(mon.peak_rss / MiB, 1),
                        "scrape_failed": True,
                    }
                )
                last = s
                next_mark += interval
                continue
            acc = _accepted(s.metrics) - _accepted(last.metrics)
            rows = s.metrics.get("otelpg_exporter_sent_rows_total", 0) - last.metrics.get(
                "otelpg_exporter_sent_rows_total", 0
            )
            refused = s.metrics.get("otelpg_receiver_refused_requests_total", 0) - last.metrics.get(
                "otelpg_receiver_refused_requests_total", 0
            )
            minute = len(minute_marks) + 1
            rss = mon.rss() / MiB
            out.line(
                f"  {minute * interval / 60:5.1f} min: RSS {rss:6.1f} MiB (peak so far {mon.peak_rss / MiB:6.1f} MiB)  "
                f"accepted {fmt_n(acc / (s.t - last.t))} items/s  rows {fmt_n(rows / (s.t - last.t))}/s  "
                f"refused requests {fmt_n(refused)}  /metrics answered in {s.metrics['_scrape_seconds']:.1f} s  "
                f"otelpg cpu {(s.otelpg_cpu - last.otelpg_cpu) / (s.t - last.t):.2f} cores"
            )
            minute_marks.append(
                {
                    "minute": minute,
                    "rss_mib": round(rss, 1),
                    "peak_rss_mib": round(mon.peak_rss / MiB, 1),
                    "accepted_items_per_s": acc / (s.t - last.t),
                    "refused_requests": refused,
                }
            )
            last = s
            next_mark += interval
    if stop is not None:
        time.sleep(max(0.0, stop - time.monotonic()))
        s1 = take_sample(mon, client_ps, metrics_url)
    pg_waits = waits.stop() if waits is not None else None
    results: list[ClientResult] = []
    for pipe in pipes:
        if not pipe.poll(600):
            raise RuntimeError("load generator did not report")
        results.append(pipe.recv())
    if stop is None:
        s1 = take_sample(mon, client_ps, metrics_url)
    for p in procs:
        p.join(30)

    if stop is None:  # --requests: the whole run is the window
        w0 = min(r.first_send for r in results)
        w1 = max((max(r.done) for r in results if len(r.done)), default=w0 + 1e-9)
    else:
        w1 = stop
    window = max(w1 - w0, 1e-9)
    ok, refused, items_ok, statuses, lat = tally(results, w0, w1)
    m0, m1 = s0.metrics, s1.metrics
    if FAILED in m0 or FAILED in m1:  # counters unknown: report NaN rather than garbage
        out.line("  (otelpg's /metrics did not answer in time: rows and batch figures unknown)")
        m0, m1 = {}, {k: math.nan for k in ("otelpg_exporter_sent_rows_total", "otelpg_batch_rows_count")}
    rows = m1.get("otelpg_exporter_sent_rows_total", 0) - m0.get("otelpg_exporter_sent_rows_total", 0)
    prefix = "otelpg_exporter_sent_rows_total:"
    by_table = {k[len(prefix) :]: v - m0.get(k, 0) for k, v in m1.items() if k.startswith(prefix) and v - m0.get(k, 0)}
    batches = m1.get("otelpg_batch_rows_count", 0) - m0.get("otelpg_batch_rows_count", 0)
    batch_rows = m1.get("otelpg_batch_rows_sum", 0) - m0.get("otelpg_batch_rows_sum", 0)
    write_s = m1.get("otelpg_copy_duration_seconds_sum", 0) - m0.get("otelpg_copy_duration_seconds_sum", 0)
    sample_window = s1.t - s0.t
    res = PhaseResult(
        name=name, signal=signal, transport=args.transport, mode="open" if rate else "closed",
        concurrency=args.max_in_flight if rate else concurrency, clients=clients, window_s=window, requests_ok=ok,
        requests_refused=refused,
        statuses=statuses, items_ok=items_ok, req_per_s=ok / window, items_per_s=items_ok / window,
        rows_per_s=rows / sample_window, rows_written=rows,
        table_rows_per_s=by_table.get(TABLE_OF[signal], 0.0) / sample_window, rows_by_table=by_table,
        p50_ms=pct(lat, 0.50) * 1e3, p99_ms=pct(lat, 0.99) * 1e3, p999_ms=pct(lat, 0.999) * 1e3,
        max_ms=(lat[-1] if lat else math.nan) * 1e3,
        otelpg_cpu_s=s1.otelpg_cpu - s0.otelpg_cpu, otelpg_cores=(s1.otelpg_cpu - s0.otelpg_cpu) / sample_window,
        peak_rss_mib=mon.peak_rss / MiB, pg_cpu_s=s1.pg_cpu - s0.pg_cpu, client_cpu_s=s1.client_cpu - s0.client_cpu,
        other_cpu_s=max(0.0, (s1.machine_busy - s0.machine_busy) - (s1.otelpg_cpu - s0.otelpg_cpu)
                        - (s1.pg_cpu - s0.pg_cpu) - (s1.client_cpu - s0.client_cpu)),
        batches=batches, avg_batch_rows=batch_rows / batches if batches else 0.0,
        avg_batch_write_ms=write_s / batches * 1e3 if batches else 0.0,
        skipped=sum(r.skipped for r in results), made_on_the_fly=sum(r.made_on_the_fly for r in results),
        offered_rate=rate,
    )  # fmt: skip
    if minute_marks:
        res.extra["minutes"] = minute_marks
    if pg_waits:
        res.extra["pg_backends"] = pg_waits
    res.extra["write_share_of_window"] = write_s / sample_window
    print_phase(out, res, warmup)
    if spy:
        finish_py_spy(out, spy_proc, args, spy)
    if pg_waits:
        out.line(
            "  postgres   otelpg's backends, average number in each state: "
            + ", ".join(f"{k} {v:.2f}" for k, v in pg_waits.items() if v >= 0.01)
        )
    out.doc["phases"].append(res.__dict__)
    return res


def _accepted(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("otelpg_receiver_accepted_") and ":" not in k)


def print_phase(out: Out, r: PhaseResult, warmup: float) -> None:
    item = ITEM_NAMES[r.signal]
    how = (
        f"open loop at {r.offered_rate:,.1f} req/s offered (≤{r.concurrency} in flight per client)"
        if r.mode == "open"
        else f"closed loop, concurrency {r.concurrency}"
    )
    out.line(
        f"== {r.name}: {r.transport} {r.signal}, {how}, {r.clients} load-generator process(es), "
        f"{r.window_s:.1f} s window" + (f" after {warmup:.0f} s warm-up" if warmup else "")
    )
    refused = ""
    if r.requests_refused:
        refused = ", refused " + ", ".join(f"{k} x{v}" for k, v in sorted(r.statuses.items()) if k not in ("200", "0"))
    tables = ""
    if len(r.rows_by_table) > 1:
        tables = (
            " ("
            + " + ".join(
                f"{k} {v / r.window_s:,.0f}" for k, v in sorted(r.rows_by_table.items(), key=lambda kv: -kv[1])
            )
            + ")"
        )
    out.line(
        f"  acked      {r.req_per_s:8,.1f} req/s   {r.items_per_s:10,.0f} {item}/s   "
        f"{r.rows_per_s:10,.0f} rows/s committed{tables}   ({r.requests_ok} requests ok{refused})"
    )
    out.line(
        f"  latency    p50 {r.p50_ms:7.1f} ms   p99 {r.p99_ms:7.1f} ms   p99.9 {r.p999_ms:7.1f} ms   "
        f"max {r.max_ms:7.1f} ms"
    )
    out.line(
        f"  batches    {r.batches / r.window_s:5.1f}/s, avg {r.avg_batch_rows:,.0f} rows, "
        f"avg write {r.avg_batch_write_ms:.1f} ms (COPY + commit)"
    )
    out.line(
        f"  cpu        otelpg {r.otelpg_cpu_s:.1f} s = {r.otelpg_cores:.2f} cores, peak RSS {r.peak_rss_mib:.0f} MiB | "
        f"postgres {r.pg_cpu_s:.1f} s = {r.pg_cpu_s / r.window_s:.2f} cores | "
        f"load generator {r.client_cpu_s:.1f} s = {r.client_cpu_s / r.window_s:.2f} cores | "
        f"other processes {r.other_cpu_s / r.window_s:.2f} cores"
    )
    if r.otelpg_cpu_s > 0:
        out.line(
            f"  cost       {r.otelpg_cpu_s / max(r.items_ok, 1) * 1e6:.1f} µs otelpg CPU per {item.rstrip('s')}, "
            f"{r.otelpg_cpu_s / max(r.rows_written, 1) * 1e6:.1f} µs per row"
        )
    if r.skipped or r.made_on_the_fly:
        out.line(
            f"  note       {r.skipped} scheduled sends skipped (in-flight bound), "
            f"{r.made_on_the_fly} bodies encoded during the run"
        )


class PgWaits:
    """Samples pg_stat_activity every 10 ms for otelpg's backends (application_name 'otelpg'):
    what PostgreSQL is doing while otelpg waits on it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.counts: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE application_name = 'otelpg' AND pid <> pg_backend_pid()"
                )
                self.samples += 1
                for r in rows:
                    if r["state"] == "idle":
                        key = "idle (waiting for otelpg)"
                    elif r["wait_event_type"] is None:
                        key = f"{r['state']}: on CPU"
                    else:
                        key = f"{r['state']}: {r['wait_event_type']}/{r['wait_event']}"
                    self.counts[key] = self.counts.get(key, 0) + 1
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def stop(self) -> dict[str, float]:
        """Average number of otelpg backends in each state."""
        self._stop.set()
        self._thread.join(5)
        return {k: v / max(self.samples, 1) for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])}


# --------------------------------------------------------------------------- references


def mapped_rows(signal: str, templates: list[Template], n_rows: int, id_base: int) -> tuple[list[tuple], int]:
    """Rows of the first requests of a stream like the load generator's, mapped before any timing."""
    from exporters.postgres.mapping import Mapper, map_logs, map_metrics, map_traces

    mapper = {"traces": map_traces, "metrics": map_metrics, "logs": map_logs}[signal]
    state = Mapper()
    req_type = REQUEST_TYPES[signal]
    table = TABLE_OF[signal]
    rows: list[tuple] = []
    seq = 0
    while len(rows) < n_rows:
        template = templates[seq % len(templates)]
        body = template.make(id_base + seq, seq)
        rows.extend(mapper(req_type.FromString(body), time.time_ns(), mapper=state).rows[table])
        seq += 1
    return rows[:n_rows], seq


def run_copy(
    args: argparse.Namespace, out: Out, ctx: dict[str, Any], signal: str, templates: list[Template], phase: PhaseResult
) -> dict[str, Any]:
    table = TABLE_OF[signal]
    _phase_counter[0] += 1
    rows, nreq = mapped_rows(signal, templates, args.copy_rows, _phase_counter[0] * 50_000_000)
    asyncio.run(_pg.checkpoint(ctx["server"].dsn))  # start clean, as otelpg's phases do
    res: dict[str, Any] = {
        "signal": signal,
        "table": table,
        "rows": len(rows),
        "requests": nreq,
        "batch_rows": args.batch_max_rows,
        "by_connections": {},
    }
    me = psutil.Process()
    for i, conns in enumerate(args.copy_connections):
        if i:  # the same rows again need new primary keys
            from uuid_utils import uuid7

            rows = [(uuid7(), *r[1:]) for r in rows]

        def probe() -> tuple[float, float, float]:
            return ctx["server"].cpu_seconds(), sum(me.cpu_times()[:2]), machine_busy()

        if args.wait_quiet:
            wait_quiet(out, args.wait_quiet)
        elapsed, (pg0, cpu0, m0), (pg1, cpu1, m1) = asyncio.run(
            _pg.raw_copy(ctx["raw_dsn"], table, rows, args.batch_max_rows, conns, probe)
        )
        res["by_connections"][conns] = {
            "seconds": elapsed,
            "rows_per_s": len(rows) / elapsed,
            "client_cpu_s": cpu1 - cpu0,
            "pg_cpu_s": pg1 - pg0,
            "other_cpu_s": max(0.0, (m1 - m0) - (cpu1 - cpu0) - (pg1 - pg0)),
        }
    best = max(v["rows_per_s"] for v in res["by_connections"].values())
    res["best_rows_per_s"] = best
    res["otelpg_rows_per_s"] = phase.table_rows_per_s
    res["ratio"] = phase.table_rows_per_s / best
    parts = ", ".join(
        f"{c} conn{'s' if c > 1 else ''} {fmt_n(v['rows_per_s'])} rows/s "
        f"(client {v['client_cpu_s'] / v['seconds']:.2f} cores, postgres {v['pg_cpu_s'] / v['seconds']:.2f}, "
        f"other processes {v['other_cpu_s'] / v['seconds']:.2f})"
        for c, v in res["by_connections"].items()
    )
    out.line(
        f"  raw COPY   {table}: {fmt_n(len(rows))} rows mapped beforehand from {nreq} requests of the same "
        f"stream, {args.batch_max_rows}-row batches, one transaction each: {parts}"
    )
    out.line(
        f"  ratio      otelpg {fmt_n(phase.table_rows_per_s)} {table} rows/s / raw COPY {fmt_n(best)} rows/s = "
        f"{res['ratio']:.2f}"
    )
    out.doc["copy"].append(res)
    return res


def run_naive(
    args: argparse.Namespace, out: Out, ctx: dict[str, Any], signal: str, templates: list[Template], phase: PhaseResult
) -> dict[str, Any]:
    table = TABLE_OF[signal]
    _phase_counter[0] += 1
    rows, _ = mapped_rows(signal, templates, args.baseline_rows + 1, _phase_counter[0] * 50_000_000)
    if args.wait_quiet:
        wait_quiet(out, args.wait_quiet)
    elapsed, n = asyncio.run(_pg.naive_insert(ctx["naive_dsn"], table, rows))
    rate = n / elapsed
    res = {
        "signal": signal,
        "table": table,
        "rows": n,
        "seconds": elapsed,
        "rows_per_s": rate,
        "otelpg_rows_per_s": phase.table_rows_per_s,
        "speedup": phase.table_rows_per_s / rate,
    }
    out.line(
        f"  naive      row-by-row INSERT, autocommit, {n} rows: {fmt_n(rate)} rows/s -> otelpg is "
        f"{res['speedup']:.0f}x faster"
    )
    out.doc["baseline"].append(res)
    return res


def run_reference(
    args: argparse.Namespace, out: Out, ctx: dict[str, Any], signal: str, templates: list[Template], phase: PhaseResult
) -> dict[str, Any] | None:
    """Rotel with its blackhole exporter on the same requests, transport, load generator, concurrency and
    window as otelpg's maximum-throughput phase: its CPU per item (user + system of rotel-agent) against
    otelpg's (the same figure as otelpg's `cost` line)."""
    item = ITEM_NAMES[signal].rstrip("s").split()[-1]
    binary = ctx.get("rotel")
    if not binary:
        if ctx.get("rotel_missing"):
            out.line(f"  reference  skipped: {ctx['rotel_missing']}")
            out.doc["reference"].append({"signal": signal, "skipped": ctx["rotel_missing"]})
        return None
    if args.wait_quiet:
        wait_quiet(out, args.wait_quiet)
    duration = args.duration
    requests = args.requests
    warmup = args.warmup if duration else 0.0
    procs: list[Any] = []
    reported = False
    try:
        with Rotel(binary, signal, ctx["workdir"]) as rotel:
            target = rotel.http_url if args.transport == "http" else rotel.grpc_target
            procs, pipes = spawn_clients(
                args, target, signal, templates, concurrency=phase.concurrency, rate=None, duration=duration,
                requests=requests, warmup=warmup,
            )  # fmt: skip
            client_ps = [psutil.Process(p.pid) for p in procs]

            def probe() -> tuple[float, float, float, float]:
                client = 0.0
                for cp in client_ps:
                    try:
                        client += sum(cp.cpu_times()[:2])
                    except psutil.Error:
                        pass
                return time.monotonic(), rotel.cpu(), client, machine_busy()

            start = time.monotonic() + 0.3
            stop = start + warmup + duration if duration is not None else None
            for pipe in pipes:
                pipe.send((start, stop))
            w0 = start + warmup
            if requests is None:
                time.sleep(max(0.0, w0 - time.monotonic()))
            p0 = probe()
            if stop is not None:
                time.sleep(max(0.0, stop - time.monotonic()))
                p1 = probe()
            results: list[ClientResult] = []
            for pipe in pipes:
                if not pipe.poll(600):
                    raise RuntimeError("load generator did not report")
                results.append(pipe.recv())
            reported = True
            if stop is None:
                p1 = probe()
            rss_mib = rotel.rss() / MiB
    except Exception as e:  # the reference must not cost the run its otelpg figures
        out.line(f"  reference  rotel failed: {e}")
        out.doc["reference"].append({"signal": signal, "error": str(e)})
        return None
    finally:
        for pr in procs:
            pr.join(30 if reported else 0)
            if pr.is_alive():
                pr.terminate()
                pr.join(5)
    if stop is None:  # --requests: the whole run is the window
        w0 = min(r.first_send for r in results)
        w1 = max((max(r.done) for r in results if len(r.done)), default=w0 + 1e-9)
    else:
        w1 = stop
    window = max(w1 - w0, 1e-9)
    ok, refused, items_ok, statuses, lat = tally(results, w0, w1)
    sample_window = max(p1[0] - p0[0], 1e-9)
    rotel_cpu = p1[1] - p0[1]
    client_cpu = p1[2] - p0[2]
    other_cpu = max(0.0, (p1[3] - p0[3]) - rotel_cpu - client_cpu)
    rotel_us = rotel_cpu / items_ok * 1e6 if items_ok else math.nan
    otelpg_us = phase.otelpg_cpu_s / phase.items_ok * 1e6 if phase.items_ok else math.nan
    ratio = otelpg_us / rotel_us if rotel_us > 0 else math.nan
    res = {
        "signal": signal,
        "transport": args.transport,
        "collector": "rotel",
        "exporter": "blackhole",
        "version": ctx.get("rotel_version"),
        "concurrency": phase.concurrency,
        "window_s": window,
        "requests_ok": ok,
        "requests_refused": refused,
        "statuses": statuses,
        "items_ok": items_ok,
        "items_per_s": items_ok / window,
        "p50_ms": pct(lat, 0.50) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "rotel_cpu_s": rotel_cpu,
        "rotel_cores": rotel_cpu / sample_window,
        "rotel_rss_mib": rss_mib,
        "client_cpu_s": client_cpu,
        "other_cpu_s": other_cpu,
        "rotel_us_per_item": rotel_us,
        "otelpg_us_per_item": otelpg_us,
        "otelpg_items_per_s": phase.items_per_s,
        "ratio": ratio,
        "target_ratio": TARGET_ROTEL_X,
        "made_on_the_fly": sum(r.made_on_the_fly for r in results),
    }
    refused_txt = f", {refused} refused" if refused else ""
    out.line(
        f"  reference  rotel blackhole {fmt_n(res['items_per_s'])} {item}s/s  CPU {rotel_us:.1f} µs/{item}   "
        f"otelpg {otelpg_us:.1f} µs/{item} = {ratio:.1f}x rotel (target <= {TARGET_ROTEL_X:.1f}x)"
    )
    out.line(
        f"             ({ctx.get('rotel_version')}, {args.transport}, closed loop, concurrency {phase.concurrency}, "
        f"{window:.1f} s window: {ok} requests ok{refused_txt}, p50 {res['p50_ms']:.1f} ms, p99 "
        f"{res['p99_ms']:.1f} ms | rotel {res['rotel_cores']:.2f} cores, RSS {rss_mib:.0f} MiB | load generator "
        f"{client_cpu / sample_window:.2f} cores | other processes {other_cpu / sample_window:.2f} cores)"
        + (f", {res['made_on_the_fly']} bodies encoded during the run" if res["made_on_the_fly"] else "")
    )
    out.doc["reference"].append(res)
    return res


def run_components(
    out: Out, signal: str, templates: list[Template], phase: PhaseResult, copy: dict[str, Any] | None
) -> None:
    from tests.bench._costs import component_costs, format_costs

    costs = component_costs(signal, templates)
    copy_us = None
    if copy:
        one = copy["by_connections"].get(1) or next(iter(copy["by_connections"].values()))
        copy_us = one["client_cpu_s"] / copy["rows"] * 1e6
    measured = phase.otelpg_cpu_s / phase.items_ok * 1e6 if phase.items_ok else None
    item = ITEM_NAMES[signal].rstrip("s").split()[-1]
    out.line(
        f"  steps      CPU per {item}, measured in this process on the same requests "
        f"({costs['rows_per_item']:.2f} rows per {item}):"
    )
    for line in format_costs(signal, costs, item, copy_us, measured):
        out.line(f"    {line}")
    out.doc.setdefault("components", []).append(
        {"signal": signal, **costs, "copy_us_per_row": copy_us, "measured_us_per_item": measured}
    )


# --------------------------------------------------------------------------- py-spy


def start_py_spy(args: argparse.Namespace, pid: int, name: str, seconds: float) -> subprocess.Popen | None:
    if not args.py_spy:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir = Path(args.py_spy)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.txt"
    # --gil: only samples where a thread holds the GIL, i.e. otelpg's Python CPU time (an idle
    # event loop waiting in epoll, idle executor threads and grpc's C threads don't count).
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(seconds))),
        "--rate",
        "200",
        "--gil",
        "--format",
        "raw",
        "--output",
        str(path),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_py_spy(out: Out, proc: subprocess.Popen | None, args: argparse.Namespace, name: str) -> None:
    if proc is None:
        return
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    path = Path(args.py_spy) / f"{name}.txt"
    if not path.exists():
        out.line(f"  py-spy     no profile: {err.decode(errors='replace').strip()[-300:]}")
        return
    from tests.bench._profile import summarize

    out.line(f"  profile    py-spy samples of otelpg ({path}):")
    for line in summarize(path.read_text()).splitlines():
        out.line(f"    {line}")


# --------------------------------------------------------------------------- main


def source_version() -> str:
    """git commit of the code under test (+ how many files differ), or a .commit file beside it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
        return f"git {commit}" + (f", {len(dirty)} modified files" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        marker = ROOT / ".commit"
        return f"git {marker.read_text().strip()} (exported tree)" if marker.exists() else "unknown version"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Figures, method and targets: docs/performance.md.",
    )
    p.add_argument("--database-url", help="PostgreSQL DSN to use (default: an embedded server in a temp dir)")
    p.add_argument("--transport", choices=("http", "grpc"), default="http")
    p.add_argument("--signal", choices=(*SIGNALS, "all"), default="all", help="all: each signal in turn")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (closed loop) [8]")
    p.add_argument("--clients", type=int, default=1, help="load-generator processes [1]")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--duration", type=float, help="seconds measured per signal, after --warmup [20]")
    g.add_argument("--requests", type=int, help="send exactly this many requests per signal instead")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring [3]")
    p.add_argument("--items", type=int, help="items per request (default: 500 spans, 1000 points, 500 log records)")
    p.add_argument("--templates", type=int, default=4, help="distinct request templates per signal [4]")
    p.add_argument("--pool", type=int, default=6000, help="most request bodies encoded per client before timing [6000]")
    p.add_argument("--pool-mib", type=int, default=1024, help="memory bound of those bodies per client [1024]")
    p.add_argument("--max-in-flight", type=int, default=512, help="open loop: most requests in flight per client [512]")
    p.add_argument(
        "--client-timeout",
        type=float,
        default=10.0,
        help="seconds before a request counts as failed, like the OTel SDK exporters' timeout [10]",
    )
    from sidecar.config import BatchConfig, DatabaseConfig, QueueConfig  # defaults: what a user gets

    b = p.add_argument_group("otelpg settings (written to a generated YAML config; default: otelpg's)")
    b.add_argument("--batch-max-rows", type=int, default=BatchConfig.max_rows)
    b.add_argument("--batch-max-delay", type=float, default=BatchConfig.max_delay)
    b.add_argument("--batch-writers", type=int, default=BatchConfig.writers)
    b.add_argument("--db-pool-size", type=int, default=DatabaseConfig.pool_max_size, help="database.pool_max_size")
    b.add_argument("--queue-max-rows", type=int, default=QueueConfig.max_rows)
    b.add_argument("--queue-max-bytes", type=int, default=QueueConfig.max_bytes)
    b.add_argument(
        "--no-rollups",
        action="store_true",
        help="rollups.enabled: false (what keeping performance_metrics_1m/_1h in step costs)",
    )
    r = p.add_argument_group("references")
    r.add_argument("--copy-rows", type=int, default=200_000, help="rows for the raw COPY reference [200000]")
    r.add_argument("--copy-connections", default="1,2", help="raw COPY connection counts to measure [1,2]")
    r.add_argument("--no-copy", action="store_true", help="skip the raw COPY reference")
    r.add_argument(
        "--no-components",
        action="store_true",
        help="skip the per-step CPU cost breakdown (split, decode, map, JSON, observe, COPY encoding)",
    )
    r.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run Rotel (blackhole exporter) on the same requests and compare CPU per item "
        "(default: on when rotel-agent is found; pip install rotel)",
    )
    r.add_argument(
        "--rotel-agent", metavar="PATH", help="rotel-agent binary (default: $ROTEL_AGENT, PATH, the rotel package's)"
    )
    r.add_argument("--baseline", action="store_true", help="also measure a naive row-by-row INSERT loop")
    r.add_argument("--baseline-rows", type=int, default=5000, help="rows for --baseline [5000]")
    x = p.add_argument_group("latency and soak")
    x.add_argument(
        "--latency-at",
        type=float,
        metavar="FRACTION",
        help="after the maximum-throughput run, run open-loop at this fraction of it (e.g. 0.5)",
    )
    x.add_argument("--latency-duration", type=float, help="seconds of that run (default: --duration)")
    x.add_argument("--soak-minutes", type=float, help="sustained load for N minutes, RSS printed every minute")
    x.add_argument(
        "--soak-load",
        type=float,
        metavar="FACTOR",
        help="soak open-loop at FACTOR x the measured maximum (2 = the overload check of docs/performance.md); "
        "default: closed loop at --concurrency",
    )
    x.add_argument("--soak-interval", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="before each measurement, wait up to S seconds for other processes to leave the CPUs idle",
    )
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        help="record a py-spy profile of otelpg during each --duration window (py-spy must be installed)",
    )
    p.add_argument(
        "--pg-waits",
        action="store_true",
        help="sample pg_stat_activity of otelpg's connections during each window (wait events)",
    )
    p.add_argument("--keep", action="store_true", help="keep the schemas (with --database-url)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (text goes to stderr)")
    args = p.parse_args(argv)
    if args.duration is None and args.requests is None:
        args.duration = 20.0
    args.copy_connections = [int(c) for c in str(args.copy_connections).split(",") if c.strip()]
    if args.latency_at is not None and not 0 < args.latency_at <= 2:
        p.error("--latency-at takes a fraction like 0.5")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Out(args.json)
    signals = SIGNALS if args.signal == "all" else (args.signal,)
    workdir = Path(tempfile.mkdtemp(prefix="otelpg-bench-"))
    server = _pg.Server(args.database_url)
    otelpg = mon = None
    ctx: dict[str, Any] = {"server": server, "workdir": workdir}
    if args.reference is not False:
        ctx["rotel"] = find_rotel(args.rotel_agent)
        if ctx["rotel"]:
            ctx["rotel_version"] = rotel_version(ctx["rotel"])
        else:
            where = args.rotel_agent or "rotel-agent ($ROTEL_AGENT, PATH, the rotel package)"
            ctx["rotel_missing"] = f"{where} not found: no Rotel reference (pip install rotel, or --rotel-agent PATH)"
    schemas: list[str] = []
    try:
        dsn = server.start()
        settings = asyncio.run(_pg.settings(dsn))
        otel_dsn = asyncio.run(_pg.fresh_schema(dsn, "bench_otelpg", migrated=False))  # otelpg migrates it
        raw_dsn = asyncio.run(_pg.fresh_schema(dsn, "bench_raw", migrated=True))
        naive_dsn = asyncio.run(_pg.fresh_schema(dsn, "bench_naive", migrated=True)) if args.baseline else None
        schemas += [s for s in (otel_dsn, raw_dsn, naive_dsn) if s]
        ctx.update(raw_dsn=raw_dsn, naive_dsn=naive_dsn)

        t0 = time.perf_counter()
        templates = {s: build_templates(s, args.templates, args.items or DEFAULT_ITEMS[s]) for s in signals}
        build_s = time.perf_counter() - t0

        otelpg, config = start_otelpg(args, otel_dsn, workdir)
        mon = Monitor(otelpg.proc.pid, server)
        ctx.update(otelpg=otelpg, monitor=mon)

        pg_desc = "embedded" if not args.database_url else "--database-url"
        out.line(
            f"otelpg ingest benchmark: {time.strftime('%Y-%m-%d %H:%M:%S')}, {platform.node()}, "
            f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}"
        )
        out.line(
            f"PostgreSQL {settings['server_version']} ({pg_desc}): "
            + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "server_version")
        )
        out.line(
            f"otelpg pid {otelpg.proc.pid}: batch.max_rows={args.batch_max_rows} "
            f"batch.max_delay={args.batch_max_delay} batch.writers={args.batch_writers} "
            f"database.pool_max_size={args.db_pool_size} queue.max_rows={args.queue_max_rows} "
            f"rollups.enabled={not args.no_rollups} C attribute converter: {_c_converter()}"
        )
        for s in signals:
            tp = templates[s][0]
            out.line(
                f"requests: {s}: {tp.items} {ITEM_NAMES[s]}, {len(tp.body) / 1024:.0f} KiB protobuf, "
                f"{len(templates[s])} templates (built in {build_s:.1f} s); ids and timestamps patched per request"
            )
        out.line(f"source: {ROOT} ({source_version()})")
        if ctx.get("rotel"):
            out.line(f"reference: {ctx['rotel']} ({ctx['rotel_version']}), blackhole exporter")
        elif ctx.get("rotel_missing"):
            out.line(f"reference: {ctx['rotel_missing']}")
        out.line(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        out.doc.update(
            settings=settings,
            otelpg_config=config,
            args={k: v for k, v in vars(args).items()},
            host={"cores": os.cpu_count(), "python": platform.python_version()},
        )
        out.line()

        for s in signals:
            phase = run_phase(
                args,
                out,
                ctx,
                s,
                templates[s],
                name=f"max throughput {args.transport} {s}",
                duration=args.duration,
                requests=args.requests,
                warmup=args.warmup if args.duration else 0,
                spy=f"{args.transport}-{s}" if args.duration else None,
            )
            if args.latency_at:
                rate = phase.req_per_s * args.latency_at
                lat = run_phase(
                    args,
                    out,
                    ctx,
                    s,
                    templates[s],
                    name=f"latency at {args.latency_at:g} x max",
                    rate=rate,
                    duration=args.latency_duration or args.duration or 20.0,
                    warmup=2.0,
                )
                lat.extra["fraction"] = args.latency_at
            # The references after otelpg's phases: their WAL and autovacuum must not land in a measurement.
            copy = run_copy(args, out, ctx, s, templates[s], phase) if not args.no_copy else None
            run_reference(args, out, ctx, s, templates[s], phase)
            if not args.no_components:
                run_components(out, s, templates[s], phase, copy)
            if args.baseline:
                run_naive(args, out, ctx, s, templates[s], phase)
            out.line()

        if args.soak_minutes:
            s = signals[0]
            minutes = args.soak_minutes
            maxima = [p for p in out.doc["phases"] if p["signal"] == s and p["mode"] == "closed"]
            rate = maxima[-1]["req_per_s"] * args.soak_load if args.soak_load and maxima else None
            out.line(
                f"== soak {minutes:g} min: {args.transport} {s}, "
                + (
                    f"open loop at {args.soak_load:g} x max = {rate:,.1f} req/s"
                    if rate
                    else f"closed loop, concurrency {args.concurrency}"
                )
            )
            soak = run_phase(
                args,
                out,
                ctx,
                s,
                templates[s],
                name=f"soak {minutes:g} min",
                rate=rate,
                duration=minutes * 60,
                warmup=0.0,
                per_minute=True,
            )
            soak.extra["load_factor"] = args.soak_load
            out.doc["soak"].append({"minutes": minutes, "load_factor": args.soak_load, "hwm_mib": mon.hwm() / MiB})
            out.line(f"  VmHWM      {mon.hwm() / MiB:.0f} MiB (otelpg's peak RSS since start)")
            out.line()

        targets(out, args)
    finally:
        if otelpg is not None:
            code = otelpg.stop()
            if code != 0:
                out.line(f"otelpg exited with {code}; log tail:\n{otelpg.log[-2000:]}")
        if mon is not None:
            mon.stop()
        if schemas and args.database_url and not args.keep:
            for sd in schemas:
                try:
                    asyncio.run(_pg.drop_schema(server.dsn, sd))
                except Exception:
                    pass
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out.finish()
    return 0


def targets(out: Out, args: argparse.Namespace) -> None:
    """The targets (docs/performance.md §3) against what this run measured (only those it measured)."""
    doc = out.doc
    checks = []
    for c in doc["copy"]:
        if c["signal"] == "metrics" and args.transport == "http":
            checks.append(
                (
                    "metric points over OTLP/HTTP vs raw COPY of the same rows",
                    f">= {TARGET_COPY_RATIO}",
                    f"{c['ratio']:.2f}",
                    c["ratio"] >= TARGET_COPY_RATIO,
                )
            )
    for p in doc["phases"]:
        if p["signal"] == "traces" and p["mode"] == "closed" and not p["name"].startswith("soak"):
            checks.append(
                (
                    f"spans acked ({p['transport']})",
                    f">= {TARGET_SPANS_PER_S:,}",
                    f"{p['items_per_s']:,.0f}/s",
                    p["items_per_s"] >= TARGET_SPANS_PER_S,
                )
            )
        if p["name"].startswith("latency at") and abs(p["extra"].get("fraction", 0) - 0.5) < 1e-9:
            checks.append(
                (
                    f"p99 ack latency at half of max ({p['transport']} {p['signal']})",
                    f"<= {TARGET_P99_MS} ms",
                    f"{p['p99_ms']:.0f} ms",
                    p["p99_ms"] <= TARGET_P99_MS,
                )
            )
    for s in doc["soak"]:
        if s["load_factor"] and s["load_factor"] >= 2:
            checks.append(
                (
                    "RSS under 2x overload",
                    f"<= {TARGET_RSS_MIB} MiB",
                    f"{s['hwm_mib']:.0f} MiB peak",
                    s["hwm_mib"] <= TARGET_RSS_MIB,
                )
            )
    for b in doc["baseline"]:
        checks.append(
            (
                f"vs naive row-by-row INSERT ({b['signal']})",
                f">= {TARGET_NAIVE_X}x",
                f"{b['speedup']:.0f}x",
                b["speedup"] >= TARGET_NAIVE_X,
            )
        )
    if not checks:
        return
    out.line("== targets (docs/performance.md §3)")
    for what, target, got, ok in checks:
        out.line(f"  {'PASS' if ok else 'FAIL'}  {what}: {got} (target {target})")
        doc["targets"].append({"what": what, "target": target, "measured": got, "pass": ok})


if __name__ == "__main__":
    sys.exit(main())
