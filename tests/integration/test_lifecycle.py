"""Data lifecycle against a real PostgreSQL: partitions ahead / split / retention, rollups equal to a
direct aggregate of the raw rows, user_analytics, agent_states, system_config, lookups, stats.

Time is injected (maintenance's `now`, the tracker's clock), never slept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import math
import time
from dataclasses import replace
from pathlib import Path

import asyncpg
import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from exporters.postgres.agent_states import AgentStates
from exporters.postgres.config import RetentionConfig
from exporters.postgres.derived import DerivedRows
from exporters.postgres.ids import request_ids
from exporters.postgres.maintenance import ensure_partitions, maintain, partition_name
from exporters.postgres.mapping import map_logs, map_metrics, map_traces
from exporters.postgres.migrate import migrate
from exporters.postgres.partition_maintenance import retention_days
from exporters.postgres.schema import (
    OTEL_LOGS,
    OTEL_SPAN_EVENTS,
    OTEL_SPANS,
    OTELPG_EVENTS,
    PARTITIONING,
    PERFORMANCE_METRICS,
    PERFORMANCE_METRICS_1H,
    PERFORMANCE_METRICS_1M,
    USER_ANALYTICS,
)
from exporters.postgres.stats import TOTAL, format_stats, table_stats
from exporters.postgres.system_config import SystemConfig
from exporters.postgres.writer import Writer
from sidecar.config import SETTINGS, AgentStatesConfig, Config, UserAnalyticsConfig, effective_config
from sidecar.pipeline.signals import LOGS, METRICS, TRACES
from sidecar.pipeline.telemetry import Telemetry
from tests.unit.mapping.builders import kvs, resource

NOW = dt.datetime(2031, 3, 10, 12, 30, tzinfo=dt.UTC)
RETENTION = {
    "otel_spans": 30,
    "otel_span_events": 30,
    "otel_logs": 30,
    "otelpg_events": 30,
    "performance_metrics": 30,
    "user_analytics": 30,
    "performance_metrics_1m": 90,
    "performance_metrics_1h": 400,
}


def ns(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


async def partitions(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch("SELECT partition FROM otelpg_partitions WHERE parent = $1 ORDER BY 1", table)
    return [r["partition"] for r in rows]


def make_derived(tmp_path: Path, **sections) -> DerivedRows:
    config = Config(data_dir=str(tmp_path), **sections)
    return DerivedRows.configured(config.rollups, config.user_analytics, config.data_dir)


def make_writer(pool: asyncpg.Pool, derived: DerivedRows) -> Writer:
    return Writer(pool, Telemetry(CollectorRegistry()), hooks=[derived.batch_hook], retry_delays=())


def system_config(pool: asyncpg.Pool, config: Config) -> SystemConfig:
    return SystemConfig(pool, effective_config(config), {s.key: s.help for s in SETTINGS}, asyncio.Event())


async def write(writer: Writer, mapped) -> None:
    n = sum(len(r) for r in mapped.rows.values())
    await writer.write_rows(mapped.rows, mapped.resources, n)


# --------------------------------------------------------------------------- partitions


async def test_partitions_created_ahead_and_dropped_past_retention(db):
    await migrate(db)
    report = await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=NOW)
    day_tables = [t for t, (_, unit) in PARTITIONING.items() if unit == "day"]
    assert len(report.created) == 5 * len(day_tables) + 1  # + the 1h rollup's month
    for table in day_tables:
        assert await partitions(db, table) == [f"{table}_default", *(f"{table}_p203103{d:02d}" for d in range(9, 14))]
    assert await partitions(db, PERFORMANCE_METRICS_1H) == [
        "performance_metrics_1h_default",
        "performance_metrics_1h_p203103",
    ]
    # Rollup partitions leave room for HOT updates.
    assert await db.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'performance_metrics_1m_p20310310'") == [
        "fillfactor=70"
    ]
    again = await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=NOW)
    assert again.created == again.dropped == [] and again.moved_rows == 0

    # 33 days later (April 12th): the window moved; days entirely before March 13th (30 days of
    # retention) are gone, the 1m rollup (90 days) and the monthly 1h rollup keep theirs.
    later = NOW + dt.timedelta(days=33)
    report = await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=later)
    events = await partitions(db, OTEL_SPANS)
    assert "otel_spans_p20310312" not in events and "otel_spans_p20310313" in events
    assert f"otel_spans_p{later:%Y%m%d}" in events
    assert "otel_spans_p20310309" in report.dropped and "performance_metrics_p20310309" in report.dropped
    assert "performance_metrics_1m_p20310309" in await partitions(db, PERFORMANCE_METRICS_1M)
    # 400 days on, March 2031 is past the 1h rollup's retention: a whole month dropped.
    much_later = NOW + dt.timedelta(days=400 + 31)
    report = await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=much_later)
    assert "performance_metrics_1h_p203103" in report.dropped
    assert "performance_metrics_1h_p203103" not in await partitions(db, PERFORMANCE_METRICS_1H)
    assert all(not p.startswith("otel_spans_p2031") for p in await partitions(db, OTEL_SPANS))


async def test_each_signal_keeps_its_own_retention(db):
    """Spans, logs and otelpg's own events are separate tables: each drops its days at its own age."""
    await migrate(db)
    fallback = retention_days(RetentionConfig(system_events_days=20))  # spans_days, logs_days unset
    assert fallback[OTEL_SPANS] == fallback[OTEL_SPAN_EVENTS] == fallback[OTEL_LOGS] == fallback[OTELPG_EVENTS] == 20
    days = retention_days(RetentionConfig(system_events_days=20, spans_days=10, logs_days=3))
    assert days[OTEL_SPANS] == days[OTEL_SPAN_EVENTS] == 10 and days[OTEL_LOGS] == 3 and days[OTELPG_EVENTS] == 20
    five_days_ago = NOW - dt.timedelta(days=5)
    await maintain(db, days_behind=1, days_ahead=1, retention_days=days, now=five_days_ago)
    day = f"{five_days_ago:%Y%m%d}"
    for table in (OTEL_SPANS, OTEL_SPAN_EVENTS, OTEL_LOGS, OTELPG_EVENTS):
        assert f"{table}_p{day}" in await partitions(db, table)
    report = await maintain(db, days_behind=1, days_ahead=1, retention_days=days, now=NOW)
    assert f"otel_logs_p{day}" in report.dropped  # 5 days old: past the logs' 3 days
    assert f"otel_logs_p{day}" not in await partitions(db, OTEL_LOGS)
    assert f"otel_spans_p{day}" not in report.dropped  # the same day kept for spans (10 days)
    assert f"otel_spans_p{day}" in await partitions(db, OTEL_SPANS)
    assert f"otel_span_events_p{day}" in await partitions(db, OTEL_SPAN_EVENTS)
    assert f"otelpg_events_p{day}" in await partitions(db, OTELPG_EVENTS)  # 20 days


