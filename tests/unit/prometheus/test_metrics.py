"""OTLP metrics end to end: built protobuf requests → observe → render → parse → assert."""

from __future__ import annotations

import pytest

from tests.unit.prometheus.builders import (
    CUMULATIVE,
    DELTA,
    SEC,
    UNSPECIFIED,
    exp_histogram,
    exp_point,
    gauge,
    hist_point,
    histogram,
    metrics_request,
    new_aggregator,
    number,
    only_value,
    scrape,
    scrape_text,
    sum_,
    summary,
)

SCOPE = {"otel_scope_name": "io.shop.lib", "otel_scope_version": "1.2.0"}
TARGET = {"job": "shop/checkout", "instance": "pod-1"}


def labels_of(family, name=None):
    return [s.labels for s in family.samples if s.name == (name or family.name)]


def dropped(aggregator, reason):
    return aggregator.stats().dropped[reason]


# --- gauges and sums ---


def test_gauge_points_become_gauge_series_with_scope_and_target_labels():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            gauge(
                "queue.length",
                [number(3, {"queue": "a"}), number(5.5, {"queue": "b"})],
                description="Items waiting",
            ),
        )
    )
    family = scrape(agg)["queue_length"]
    assert family.type == "gauge"
    assert family.documentation == "Items waiting"
    assert labels_of(family) == [{"queue": "a", **SCOPE, **TARGET}, {"queue": "b", **SCOPE, **TARGET}]
    assert only_value(family, queue="a") == 3
    assert only_value(family, queue="b") == 5.5


def test_gauge_keeps_the_latest_point_and_ignores_older_ones():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(gauge("temp", [number(1.0, time=10 * SEC)], unit="Cel")))
    agg.observe_metrics(metrics_request(gauge("temp", [number(2.0, time=20 * SEC)], unit="Cel")))
    agg.observe_metrics(metrics_request(gauge("temp", [number(3.0, time=15 * SEC)], unit="Cel")))
    assert only_value(scrape(agg)["temp_celsius"]) == 2.0
    assert dropped(agg, "out_of_order") == 1


def test_empty_description_gets_a_non_empty_help():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(gauge("queue.length", [number(1)])))
    assert scrape(agg)["queue_length"].documentation == "queue.length"


def test_cumulative_monotonic_sum_is_a_counter_with_total():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            sum_(
                "http.server.requests",
                [number(7, {"http.route": "/a"}, start=1 * SEC, time=2 * SEC)],
                unit="{request}",
            ),
        )
    )
    text = scrape_text(agg)
    assert "# TYPE http_server_requests_total counter" in text
    family = scrape(agg)["http_server_requests"]
    assert family.type == "counter"
    assert only_value(family, "http_server_requests_total", http_route="/a") == 7


def test_cumulative_counter_restart_is_exposed_once_as_a_reset():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(sum_("jobs", [number(100, start=1 * SEC, time=50 * SEC)])))
    agg.observe_metrics(metrics_request(sum_("jobs", [number(3, start=60 * SEC, time=70 * SEC)])))
    assert only_value(scrape(agg)["jobs"], "jobs_total") == 3


def test_non_monotonic_cumulative_sum_is_a_gauge_without_ratio():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(sum_("db.connections", [number(4)], monotonic=False, unit="1")))
    family = scrape(agg)["db_connections"]
    assert family.type == "gauge"
    assert only_value(family) == 4


def test_non_monotonic_delta_sum_is_dropped_by_default():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            sum_(
                "queue.delta",
                [number(5, start=1, time=2), number(1, start=1, time=2)],
                monotonic=False,
                temporality=DELTA,
            ),
        )
    )
    assert "queue_delta" not in scrape(agg)
    assert dropped(agg, "unsupported_temporality") == 2


