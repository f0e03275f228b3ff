"""Scenarios of a buggy service and an attacker: data PostgreSQL refuses for good, names too long
to index, maximum-size bodies from 40 clients, requests built to stall the event loop, log injection.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import orjson
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from exporters.postgres.dead_letter import read_letters
from tests.otelpg_process import OtelpgProcess
from tests.reliability.harness import (
    BASE_CONFIG,
    METRIC,
    PB,
    REPO,
    Load,
    Result,
    RssSampler,
    Stage,
    Suite,
    Tally,
    Target,
    alive,
    database_down,
    health,
    innocent_client,
    log_excerpt,
    logs_request,
    partial_success,
    percentile,
    points_request,
    set_attrs,
    sigterm,
    spans_request,
    wait_for,
    wait_stored,
)

HTTP_LIMIT = 20 * 1024 * 1024  # http.max_request_body_size (default)
GRPC_LIMIT = 4 * 1024 * 1024  # grpc.max_recv_msg_size (default)
KEY_MAX_BYTES = 1024  # what indexed names are cut to
MiB = 2**20

POISON_SQL = (
    "ALTER TABLE otel_logs ADD CONSTRAINT poison CHECK (event_type IS DISTINCT FROM 'poison')",
    "ALTER TABLE performance_metrics ADD CONSTRAINT poison CHECK (metric_name IS DISTINCT FROM 'poison')",
)
# What a client-facing message must not show: otelpg's tables, indexes, constraints.
LEAKS = re.compile(
    r"system_events|otel_spans|otel_span_events|otel_logs|otelpg_events|performance_metrics"
    r"|_idx|_pkey|constraint \"|partition",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- poison


class PoisonClient:
    """Requests holding one item PostgreSQL refuses for good (a log record whose event.name is
    'poison', a metric named 'poison') among innocent keyed ones, over HTTP and gRPC."""

    def __init__(self, target: Target, tally: Tally, service: str = "rel-poison") -> None:
        self.target = target
        self.tally = tally
        self.service = service
        self.messages: list[str] = []  # partial_success messages of requests with a rejection
        self.unexpected: list[str] = []  # answers other than expected

    def _expect(self, tag: str, status: str, rejected: int, message: str, expect: int) -> bool:
        if message:
            self.messages.append(message)
        if status != "OK" or rejected != expect:
            self.unexpected.append(f"{tag}: {status}, {rejected} rejected (expected {expect}) {message[:200]!r}")
        return status == "OK" and rejected <= 1

    async def logs(self, session: aiohttp.ClientSession, tag: str, expect: int) -> None:
        keys = [f"{tag}-{i}" for i in range(5)]
        req = logs_request(self.service, keys)
        rec = req.resource_logs[0].scope_logs[0].log_records.add(time_unix_nano=time.time_ns())
        rec.body.string_value = f"{tag}-poison"
        set_attrs(rec.attributes, {"event.name": "poison"})
        try:
            async with session.post(
                self.target.url("/v1/logs"), data=req.SerializeToString(), headers={"Content-Type": PB}
            ) as r:
                body = await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            self.unexpected.append(f"{tag}: {type(e).__name__}")
            return
        rejected, message = partial_success("/v1/logs", body, PB) if r.status == 200 else (0, "")
        if self._expect(tag, "OK" if r.status == 200 else f"HTTP {r.status}", rejected, message, expect):
            self.tally.acked.extend(keys)

    async def points(self, stub: Any, tag: str, expect: int) -> None:
        keys = [f"{tag}-{i}" for i in range(5)]
        req = points_request(self.service, keys)
        req.resource_metrics[0].scope_metrics[0].metrics.add(name="poison").gauge.data_points.add(
            time_unix_nano=time.time_ns(), as_int=1
        )
        try:
            reply = await stub.Export(req, timeout=30)
        except grpc.aio.AioRpcError as e:
            self.unexpected.append(f"{tag}: gRPC {e.code().name} {e.details()}")
            return
        partial = reply.partial_success
        if self._expect(tag, "OK", partial.rejected_data_points, partial.error_message, expect):
            self.tally.acked.extend(keys)

    async def send(self, tag: str, count: int, expect: int, pause: float = 0.1) -> None:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            grpc.aio.insecure_channel(self.target.grpc) as channel,
        ):
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            for i in range(count):
                await self.logs(session, f"{tag}{i}", expect)
                await self.points(stub, f"{tag}pt{i}", expect)
                await asyncio.sleep(pause)


def _long_names(tag: str) -> tuple[bytes, Any, bytes]:
    """A logs request, a metrics request and a traces request whose indexed names are far too long
    for a B-tree entry: 10 KB service.name, service.instance.id and event.name / metric name,
    3 KB enduser.id."""
    service, resource = "rel-long-" + "s" * 10_240, {"service.instance.id": "i" * 10_240}
    user = {"enduser.id": "u" * 3_072}
    logs = logs_request(service, [f"longlog-{tag}"], resource=resource, attrs={"event.name": "e" * 10_240, **user})
    points = points_request(service, [f"longpt-{tag}"], metric="rel.long." + "m" * 10_240, resource=resource)
    spans = spans_request(service, [f"longspan-{tag}"], resource=resource, attrs=user)
    return logs.SerializeToString(), points, spans.SerializeToString()


async def _send_long_names(target: Target, tag: str, tally: Tally, problems: list[str]) -> None:
    logs, points, spans = _long_names(tag)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for path, body in (("/v1/logs", logs), ("/v1/traces", spans)):
            async with session.post(target.url(path), data=body, headers={"Content-Type": PB}) as r:
                data = await r.read()
            rejected, message = partial_success(path, data, PB) if r.status == 200 else (0, "")
            if r.status != 200 or rejected:
                problems.append(f"long names {tag} {path}: HTTP {r.status}, {rejected} rejected {message[:300]!r}")
            elif path == "/v1/traces":
                tally.acked.append(f"longspan-{tag}")
    async with grpc.aio.insecure_channel(target.grpc) as channel:
        try:
            reply = await metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(points, timeout=30)
            if reply.partial_success.rejected_data_points:
                problems.append(f"long names {tag} metrics: {reply.partial_success.error_message[:300]!r}")
        except grpc.aio.AioRpcError as e:
            problems.append(f"long names {tag} metrics: gRPC {e.code().name} {e.details()}")


async def _check_long_names(st: Stage, r: Result, tags: list[str]) -> None:
    """Every long-named item stored, its indexed names cut to KEY_MAX_BYTES."""
    for tag in tags:
        checks = {
            "log (service_name, event_type)": (
                "SELECT octet_length(service_name), octet_length(event_type) "
                "FROM system_events WHERE payload->>'body' = $1",
                f"longlog-{tag}",
            ),
            "span (service_name)": (
                "SELECT octet_length(service_name) FROM system_events WHERE event_type = 'span' AND name = $1",
                f"longspan-{tag}",
            ),
            "metric point (metric_name, service_name)": (
                "SELECT octet_length(metric_name), octet_length(service_name) "
                "FROM performance_metrics WHERE tags->>'key' = $1",
                f"longpt-{tag}",
            ),
        }
        for what, (sql, key) in checks.items():
            rows = await st.fetch(sql, key)
            lengths = list(rows[0]) if rows else []
            r.check(
                len(rows) == 1 and all(n == KEY_MAX_BYTES for n in lengths),
                f"long-named {what} {key}: {len(rows)} rows, lengths {lengths}",
            )
    for table, column in (("user_analytics", "user_id"), ("agent_states", "instance_id")):
        n, longest = (
            await st.fetch(
                f"SELECT count(*), max(octet_length({column})) FROM {table} WHERE service_name LIKE 'rel-long-%'"
            )
        )[0]
        r.note(f"long names: {table}: {n} rows, longest {column} {longest} bytes")
        r.check(n > 0 and longest == KEY_MAX_BYTES, f"long names: {table}: {n} rows, longest {column} {longest}")


async def _agent_services(st: Stage) -> set[str]:
    return {row[0] for row in await st.fetch("SELECT service_name FROM agent_states")}


async def poison(suite: Suite) -> Result:
    """Innocent clients beside (a) live requests PostgreSQL refuses for good, (b) the same refused
    after being spooled during an outage, (c) names too long for a B-tree index."""
    r = Result("poison")
    count = int(suite.pick(8, 40))
    async with Stage(suite, "poison") as st:
        await st.migrate()
        for sql in POISON_SQL:
            await st.fetch(sql)
        proc = await st.start()
        target = Target(proc)
        load = Load(target, logs=1, spans=1, points=1).start()
        client = PoisonClient(target, load.tally)
        long_problems: list[str] = []
        await client.send("plive", count, expect=1)
        live_messages = list(client.messages)
        await _send_long_names(target, "live", load.tally, long_problems)
        await st.proxy.cut()
        await database_down(proc)
        await client.send("pspool", count, expect=0, pause=0.02)
        await _send_long_names(target, "spool", load.tally, long_problems)
        await st.proxy.restore()
        await asyncio.sleep(2)
        await load.stop()
        stored, _ = await wait_stored(st.direct_dsn, load.tally.acked, suite.pick(30, 60))
        spool_empty = await wait_for(lambda: _spool_empty(proc), 30, every=0.5)
        innocent = {"rel-logs", "rel-spans", "rel-points", "rel-poison"}
        await wait_for(lambda: _has_services(st, innocent), 10, every=0.5)
        services = await _agent_services(st)
        rollup, raw = (
            await st.fetch(
                "SELECT (SELECT coalesce(sum(count), 0) FROM performance_metrics_1m WHERE metric_name = $1), "
                "(SELECT count(*) FROM performance_metrics WHERE metric_name = $1)",
                METRIC,
            )
        )[0]
        await _check_long_names(st, r, ["live", "spool"])
        status, body = await health(proc)
        letters = read_letters(st.data_dir / "dead-letter" / "dead-letter.jsonl")
        code, _ = await sigterm(proc)
    r.count(load.tally.acked, stored, "innocent items")
    r.note(load.tally.summary())
    r.note(f"partial_success message (live poison): {live_messages[0] if live_messages else None!r}")
    for problem in client.unexpected[:5] + long_problems:
        r.check(False, problem)
    r.check(
        len(live_messages) >= 2 * count,
        f"only {len(live_messages)} of {2 * count} live poison requests reported a rejection",
    )
    leaks = [m for m in live_messages if LEAKS.search(m)]
    r.check(not leaks, f"partial_success messages name otelpg's tables or indexes: {leaks[:2]}")
    vague = [m for m in live_messages if "'poison'" not in m]
    r.check(not vague, f"partial_success messages that don't name the refused item: {vague[:2]}")
    r.check(spool_empty, "the spool was not replayed within 30s")
    r.note(f"rollup: performance_metrics_1m counts {rollup:,} points, performance_metrics holds {raw:,}")
    r.check(rollup == raw, f"performance_metrics_1m sums to {rollup:,} points, raw rows {raw:,}")
    r.check(innocent <= services, f"agent_states lacks {sorted(innocent - services)} (has {sorted(services)[:8]})")
    by_source = {s: [x for x in letters if x["source"] == s] for s in ("live", "spool")}
    r.note(f"dead letters: {len(by_source['live'])} live, {len(by_source['spool'])} spooled")
    missing = [
        f"pspool{i}-poison"
        for i in range(count)
        if not any(f"pspool{i}-poison".encode() in x["payload"] for x in by_source["spool"])
    ]
    r.check(not missing, f"spooled poison not kept as a dead letter: {missing[:3]}" + log_excerpt(proc, "dead letter"))
    r.note(f"/health: {status} {orjson.dumps({k: body.get(k) for k in ('ok', 'status', 'problems')}).decode()}")
    r.check(
        body.get("ok") is False and body.get("status") == "degraded",
        f"/health says ok={body.get('ok')} status={body.get('status')!r}, expected degraded",
    )
    r.check(code == 0, f"exit status {code}" + log_excerpt(proc))
    r.figure = (
        f"{len(live_messages)} live + {2 * count} spooled poison requests; rollup {rollup:,} = raw {raw:,}; "
        f"{len(letters)} dead letters"
    )
    return r


async def _spool_empty(proc: OtelpgProcess) -> bool:
    return (await health(proc))[1].get("spool_bytes") == 0


async def _has_services(st: Stage, services: set[str]) -> bool:
    return services <= await _agent_services(st)


# --------------------------------------------------------------------------- log injection

FORGED = "2026-01-01 00:00:00,000 ERROR otelpg: forged"
EVIL_SERVICE = f"rel-evil\x1b[31m\n{FORGED}\x1b[0m\x1b[2J\r\u2028end"
_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
_TRACEBACK_LINE = re.compile(
    r"\s|Traceback \(most recent call last\):|During handling of the above exception|"
    r"The above exception was the direct cause|[A-Za-z_][\w.]*(Error|Exception|Warning)\b"
)


async def log_injection(suite: Suite) -> Result:
    """A service.name carrying a newline, a forged log line and ANSI escapes, in requests that make
    otelpg log about it (refused live, and refused when replayed from the spool)."""
    r = Result("log_injection")
    async with Stage(suite, "log_injection") as st:
        await st.migrate()
        for sql in POISON_SQL:
            await st.fetch(sql)
        proc = await st.start()
        target = Target(proc)
        tally = Tally()
        client = PoisonClient(target, tally, service=EVIL_SERVICE)
        await client.send("evil", 2, expect=1)
        await st.proxy.cut()
        await database_down(proc)
        await client.send("evilspool", 2, expect=0)
        await st.proxy.restore()
        await wait_for(lambda: _spool_empty(proc), 20, every=0.5)
        stored, _ = await wait_stored(st.direct_dsn, tally.acked, 20)
        code, _ = await sigterm(proc)
    r.count(tally.acked, stored, "innocent items beside the poison")
    lines = [line.rstrip("\n") for line in proc.log_lines]
    mentions = [line for line in lines if "forged" in line]
    forged = [line for line in lines if line.startswith(FORGED)]
    strangers = [line for line in lines if not (_LOG_LINE.match(line) or _TRACEBACK_LINE.match(line))]
    r.note(
        f"{len(lines)} log lines, {len(mentions)} mention the evil service, e.g.:"
        + log_excerpt(proc, "forged", limit=2)
    )
    r.check(bool(mentions), "otelpg never logged about the evil service: nothing was tested")
    r.check(not forged, f"{len(forged)} forged log lines: {forged[:2]}")
    r.check("\x1b" not in proc.log, "raw ANSI escapes in otelpg's log")
    r.check(not strangers, f"{len(strangers)} lines neither a log record nor a traceback: {strangers[:3]!r}")
    r.check(code == 0, f"exit status {code}")
    r.figure = f"{len(mentions)} lines about the evil service, {len(forged)} forged, {len(strangers)} strange"
    return r


# --------------------------------------------------------------------------- memory and stalls


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _request_of(item: bytes, size: int, service: str = "hostile") -> bytes:
    """An Export{Trace,Logs}ServiceRequest of one resource whose one scope holds copies of `item`
    (a serialized Span or LogRecord: both field 2 of their scope, down from field 1 of the request)
    up to `size` bytes."""
    kv = _field(1, b"service.name") + _field(2, _field(1, service.encode()))
    head = _field(1, _field(1, kv))
    framed = _field(2, item)
    copies = max(1, (size - len(head) - 32) // len(framed))
    return _field(1, head + _field(2, framed * copies))


def _tiny_span() -> bytes:
    now = time.time_ns()
    return Span(
        trace_id=uuid.uuid4().bytes,
        span_id=uuid.uuid4().bytes[:8],
        name="s",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
    ).SerializeToString()


def _log_record(body: str) -> bytes:
    rec = LogRecord(time_unix_nano=time.time_ns())
    rec.body.string_value = body
    set_attrs(rec.attributes, {"a": "b"})
    return rec.SerializeToString()


async def _hostile_http(url: str, body: bytes, headers: dict[str, str], tally: Tally) -> None:
    """Send the same body again and again, ignoring Retry-After."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        while True:
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                tally.statuses[f"http {r.status}"] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                tally.statuses[f"http {type(e).__name__}"] += 1
            await asyncio.sleep(0.02)


