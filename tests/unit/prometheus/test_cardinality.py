"""Series caps: however many label values clients send, the exposition and the memory stay bounded."""

from __future__ import annotations

import gc
import tracemalloc

from tests.unit.prometheus.builders import (
    DELTA,
    SEC,
    gauge,
    metrics_request,
    new_aggregator,
    number,
    only_value,
    scrape,
    scrape_text,
    span,
    sum_,
    traces_request,
)

CAP = 1000
BATCH = 1000


def delta_batch(batch: int):
    points = [
        number(1, {"user.id": f"user-{batch * BATCH + i}"}, start=batch * SEC, time=(batch + 1) * SEC)
        for i in range(BATCH)
    ]
    return metrics_request(sum_("logins", points, temporality=DELTA))


def test_100k_distinct_label_values_fold_into_one_overflow_series_with_bounded_memory():
    agg, _ = new_aggregator(max_series_per_metric=CAP)
    for batch in range(10):  # 10k values: the cap is reached, the state has its full size
        agg.observe_metrics(delta_batch(batch))
    gc.collect()
    tracemalloc.start()
    try:
        for batch in range(10, 100):  # 90k more distinct values
            agg.observe_metrics(delta_batch(batch))
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What the 90k extra label values left behind: no per-value state (a series is ~1 kB each).
    assert retained < 256 * 1024, retained

    family = scrape(agg)["logins"]
    assert len(family.samples) == CAP + 1
    assert sum(s.value for s in family.samples) == 100 * BATCH  # deltas fold exactly: totals preserved
    assert only_value(family, "logins_total", otel_metric_overflow="true") == 100 * BATCH - CAP
    overflow = [s.labels for s in family.samples if "otel_metric_overflow" in s.labels]
    assert overflow == [{"otel_metric_overflow": "true"}]
    stats = agg.stats()
    assert stats.dropped["overflow"] == 100 * BATCH - CAP
    assert stats.active_series == CAP + 2  # + overflow + target_info


def test_existing_series_keep_updating_after_the_cap_is_reached():
    agg, _ = new_aggregator(max_series_per_metric=2)
    agg.observe_metrics(metrics_request(gauge("g", [number(1, {"k": "a"}), number(1, {"k": "b"})])))
    agg.observe_metrics(metrics_request(gauge("g", [number(1, {"k": "c"}), number(7, {"k": "a"})])))
    family = scrape(agg)["g"]
    assert only_value(family, k="a") == 7
    assert len(family.samples) == 2


def test_cumulative_points_past_the_cap_are_dropped_not_folded():
    # A cumulative value can't be added to other streams' values without per-stream state.
    agg, _ = new_aggregator(max_series_per_metric=CAP)
    agg.observe_metrics(
        metrics_request(
            gauge("sessions", [number(1, {"session.id": str(i)}) for i in range(5 * CAP)]),
            sum_(
                "received",
                [number(10, {"conn.id": str(i)}, start=1, time=2) for i in range(5 * CAP)],
                unit="By",
            ),
        )
    )
    families = scrape(agg)
    assert len(families["sessions"].samples) == CAP
    assert len(families["received_bytes"].samples) == CAP
    assert agg.stats().dropped["cardinality_limit"] == 2 * 4 * CAP


def test_span_names_with_ids_stay_under_the_cap():
    agg, _ = new_aggregator(max_series_per_metric=100)
    for batch in range(20):
        agg.observe_traces(traces_request(*(span(f"GET /orders/{batch}-{i}", 0.01) for i in range(500))))
    families = scrape(agg)
    calls = families["traces_span_metrics_calls"]
    assert len(calls.samples) == 101
    assert sum(s.value for s in calls.samples) == 10_000
    duration = families["traces_span_metrics_duration_seconds"]
    assert len({tuple(sorted(s.labels.items())) for s in duration.samples if s.name.endswith("_count")}) == 101


def test_global_cap_bounds_all_families_together():
    agg, _ = new_aggregator(max_series_per_metric=1000, max_series_total=50)
    metrics = [gauge(f"metric.{m}", [number(1, {"k": str(i)}) for i in range(20)]) for m in range(10)]
    agg.observe_metrics(metrics_request(*metrics))
    for batch in range(5):
        agg.observe_metrics(delta_batch(batch))
    stats = agg.stats()
    # New series stop at the global cap; each family can add at most its one overflow series.
    assert stats.active_series <= 50 + stats.families
    text = scrape_text(agg)
    rendered = [line for line in text.splitlines() if line and not line.startswith(("#", "otelpg_"))]
    assert len(rendered) <= 50 + stats.families
    assert stats.dropped["cardinality_limit"] > 0