def test_non_monotonic_delta_sum_can_be_accumulated_into_a_gauge():
    agg, _ = new_aggregator(non_monotonic_delta="accumulate")
    for start, end, value in [(0, 10, 5), (10, 20, -2)]:
        agg.observe_metrics(
            metrics_request(
                sum_(
                    "queue.depth",
                    [number(value, start=start * SEC, time=end * SEC)],
                    monotonic=False,
                    temporality=DELTA,
                ),
            )
        )
    family = scrape(agg)["queue_depth"]
    assert family.type == "gauge"
    assert only_value(family) == 3


@pytest.mark.parametrize(
    "metric",
    [
        sum_("s", [number(1)], temporality=UNSPECIFIED),
        histogram("h", [hist_point([1.0], [1, 0], 0.5)], temporality=UNSPECIFIED),
        exp_histogram("e", [exp_point(0, (0, [1]))], temporality=UNSPECIFIED),
    ],
)
def test_unspecified_temporality_is_dropped(metric):
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(metric))
    assert agg.snapshot().stats.active_series == 1  # target_info only
    assert dropped(agg, "unsupported_temporality") == 1


# --- delta → cumulative ---


def observe_delta(agg, value, start, end, **attributes):
    agg.observe_metrics(
        metrics_request(
            sum_("orders", [number(value, attributes, start=start * SEC, time=end * SEC)], temporality=DELTA),
        )
    )


def orders_total(agg):
    return only_value(scrape(agg)["orders"], "orders_total")


def test_aligned_deltas_accumulate():
    agg, _ = new_aggregator()
    observe_delta(agg, 5, 0, 10)
    observe_delta(agg, 3, 10, 20)
    observe_delta(agg, 2, 20, 30)
    assert orders_total(agg) == 10


def test_delta_after_a_gap_resets_the_counter():
    agg, _ = new_aggregator()
    observe_delta(agg, 5, 0, 10)
    observe_delta(agg, 2, 30, 40)  # 10..30 is missing: a restart or lost data
    assert orders_total(agg) == 2
    observe_delta(agg, 1, 40, 50)
    assert orders_total(agg) == 3


def test_overlapping_delta_is_dropped():
    agg, _ = new_aggregator()
    observe_delta(agg, 5, 100, 110)
    observe_delta(agg, 5, 100, 110)  # the same interval again: a resend or a second writer
    observe_delta(agg, 4, 105, 115)
    assert orders_total(agg) == 5
    assert dropped(agg, "misaligned") == 2


def test_deltas_without_start_time_are_added_statsd_style():
    agg, _ = new_aggregator()
    for end in (10, 20, 30):  # the count connector sends no start time
        observe_delta(agg, 2, 0, end)
    assert orders_total(agg) == 6


def test_older_delta_is_dropped():
    agg, _ = new_aggregator()
    observe_delta(agg, 5, 10, 20)
    observe_delta(agg, 1, 0, 10)
    assert orders_total(agg) == 5
    assert dropped(agg, "out_of_order") == 1


def test_deltas_accumulate_per_series():
    agg, _ = new_aggregator()
    observe_delta(agg, 1, 0, 10, region="eu")
    observe_delta(agg, 7, 0, 10, region="us")
    observe_delta(agg, 1, 10, 20, region="eu")
    family = scrape(agg)["orders"]
    assert only_value(family, "orders_total", region="eu") == 2
    assert only_value(family, "orders_total", region="us") == 7


# --- histograms ---


def test_cumulative_histogram_has_cumulative_buckets_sum_and_count():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            histogram("http.server.request.duration", [hist_point([0.005, 1.0, 1e6], [1, 2, 3, 4], 12.5)], unit="s"),
        )
    )
    family = scrape(agg)["http_server_request_duration_seconds"]
    assert family.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.005": 1, "1.0": 3, "1e+06": 6, "+Inf": 10}
    assert only_value(family, "http_server_request_duration_seconds_count") == 10
    assert only_value(family, "http_server_request_duration_seconds_sum") == 12.5


