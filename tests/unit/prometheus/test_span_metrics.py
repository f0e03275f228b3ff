"""RED metrics from spans, and the per-interval drain used to flush them to PostgreSQL."""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from exporters.prometheus.config import SPAN_DURATION_BOUNDS_SECONDS
from sidecar.pipeline.span_metrics import OVERFLOW_SPAN_KEY, SpanKey
from tests.unit.prometheus.builders import new_aggregator, only_value, scrape, span, traces_request

SERVER_OK = {
    "service_name": "checkout",
    "span_name": "GET /cart",
    "span_kind": "SPAN_KIND_SERVER",
    "status_code": "STATUS_CODE_OK",
}


def test_calls_and_duration_by_service_span_kind_and_status():
    agg, _ = new_aggregator()
    agg.observe_traces(
        traces_request(
            span("GET /cart", 0.003, status=Status.STATUS_CODE_OK),
            span("GET /cart", 0.150, status=Status.STATUS_CODE_OK),
            span("GET /cart", 2.5, status=Status.STATUS_CODE_ERROR),
            span("SELECT", 0.001, kind=Span.SPAN_KIND_CLIENT),
        )
    )
    agg.observe_traces(traces_request(span("GET /cart", 0.010, status=Status.STATUS_CODE_OK)))
    families = scrape(agg)

    calls = families["traces_span_metrics_calls"]
    assert calls.type == "counter"
    assert only_value(calls, "traces_span_metrics_calls_total", **SERVER_OK) == 3
    assert only_value(calls, "traces_span_metrics_calls_total", status_code="STATUS_CODE_ERROR") == 1
    assert (
        only_value(
            calls,
            "traces_span_metrics_calls_total",
            span_kind="SPAN_KIND_CLIENT",
            status_code="STATUS_CODE_UNSET",
        )
        == 1
    )

    duration = families["traces_span_metrics_duration_seconds"]
    assert duration.type == "histogram"
    buckets = {
        s.labels["le"]: s.value
        for s in duration.samples
        if s.name.endswith("_bucket") and s.labels.items() >= SERVER_OK.items()
    }
    assert list(buckets) == [
        "0.002",
        "0.004",
        "0.006",
        "0.008",
        "0.01",
        "0.05",
        "0.1",
        "0.2",
        "0.4",
        "0.8",
        "1.0",
        "1.4",
        "2.0",
        "5.0",
        "10.0",
        "15.0",
        "+Inf",
    ]
    assert (buckets["0.002"], buckets["0.004"], buckets["0.01"], buckets["0.2"], buckets["+Inf"]) == (
        0,
        1,
        2,
        3,
        3,
    )
    assert only_value(duration, "traces_span_metrics_duration_seconds_count", **SERVER_OK) == 3
    assert abs(only_value(duration, "traces_span_metrics_duration_seconds_sum", **SERVER_OK) - 0.163) < 1e-9


def test_bucket_bounds_are_inclusive_and_negative_durations_count_as_zero():
    agg, _ = new_aggregator()
    backwards = Span(name="odd", kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=2_000, end_time_unix_nano=1_000)
    agg.observe_traces(traces_request(span("exact", 0.1), backwards))
    duration = scrape(agg)["traces_span_metrics_duration_seconds"]
    assert only_value(duration, "traces_span_metrics_duration_seconds_bucket", span_name="exact", le="0.1") == 1
    assert only_value(duration, "traces_span_metrics_duration_seconds_bucket", span_name="exact", le="0.05") == 0
    assert only_value(duration, "traces_span_metrics_duration_seconds_bucket", span_name="odd", le="0.002") == 1
    assert only_value(duration, "traces_span_metrics_duration_seconds_sum", span_name="odd") == 0


def test_missing_service_name_is_unknown_service():
    agg, _ = new_aggregator()
    agg.observe_traces(traces_request(span("x", 0.001), service=None))
    calls = scrape(agg)["traces_span_metrics_calls"]
    assert only_value(calls, "traces_span_metrics_calls_total", service_name="unknown_service") == 1


def test_drain_returns_deltas_since_the_previous_drain():
    agg, _ = new_aggregator()
    agg.observe_traces(
        traces_request(
            span("GET /cart", 0.003, status=Status.STATUS_CODE_OK),
            span("GET /cart", 0.5, status=Status.STATUS_CODE_OK),
        )
    )
    first = agg.drain_span_metrics()
    key = SpanKey("checkout", "GET /cart", "SPAN_KIND_SERVER", "STATUS_CODE_OK")
    assert list(first) == [key]
    delta = first[key]
    assert (delta.calls, delta.count, round(delta.sum, 9)) == (2, 2, 0.503)
    assert delta.bounds == SPAN_DURATION_BOUNDS_SECONDS
    assert len(delta.bucket_counts) == len(delta.bounds) + 1
    assert delta.bucket_counts[1] == 1 and delta.bucket_counts[9] == 1  # le 0.004 and le 0.8

    assert agg.drain_span_metrics() == {}
    agg.observe_traces(traces_request(span("GET /cart", 0.003, status=Status.STATUS_CODE_OK)))
    assert agg.drain_span_metrics()[key].calls == 1
    # the Prometheus counter is cumulative and unaffected by draining
    calls = scrape(agg)["traces_span_metrics_calls"]
    assert only_value(calls, "traces_span_metrics_calls_total", span_name="GET /cart") == 3


def test_keys_past_the_cap_fold_into_the_overflow_series_and_drain_key():
    agg, _ = new_aggregator(max_series_per_metric=3)
    agg.observe_traces(traces_request(*(span(f"GET /item/{i}", 0.001) for i in range(10))))
    calls = scrape(agg)["traces_span_metrics_calls"]
    values = {s.labels.get("span_name", "overflow"): s.value for s in calls.samples}
    assert len(values) == 4
    assert values["overflow"] == 7 and sum(values.values()) == 10  # totals stay exact
    assert only_value(calls, "traces_span_metrics_calls_total", otel_metric_overflow="true") == 7
    overflow = next(s for s in calls.samples if "otel_metric_overflow" in s.labels)
    assert overflow.labels == {"otel_metric_overflow": "true"}
    drained = agg.drain_span_metrics()
    assert len(drained) == 4 and drained[OVERFLOW_SPAN_KEY].calls == 7 and OVERFLOW_SPAN_KEY.is_overflow
    assert agg.stats().dropped["overflow"] == 7
