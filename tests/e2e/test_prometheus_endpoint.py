"""/metrics of a real `otelpg run` fed by the real OpenTelemetry SDK: names, types, values and
target_info for cumulative and delta temporality, span RED metrics, content negotiation, promtool,
self-telemetry, the span-metrics flush to performance_metrics and the database utilization gauges."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import asyncpg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests import sdk
from tests.e2e.prometheus_helpers import (
    NO_PROMTOOL,
    PROMETHEUS_ACCEPT,
    PROMTOOL,
    families,
    otelpg_with_config,
    promtool_check,
    scrape,
    value,
    values,
)

pytestmark = pytest.mark.e2e

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
FAST = "prometheus:\n  span_metrics_flush_interval: 1\n  database_stats_interval: 1\n"
SCOPE = {"otel_scope_name": "shop.meter", "otel_scope_version": "1.0"}


@pytest.fixture
def otelpg_fast(db_dsn, tmp_path):
    """`otelpg run` flushing span metrics and refreshing database stats every second."""
    proc = otelpg_with_config(tmp_path, db_dsn, FAST)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _resource(instance: str) -> Resource:
    return Resource.create(
        {
            "service.name": "cart",
            "service.namespace": "shop",
            "service.instance.id": instance,
            "deployment.environment": "e2e",
        }
    )


def send_instruments(exporter: object, instance: str) -> None:
    """Counter, up-down counter, histogram and gauge, recorded and exported twice by one provider
    (with delta temporality the second export carries only the second round)."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = [
        View(
            instrument_name="shop.request.duration",
            aggregation=ExplicitBucketHistogramAggregation(boundaries=(0.1, 0.5, 1.0)),
        )
    ]
    provider = MeterProvider(resource=_resource(instance), metric_readers=[reader], views=views)
    meter = provider.get_meter("shop.meter", "1.0")
    orders = meter.create_counter("shop.orders", unit="{order}", description="Orders placed.")
    depth = meter.create_up_down_counter("shop.queue.depth", description="Jobs waiting.")
    duration = meter.create_histogram("shop.request.duration", unit="s", description="Request duration.")
    temperature = meter.create_gauge("shop.temperature", unit="Cel", description="Room temperature.")
    for count, change, seconds, degrees in ((5, 3, 0.25, 21.5), (2, -1, 0.75, 22.0)):
        orders.add(count, {"region": "eu"})
        depth.add(change, {"queue": "q1"})
        duration.record(seconds, {"route": "/cart"})
        temperature.set(degrees, {"room": "a"})
        assert provider.force_flush()
    provider.shutdown()


def _wait_for(predicate, timeout: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.2)