def test_delta_histograms_accumulate_when_aligned():
    agg, _ = new_aggregator()
    for start, end, counts, total in [(0, 10, [1, 0, 2], 3.0), (10, 20, [0, 4, 1], 5.0)]:
        agg.observe_metrics(
            metrics_request(
                histogram(
                    "latency",
                    [hist_point([1.0, 2.0], counts, total, start=start * SEC, time=end * SEC)],
                    temporality=DELTA,
                    unit="s",
                ),
            )
        )
    family = scrape(agg)["latency_seconds"]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"1.0": 1, "2.0": 5, "+Inf": 8}
    assert only_value(family, "latency_seconds_sum") == 8.0


@pytest.mark.parametrize(
    ("second", "expected_inf", "reason"),
    [
        ((30, 40, [1.0, 2.0]), 1, None),  # gap: reset
        ((5, 15, [1.0, 2.0]), 3, "misaligned"),  # overlap: dropped
        ((10, 20, [1.0, 5.0]), 1, None),  # aligned but the bounds changed: the newer point restarts it
    ],
)
def test_delta_histogram_gap_overlap_and_bounds_change(second, expected_inf, reason):
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            histogram("latency", [hist_point([1.0, 2.0], [1, 1, 1], 3.0, start=0, time=10 * SEC)], temporality=DELTA)
        )
    )
    start, end, bounds = second
    agg.observe_metrics(
        metrics_request(
            histogram(
                "latency",
                [hist_point(bounds, [1, 0, 0], 0.5, start=start * SEC, time=end * SEC)],
                temporality=DELTA,
            )
        )
    )
    assert only_value(scrape(agg)["latency"], "latency_bucket", le="+Inf") == expected_inf
    if reason:
        assert dropped(agg, reason) == 1


def test_histogram_without_buckets_has_only_the_inf_bucket():
    agg, _ = new_aggregator()
    point = hist_point([], [], 9.0)
    point.count = 4
    agg.observe_metrics(metrics_request(histogram("jobs.duration", [point], unit="s")))
    family = scrape(agg)["jobs_duration_seconds"]
    assert [(s.name, s.labels.get("le"), s.value) for s in family.samples] == [
        ("jobs_duration_seconds_bucket", "+Inf", 4),
        ("jobs_duration_seconds_count", None, 4),
        ("jobs_duration_seconds_sum", None, 9.0),
    ]


def test_unsorted_and_duplicate_bounds_are_sorted_and_merged():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(histogram("h", [hist_point([2.0, 1.0, 2.0], [1, 2, 3, 4], 1.0)])))
    buckets = {s.labels["le"]: s.value for s in scrape(agg)["h"].samples if s.name == "h_bucket"}
    assert buckets == {"1.0": 2, "2.0": 6, "+Inf": 10}


def test_negative_bounds_drop_sum_and_count_but_keep_inf():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(histogram("temp.delta", [hist_point([-1.0, 0.0], [1, 1, 1], 0.5)])))
    for openmetrics in (False, True):  # OpenMetrics: no _sum with negative buckets, _count only with _sum
        family = scrape(agg, openmetrics=openmetrics)["temp_delta"]
        assert {s.name for s in family.samples} == {"temp_delta_bucket"}
        assert only_value(family, "temp_delta_bucket", le="+Inf") == 3


def test_histogram_without_sum_has_no_sum_sample():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(histogram("h", [hist_point([1.0], [1, 1], None)])))
    family = scrape(agg, openmetrics=True)["h"]
    assert {s.name for s in family.samples} == {"h_bucket"}


def test_histogram_with_mismatched_bucket_counts_is_dropped():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(histogram("h", [hist_point([1.0, 2.0], [1, 1], 1.0)])))
    assert "h" not in scrape(agg)
    assert dropped(agg, "invalid_point") == 1


# --- exponential histograms ---


