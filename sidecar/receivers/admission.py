"""Admission control: a bound on the request data otelpg holds at once, shared by both receivers.

The write queue's bounds (queue.max_rows / max_bytes) apply only once a request is decoded and
mapped; before that, every request a client manages to send is held in memory (its body, its
decoded message, soon its rows) while it waits for the mapping thread. Under sustained overload
that wait grows until clients time out, and memory with it (850 MiB measured at 2x the maximum
load without this bound). Counting the decompressed body bytes of every request from receipt to
answer, and refusing new ones beyond the bound with 503 / UNAVAILABLE + Retry-After (which OTLP
clients retry), keeps memory bounded and latency short for the requests that are admitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sidecar.errors import BackpressureError

RETRY_AFTER = 1.0


class Admission:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # decompressed body bytes of the requests being handled

    def check(self) -> None:
        """Refuse early (before a body is even read) when the bound is already reached."""
        if self.bytes >= self.max_bytes:
            raise self._refusal()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Count a request's body while it is handled. One request is always admitted when nothing
        else is held, so a single body larger than the bound is not refused forever."""
        if self.bytes and self.bytes + nbytes > self.max_bytes:
            raise self._refusal()
        self.bytes += nbytes
        try:
            yield
        finally:
            self.bytes -= nbytes

    def _refusal(self) -> BackpressureError:
        return BackpressureError(
            f"otelpg is handling its maximum of {self.max_bytes} bytes of requests, retry later",
            retry_after=RETRY_AFTER,
        )