async def test_rows_far_outside_the_window_are_stored_and_split_out(pool, tmp_path):
    derived = make_derived(tmp_path)
    writer = make_writer(pool, derived)
    now = dt.datetime.now(dt.UTC)
    times = {
        "future": now + dt.timedelta(days=400),
        "1970": dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
        "late": now - dt.timedelta(days=10),
        "now": now,
    }
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add(resource=resource({"service.name": "clock"})).scope_logs.add().log_records
    for name, t in times.items():
        rec = records.add(time_unix_nano=ns(t))
        rec.body.string_value = name
    async with pool.acquire() as conn:
        await ensure_partitions(conn, 1, 3)
        await write(writer, map_logs(req, time.time_ns()))
        stored = {
            r["b"]: r["p"] for r in await conn.fetch("SELECT body AS b, tableoid::regclass::text AS p FROM otel_logs")
        }
        # Every row is stored; those without a partition wait in the default one.
        assert stored == {
            "future": "otel_logs_default",
            "1970": "otel_logs_default",
            "late": "otel_logs_default",
            "now": f"otel_logs_p{now:%Y%m%d}",
        }

        report = await maintain(conn, days_behind=1, days_ahead=3, retention_days=RETENTION, now=now)
        stored = {
            r["b"]: r["p"] for r in await conn.fetch("SELECT body AS b, tableoid::regclass::text AS p FROM otel_logs")
        }
        late = partition_name(OTEL_LOGS, "day", times["late"])
        assert stored["late"] == late and late in report.created  # split out of the default partition
        assert stored["future"] == "otel_logs_default"  # kept there until the window reaches its day
        assert "1970" not in stored  # 61 years past a 30-day retention: deleted like any expired row
        assert report.expired_default_rows >= 1 and report.moved_rows >= 1
        assert stored["now"] == f"otel_logs_p{now:%Y%m%d}"

        # 398 days on, the future row's day enters the window: moved into its own partition.
        report = await maintain(
            conn, days_behind=1, days_ahead=3, retention_days=RETENTION, now=now + dt.timedelta(days=398)
        )
        where = await conn.fetchval("SELECT tableoid::regclass::text FROM otel_logs WHERE body = 'future'")
        assert where == partition_name(OTEL_LOGS, "day", times["future"])
        assert await conn.fetchval("SELECT count(*) FROM otel_logs_default") == 0