async def _hostile_grpc(target: str, body: bytes, tally: Tally) -> None:
    options = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        while True:
            try:
                await export(body, timeout=60)
                tally.statuses["grpc OK"] += 1
            except grpc.aio.AioRpcError as e:
                tally.statuses[f"grpc {e.code().name}"] += 1
            await asyncio.sleep(0.02)


async def _loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late this process's own event loop wakes up (the clients' side of any latency)."""
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append(time.monotonic() - started - 0.05)


async def _attack(
    attackers: list[Callable[[], Awaitable[None]]], seconds: float, target: Target, give_up_after: float, r: Result
) -> tuple[Tally, list[float], list[str]]:
    """Run the attackers and an innocent client for `seconds`; the innocent client's tally,
    latencies and requests given up on."""
    innocent, latencies, gave_up, lags = Tally(), [], [], []
    stop = asyncio.Event()
    hostile = [asyncio.create_task(attack()) for attack in attackers]
    polite = asyncio.create_task(
        innocent_client(target, innocent, stop, latencies, gave_up, give_up_after=give_up_after)
    )
    lag = asyncio.create_task(_loop_lag(stop, lags))
    await asyncio.sleep(seconds)
    for task in hostile:
        task.cancel()
    await asyncio.gather(*hostile, return_exceptions=True)
    stop.set()
    await polite
    await lag
    r.note(
        f"the clients' own event loop woke up late by up to {max(lags, default=0) * 1000:.0f} ms "
        f"(p99 {percentile(lags, 0.99) * 1000:.0f} ms)"
    )
    return innocent, latencies, gave_up


async def _start_probe(url: str, seconds: float) -> asyncio.subprocess.Process:
    """tests.reliability.probe GETting `url` every 20 ms for `seconds`, from a process of its own."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability.probe",
        url,
        "0.02",
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )


