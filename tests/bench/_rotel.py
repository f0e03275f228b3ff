"""Rotel (a Rust OpenTelemetry collector) as a reference receiver for the ingest benchmark.

`pip install rotel` ships the `rotel-agent` binary inside the `rotel` package. It is started in
the foreground with its blackhole exporter (receive, decode, batch, drop) on free ports of
127.0.0.1, with only the benchmarked signal's receiver enabled, so its CPU per item is what a
fast collector spends on the same requests before any storage.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.bench._otlp_gen import SIGNALS

BINARY = "rotel-agent"


def find_rotel(explicit: str | None = None) -> str | None:
    """The rotel-agent binary: `explicit`, else $ROTEL_AGENT, else PATH, the venv's bin, the `rotel` package."""
    candidates: list[str | Path | None] = [explicit] if explicit else []
    if not explicit:
        candidates += [os.environ.get("ROTEL_AGENT"), shutil.which(BINARY), Path(sys.executable).with_name(BINARY)]
        try:
            spec = importlib.util.find_spec("rotel")  # locate without importing (no side effects)
        except (ImportError, ValueError):
            spec = None
        for loc in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(loc) / BINARY)
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown version"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Rotel:
    """One `rotel-agent start --exporter blackhole` process; use as a context manager."""

    def __init__(self, binary: str, signal: str, workdir: Path, grpc_max_mib: int = 64) -> None:
        self.binary = binary
        self.signal = signal
        self.workdir = workdir
        self.grpc_max_mib = grpc_max_mib
        self.http_port = self.grpc_port = 0
        self.proc: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None
        self.log_path = workdir / f"rotel-{signal}.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port = free_port(), free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        cmd = [
            self.binary, "start",
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--otlp-grpc-max-recv-msg-size-mib", str(self.grpc_max_mib),  # the load generator allows 64 MiB
            "--exporter", "blackhole",
            "--pid-file", str(self.workdir / f"rotel-{self.signal}.pid"),
            "--log-file", str(self.log_path),
        ]  # fmt: skip
        cmd += [f"--otlp-receiver-{s}-disabled" for s in SIGNALS if s != self.signal]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}  # no stray settings
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while not (_port_open(self.http_port) and _port_open(self.grpc_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"rotel-agent exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rotel-agent did not listen within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)

    def cpu(self) -> float:
        """CPU seconds (user + system) of rotel-agent and any children it has."""
        if self.ps is None:
            return 0.0
        total = 0.0
        try:
            c = self.ps.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
            children = self.ps.children(recursive=True)
        except psutil.Error:
            return total
        for ch in children:
            try:
                c = ch.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total

    def rss(self) -> int:
        try:
            return self.ps.memory_info().rss if self.ps is not None else 0
        except psutil.Error:
            return 0

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> Rotel:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