def test_sdk_metrics_of_both_temporalities_and_spans_are_exposed(otelpg_fast):
    send_instruments(sdk.http_exporters(otelpg_fast.url("http")).metrics, "cumulative-1")
    send_instruments(sdk.grpc_exporters(otelpg_fast.grpc_target, temporality="delta").metrics, "delta-1")
    sdk.send_spans(sdk.grpc_exporters(otelpg_fast.grpc_target).spans)

    got = scrape(otelpg_fast.url("admin", "/metrics"))
    assert got.status == 200 and got.headers["content-type"] == TEXT
    fams = families(got.text)

    types = {
        name: fams[name].type
        for name in (
            "shop_orders",
            "shop_queue_depth",
            "shop_request_duration_seconds",
            "shop_temperature_celsius",
            "target_info",
            "traces_span_metrics_calls",
            "traces_span_metrics_duration_seconds",
        )
    }
    assert types == {
        "shop_orders": "counter",
        "shop_queue_depth": "gauge",
        "shop_request_duration_seconds": "histogram",
        "shop_temperature_celsius": "gauge",
        "target_info": "gauge",
        "traces_span_metrics_calls": "counter",
        "traces_span_metrics_duration_seconds": "histogram",
    }
    assert fams["shop_orders"].documentation == "Orders placed."

    for instance in ("cumulative-1", "delta-1"):  # delta points accumulate into the same cumulative view
        series = {"job": "shop/cart", "instance": instance, **SCOPE}
        assert value(fams["shop_orders"], "shop_orders_total", region="eu", **series) == 7, instance
        assert value(fams["shop_queue_depth"], queue="q1", **series) == 2, instance
        assert value(fams["shop_temperature_celsius"], room="a", **series) == 22.0, instance
        hist, route = fams["shop_request_duration_seconds"], {"route": "/cart", **series}
        buckets = {
            le: value(hist, "shop_request_duration_seconds_bucket", le=le, **route)
            for le in ("0.1", "0.5", "1.0", "+Inf")
        }
        assert buckets == {"0.1": 0, "0.5": 1, "1.0": 2, "+Inf": 2}, instance
        assert value(hist, "shop_request_duration_seconds_count", **route) == 2
        assert value(hist, "shop_request_duration_seconds_sum", **route) == pytest.approx(1.0)
        info = value(
            fams["target_info"],
            job="shop/cart",
            instance=instance,
            deployment_environment="e2e",
            telemetry_sdk_language="python",
        )
        assert info == 1, instance
        # Resource attributes stay on target_info only.
        assert not values(fams["shop_orders"], "shop_orders_total", deployment_environment="e2e")

    calls = fams["traces_span_metrics_calls"]
    span = {"service_name": "checkout"}
    assert (
        value(
            calls,
            "traces_span_metrics_calls_total",
            span_name="GET /cart",
            span_kind="SPAN_KIND_SERVER",
            status_code="STATUS_CODE_UNSET",
            **span,
        )
        == 1
    )
    assert (
        value(calls, "traces_span_metrics_calls_total", span_name="charge", status_code="STATUS_CODE_ERROR", **span)
        == 1
    )
    assert sum(values(calls, "traces_span_metrics_calls_total", **span)) == 3
    duration = fams["traces_span_metrics_duration_seconds"]
    assert value(duration, "traces_span_metrics_duration_seconds_count", span_name="SELECT carts", **span) == 1

    # The same data in OpenMetrics: same types, the counter's `_total`, and `# EOF`.
    om = scrape(otelpg_fast.url("admin", "/metrics"), accept=PROMETHEUS_ACCEPT)
    assert om.headers["content-type"].startswith(OPENMETRICS) and om.text.endswith("# EOF\n")
    om_fams = {f.name: f for f in parse_openmetrics(om.text)}
    assert om_fams["shop_orders"].type == "counter"
    assert om_fams["target"].type == "info"  # OpenMetrics: family `target`, sample `target_info`
    assert value(om_fams["shop_orders"], "shop_orders_total", instance="delta-1", region="eu") == 7

    if PROMTOOL is None:
        pytest.skip(NO_PROMTOOL)
    checked = promtool_check(got.body)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == "" and checked.stderr.decode().strip() == ""


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_finds_no_problem_in_a_scrape_of_every_signal(otelpg):
    exporters = sdk.grpc_exporters(otelpg.grpc_target)
    sdk.send_metrics(exporters.metrics)  # every instrument kind, exponential histogram included
    sdk.send_spans(exporters.spans)
    sdk.send_logs(exporters.logs)
    body = scrape(otelpg.url("admin", "/metrics")).body
    assert b"log_record_count_total" in body and b"traces_span_metrics_calls_total" in body
    checked = promtool_check(body)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == "" and checked.stderr.decode().strip() == ""


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, TEXT),
        ("text/plain", TEXT),
        ("text/plain;version=0.0.4", TEXT),
        ("*/*", TEXT),
        ("application/openmetrics-text;version=1.0.0", OPENMETRICS),
        ("application/openmetrics-text", OPENMETRICS),
        (PROMETHEUS_ACCEPT, OPENMETRICS),
        ("application/openmetrics-text;q=0.2,text/plain;q=0.9", TEXT),
        ("application/json", TEXT),  # nothing acceptable: the default rather than 406, as every Prometheus client
    ],
)
def test_accept_negotiation_and_content_type(otelpg, accept, content_type):
    got = scrape(otelpg.url("admin", "/metrics"), accept=accept)
    # OpenMetrics may add `; escaping=underscores` (what Prometheus 3 negotiates; 2.x ignores it)
    assert got.status == 200 and got.headers["content-type"].startswith(content_type)
    assert "content-encoding" not in got.headers
    if content_type is OPENMETRICS:
        assert got.text.endswith("# EOF\n")
        assert {f.name for f in parse_openmetrics(got.text)} >= {"otelpg_receiver_accepted_spans"}
    else:
        assert "# EOF" not in got.text
        assert families(got.text)["otelpg_receiver_accepted_spans"].type == "counter"