async def _probed(probe: asyncio.subprocess.Process, r: Result) -> tuple[list[float], int]:
    """The probe's latencies and errors, noted in the result."""
    out = orjson.loads((await probe.communicate())[0] or b"{}")
    latencies, errors = out.get("latencies", []), out.get("errors", 0)
    p50, p99, worst = (
        1000 * x for x in (percentile(latencies, 0.5), percentile(latencies, 0.99), max(latencies, default=0))
    )
    r.note(
        f"/health probe: {len(latencies)} answered, {errors} errors, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {worst:.0f} ms"
    )
    return latencies, errors


def _attackers_tally(tallies: list[Tally]) -> str:
    total = Tally()
    for t in tallies:
        total.statuses.update(t.statuses)
    return "attackers' " + total.summary()


def _check_survived(
    r: Result, proc: OtelpgProcess, running: bool, gave_up: list[str], code: int | None, when: str
) -> None:
    """otelpg stayed up, every innocent request was acknowledged, and it exited cleanly after."""
    r.check(running, f"otelpg died {when}" + log_excerpt(proc))
    r.check(not gave_up, f"{len(gave_up)} innocent requests never acknowledged: {gave_up[:3]}")
    r.check(code == 0, f"exit status {code}" + log_excerpt(proc))


async def memory(suite: Suite) -> Result:
    """40 clients sending maximum-size bodies (raw, gzip-inflated, gRPC) and one ordinary client:
    otelpg's RSS stays bounded, it stays up, the ordinary client gets through."""
    r = Result("memory")
    seconds = suite.pick(10, 60)
    limit = 300 * MiB
    big_logs = _request_of(_log_record("x" * MiB), HTTP_LIMIT - 64 * 1024)
    small_logs = gzip.compress(_request_of(_log_record("k" * 40), HTTP_LIMIT - 64 * 1024), 6)
    spans = _request_of(_tiny_span(), GRPC_LIMIT - 16 * 1024)
    r.note(
        f"bodies: {len(big_logs) / MiB:.2f} MiB of 1 MiB log bodies; {len(small_logs) / 1024:.0f} KB gzip "
        f"inflating to ~{(HTTP_LIMIT - 64 * 1024) / MiB:.2f} MiB of small log records; "
        f"{len(spans) / MiB:.2f} MiB gRPC messages of tiny spans"
    )
    async with Stage(suite, "memory") as st:
        proc = await st.start(BASE_CONFIG.replace("grace_period: 10", "grace_period: 3"))
        target = Target(proc)
        tallies = [Tally() for _ in range(40)]
        logs_url = target.url("/v1/logs")
        attackers: list[Callable[[], Awaitable[None]]] = []
        for i, tally in enumerate(tallies):
            if i % 3 == 0:
                attackers.append(lambda t=tally: _hostile_http(logs_url, big_logs, {"Content-Type": PB}, t))
            elif i % 3 == 1:
                attackers.append(
                    lambda t=tally: _hostile_http(
                        logs_url, small_logs, {"Content-Type": PB, "Content-Encoding": "gzip"}, t
                    )
                )
            else:
                attackers.append(lambda t=tally: _hostile_grpc(target.grpc, spans, t))
        probe = await _start_probe(proc.url("admin", "/health"), seconds)
        with RssSampler(proc.proc.pid) as rss:  # type: ignore[union-attr]
            innocent, latencies, gave_up = await _attack(attackers, seconds, target, seconds + 30, r)
            running = alive(proc)
        await _probed(probe, r)
        stored, _ = await wait_stored(st.direct_dsn, innocent.acked, 30)
        code, _ = await sigterm(proc)
    r.count(innocent.acked, stored, "innocent items")
    r.note("innocent " + innocent.summary())
    r.note(_attackers_tally(tallies))
    r.note(
        f"innocent requests: {len(latencies)} acked, p50 {percentile(latencies, 0.5):.2f}s, "
        f"max {max(latencies, default=0):.2f}s; given up: {len(gave_up)} {gave_up[:3]}"
    )
    r.note(
        f"RSS: {len(rss.samples)} samples, first {rss.samples[0] / MiB if rss.samples else 0:.0f} MiB, "
        f"peak {rss.peak / MiB:.0f} MiB"
    )
    r.check(rss.peak <= limit, f"peak RSS {rss.peak / MiB:.0f} MiB > {limit / MiB:.0f} MiB")
    _check_survived(r, proc, running, gave_up, code, "under the load")
    r.figure = (
        f"peak RSS {rss.peak / MiB:.0f} MiB (bound {limit / MiB:.0f}); innocent max {max(latencies, default=0):.1f}s"
    )
    return r