async def test_two_maintainers_at_once_do_not_conflict(db_dsn, db):
    await migrate(db)
    base = NOW - dt.timedelta(days=12)
    await db.execute(
        "INSERT INTO otelpg_events (event_type, source, timestamp) "
        "SELECT 'log', 's', $1::timestamptz + make_interval(hours => g) FROM generate_series(0, 239) g",
        base,
    )
    a, b = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        reports = await asyncio.gather(*(
            maintain(c, days_behind=1, days_ahead=3, retention_days=RETENTION, now=NOW) for c in (a, b)
        ))  # fmt: skip
    finally:
        await a.close()
        await b.close()
    created = [p for r in reports for p in r.created]
    assert len(created) == len(set(created))  # each partition made once
    assert sum(r.moved_rows for r in reports) == 240
    assert await db.fetchval("SELECT count(*) FROM otelpg_events") == 240
    assert await db.fetchval("SELECT count(*) FROM otelpg_events_default") == 0
    assert await db.fetchval("SELECT count(DISTINCT tableoid) FROM otelpg_events") == 11  # Feb 26 - Mar 8
    # In the background a run finding the lock taken skips instead of waiting.
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(hashtext('otelpg.maintain.' || current_schema()))")
        other = await asyncpg.connect(db_dsn)
        try:
            skipped = await maintain(other, days_behind=1, days_ahead=3, retention_days=RETENTION, wait=False)
        finally:
            await other.close()
    assert skipped.locked_out


async def test_maintenance_does_not_block_ingest_into_other_partitions(db_dsn, db):
    """Partitions are attached, not created with PARTITION OF: a COPY in progress into today's
    partition does not stop maintenance, and maintenance does not stop it."""
    await migrate(db)
    await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=NOW)
    writer = await asyncpg.connect(db_dsn)
    try:
        async with writer.transaction():
            await writer.execute(
                "INSERT INTO otelpg_events (event_type, source, timestamp) VALUES ('log', 's', $1)", NOW
            )
            report = await asyncio.wait_for(
                maintain(db, days_behind=1, days_ahead=5, retention_days=RETENTION, now=NOW), 20
            )
    finally:
        await writer.close()
    assert "otelpg_events_p20310315" in report.created and not report.skipped


# --------------------------------------------------------------------------- rollups


def _metrics_request(base: dt.datetime, step_s: int, n: int, service: str = "shop") -> ExportMetricsServiceRequest:
    """Gauge, sum, histogram, exponential histogram and summary points every step_s seconds, the
    same series sent with its attributes in either order, some NaN and missing values."""
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add(resource=resource({"service.name": service})).scope_metrics.add()
    gauge = sm.metrics.add(name="temp", unit="Cel").gauge
    total = sm.metrics.add(name="requests", unit="1").sum
    total.aggregation_temporality, total.is_monotonic = 1, True
    hist = sm.metrics.add(name="latency", unit="s").histogram
    hist.aggregation_temporality = 1
    exp = sm.metrics.add(name="size", unit="By").exponential_histogram
    exp.aggregation_temporality = 1
    summary = sm.metrics.add(name="legacy", unit="s").summary
    for i in range(n):
        t = ns(base + dt.timedelta(seconds=i * step_s))
        attrs = {"host": "a", "route": f"/r{i % 2}"}
        flipped = dict(reversed(list(attrs.items()))) if i % 3 == 0 else attrs
        p = gauge.data_points.add(time_unix_nano=t, attributes=kvs(flipped))
        if i % 7 == 3:
            p.as_double = math.nan
        elif i % 11 != 5:
            p.as_double = 20.0 + (i * 37 % 13) - 6.5
        total.data_points.add(time_unix_nano=t, as_int=i * 3 + 1, attributes=kvs(attrs))
        counts = [i % 3, (i * 5) % 7, 1, i % 2]
        hist.data_points.add(
            time_unix_nano=t,
            count=sum(counts),
            sum=0.01 * i,
            min=0.001 * (i % 5),
            max=2.0 + i % 4,
            explicit_bounds=[0.1, 0.5, 1.0],
            bucket_counts=counts,
            attributes=kvs(flipped),
        )
        e = exp.data_points.add(
            time_unix_nano=t, count=3 + i % 4, sum=float(i), scale=2, zero_count=1, attributes=kvs(attrs)
        )
        e.positive.offset = 4
        e.positive.bucket_counts.extend([1, 1 + i % 4, 0])
        summary.data_points.add(time_unix_nano=t, count=10 + i, sum=1.5 * i, attributes=kvs(attrs))
    return req


