"""Runs `otelpg run` as a real subprocess and finds the ports it bound from its log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_LISTENING = re.compile(r"(\w+) listening on (\S+):(\d+)")


class OtelpgProcess:
    def __init__(
        self, data_dir: Path, env: dict[str, str], args: tuple[str, ...] = (), command: tuple[str, ...] = ()
    ) -> None:
        """`command`: how `otelpg` is run (default: this interpreter, `-m sidecar.cli`)."""
        self.data_dir = data_dir
        self.command = command or (sys.executable, "-m", "sidecar.cli")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTELPG_", "OTEL_")) and k != "DATABASE_URL"},
            "OTELPG_DATA_DIR": str(data_dir),
            "OTELPG_HTTP_ENDPOINT": "127.0.0.1:0",
            "OTELPG_GRPC_ENDPOINT": "127.0.0.1:0",
            "OTELPG_ADMIN_ENDPOINT": "127.0.0.1:0",
            "OTELPG_LOG_LEVEL": "info",
            **env,
        }
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, int] = {}
        self.log_lines: list[str] = []
        self._ready = threading.Event()

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            [*self.command, "run", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"otelpg exited with {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"otelpg not ready within {timeout}s:\n{self.log}")

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log_lines.append(line)
            m = _LISTENING.search(line)
            if m:
                self.ports[m[1]] = int(m[3])
            if "otelpg ready" in line:
                self._ready.set()

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
