"""render(): negotiation, gzip, headers, escaping, promtool, and rendering while ingestion goes on."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import threading

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporters.prometheus.collector import AggregatorCollector, register
from exporters.prometheus.exposition import render
from tests.unit.prometheus.builders import (
    DELTA,
    SEC,
    exp_histogram,
    exp_point,
    gauge,
    hist_point,
    histogram,
    logs_request,
    metrics_request,
    new_aggregator,
    number,
    registry_for,
    scrape,
    span,
    sum_,
    summary,
    traces_request,
)

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def aggregator():
    agg, _ = new_aggregator()
    agg.observe_metrics(
        metrics_request(
            gauge(
                "queue.length",
                [number(3, {"queue": 'a "quoted" \\ back\nslash', "utf8": "żółw"})],
                description="Items\nwaiting \\ here",
            ),
            gauge(
                "weird.values",
                [
                    number(float("nan"), {"v": "nan"}),
                    number(float("inf"), {"v": "inf"}),
                    number(float("-inf"), {"v": "-inf"}),
                ],
            ),
            sum_(
                "http.server.requests",
                [number(7, {"http.route": "/a", "ok": True}, start=1 * SEC, time=2 * SEC)],
            ),
            sum_("orders", [number(2, start=1 * SEC, time=2 * SEC)], temporality=DELTA),
            histogram(
                "http.server.request.duration",
                [hist_point([0.1, 1.0], [1, 2, 3], 4.5)],
                unit="s",
                description="Duration of HTTP server requests.",
            ),
            exp_histogram("payload.size", [exp_point(2, (8, [1, 2, 3]), total=100.0)], unit="By"),
            summary("rpc.duration", {0.5: 1.0, 0.99: 3.0}, 10, 12.5, unit="s"),
            sum_("db.connections", [number(4)], monotonic=False),
            gauge("cpu.utilization", [number(0.25)], unit="1"),
        )
    )
    agg.observe_traces(traces_request(span("GET /", 0.003), span("GET /", 0.5, status=2)))
    agg.observe_logs(logs_request((9, ""), (17, "")))
    return agg


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "text/plain",
        "text/plain; version=0.0.4",
        "*/*",
        "application/json",
        "application/openmetrics-text; version=0.0.1",
    ],
)
def test_text_0_0_4_by_default(aggregator, accept):
    body, headers = render(registry_for(aggregator), accept, None)
    assert headers["Content-Type"] == TEXT_0_0_4
    assert "Content-Encoding" not in headers
    names = {f.name for f in parse_text(body.decode())}
    assert {"queue_length", "http_server_requests", "target_info", "otelpg_prometheus_active_series"} <= names


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text",
        "application/openmetrics-text; version=1.0.0",
        "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
        "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5",
        # what Prometheus 2.x/3.x sends
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ],
)
def test_openmetrics_when_asked_for(aggregator, accept):
    body, headers = render(registry_for(aggregator), accept, None)
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0; charset=utf-8")
    text = body.decode()
    assert text.endswith("# EOF\n")
    names = {f.name for f in parse_openmetrics(text)}
    assert {"queue_length", "http_server_requests", "target", "traces_span_metrics_duration_seconds"} <= names


def test_weights_are_honoured(aggregator):
    accept = "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.1"
    _, headers = render(registry_for(aggregator), accept, None)
    assert headers["Content-Type"] == TEXT_0_0_4  # prometheus_client's choose_encoder would pick OpenMetrics


@pytest.mark.parametrize(
    ("encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("identity", False),
        (None, False),
    ],
)
def test_gzip_when_accepted(aggregator, encoding, gzipped):
    registry = registry_for(aggregator)
    body, headers = render(registry, None, encoding)
    plain, _ = render(registry, None, None)
    assert ("Content-Encoding" in headers) is gzipped
    assert headers["Content-Type"] == TEXT_0_0_4
    if gzipped:
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body) == plain
        assert len(body) < len(plain)


def test_escaping_and_special_values_roundtrip(aggregator):
    for openmetrics in (False, True):
        families = scrape(aggregator, openmetrics=openmetrics)
        queue = families["queue_length"]
        assert queue.documentation == "Items\nwaiting \\ here"
        sample = queue.samples[0]
        assert sample.labels["queue"] == 'a "quoted" \\ back\nslash'
        assert sample.labels["utf8"] == "żółw"
        values = {s.labels["v"]: s.value for s in families["weird_values"].samples}
        assert values["inf"] == float("inf") and values["-inf"] == float("-inf") and values["nan"] != values["nan"]
        assert families["http_server_requests"].samples[0].labels["ok"] == "true"


def test_every_family_has_help_and_one_type(aggregator):
    body, _ = render(registry_for(aggregator), None, None)
    lines = body.decode().splitlines()
    helps = [line.split(" ")[2] for line in lines if line.startswith("# HELP ")]
    types = [line.split(" ")[2] for line in lines if line.startswith("# TYPE ")]
    assert len(helps) == len(set(helps)) == len(types) == len(set(types))
    assert all(len(line.split(" ", 3)) == 4 and line.split(" ", 3)[3] for line in lines if line.startswith("# HELP "))


def test_collectors_register_on_an_injected_registry_only():
    agg, _ = new_aggregator()
    registry = CollectorRegistry(auto_describe=True)
    register(registry, agg)
    agg.observe_metrics(metrics_request(gauge("g", [number(1)])))
    assert "g 1.0" not in render(CollectorRegistry(), None, None)[0].decode()
    assert "\ng{" in render(registry, None, None)[0].decode()
    from prometheus_client import REGISTRY

    assert not any(isinstance(c, AggregatorCollector) for c in REGISTRY._collector_to_names)


def test_self_metrics_report_active_series_and_dropped_points_by_reason():
    agg, _ = new_aggregator(max_series_per_metric=1)
    agg.observe_metrics(
        metrics_request(
            gauge("g", [number(1, {"k": "a"}), number(1, {"k": "b"})]),
            sum_("g", [number(1)]),  # type conflict
        )
    )
    families = scrape(agg)
    assert families["otelpg_prometheus_active_series"].samples[0].value == 2  # g{k=a} and target_info
    assert families["otelpg_prometheus_families"].samples[0].value == 2
    dropped = {s.labels["reason"]: s.value for s in families["otelpg_prometheus_dropped_points"].samples}
    assert dropped["cardinality_limit"] == 1 and dropped["type_conflict"] == 1
    assert set(dropped) >= {"overflow", "misaligned", "out_of_order", "name_clash", "unsupported_temporality"}


def test_snapshots_are_immutable_views():
    agg, _ = new_aggregator()
    agg.observe_metrics(metrics_request(gauge("g", [number(1)])))
    before = agg.snapshot()
    agg.observe_metrics(metrics_request(gauge("g", [number(2)]), gauge("h", [number(3)])))
    after = agg.snapshot()
    assert [f.name for f in before.families] == ["g", "target"]
    assert before.families[0].records[0].value == 1
    assert [f.name for f in after.families] == ["g", "h", "target"]
    assert after.families[0].records[0].value == 2
    assert agg.snapshot().families[1] is after.families[1]  # unchanged families reuse their view


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH (Debian package `prometheus`)")
def test_promtool_check_metrics_passes(aggregator):
    body, _ = render(registry_for(aggregator), None, None)
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output


def test_rendering_in_threads_while_the_loop_ingests():
    agg, clock = new_aggregator(max_series_per_metric=300, series_expiry=5)
    registry = registry_for(agg)
    errors: list[BaseException] = []
    renders = 0
    stop = threading.Event()

    def scraper() -> None:
        nonlocal renders
        while not stop.is_set():
            try:
                body, _ = render(registry, "application/openmetrics-text; version=1.0.0", "gzip")
                list(parse_openmetrics(gzip.decompress(body).decode()))
                renders += 1
            except BaseException as error:  # reported to the main thread
                errors.append(error)
                return

    threads = [threading.Thread(target=scraper) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(400):
            clock.now += 0.1  # old series keep expiring while scrapes run
            agg.observe_metrics(
                metrics_request(
                    gauge("g", [number(i, {"k": str(i % 500)})]),
                    histogram("h", [hist_point([1.0], [i, 1], float(i), {"k": str(i % 50)})]),
                    sum_(
                        "c",
                        [number(1, {"k": str(i % 400)}, start=i * SEC, time=(i + 1) * SEC)],
                        temporality=DELTA,
                    ),
                )
            )
            agg.observe_traces(traces_request(span(f"op-{i % 350}", 0.01)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors
    assert renders > 0