_DIRECT = """
SELECT metric_name, service_name, to_timestamp(floor(extract(epoch FROM timestamp) / {s}) * {s}) AS bucket,
       tags, metric_type, bucket_bounds,
       count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
       (array_agg(value ORDER BY timestamp DESC))[1] AS last, max(timestamp) AS last_timestamp,
       sum(count) AS sample_count, min(min) AS sample_min, max(max) AS sample_max,
       otelpg_sum_buckets(bucket_counts) AS bucket_counts
FROM performance_metrics
GROUP BY metric_name, service_name, 3, tags, metric_type, bucket_bounds
"""
_ROLLUP = """
SELECT metric_name, service_name, bucket, tags, metric_type, bucket_bounds, count, sum, min, max, last,
       last_timestamp, sample_count, sample_min, sample_max, bucket_counts
FROM {table}
"""


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


async def _compare_rollups(conn: asyncpg.Connection) -> int:
    compared = 0
    for table, seconds in ((PERFORMANCE_METRICS_1M, 60), (PERFORMANCE_METRICS_1H, 3600)):

        def key(r):
            return (
                r["metric_name"],
                r["service_name"],
                r["bucket"],
                orjson.dumps(orjson.loads(r["tags"]), option=orjson.OPT_SORT_KEYS),
                r["metric_type"],
                tuple(r["bucket_bounds"] or ()),
            )

        direct = {key(r): r for r in await conn.fetch(_DIRECT.format(s=seconds))}
        rolled = {key(r): r for r in await conn.fetch(_ROLLUP.format(table=table))}
        assert direct.keys() == rolled.keys(), table
        for k, d in direct.items():
            r = rolled[k]
            for column in (
                "count",
                "sum",
                "min",
                "max",
                "last",
                "last_timestamp",
                "sample_count",
                "sample_min",
                "sample_max",
                "bucket_counts",
            ):
                assert _same(d[column], r[column]), (table, k, column, d[column], r[column])
            compared += 1
    return compared


async def test_rollups_equal_a_direct_aggregate_of_the_raw_rows(pool, tmp_path):
    derived = make_derived(tmp_path)
    writer = make_writer(pool, derived)
    base = dt.datetime.now(dt.UTC).replace(minute=55, second=3, microsecond=0) - dt.timedelta(hours=1)
    async with pool.acquire() as conn:
        await maintain(conn, days_behind=1, days_ahead=3, retention_days=RETENTION)
    # Batches overlapping in time (the same series and minute across and within batches, over an
    # hour boundary), written concurrently by several writers as the batcher does.
    requests = [
        _metrics_request(base + dt.timedelta(seconds=off), 17, 40, service)
        for off in (0, 5, 600)
        for service in ("shop", "cart")
    ]
    await asyncio.gather(*(write(writer, map_metrics(r, time.time_ns())) for r in requests))
    await write(writer, map_metrics(_metrics_request(base, 23, 30), time.time_ns()))
    async with pool.acquire() as conn:
        assert await _compare_rollups(conn) > 100
        # The same series with its attributes in another order is one rollup row.
        assert (
            await conn.fetchval(
                "SELECT count(DISTINCT series_hash) FROM performance_metrics_1h WHERE metric_name = 'temp' "
                "AND service_name = 'shop'"
            )
            == 2
        )
        # Percentiles over a long range from the rollup.
        p99 = await conn.fetchval(
            "SELECT otelpg_histogram_quantile(0.99, max(bucket_bounds), otelpg_sum_buckets(bucket_counts)) "
            "FROM performance_metrics_1h WHERE metric_name = 'latency'"
        )
        assert 0.1 <= p99 <= 1.0


async def test_replayed_rows_are_rolled_up_once(pool, tmp_path):
    """A spool segment replayed twice (crash between commit and delete) adds no rows and must not
    add to the rollups or user_analytics twice."""
    derived = make_derived(tmp_path)
    writer = make_writer(pool, derived)
    async with pool.acquire() as conn:
        await maintain(conn, days_behind=1, days_ahead=3, retention_days=RETENTION)
    base = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=30)
    metrics_req = _metrics_request(base, 13, 20)
    traces_req = _traces_request(base)
    for _ in range(2):
        for signal, req, mapper in (("m", metrics_req, map_metrics), ("t", traces_req, map_traces)):
            mapped = mapper(req, time.time_ns(), new_id=request_ids(7_000_000, len(signal)))
            n = sum(len(r) for r in mapped.rows.values())
            await writer.write_rows(mapped.rows, mapped.resources, n, idempotent=True)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM performance_metrics") == 100
        assert await _compare_rollups(conn) > 10
        assert await conn.fetchval("SELECT count(*) FROM user_analytics") == 3