def test_exponential_histogram_becomes_power_of_two_buckets():
    agg, _ = new_aggregator()
    # scale 1: base sqrt(2); positive buckets 0..3 hold (1, 1.41], (1.41, 2], (2, 2.83], (2.83, 4]
    agg.observe_metrics(
        metrics_request(
            exp_histogram(
                "rpc.latency",
                [exp_point(1, (0, [1, 2, 3, 4]), (0, [5]), zero_count=6, total=20.0)],
                unit="ms",
            )
        )
    )
    family = scrape(agg)["rpc_latency_milliseconds"]
    assert family.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]
    # downscaled to scale 0: positive (1, 2] = 3, (2, 4] = 7; negative [-2, -1) = 5; zero bucket = 6
    assert buckets == [("-1.0", 5), ("0.0", 11), ("2.0", 14), ("4.0", 21), ("+Inf", 21)]
    assert "rpc_latency_milliseconds_sum" not in {s.name for s in family.samples}  # negative buckets


def test_exponential_histogram_positive_only_keeps_sum_and_count():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(exp_histogram("size", [exp_point(0, (3, [2, 0, 1]), total=50.0)], unit="By")))
    family = scrape(agg, openmetrics=True)["size_bytes"]
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name == "size_bytes_bucket"]
    assert buckets == [("16.0", 2), ("32.0", 2), ("64.0", 3), ("+Inf", 3)]
    assert only_value(family, "size_bytes_count") == 3
    assert only_value(family, "size_bytes_sum") == 50.0


def test_delta_exponential_histograms_merge_across_scales():
    agg, _ = new_aggregator(exponential_histogram_scale=2)
    agg.observe_metrics(
        metrics_request(
            exp_histogram("e", [exp_point(2, (4, [1, 1, 1, 1]), total=8.0, start=0, time=10 * SEC)], temporality=DELTA)
        )
    )
    # an SDK rescale: the next delta arrives at scale 1
    agg.observe_metrics(
        metrics_request(
            exp_histogram("e", [exp_point(1, (2, [2]), total=3.0, start=10 * SEC, time=20 * SEC)], temporality=DELTA)
        )
    )
    family = scrape(agg)["e"]
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name == "e_bucket"]
    # both at scale 1: bucket 2 = (2, 2.83] holds 2 + 2, bucket 3 = (2.83, 4] holds 2
    assert buckets == [("2.8284271247461903", 4), ("4.0", 6), ("+Inf", 6)]
    assert only_value(family, "e_sum") == 11.0


# --- summaries ---


def test_summary_quantiles_are_sorted_go_formatted_floats():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(summary("rpc.duration", {0.99: 3.0, 0.5: 1.0, 0.0: 0.1, 1.0: 9.0}, 10, 12.5, unit="s"))
    )
    for openmetrics in (False, True):
        family = scrape(agg, openmetrics=openmetrics)["rpc_duration_seconds"]
        assert family.type == "summary"
        quantiles = [(s.labels["quantile"], s.value) for s in family.samples if s.name == "rpc_duration_seconds"]
        assert quantiles == [("0.0", 0.1), ("0.5", 1.0), ("0.99", 3.0), ("1.0", 9.0)]
        assert only_value(family, "rpc_duration_seconds_count") == 10
        assert only_value(family, "rpc_duration_seconds_sum") == 12.5


# --- resources and scopes ---


def test_one_target_info_per_job_and_instance_with_resource_attributes():
    agg, _ = new_aggregator()
    resource = {
        "service.name": "checkout",
        "service.instance.id": "pod-1",
        "k8s.namespace.name": "prod",
        "host.arch": "amd64",
    }
    agg.observe_metrics(metrics_request(gauge("a", [number(1)]), resource=resource))
    agg.observe_metrics(metrics_request(gauge("b", [number(1)]), resource=resource))
    agg.observe_metrics(metrics_request(gauge("a", [number(1)]), resource={"service.name": "cart"}))
    agg.observe_metrics(metrics_request(gauge("a", [number(1)]), resource={"host.name": "h1"}))  # no job/instance
    family = scrape(agg)["target_info"]
    assert family.type == "gauge"
    assert labels_of(family) == [
        {"job": "checkout", "instance": "pod-1", "k8s_namespace_name": "prod", "host_arch": "amd64"},
        {"job": "cart"},
    ]
    assert scrape(agg, openmetrics=True)["target"].type == "info"


