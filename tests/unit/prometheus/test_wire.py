"""Attribute fingerprints: equal exactly when the attributes are, whatever else the points carry."""

from __future__ import annotations

from exporters.prometheus.wire import attribute_fingerprints
from tests.unit.prometheus.builders import (
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
    summary,
)


def test_fingerprints_ignore_values_and_times_but_not_attributes():
    metric = gauge(
        "g",
        [
            number(1, {"a": "x", "b": 1}, start=1, time=2),
            number(2.5, {"a": "x", "b": 1}, start=5, time=9, flags=1),
            number(1, {"a": "x", "b": 2}),
            number(1, {"b": 1, "a": "x"}),  # same set, other order: another fingerprint, same series key
            number(1),
        ],
    )
    first, same, other_value, other_order, empty = attribute_fingerprints(metric.gauge, "gauge")
    assert first == same
    assert len({first, other_value, other_order, empty}) == 4
    assert empty == b""


def test_every_point_type_has_fingerprints():
    cases = [
        (histogram("h", [hist_point([1.0], [1, 1], 1.0, {"k": "v"})]).histogram, "histogram"),
        (
            exp_histogram("e", [exp_point(0, (0, [1]), attributes={"k": "v"})]).exponential_histogram,
            "exponential_histogram",
        ),
        (summary("s", {0.5: 1.0}, 1, 1.0, {"k": "v"}).summary, "summary"),
    ]
    for data, kind in cases:
        (fingerprint,) = attribute_fingerprints(data, kind)
        assert b"k" in fingerprint and b"v" in fingerprint


def test_cached_label_sets_give_the_same_series_as_computed_ones():
    agg, _ = new_aggregator()
    for value in (1, 2, 3):  # the 2nd and 3rd requests hit the label-set cache
        agg.observe_metrics(metrics_request(gauge("g", [number(value, {"a": "x"}), number(value * 10, {"a": "y"})])))
    agg.observe_metrics(metrics_request(gauge("g", [number(4, {"a": "x"})]), scope=("other.lib", "1")))
    family = scrape(agg)["g"]
    assert only_value(family, a="x", otel_scope_name="io.shop.lib") == 3
    assert only_value(family, a="y") == 30
    assert only_value(family, a="x", otel_scope_name="other.lib") == 4
