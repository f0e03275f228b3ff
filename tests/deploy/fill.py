"""Databases for the dashboard tests.

`send_telemetry`: what services send: tests/sdk.py's spans, logs and metrics over OTLP/HTTP and
gRPC, plus the example app of deploy/example-app (two services, errors, slow spans, exceptions,
logs inside spans, a request-duration histogram), all through a real `otelpg run`.

`add_history`: several days of daily partitions with synthetic rows in each, for EXPLAIN.

`derive`: what otelpg derives from raw rows, computed here in SQL when the database has none of it
(the writer, the span-metrics flush and the lookup tables are built in parallel with the
dashboards): `traces.span.metrics.duration` points from the spans (a delta histogram per minute,
service, span name, kind and status, in seconds, the spanmetrics default bounds), the 1-minute and
1-hour rollups (semantics from migrations/0002_lifecycle.sql) and the lookup tables. Whatever
otelpg already produced is kept as it is.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
import uuid
import warnings
from bisect import bisect_left
from pathlib import Path
from types import ModuleType

import asyncpg

from exporters.postgres.legacy import convert_legacy_rows
from exporters.prometheus.config import SPAN_DURATION_BOUNDS_SECONDS
from tests import sdk

ROOT = Path(__file__).resolve().parents[2]
SPAN_DURATION = "traces.span.metrics.duration"


def example_app() -> ModuleType:
    path = ROOT / "deploy" / "example-app" / "app.py"
    spec = importlib.util.spec_from_file_location("otelpg_example_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def send_telemetry(http_base: str, grpc_target: str, requests: int = 300, backfill: float = 2400) -> None:
    for exporters in (sdk.http_exporters(http_base), sdk.grpc_exporters(grpc_target)):
        sdk.send_spans(exporters.spans)
        with warnings.catch_warnings():  # the SDK's LoggingHandler is deprecated in newer releases
            warnings.simplefilter("ignore", DeprecationWarning)
            sdk.send_logs(exporters.logs)
        sdk.send_metrics(exporters.metrics)
    app = example_app()
    shop = app.Shop(http_base, "http/protobuf", metric_interval_ms=1000, seed=7)
    try:
        app.simulate(shop, iterations=requests, rate=0, backfill=backfill)
    finally:
        shop.shutdown()


# --- derived data -----------------------------------------------------------------------------------


async def derive(conn: asyncpg.Connection) -> None:
    await _span_metrics(conn)
    for table, unit in (("performance_metrics_1m", "minute"), ("performance_metrics_1h", "hour")):
        await _rollup(conn, table, unit)
    await _lookups(conn)
    await conn.execute("ANALYZE")


async def _span_metrics(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM performance_metrics WHERE metric_name = $1)", SPAN_DURATION):
        return
    bounds = list(SPAN_DURATION_BOUNDS_SECONDS)
    spans = await conn.fetch(
        """SELECT date_trunc('minute', timestamp) + interval '1 minute' AS flushed, service_name,
                  min(resource_id) AS resource_id, name, payload->>'kind' AS kind,
                  payload#>>'{status,code}' AS status, array_agg(coalesce(duration_ms, 0) / 1000) AS seconds
           FROM system_events WHERE event_type = 'span'
           GROUP BY 1, 2, 4, 5, 6"""
    )
    rows = []
    for s in spans:
        counts = [0] * (len(bounds) + 1)
        for seconds in s["seconds"]:
            counts[bisect_left(bounds, seconds)] += 1
        total = sum(s["seconds"])
        tags = {"span.name": s["name"], "span.kind": s["kind"], "status.code": s["status"]}
        rows.append(
            (
                uuid.uuid4(),
                SPAN_DURATION,
                total,
                "s",
                _json(tags),
                s["flushed"],
                s["service_name"],
                s["resource_id"],
                "histogram",
                "delta",
                s["flushed"] - dt.timedelta(minutes=1),
                len(s["seconds"]),
                total,
                min(s["seconds"]),
                max(s["seconds"]),
                bounds,
                counts,
            )
        )
    await conn.executemany(
        """INSERT INTO performance_metrics (id, metric_name, value, unit, tags, timestamp, service_name, resource_id,
               metric_type, temporality, start_timestamp, count, sum, min, max, bucket_bounds, bucket_counts)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)""",
        rows,
    )


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


async def _rollup(conn: asyncpg.Connection, table: str, unit: str) -> None:
    """Rollup rows for every metric the rollup doesn't have yet (0002's documented semantics)."""
    await conn.execute(f"""
        INSERT INTO {table} (bucket, metric_name, service_name, series_hash, tags, metric_type, temporality, unit,
                             count, sum, min, max, last, last_timestamp, sample_count, sample_min, sample_max,
                             bucket_bounds, bucket_counts)
        SELECT date_trunc('{unit}', timestamp), metric_name, service_name,
               hashtextextended(metric_type || tags::text || coalesce(bucket_bounds::text, ''), 0),
               tags, metric_type, max(temporality), max(unit),
               count(*), sum(value), min(value), max(value),
               (array_agg(value ORDER BY timestamp DESC))[1], max(timestamp),
               sum(count), min(min), max(max), bucket_bounds, otelpg_sum_buckets(bucket_counts)
        FROM performance_metrics
        WHERE metric_name NOT IN (SELECT DISTINCT metric_name FROM {table})
        GROUP BY 1, 2, 3, 4, tags, metric_type, bucket_bounds""")


async def _lookups(conn: asyncpg.Connection) -> None:
    await conn.execute("""
        INSERT INTO otelpg_metric_names (metric_name, service_name, metric_type, unit, first_seen, last_seen)
        SELECT metric_name, service_name, max(metric_type), max(unit), min(timestamp), max(timestamp)
        FROM performance_metrics GROUP BY 1, 2
        ON CONFLICT DO NOTHING""")
    await conn.execute("""
        INSERT INTO otelpg_event_types (event_type, service_name, first_seen, last_seen)
        SELECT event_type, service_name, min(timestamp), max(timestamp)
        FROM system_events GROUP BY 1, 2
        ON CONFLICT DO NOTHING""")


# --- several days of history ------------------------------------------------------------------------


async def _partition(conn: asyncpg.Connection, parent: str, suffix: str, start: dt.date, end: dt.date) -> None:
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {parent}_p{suffix} PARTITION OF {parent} "
        f"FOR VALUES FROM ('{start}T00:00:00Z') TO ('{end}T00:00:00Z')"
    )


async def add_history(conn: asyncpg.Connection, first_day: dt.date, last_day: dt.date) -> None:
    """Daily partitions for [first_day, last_day] of every partitioned table, and rows in each day:
    every 10 minutes a request of two services (server + client span, an exception on errors, a
    log line per severity) and gauge and histogram points. The rows are written as schema 2 wrote
    them and then converted, as an upgraded database's are (exporters/postgres/legacy.py)."""
    for table in ("otel_spans", "otel_span_events", "otel_logs", "otelpg_events", "performance_metrics"):
        await conn.fetchval("SELECT otelpg_ensure_daily_partitions($1, $2, $3)", table, first_day, last_day)
    # otelpg_ensure_daily_partitions knows `timestamp` columns; the rollups are partitioned on
    # `bucket`, the 1-hour one by month (exporters/postgres/schema.py PARTITIONING).
    day, months = first_day, set()
    while day <= last_day:
        await _partition(conn, "performance_metrics_1m", f"{day:%Y%m%d}", day, day + dt.timedelta(days=1))
        months.add(day.replace(day=1))
        day += dt.timedelta(days=1)
    for month in sorted(months):
        following = (month + dt.timedelta(days=32)).replace(day=1)
        await _partition(conn, "performance_metrics_1h", f"{month:%Y%m}", month, following)
    start = dt.datetime.combine(first_day, dt.time(), dt.UTC)
    end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), dt.UTC)
    await conn.execute(
        """
        WITH t AS (
            SELECT ts, row_number() OVER (ORDER BY ts) AS n, svc
            FROM generate_series($1::timestamptz, $2::timestamptz - interval '10 minutes', interval '10 minutes') ts
            CROSS JOIN (VALUES ('api'), ('worker')) s(svc)
        ), spans AS (
            SELECT ts, n, svc, gen_random_uuid() AS trace, n % 17 = 0 AS failed, 5 + (n % 50) * 7.5 AS ms FROM t
        )
        INSERT INTO system_events (event_type, source, severity, payload, timestamp, service_name, trace_id,
                                   span_id, parent_span_id, name, duration_ms)
        SELECT 'span', svc, CASE WHEN failed THEN 'error' ELSE 'info' END,
               jsonb_build_object('kind', 'SPAN_KIND_SERVER', 'attributes', '{}'::jsonb, 'status',
                   jsonb_build_object('code', CASE WHEN failed THEN 'STATUS_CODE_ERROR' ELSE 'STATUS_CODE_UNSET' END),
                   'start_time_unix_nano', (extract(epoch FROM ts) * 1e9)::bigint,
                   'end_time_unix_nano', (extract(epoch FROM ts) * 1e9)::bigint + (ms * 1e6)::bigint),
               ts, svc, trace, lpad(to_hex(n), 16, '0'), NULL, 'GET /items', ms
        FROM spans
        UNION ALL
        SELECT 'span', svc, 'info',
               jsonb_build_object('kind', 'SPAN_KIND_CLIENT', 'attributes', '{}'::jsonb,
                                  'status', jsonb_build_object('code', 'STATUS_CODE_UNSET'),
                                  'start_time_unix_nano', (extract(epoch FROM ts + interval '1 ms') * 1e9)::bigint,
                                  'end_time_unix_nano', (extract(epoch FROM ts + interval '1 ms') * 1e9)::bigint
                                                        + (ms / 3 * 1e6)::bigint),
               ts + interval '1 ms', svc, trace, lpad(to_hex(n + 1000000), 16, '0'), lpad(to_hex(n), 16, '0'),
               'SELECT items', ms / 3
        FROM spans
        UNION ALL
        SELECT 'span_event', svc, 'error',
               jsonb_build_object('span_name', 'GET /items', 'attributes',
                   jsonb_build_object('exception.type', 'TimeoutError', 'exception.message', 'upstream timed out'),
                   'time_unix_nano', (extract(epoch FROM ts + interval '2 ms') * 1e9)::bigint),
               ts + interval '2 ms', svc, trace, lpad(to_hex(n), 16, '0'), NULL, 'exception', NULL
        FROM spans WHERE failed
        UNION ALL
        SELECT 'log', svc, sev, jsonb_build_object('body', 'handled request ' || n, 'attributes', '{}'::jsonb,
                                                   'severity_number', array_position(ARRAY['debug', 'info', 'warn',
                                                       'error'], sev) * 4 + 1, 'severity_text', upper(sev),
                                                   'time_unix_nano',
                                                   (extract(epoch FROM ts + interval '3 ms') * 1e9)::bigint,
                                                   'observed_time_unix_nano', 0),
               ts + interval '3 ms', svc, trace, lpad(to_hex(n), 16, '0'), NULL, NULL, NULL
        FROM spans CROSS JOIN unnest(ARRAY['debug', 'info', 'warn', 'error']) sev
        """,
        start,
        end,
    )
    await conn.execute(
        """
        INSERT INTO performance_metrics (metric_name, value, unit, tags, timestamp, service_name, metric_type,
                                         temporality, count, sum, min, max, bucket_bounds, bucket_counts)
        SELECT 'queue.depth', (extract(epoch from ts)::bigint % 97)::float8, '{item}',
               jsonb_build_object('queue', 'q1'), ts, svc, 'gauge', NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM generate_series($1::timestamptz, $2::timestamptz - interval '5 minutes', interval '5 minutes') ts
        CROSS JOIN (VALUES ('api'), ('worker')) s(svc)
        UNION ALL
        SELECT 'http.server.request.duration', 1.5, 's', jsonb_build_object('http.route', '/items'), ts, svc,
               'histogram', 'delta', 10, 1.5, 0.01, 0.6, ARRAY[0.05, 0.1, 0.5, 1]::float8[],
               ARRAY[4, 3, 2, 1, 0]::bigint[]
        FROM generate_series($1::timestamptz, $2::timestamptz - interval '5 minutes', interval '5 minutes') ts
        CROSS JOIN (VALUES ('api'), ('worker')) s(svc)
        """,
        start,
        end,
    )
    converted = await convert_legacy_rows(conn)
    assert converted.spans and converted.span_events and converted.logs, converted