def test_target_info_can_be_turned_off():
    agg, _ = new_aggregator(target_info=False)
    agg.observe_metrics(metrics_request(gauge("a", [number(1)])))
    assert "target_info" not in scrape(agg)


def test_scope_labels_include_schema_url_and_scope_attributes_and_can_be_turned_off():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            gauge("a", [number(1)]),
            scope_attributes={"team": "core"},
            schema_url="https://opentelemetry.io/schemas/1.26.0",
        )
    )
    assert labels_of(scrape(agg)["a"]) == [
        {
            **SCOPE,
            **TARGET,
            "otel_scope_team": "core",
            "otel_scope_schema_url": "https://opentelemetry.io/schemas/1.26.0",
        }
    ]
    agg, _ = new_aggregator(scope_labels=False)
    agg.observe_metrics(metrics_request(gauge("a", [number(1)])))
    assert labels_of(scrape(agg)["a"]) == [TARGET]


def test_the_same_metric_from_two_scopes_is_two_series():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(gauge("a", [number(1)]), scope=("lib.one", "1")))
    agg.observe_metrics(metrics_request(gauge("a", [number(2)]), scope=("lib.two", "1")))
    family = scrape(agg)["a"]
    assert only_value(family, otel_scope_name="lib.one") == 1
    assert only_value(family, otel_scope_name="lib.two") == 2


def test_attributes_named_like_reserved_labels_do_not_break_the_exposition():
    agg, _ = new_aggregator()
    attributes = {"le": "x", "quantile": "y", "job": "batch", "otel_scope_name": "mine", "__name__": "z"}
    agg.observe_metrics(metrics_request(histogram("h", [hist_point([1.0], [1, 1], 1.0, attributes)])))
    family = scrape(agg, openmetrics=True)["h"]
    assert only_value(family, "h_bucket", le="1.0") == 1
    labels = labels_of(family, "h_count")[0]
    assert labels["key_le"] == "x" and labels["key_quantile"] == "y" and labels["key_name_"] == "z"
    assert labels["job"] == "batch;shop/checkout"
    assert labels["otel_scope_name"] == "mine;io.shop.lib"  # equal original keys: attribute first


# --- one TYPE per name; sample-name clashes; reserved names ---


def test_a_type_conflict_is_logged_once(caplog):
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(gauge("foo", [number(1)])))
    for _ in range(3):
        agg.observe_metrics(
            metrics_request(
                sum_("foo", [number(1)], monotonic=False, temporality=CUMULATIVE),  # a gauge too: fine
                histogram("foo", [hist_point([1.0], [1, 0], 1.0)]),
            )
        )
    warnings = [r.getMessage() for r in caplog.records if "type conflict" in r.getMessage()]
    assert warnings == ["instrument type conflict: foo is a gauge, dropping histogram points"]
    assert dropped(agg, "type_conflict") == 3


def test_a_later_conflicting_type_is_dropped_and_counted():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(gauge("foo", [number(1)])))
    agg.observe_metrics(
        metrics_request(histogram("foo", [hist_point([1.0], [1, 0], 1.0)]), summary("foo", {0.5: 1.0}, 1, 1.0))
    )
    family = scrape(agg)["foo"]
    assert family.type == "gauge"
    assert dropped(agg, "type_conflict") == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (histogram("foo", [hist_point([1.0], [1, 0], 1.0)]), gauge("foo.count", [number(1)])),  # foo_count
        (sum_("foo", [number(1)]), gauge("foo_total", [number(1)])),  # foo_total
        (sum_("foo", [number(1)]), gauge("foo_created", [number(1)])),  # foo_created
        (gauge("foo.bucket", [number(1)]), histogram("foo", [hist_point([1.0], [1, 0], 1.0)])),
    ],
)
def test_sample_name_clashes_are_dropped(first, second):
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(first))
    agg.observe_metrics(metrics_request(second))
    scrape(agg)  # still parses
    assert dropped(agg, "name_clash") == 1
    assert agg.stats().families == 2  # the first family and target_info