async def test_rollup_cost_per_batch_is_small(pool, tmp_path):
    """The rollup hook's Python part per 5000-point batch, measured (no tight bound: the machine is
    shared; the figure is printed for the record)."""
    from exporters.postgres import rollups

    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add(resource=resource({"service.name": "s"})).scope_metrics.add()
    t = ns(dt.datetime.now(dt.UTC))
    for m in range(50):
        h = sm.metrics.add(name=f"h{m}").histogram
        for p in range(100):
            h.data_points.add(
                time_unix_nano=t,
                count=3,
                sum=1.0,
                explicit_bounds=[1.0, 2.0],
                bucket_counts=[1, 1, 1],
                attributes=kvs({"p": p, "route": "/x"}),
            )
    rows = map_metrics(req, time.time_ns()).rows[PERFORMANCE_METRICS]
    rollups.parameters(rollups.aggregate(rows, 60))  # warm the series memo
    started = time.perf_counter()
    rollups.parameters(rollups.aggregate(rows, 60))
    elapsed = time.perf_counter() - started
    print(f"rollup Python part: {elapsed * 1e3:.1f} ms per {len(rows)}-point batch")
    assert elapsed < 1.0


# --------------------------------------------------------------------------- user_analytics


def _traces_request(base: dt.datetime) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add(resource=resource({"service.name": "web", "service.instance.id": "w-1"}))
    ss = spans.scope_spans.add()
    rows = [
        (
            "GET /cart",
            {"enduser.id": "alice", "url.path": "/cart/42", "http.route": "/cart/{id}", "session.id": "s-1"},
            0,
        ),
        ("GET /home", {"user.id": 12345, "http.route": "/home"}, 0),
        ("checkout", {"enduser.id": "bob", "user.id": "ignored"}, 2),
        ("GET /anon", {"http.route": "/anon", "note": 'says "user.id" in a value'}, 0),
    ]
    for i, (name, attrs, code) in enumerate(rows):
        sp = ss.spans.add(
            trace_id=bytes([1] * 15 + [i + 1]),
            span_id=bytes([2] * 7 + [i + 1]),
            name=name,
            start_time_unix_nano=ns(base) + i,
            end_time_unix_nano=ns(base) + i + 1000,
            attributes=kvs(attrs),
        )
        sp.status.code = code
        if code:
            sp.status.message = "card declined"
        if i == 0:
            sp.events.add(name="exception", time_unix_nano=ns(base), attributes=kvs({"enduser.id": "alice"}))
    return req


def _logs_request(base: dt.datetime) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add(resource=resource({"service.name": "web", "service.instance.id": "w-1"}))
    sl = rl.scope_logs.add()
    rec = sl.log_records.add(
        time_unix_nano=ns(base),
        attributes=kvs({"event.name": "button.click", "user.id": "carol", "url.path": "/buy", "session.id": "s-9"}),
    )
    rec.body.string_value = "clicked"
    rec = sl.log_records.add(
        time_unix_nano=ns(base), severity_number=17, trace_id=bytes([9] * 16), attributes=kvs({"enduser.id": "dave"})
    )
    rec.body.string_value = "payment failed"
    sl.log_records.add(time_unix_nano=ns(base), severity_number=9).body.string_value = "no user"
    return req


