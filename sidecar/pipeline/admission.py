"""Admission control: one memory budget (`queue.max_inflight_bytes`) for every request in flight.

A request holds a `Reservation` from before its body is read until it is answered, and the
reservation grows with what the request really occupies at each step, before that memory is
taken: the body as it is read (Content-Length up front, or chunk by chunk), its decompressed
form as it inflates, the decoded pieces and rows as they are mapped. When the budget can't
cover the next step, the request is refused with 503 / UNAVAILABLE + Retry-After (OTLP clients
retry), so memory stays bounded by construction, whatever clients send, and latency stays short
for the requests admitted.

Two rules keep one client from holding back the others:
- the oldest request in flight is always let through its next step, so requests that already
  got far are not starved by newcomers, however many (and a body larger than the budget can
  pass); memory can exceed the budget by that one step only: a body, its inflation, or the rows
  of one chunk;
- large requests (each over an eighth of the budget) together hold at most half of it, so a few
  clients sending maximum-size bodies leave room for everyone else's ordinary requests.

Reservations are grown from worker threads too (decompression), hence the lock.
"""

from __future__ import annotations

import threading
from types import TracebackType

from sidecar.pipeline.errors import BackpressureError

RETRY_AFTER = 1.0


class Admission:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._large = max(1, max_bytes // 8)  # a reservation above this is "large"
        self._lock = threading.Lock()
        self._held = 0  # bytes of every reservation
        self._held_large = 0  # bytes of the large ones
        self._live: dict[Reservation, None] = {}  # requests in flight, oldest first

    @property
    def bytes(self) -> int:
        return self._held

    def reserve(self, nbytes: int = 0) -> Reservation:
        """A reservation of `nbytes`, or BackpressureError at once."""
        reservation = Reservation(self)
        with self._lock:
            self._live[reservation] = None
        try:
            reservation.grow(nbytes)
        except BaseException:
            reservation.release()
            raise
        return reservation

    def _release(self, r: Reservation) -> None:
        self._resize(r, 0)
        with self._lock:
            self._live.pop(r, None)

    def _resize(self, r: Reservation, new: int) -> None:
        with self._lock:
            old = r.nbytes
            if new > old and not self._fits(r, old, new):
                raise BackpressureError(
                    f"otelpg is handling its maximum of {self.max_bytes} bytes of requests, retry later",
                    retry_after=RETRY_AFTER,
                )
            self._held += new - old
            was_large, is_large = old > self._large, new > self._large
            self._held_large += (new if is_large else 0) - (old if was_large else 0)
            r.nbytes = new

    def _fits(self, r: Reservation, old: int, new: int) -> bool:
        if next(iter(self._live), r) is r:
            return True  # the oldest in flight: always let through
        others = self._held - old
        if others + new > self.max_bytes:
            return False
        if new > self._large:
            others_large = self._held_large - (old if old > self._large else 0)
            return others_large == 0 or others_large + new <= self.max_bytes // 2
        return True


class Reservation:
    """The bytes one request holds; grown step by step, released when the request is answered."""

    __slots__ = ("_admission", "nbytes")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.nbytes = 0

    def grow(self, nbytes: int) -> None:
        """Hold `nbytes` more, or raise BackpressureError (holding what it held)."""
        if nbytes > 0:
            self._admission._resize(self, self.nbytes + nbytes)

    def shrink(self, nbytes: int) -> None:
        """Give back `nbytes` (memory this request no longer holds)."""
        if nbytes > 0:
            self._admission._resize(self, max(0, self.nbytes - nbytes))

    def add(self, delta: int) -> None:
        """grow(delta) or shrink(-delta): for code that reports memory as it takes and frees it."""
        if delta > 0:
            self.grow(delta)
        else:
            self.shrink(-delta)

    def resize(self, nbytes: int) -> None:
        """Hold exactly `nbytes` (growing may raise BackpressureError)."""
        self._admission._resize(self, max(0, nbytes))

    def release(self) -> None:
        self._admission._release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


UNLIMITED = Admission(1 << 62)
"""For components built without a budget (tests, tools)."""
