"""A real Prometheus (Debian's `prometheus` package) scrapes a real `otelpg run` every second; PromQL
over its HTTP API returns the span call rate, the services' own metrics and their target_info."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests import sdk

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """/usr/bin/prometheus scraping one target every second, its storage in `workdir`."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = _free_port()
        config = workdir / "prometheus.yml"
        # honor_labels: the job/instance otelpg derives from each service's resource stay as sent
        # (otherwise they'd become exported_job/exported_instance); see deploy/prometheus/README.md.
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: otelpg\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query(self, promql: str) -> list[dict]:
        answer = self.get("/api/v1/query", query=promql)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _poll(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: nothing within {timeout}s")
        time.sleep(0.5)


@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian package `prometheus`; .ci/run installs it)"
)
@pytest.mark.timeout(90)
def test_prometheus_scrapes_otelpg_and_promql_returns_the_span_call_rate(otelpg, tmp_path):
    started = time.monotonic()
    sdk.send_metrics(sdk.grpc_exporters(otelpg.grpc_target).metrics)
    stop = threading.Event()

    def traffic() -> None:  # a service answering requests: a few spans every half second
        while not stop.is_set():
            sdk.send_spans(sdk.grpc_exporters(otelpg.grpc_target).spans)  # send_spans shuts its exporter down
            stop.wait(0.5)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    prometheus = Prometheus(workdir, f"127.0.0.1:{otelpg.ports['admin']}")
    try:
        prometheus.wait_ready()
        rate = _poll(
            lambda: [
                r
                for r in prometheus.query("sum(rate(traces_span_metrics_calls_total[30s]))")
                if float(r["value"][1]) > 0
            ],
            30,
            "span call rate",
        )
        assert float(rate[0]["value"][1]) > 0

        # Scraped cleanly: the target is up with no error (OpenMetrics negotiated, as Prometheus prefers).
        targets = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
        assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
        assert prometheus.query('up{job="otelpg"}')[0]["value"][1] == "1"

        # RED by service and span: errors are the calls with status_code="STATUS_CODE_ERROR".
        by_span = prometheus.query(
            "sum by (span_name) (rate(traces_span_metrics_calls_total"
            '{service_name="checkout",status_code="STATUS_CODE_ERROR"}[30s]))'
        )
        assert [r["metric"]["span_name"] for r in by_span] == ["charge"]
        p99 = prometheus.query(
            "histogram_quantile(0.99, sum by (le) (rate(traces_span_metrics_duration_seconds_bucket[30s])))"
        )
        assert p99 and float(p99[0]["value"][1]) > 0

        # The service's own metrics keep the job/instance of its resource (honor_labels), and join
        # with target_info on them.
        orders = prometheus.query('orders_total{job="checkout",instance="pod-1"}')
        assert [float(r["value"][1]) for r in orders] == [5.0]
        joined = prometheus.query("orders_total * on (job, instance) group_left (k8s_pod_name) target_info")
        assert [r["metric"].get("k8s_pod_name") for r in joined] == ["p1"]
        assert prometheus.query('otelpg_receiver_accepted_spans_total{job="otelpg",transport="grpc"}')
    finally:
        stop.set()
        sender.join(10)
        prometheus.stop()
    assert time.monotonic() - started < 40