@pytest.mark.parametrize("mode", ["on", "hashed", "off"])
async def test_user_analytics_from_spans_and_logs(pool, tmp_path, mode):
    ua = {
        "on": UserAnalyticsConfig(),
        "hashed": UserAnalyticsConfig(hash_user_ids=True, hash_key="k3y"),
        "off": UserAnalyticsConfig(enabled=False),
    }[mode]
    derived = make_derived(tmp_path, user_analytics=ua)
    writer = make_writer(pool, derived)
    base = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with pool.acquire() as conn:
        await maintain(conn, days_behind=1, days_ahead=3, retention_days=RETENTION)
        await write(writer, map_traces(_traces_request(base), time.time_ns()))
        await write(writer, map_logs(_logs_request(base), time.time_ns()))
        rows = await conn.fetch(f"SELECT * FROM {USER_ANALYTICS} ORDER BY action")
        events = {r["id"] for r in await conn.fetch("SELECT id FROM system_events")}
    if mode == "off":
        assert rows == []
        return

    def uid(u: str) -> str:
        return hmac.new(b"k3y", u.encode(), hashlib.sha256).hexdigest() if mode == "hashed" else u

    got = [(r["user_id"], r["action"], r["page"], r["session_id"], r["service_name"]) for r in rows]
    assert got == [
        (uid("alice"), "GET /cart", "/cart/42", "s-1", "web"),
        (uid("12345"), "GET /home", "/home", None, "web"),
        (uid("carol"), "button.click", "/buy", "s-9", "web"),
        (uid("bob"), "checkout", None, None, "web"),
        (uid("dave"), "log", None, None, "web"),
    ]
    assert all(r["id"] in events for r in rows)  # the id of the span or log it comes from
    cart = orjson.loads(rows[0]["metadata"])
    assert cart == {"signal": "span", "service": "web", "trace_id": "01" * 15 + "01", "span_id": "02" * 7 + "01"}
    assert orjson.loads(rows[4]["metadata"])["trace_id"] == "09" * 16
    assert all(r["timestamp"] == base for r in rows)


async def test_generated_hash_key_is_kept_in_the_data_dir(pool, tmp_path):
    ua = UserAnalyticsConfig(hash_user_ids=True)
    first = make_derived(tmp_path, user_analytics=ua)
    key = (tmp_path / "user_hash_key").read_bytes().strip()
    assert len(key) == 64 and (tmp_path / "user_hash_key").stat().st_mode & 0o777 == 0o600
    again = make_derived(tmp_path, user_analytics=ua)
    assert first._hash_id("alice") == again._hash_id("alice") == hmac.new(key, b"alice", "sha256").hexdigest()


# --------------------------------------------------------------------------- agent_states


async def test_agent_states_active_then_stale_with_bounded_error_log(pool, tmp_path):
    clock = [1_900_000_000.0]
    agents = AgentStates(pool, AgentStatesConfig(stale_after=60, error_log_size=3), clock=lambda: clock[0])
    base = dt.datetime.fromtimestamp(clock[0], dt.UTC)
    agents.after_commit(TRACES, _traces_request(base))
    agents.after_commit(LOGS, _logs_request(base))
    agents.after_commit(METRICS, _metrics_request(base, 10, 5, service="web"))
    assert await agents.flush(clock[0]) == (2, 0)  # web/w-1 (traces, logs), web (metrics)
    async with pool.acquire() as conn:
        rows = {r["agent_key"]: r for r in await conn.fetch("SELECT * FROM agent_states")}
        assert set(rows) == {"web/w-1", "web"}
        w1 = rows["web/w-1"]
        assert w1["status"] == "active" and w1["service_name"] == "web" and w1["instance_id"] == "w-1"
        assert w1["current_task"] == "GET /anon"
        assert w1["last_active"] == base
        perf = orjson.loads(w1["performance_metrics"])
        assert perf["spans"] == 4 and perf["log_records"] == 3 and perf["errors"] == 2 and perf["requests"] == 2
        assert perf["window_seconds"] == 60 and perf["items_per_second"] == round(7 / 60, 3)
        errors = orjson.loads(w1["error_log"])
        assert [(e["signal"], e.get("name"), e["message"]) for e in errors] == [
            ("log", None, "payment failed"),
            ("span", "checkout", "card declined"),
        ]
        assert orjson.loads(rows["web"]["performance_metrics"])["metric_points"] == 25

        # More errors later: merged into the stored log, newest first, cut to error_log_size.
        clock[0] += 30
        for _ in range(2):
            agents.after_commit(TRACES, _traces_request(base))
        assert await agents.flush(clock[0]) == (1, 0)
        errors = orjson.loads(await conn.fetchval("SELECT error_log FROM agent_states WHERE agent_key = 'web/w-1'"))
        assert len(errors) == 3 and [e["signal"] for e in errors] == ["span", "span", "log"]

        # Silence beyond stale_after: 'stale' (the metrics-only instance first).
        clock[0] += 45
        assert await agents.flush(clock[0]) == (0, 1)
        clock[0] += 30
        assert await agents.flush(clock[0]) == (0, 1)
        assert {r["status"] for r in await conn.fetch("SELECT status FROM agent_states")} == {"stale"}
        # Heard from again: active.
        agents.after_commit(LOGS, _logs_request(base))
        await agents.flush(clock[0])
        assert await conn.fetchval("SELECT status FROM agent_states WHERE agent_key = 'web/w-1'") == "active"


# --------------------------------------------------------------------------- system_config