@pytest.mark.parametrize("accept", [None, PROMETHEUS_ACCEPT])
def test_gzip_when_asked(otelpg, accept):
    sdk.send_spans(sdk.grpc_exporters(otelpg.grpc_target).spans)
    plain = scrape(otelpg.url("admin", "/metrics"), accept=accept)
    zipped = scrape(otelpg.url("admin", "/metrics"), accept=accept, accept_encoding="gzip, deflate")
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["content-type"] == plain.headers["content-type"]
    assert "Accept-Encoding" in zipped.headers["vary"]
    body = gzip.decompress(zipped.body)
    assert b"traces_span_metrics_calls_total" in body and len(zipped.body) < len(body)
    assert "content-encoding" not in plain.headers


def test_self_telemetry_names(otelpg):
    """The Collector's vocabulary, the pipeline's gauges, the aggregator's own counts."""
    exporters = sdk.grpc_exporters(otelpg.grpc_target)
    sdk.send_spans(exporters.spans)
    sdk.send_logs(sdk.http_exporters(otelpg.url("http")).logs)
    fams = families(scrape(otelpg.url("admin", "/metrics")).text)
    for item in ("spans", "metric_points", "log_records"):
        assert fams[f"otelpg_receiver_accepted_{item}"].type == "counter"
        assert fams[f"otelpg_receiver_refused_{item}"].type == "counter"
    assert value(fams["otelpg_receiver_accepted_spans"], "otelpg_receiver_accepted_spans_total", transport="grpc") == 3
    assert (
        value(
            fams["otelpg_receiver_accepted_log_records"], "otelpg_receiver_accepted_log_records_total", transport="http"
        )
        == 5
    )
    sent = fams["otelpg_exporter_sent_rows"]
    assert value(sent, "otelpg_exporter_sent_rows_total", table="otel_spans") >= 3
    assert value(sent, "otelpg_exporter_sent_rows_total", table="otel_span_events") >= 2
    assert value(sent, "otelpg_exporter_sent_rows_total", table="otel_logs") >= 5
    assert value(fams["otelpg_exporter_queue_capacity"]) > 0
    assert value(fams["otelpg_exporter_queue_size"]) >= 0
    assert "otelpg_spool_bytes" in fams and value(fams["otelpg_spool_capacity_bytes"]) > 0
    copy = fams["otelpg_copy_duration_seconds"]
    assert copy.type == "histogram" and value(copy, "otelpg_copy_duration_seconds_count") >= 2
    assert value(fams["otelpg_database_pool_capacity"]) >= value(fams["otelpg_database_pool_size"]) >= 1
    assert value(fams["otelpg_database_pool_in_use"]) >= 0
    assert value(fams["otelpg_prometheus_active_series"]) > 0
    dropped = fams["otelpg_prometheus_dropped_points"]
    assert {s.labels["reason"] for s in dropped.samples} >= {"overflow", "cardinality_limit", "type_conflict"}


async def _span_metric_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT * FROM performance_metrics WHERE metric_name LIKE 'traces.span.metrics.%' "
            "ORDER BY metric_name, tags->>'span.name'"
        )
    finally:
        await conn.close()


def _rows_at_least(dsn: str, n: int) -> list[asyncpg.Record] | None:
    rows = asyncio.run(_span_metric_rows(dsn))
    return rows if len(rows) >= n else None


