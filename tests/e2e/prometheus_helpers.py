"""Shared by the Prometheus endpoint tests and the scrape benchmark: scraping /metrics, parsing it,
running promtool, posting raw OTLP/HTTP protobuf, and an `otelpg run` with a YAML config."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.otelpg_process import OtelpgProcess

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
# What Prometheus 2.x sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@dataclass
class Scrape:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def scrape(url: str, accept: str | None = None, accept_encoding: str | None = None, timeout: float = 30) -> Scrape:
    """GET /metrics as-is: no decompression, headers lowercased."""
    headers = {"Accept-Encoding": accept_encoding or "identity"}
    if accept is not None:
        headers["Accept"] = accept
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return Scrape(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())


def families(text: str) -> dict:
    """Text format 0.0.4 → {family name: Metric} (counters under their name without `_total`)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family, sample_name: str | None = None, **labels: str) -> list[float]:
    """Values of the samples named `sample_name` (default: the family's) whose labels include `labels`."""
    name = sample_name or family.name
    return [s.value for s in family.samples if s.name == name and s.labels.items() >= labels.items()]


def value(family, sample_name: str | None = None, **labels: str) -> float:
    found = values(family, sample_name, **labels)
    assert len(found) == 1, (sample_name or family.name, labels, found)
    return found[0]


def promtool_check(body: bytes) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=120)


def post_otlp(base_url: str, signal: str, message, timeout: float = 60) -> int:
    """POST one OTLP/HTTP protobuf request to /v1/<signal>; returns the status."""
    request = urllib.request.Request(
        f"{base_url}/v1/{signal}",
        data=message.SerializeToString(),
        method="POST",
        headers={"Content-Type": "application/x-protobuf"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def otelpg_with_config(data_dir: Path, dsn: str, yaml_text: str) -> OtelpgProcess:
    """An `otelpg run` (not started) reading `yaml_text` as its --config file."""
    config = data_dir / "otelpg-test.yaml"
    config.write_text(yaml_text)
    return OtelpgProcess(data_dir, {"OTELPG_DATABASE_URL": dsn}, args=("--config", str(config)))