async def stall(suite: Suite) -> Result:
    """8 concurrent requests built to hold the event loop, while a probe GETs /health every 20 ms and
    an ordinary client sends: /health stays fast, the ordinary client gets through."""
    r = Result("stall")
    seconds = suite.pick(10, 60)
    bound = 1.0
    bomb = gzip.compress(b"\x0a\x00" * 9_400_000, 9)  # 9.4 M empty ResourceSpans
    span = Span.FromString(_tiny_span())
    for _ in range(200_000):
        span.attributes.add()
    attributes = _request_of(span.SerializeToString(), 0)  # one span
    nested = logs_request("hostile", ["x"])  # not rel-*: the attackers' items are not counted
    value = nested.resource_logs[0].scope_logs[0].log_records[0].body
    for _ in range(10_000):
        value = value.kvlist_value.values.add(key="k").value
    tiny = _request_of(_tiny_span(), HTTP_LIMIT - 64 * 1024)
    shapes = {
        "gzip bomb of empty ResourceSpans": ("/v1/traces", bomb, {"Content-Encoding": "gzip"}),
        "span with 200,000 empty attributes": ("/v1/traces", attributes, {}),
        "AnyValue nested 10,000 deep": ("/v1/logs", nested.SerializeToString(), {}),
        "20 MiB of tiny spans": ("/v1/traces", tiny, {}),
    }
    r.note("shapes: " + "; ".join(f"{name} ({len(body) / 1024:,.0f} KB)" for name, (_, body, _) in shapes.items()))
    async with Stage(suite, "stall") as st:
        proc = await st.start(BASE_CONFIG.replace("grace_period: 10", "grace_period: 3"))
        target = Target(proc)
        tallies = [Tally() for _ in range(8)]
        attackers: list[Callable[[], Awaitable[None]]] = [
            lambda t=tally, s=shape: _hostile_http(target.url(s[0]), s[1], {"Content-Type": PB, **s[2]}, t)
            for shape, tally in zip([*shapes.values()] * 2, tallies, strict=True)
        ]
        probe = await _start_probe(proc.url("admin", "/health"), seconds)
        innocent, latencies, gave_up = await _attack(attackers, seconds, target, seconds + 30, r)
        probe_latencies, probe_errors = await _probed(probe, r)
        running = alive(proc)
        stored, _ = await wait_stored(st.direct_dsn, innocent.acked, 30)
        code, _ = await sigterm(proc)
    worst = max(probe_latencies, default=float("inf"))
    r.count(innocent.acked, stored, "innocent items")
    r.note("innocent " + innocent.summary())
    r.note(_attackers_tally(tallies))
    p99 = percentile(probe_latencies, 0.99)
    r.note(
        f"innocent requests: {len(latencies)} acked, p50 {percentile(latencies, 0.5):.2f}s, "
        f"p99 {percentile(latencies, 0.99):.2f}s, max {max(latencies, default=0):.2f}s; given up: {len(gave_up)}"
    )
    r.check(worst <= bound, f"/health took up to {worst:.2f}s (bound {bound:g}s)")
    r.check(not probe_errors, f"{probe_errors} /health probes failed")
    _check_survived(r, proc, running, gave_up, code, "under the attack")
    r.figure = (
        f"/health p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms; innocent p99 {percentile(latencies, 0.99):.1f}s"
    )
    return r