async def test_span_metrics_are_flushed_to_performance_metrics(otelpg_fast, db_dsn):
    await asyncio.to_thread(sdk.send_spans, sdk.grpc_exporters(otelpg_fast.grpc_target).spans)
    rows = await asyncio.to_thread(_wait_for, lambda: _rows_at_least(db_dsn, 6), what="span metric rows")
    calls = [r for r in rows if r["metric_name"] == "traces.span.metrics.calls"]
    durations = [r for r in rows if r["metric_name"] == "traces.span.metrics.duration"]
    assert len(calls) == len(durations) == 3, rows
    tags = [json.loads(r["tags"]) for r in calls]
    assert tags == [
        {"span.name": "GET /cart", "span.kind": "SPAN_KIND_SERVER", "status.code": "STATUS_CODE_UNSET"},
        {"span.name": "SELECT carts", "span.kind": "SPAN_KIND_CLIENT", "status.code": "STATUS_CODE_UNSET"},
        {"span.name": "charge", "span.kind": "SPAN_KIND_INTERNAL", "status.code": "STATUS_CODE_ERROR"},
    ]
    for row in calls:
        assert (
            row["service_name"],
            row["value"],
            row["unit"],
            row["metric_type"],
            row["temporality"],
            row["is_monotonic"],
        ) == ("checkout", 1.0, "{call}", "sum", "delta", True)
        assert row["start_timestamp"] < row["timestamp"]
    for row in durations:
        assert (row["metric_type"], row["temporality"], row["unit"], row["count"]) == ("histogram", "delta", "s", 1)
        assert row["value"] == row["sum"] >= 0
        assert len(row["bucket_counts"]) == len(row["bucket_bounds"]) + 1 and sum(row["bucket_counts"]) == 1
    server = durations[0]
    conn = await asyncpg.connect(db_dsn)  # the histogram is usable by the SQL quantile function
    try:
        p50 = await conn.fetchval(
            "SELECT otelpg_histogram_quantile(0.5, $1::float8[], $2::bigint[])",
            server["bucket_bounds"],
            server["bucket_counts"],
        )
    finally:
        await conn.close()
    assert p50 is not None and p50 > 0


async def test_span_metrics_are_flushed_at_shutdown(db_dsn, tmp_path):
    proc = otelpg_with_config(tmp_path, db_dsn, "prometheus:\n  span_metrics_flush_interval: 3600\n")
    proc.start()
    try:
        await asyncio.to_thread(sdk.send_spans, sdk.grpc_exporters(proc.grpc_target).spans)
        assert await _span_metric_rows(db_dsn) == []  # the interval is an hour
    finally:
        assert await asyncio.to_thread(proc.stop) == 0
    rows = await _span_metric_rows(db_dsn)
    assert sum(r["value"] for r in rows if r["metric_name"] == "traces.span.metrics.calls") == 3


def test_database_utilization_gauges(otelpg_fast):
    sdk.send_spans(sdk.grpc_exporters(otelpg_fast.grpc_target).spans)
    url = otelpg_fast.url("admin", "/metrics")

    def refreshed():
        fams = families(scrape(url).text)
        rows = fams.get("otelpg_database_table_rows_estimated")
        if rows is None or value(rows, table="otel_spans") < 3 or value(rows, table="otel_span_events") < 2:
            return None
        return fams

    fams = _wait_for(refreshed, what="database utilization with the new rows")
    tables = (
        "otel_spans",
        "otel_span_events",
        "otel_logs",
        "otelpg_events",
        "performance_metrics",
        "otel_resources",
        "agent_states",
        "user_analytics",
        "system_config",
    )
    table_bytes = fams["otelpg_database_table_bytes"]
    assert table_bytes.type == "gauge"
    assert {s.labels["table"] for s in table_bytes.samples} >= set(tables)
    assert all(value(table_bytes, table=t) > 0 for t in tables)
    assert value(fams["otelpg_database_table_rows_estimated"], table="otel_resources") >= 1
    partitions = fams["otelpg_database_table_partitions"]
    assert value(partitions, table="otel_spans") >= 2  # default + daily ones
    assert value(partitions, table="otel_resources") == 0
    assert value(fams["otelpg_database_size_bytes"]) >= sum(value(table_bytes, table=t) for t in tables)