async def test_system_config_written_with_secrets_redacted_and_changes_recorded(pool, tmp_path):
    secrets = {"database": "s3cret-pw", "token": "tok-s3cret", "hash": "hash-s3cret"}
    from sidecar.config import load_config

    config = load_config(
        env={
            "OTELPG_DATABASE_URL": f"postgresql://app:{secrets['database']}@db.internal/app",
            "OTELPG_BEARER_TOKEN": secrets["token"],
            "OTELPG_USER_HASH_KEY": secrets["hash"],
            "OTELPG_DATA_DIR": str(tmp_path),
        }
    )
    assert await system_config(pool, config).write() == {}  # first start: nothing was stored
    async with pool.acquire() as conn:
        stored = {
            r["key"]: orjson.loads(r["value"]) for r in await conn.fetch("SELECT key, value::text FROM system_config")
        }
        assert stored["database.url"] == "postgresql://app:***@db.internal/app"
        assert stored["auth.bearer_token"] == "***" and stored["user_analytics.hash_key"] == "***"
        assert stored["batch.max_rows"] == 5000 and stored["retention.performance_metrics_1h_days"] == 400
        assert await conn.fetchval("SELECT description FROM system_config WHERE key = 'batch.max_rows'")
        everything = await conn.fetchval(
            "SELECT string_agg(key || value::text || coalesce(description, ''), '') FROM system_config"
        )
        assert not any(s in everything for s in secrets.values())
        assert await conn.fetchval("SELECT count(*) FROM system_events WHERE event_type = 'config_updated'") == 0

        # Unchanged: nothing written, no event.
        assert await system_config(pool, config).write() == {}
        # Changed: the rows and a config_updated event with what changed.
        changed = replace(config, batch=replace(config.batch, max_rows=1234))
        changes = await system_config(pool, changed).write()
        assert changes == {"batch.max_rows": {"old": 5000, "new": 1234}}
        assert await conn.fetchval("SELECT value::text FROM system_config WHERE key = 'batch.max_rows'") == "1234"
        event = await conn.fetchrow("SELECT * FROM system_events WHERE event_type = 'config_updated'")
        assert event["source"] == "otelpg"
        assert orjson.loads(event["payload"]) == {"changes": {"batch.max_rows": {"old": 5000, "new": 1234}}}
        assert not any(s in event["payload"] for s in secrets.values())


# --------------------------------------------------------------------------- lookups and stats


async def test_lookup_tables_for_grafana_variables(pool, tmp_path):
    derived = make_derived(tmp_path)
    writer = make_writer(pool, derived)
    base = dt.datetime.now(dt.UTC)
    async with pool.acquire() as conn:
        await maintain(conn, days_behind=1, days_ahead=3, retention_days=RETENTION)
        await write(writer, map_metrics(_metrics_request(base, 10, 3, service="cart"), time.time_ns()))
        await write(writer, map_traces(_traces_request(base), time.time_ns()))
        await write(writer, map_logs(_logs_request(base), time.time_ns()))
        names = await conn.fetch(
            "SELECT metric_name, service_name, metric_type, unit FROM otelpg_metric_names ORDER BY 1"
        )
        assert [tuple(r) for r in names] == [
            ("latency", "cart", "histogram", "s"),
            ("legacy", "cart", "summary", "s"),
            ("requests", "cart", "sum", "1"),
            ("size", "cart", "exponential_histogram", "By"),
            ("temp", "cart", "gauge", "Cel"),
        ]
        types = await conn.fetch("SELECT event_type FROM otelpg_event_types WHERE service_name = 'web' ORDER BY 1")
        assert [r[0] for r in types] == ["button.click", "log", "span", "span_event"]
        services = [r[0] for r in await conn.fetch("SELECT service_name FROM otelpg_services ORDER BY 1")]
        assert services == ["cart", "web"]


