"""Log record counts by service and severity."""

from __future__ import annotations

import pytest

from exporters.prometheus.log_counts import severity
from tests.unit.prometheus.builders import logs_request, new_aggregator, only_value, scrape


@pytest.mark.parametrize(
    ("number", "text", "expected"),
    [
        (1, "", "trace"),
        (4, "", "trace"),
        (5, "", "debug"),
        (8, "", "debug"),
        (9, "INFO", "info"),
        (12, "", "info"),
        (13, "", "warn"),
        (16, "", "warn"),
        (17, "", "error"),
        (20, "", "error"),
        (21, "", "fatal"),
        (24, "", "fatal"),
        (0, "Notice", "notice"),
        (25, "WARNING", "warning"),
        (0, "", "unspecified"),
        (-1, "", "unspecified"),
    ],
)
def test_severity(number, text, expected):
    assert severity(number, text) == expected


def test_log_records_are_counted_cumulatively_by_service_and_severity():
    agg, _ = new_aggregator()
    agg.observe_logs(logs_request((9, "INFO"), (9, "INFO"), (17, "ERROR"), (0, "Notice"), (0, "")))
    agg.observe_logs(logs_request((10, ""), service=None))
    agg.observe_logs(logs_request((11, "")))
    family = scrape(agg)["log_record_count"]
    assert family.type == "counter"
    name = "log_record_count_total"
    assert only_value(family, name, service_name="checkout", severity="info") == 3
    assert only_value(family, name, service_name="checkout", severity="error") == 1
    assert only_value(family, name, service_name="checkout", severity="notice") == 1
    assert only_value(family, name, service_name="checkout", severity="unspecified") == 1
    assert only_value(family, name, service_name="unknown_service", severity="info") == 1


def test_severity_text_values_past_the_cap_fold_into_overflow():
    agg, _ = new_aggregator(max_series_per_metric=5)
    agg.observe_logs(logs_request(*((0, f"level-{i}") for i in range(50))))
    family = scrape(agg)["log_record_count"]
    assert len(family.samples) == 6
    assert sum(s.value for s in family.samples) == 50
    assert only_value(family, "log_record_count_total", otel_metric_overflow="true") == 45