@pytest.mark.parametrize(
    "metric",
    [
        sum_("otelpg.receiver.accepted.spans", [number(1)]),  # otelpg's self-telemetry prefix
        sum_("traces.span.metrics.calls", [number(1)]),  # a Collector's spanmetrics, clashing with ours
        gauge("target_info", [number(1)]),
        gauge("log_record_count_total", [number(1)]),
    ],
)
def test_names_otelpg_writes_itself_are_not_taken_by_client_metrics(metric):
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(metric))
    assert dropped(agg, "name_clash") == 1


def test_invalid_metric_name_is_dropped():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(gauge("@#$%", [number(1), number(2)])))
    assert dropped(agg, "invalid_name") == 2


# --- staleness ---


def test_no_recorded_value_removes_only_that_series():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(gauge("g", [number(1, {"k": "a"}), number(2, {"k": "b"}), number(3, {"k": "c"})]))
    )
    agg.observe_metrics(metrics_request(gauge("g", [number(0, {"k": "a"}, flags=1), number(5, {"k": "b"})])))
    family = scrape(agg)["g"]
    assert sorted(s.labels["k"] for s in family.samples) == ["b", "c"]
    assert only_value(family, k="b") == 5


def test_series_expire_after_expiry_seconds_without_update():
    agg, clock = new_aggregator(series_expiry=300)
    agg.observe_metrics(metrics_request(gauge("old", [number(1)]), gauge("kept", [number(1)])))
    clock.now += 200
    agg.observe_metrics(metrics_request(gauge("kept", [number(2)]), resource={"service.name": "other"}))
    clock.now += 150  # old and the first target: 350 s idle; kept: 150 s
    families = scrape(agg)
    assert "old" not in families
    assert labels_of(families["target_info"]) == [{"job": "other"}]
    assert only_value(families["kept"]) == 2


def test_expiry_happens_without_scrapes_and_frees_the_name_for_another_type():
    agg, clock = new_aggregator(series_expiry=60)
    agg.observe_metrics(metrics_request(gauge("flip", [number(1)])))
    clock.now += 61
    agg.observe_metrics(metrics_request(sum_("x", [number(1)])))  # any later request sweeps
    assert agg.stats().active_series == 2  # x and target_info; flip is gone
    agg.observe_metrics(metrics_request(sum_("flip", [number(4)])))
    family = scrape(agg)["flip"]
    assert family.type == "counter"
    assert dropped(agg, "type_conflict") == 0


def test_observe_uses_the_injected_now():
    agg, clock = new_aggregator(series_expiry=10)
    agg.observe_metrics(metrics_request(gauge("g", [number(1)])), now=clock.now + 100)
    clock.now += 105
    assert "g" in scrape(agg)  # 5 s after its injected arrival time


def test_cumulative_points_of_all_types_roundtrip_through_openmetrics():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            gauge("g", [number(1.5)]),
            sum_("c", [number(3, start=1 * SEC, time=2 * SEC)], unit="By"),
            histogram("h", [hist_point([1.0], [1, 1], 2.0)], unit="s"),
            exp_histogram("e", [exp_point(0, (0, [1]), total=1.5)]),
            summary("s", {0.5: 1.0}, 2, 3.0),
            sum_("ud", [number(-2)], monotonic=False),
        )
    )
    families = scrape(agg, openmetrics=True)
    assert {name: f.type for name, f in families.items() if not name.startswith("otelpg_")} == {
        "g": "gauge",
        "c_bytes": "counter",
        "h_seconds": "histogram",
        "e": "histogram",
        "s": "summary",
        "ud": "gauge",
        "target": "info",
    }
    assert families["c_bytes"].unit == "bytes"


def test_a_job_without_instance_id_is_warned_about_once(caplog):
    agg, _ = new_aggregator()
    for value in (1, 2):
        agg.observe_metrics(metrics_request(gauge("g", [number(value)]), resource={"service.name": "worker"}))
    warnings = [r.getMessage() for r in caplog.records if "service.instance.id" in r.getMessage()]
    assert warnings == ["job worker sends no service.instance.id: its replicas share series"]