async def test_stats_per_table(db_dsn, db, tmp_path):
    await migrate(db)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        writer = make_writer(pool, make_derived(tmp_path))
        base = dt.datetime.now(dt.UTC).replace(microsecond=0)
        await maintain(db, days_behind=1, days_ahead=3, retention_days=retention_days(Config().retention))
        await write(writer, map_metrics(_metrics_request(base - dt.timedelta(minutes=5), 60, 5), time.time_ns()))
        await write(writer, map_logs(_logs_request(base - dt.timedelta(days=400)), time.time_ns()))  # default
    finally:
        await pool.close()  # a backend reports its insert counts as it exits (or after idling a while)
    for _ in range(50):
        stats = {r["table"]: r for r in await table_stats(db)}
        if stats[PERFORMANCE_METRICS]["inserted"] == 25:
            break
        await asyncio.sleep(0.1)
    pm = stats[PERFORMANCE_METRICS]
    assert pm["rows"] == 25 and pm["rows_exact"] and pm["partitions"] == 6 and pm["inserted"] == 25
    assert pm["oldest"] == (base - dt.timedelta(minutes=5)).isoformat()
    assert pm["newest"] == (base - dt.timedelta(minutes=1)).isoformat()
    assert 0 < pm["share"] < 1 and pm["default_partition_rows"] == 0
    # Schema 3's tables are listed; system_events, a view over them, is not (its rows would count twice).
    assert {OTEL_SPANS, OTEL_SPAN_EVENTS, OTEL_LOGS, OTELPG_EVENTS, "otel_scopes"} <= stats.keys()
    assert "system_events" not in stats
    logs = stats[OTEL_LOGS]
    assert logs["rows"] == 3 and logs["default_partition_rows"] == 3
    assert logs["oldest"] == logs["newest"] == (base - dt.timedelta(days=400)).isoformat()
    assert stats[OTEL_SPANS]["rows"] == 0 and stats[OTEL_SPANS]["partitions"] == 6
    assert stats[PERFORMANCE_METRICS_1M]["rows"] > 0 and stats[PERFORMANCE_METRICS_1H]["partitions"] >= 2
    total = stats[TOTAL]
    assert total["rows"] == sum(r["rows"] for t, r in stats.items() if t != TOTAL)
    assert total["database_bytes"] >= total["bytes"] > 0
    text = format_stats(list(stats.values()))
    assert "performance_metrics_1m" in text and "otel_logs" in text and "database size" in text


async def test_a_failing_hook_never_costs_the_raw_rows(pool, tmp_path, db):
    """Rollups and the rest are derived: if PostgreSQL refuses them for good, the points commit anyway."""
    derived = make_derived(tmp_path)
    writer = make_writer(pool, derived)
    await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION)
    await db.execute("ALTER TABLE performance_metrics_1h ADD CONSTRAINT refuse CHECK (count < 0) NOT VALID")
    await write(writer, map_metrics(_metrics_request(dt.datetime.now(dt.UTC), 10, 4), time.time_ns()))
    assert await db.fetchval("SELECT count(*) FROM performance_metrics") == 20
    assert await db.fetchval("SELECT count(*) FROM performance_metrics_1m") == 0  # rolled back with the 1h part


async def test_a_busy_table_delays_the_drop_instead_of_stalling_ingest(db_dsn, db):
    """A long query on a table makes the DROP of its expired partitions give up after 1 s (COPYs
    into the table would queue behind the waiting DROP), and the creation of its new ones after 5 s,
    once per run and table; the next run does both."""
    await migrate(db)
    await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=NOW)
    later = NOW + dt.timedelta(days=40)
    reader = await asyncpg.connect(db_dsn)
    try:
        async with reader.transaction():
            await reader.fetch("SELECT count(*) FROM otel_spans")  # a dashboard query still running
            started = time.monotonic()
            report = await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=later)
            assert time.monotonic() - started < 15
    finally:
        await reader.close()
    assert "otel_spans_p20310309" in report.skipped and "performance_metrics_p20310309" in report.dropped
    assert f"otel_spans_p{later - dt.timedelta(days=1):%Y%m%d}" in report.skipped
    assert f"performance_metrics_p{later:%Y%m%d}" in report.created
    report = await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION, now=later)
    assert "otel_spans_p20310309" in report.dropped and not report.skipped
    assert f"otel_spans_p{later:%Y%m%d}" in report.created


async def test_a_metric_name_sent_as_two_types_in_one_batch(pool, tmp_path, db):
    derived = make_derived(tmp_path)
    writer = make_writer(pool, derived)
    await maintain(db, days_behind=1, days_ahead=3, retention_days=RETENTION)
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add(resource=resource({"service.name": "s"})).scope_metrics.add()
    t = ns(dt.datetime.now(dt.UTC))
    sm.metrics.add(name="x", unit="1").gauge.data_points.add(time_unix_nano=t, as_double=1.0)
    sm.metrics.add(name="x", unit="By").sum.data_points.add(time_unix_nano=t, as_int=2)
    await write(writer, map_metrics(req, time.time_ns()))
    assert await db.fetchval("SELECT count(*) FROM otelpg_metric_names") == 1
    assert await db.fetchval("SELECT count(*) FROM performance_metrics_1m") == 2  # two series
