"""Golden name translations: otlptranslator's tables, the compatibility spec's label rules, pitfalls."""

from __future__ import annotations

import pytest

from exporters.prometheus.naming import (
    InvalidNameError,
    attribute_label_name,
    label_name,
    merge_labels,
    metric_name,
    unit_suffixes,
    unit_word,
)

# (OTel name, unit, type, namespace) → Prometheus name
METRIC_NAMES = [
    # otlptranslator's table
    ("http.server.request.duration", "s", "histogram", "", "http_server_request_duration_seconds"),
    ("requests", "", "monotonic_counter", "", "requests_total"),
    ("items", "1", "monotonic_counter", "", "items_total"),
    ("cpu_usage", "1", "gauge", "", "cpu_usage_ratio"),
    ("throughput", "By/s", "gauge", "", "throughput_bytes_per_second"),
    ("requests", "1/s", "gauge", "", "requests_per_second"),
    ("custom_metric", "{custom}", "gauge", "", "custom_metric"),
    ("custom_metric", "By/{custom}", "gauge", "", "custom_metric_bytes"),
    ("otelcol_process_cpu_seconds", "s", "monotonic_counter", "", "otelcol_process_cpu_seconds_total"),
    ("requests", "1/s", "monotonic_counter", "app", "app_requests_per_second_total"),
    ("123metric", "", "gauge", "", "_123metric"),
    ("(lambda).function.executions(#)", "", "gauge", "", "lambda_function_executions"),
    ("storage.filesystem.utilization", "%", "gauge", "", "storage_filesystem_utilization_percent"),
    # the spec's SDK exporter example
    ("foo.bar", "By", "monotonic_counter", "", "foo_bar_bytes_total"),
    # pitfall: units
    ("response.time", "ms", "gauge", "", "response_time_milliseconds"),
    ("memory.usage", "By", "gauge", "", "memory_usage_bytes"),
    ("memory.limit", "KiBy", "gauge", "", "memory_limit_kibibytes"),
    ("disk.size", "GBy", "gauge", "", "disk_size_gigabytes"),
    ("uptime", "d", "gauge", "", "uptime_days"),
    ("temperature", "Cel", "gauge", "", "temperature_celsius"),
    ("speed", "m/s", "gauge", "", "speed_meters_per_second"),
    ("http.requests", "{req}", "monotonic_counter", "", "http_requests_total"),
    ("network.io", "packets", "monotonic_counter", "", "network_io_packets_total"),
    ("queue.length", "", "gauge", "", "queue_length"),
    ("response_time_seconds", "s", "gauge", "", "response_time_seconds"),  # already ends in the unit
    ("requests_total", "", "monotonic_counter", "", "requests_total"),  # already ends in _total
    ("total_requests", "", "monotonic_counter", "", "requests_total"),  # pitfall 5: total token moves
    ("cpu_usage_ratio", "1", "gauge", "", "cpu_usage_ratio"),
    (
        "process.cpu.seconds.used",
        "s",
        "monotonic_counter",
        "",
        "process_cpu_seconds_used_total",
    ),  # token, not suffix
    # non-monotonic sums, histograms and summaries get no _ratio / _total
    ("active.connections", "1", "non_monotonic_counter", "", "active_connections"),
    ("request.size", "By", "exponential_histogram", "", "request_size_bytes"),
    ("rpc.duration", "ms", "summary", "", "rpc_duration_milliseconds"),
    # otlptranslator metric_namer_test.go
    (
        "metric__with__multiple__underscores",
        "unit__multiple__underscores",
        "gauge",
        "",
        "metric_with_multiple_underscores_unit_multiple_underscores",
    ),
    ("custom_metric", "unit@with#special/chars", "gauge", "", "custom_metric_unit_with_special_per_chars"),
    ("123_requests", "", "monotonic_counter", "app", "app_123_requests_total"),
    ("metric@with#special$chars", "", "gauge", "", "metric_with_special_chars"),
    ("simple_metric", "", "gauge", "test@namespace!!??", "test_namespace_simple_metric"),
    ("job:requests:rate5m", "", "gauge", "", "job:requests:rate5m"),  # colons are legal, kept like upstream
]


@pytest.mark.parametrize(("name", "unit", "metric_type", "namespace", "expected"), METRIC_NAMES)
def test_metric_name_matches_otlptranslator(name, unit, metric_type, namespace, expected):
    assert metric_name(name, unit, metric_type, namespace) == expected


def test_ratio_suffix_can_be_turned_off():
    assert metric_name("cpu_usage", "1", "gauge", ratio_for_unit_one=False) == "cpu_usage"


@pytest.mark.parametrize("name", ["", "@#$%", "___", "ようこそ"])
def test_metric_name_that_sanitizes_to_nothing_is_an_error(name):
    with pytest.raises(InvalidNameError):
        metric_name(name, "", "gauge")


@pytest.mark.parametrize(
    ("unit", "suffixes", "word"),
    [
        ("s", ("seconds", ""), "seconds"),
        ("By/s", ("bytes", "per_second"), "bytes_per_second"),
        ("1/s", ("", "per_second"), "per_second"),
        ("1", ("", ""), ""),
        ("{packet}", ("", ""), ""),
        ("{packet}/s", ("", "per_second"), "per_second"),
        ("", ("", ""), ""),
        ("widgets/mo", ("widgets", "per_month"), "widgets_per_month"),
    ],
)
def test_unit_suffixes(unit, suffixes, word):
    assert unit_suffixes(unit) == suffixes
    assert unit_word(unit) == word


LABEL_NAMES = [
    ("http.method", "http_method"),  # otlptranslator
    ("123invalid", "key_123invalid"),
    ("label:with:colons", "label_with_colons"),  # otlptranslator label_namer_test.go
    ("LabelWithCapitalLetters", "LabelWithCapitalLetters"),
    ("label!with&special$chars)", "label_with_special_chars_"),
    ("label.with.dots", "label_with_dots"),
    ("_label_starting_with_underscore", "_label_starting_with_underscore"),
    ("label_with_foreign_characters_字符", "label_with_foreign_characters_"),  # runs collapse (compatibility spec)
    ("a..b", "a_b"),
    ("__name__", "key_name_"),  # `__*` is reserved for Prometheus: never produced from an attribute
    ("__label_starting_with_2underscores", "key_label_starting_with_2underscores"),
    ("job", "job"),
]


@pytest.mark.parametrize(("key", "expected"), LABEL_NAMES)
def test_label_name(key, expected):
    assert label_name(key) == expected


@pytest.mark.parametrize("key", ["", "__", "ようこそ", "..."])
def test_label_name_that_sanitizes_to_nothing_is_an_error(key):
    with pytest.raises(InvalidNameError):
        label_name(key)


@pytest.mark.parametrize(("key", "expected"), [("le", "key_le"), ("quantile", "key_quantile"), ("lee", "lee")])
def test_attributes_never_take_the_le_and_quantile_labels(key, expected):
    assert attribute_label_name(key) == expected


def test_colliding_labels_merge_with_semicolon_in_original_key_order():
    # pitfall: http.method + http_method → one label, values ordered by the original keys
    merged = merge_labels([("http_method", "http_method", "POST"), ("http_method", "http.method", "GET")])
    assert merged == {"http_method": "GET;POST"}


def test_merge_keeps_input_order_for_equal_original_keys_and_skips_empty_values():
    merged = merge_labels([("job", "job", "attr"), ("job", "job", "shop/checkout"), ("a", "a", "")])
    assert merged == {"job": "attr;shop/checkout"}
