"""The PostgreSQL exporter: the Consumer receivers call. Map → batch → COPY → commit → ack.

A request's chunks (about 16,384 protobuf messages each) are decoded, mapped and committed one
at a time, so a request holds the rows of one chunk, whatever its size; the memory reservation
grows with them before they are handed on (admission) and shrinks once they are committed. The
request is acknowledged when its last chunk is. When PostgreSQL is unavailable or the queue is
full, the whole request goes to the durable spool instead (acknowledged once fsynced) and is
replayed later through the idempotent path, which skips the rows of chunks already committed;
without a spool, or with the spool full, the error reaches the client as 503 / UNAVAILABLE (a
request of several chunks may then be stored in part, and again whole when the client retries:
OTLP's at-least-once). Rows PostgreSQL refuses for good are narrowed down to themselves (the rest of
the request is committed), reported in partial_success by item, and kept as a dead letter.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message

from exporters.postgres.batcher import Batcher, RefusedRow, Tables
from exporters.postgres.dead_letter import DeadLetter, Letter
from exporters.postgres.ids import RequestIds, new_seed, request_ids
from exporters.postgres.mapping.common import CopyRows, Mapper, describe_rejections, rejection_message, rows_memory
from exporters.postgres.mapping_thread import MappingThread, map_chunk
from exporters.postgres.schema import OTEL_SPAN_EVENTS, OTEL_SPANS, SPAN, row_name, row_service
from exporters.postgres.spool import Spool
from sidecar.pipeline import otlpwire
from sidecar.pipeline.consumer import ConsumeResult, ExportRequest
from sidecar.pipeline.errors import (
    BackpressureError,
    DatabaseUnavailableError,
    DecodeError,
    RetryableError,
    ShuttingDownError,
)
from sidecar.pipeline.signals import TRACES, Signal
from sidecar.pipeline.span_metrics import TraceSummary
from sidecar.pipeline.telemetry import Telemetry

log = logging.getLogger("otelpg.exporter")

# Called once a request is durable (committed, or fsynced to the spool), with each of its decoded
# chunks (or, for chunks the native encoder encoded, their TraceSummary), e.g. to feed the
# Prometheus aggregates, so a request the client retries is never counted twice. Called on the
# event loop: bounded work per chunk.
AfterCommit = Callable[[Signal, Message | TraceSummary], None]

_SHOWN = 80  # characters of a name quoted in a message


class PostgresExporter:
    def __init__(
        self,
        batcher: Batcher,
        mapping: MappingThread,
        database_ok: Callable[[], bool],
        after_commit: Sequence[AfterCommit] = (),
        *,
        spool: Spool | None = None,
        dead_letter: DeadLetter | None = None,
        telemetry: Telemetry | None = None,
        on_spooled: Callable[[], None] = lambda: None,
    ) -> None:
        self._batcher = batcher
        self._mapping = mapping
        self._database_ok = database_ok
        self._after_commit = tuple(after_commit)
        self._spool = spool
        self._dead_letter = dead_letter
        self._telemetry = telemetry
        self._on_spooled = on_spooled

    async def consume(self, request: ExportRequest) -> ConsumeResult:
        received_ns = time.time_ns()
        if self._batcher.closed:
            raise ShuttingDownError("otelpg is shutting down", retry_after=5)
        if self._spool is None and not self._database_ok():
            raise DatabaseUnavailableError("PostgreSQL is unavailable, retry later", retry_after=5)
        seed = new_seed()
        new_id = request_ids(received_ns, seed)  # one id sequence across the chunks (replay redoes it)
        writes = _Writes(request, self._observe)
        reasons: dict[str, int] = {}
        for i, chunk in enumerate(request.chunks):
            if i:
                await asyncio.sleep(0)  # one chunk at a time: the loop serves others in between
            first_id = new_id.counter
            try:
                mapped = await self._mapping.map(
                    request.signal, chunk, received_ns, new_id, 0 if i else request.truncated
                )
            except DecodeError as e:  # e.g. invalid UTF-8, which only decoding finds
                if len(request.chunks) == 1:
                    raise
                # One chunk's items are refused, not the request: others may be committed already.
                why = str(e)
                reasons[why] = reasons.get(why, 0) + otlpwire.split(request.signal.code, chunk).items
                continue
            for why, n in mapped.reasons.items():
                reasons[why] = reasons.get(why, 0) + n
            nrows = sum(len(rows) for rows in mapped.rows.values())
            commit, held = None, 0
            if nrows and writes.failure is None:
                if not self._database_ok():
                    writes.failure = DatabaseUnavailableError("PostgreSQL is unavailable", retry_after=5)
                elif await writes.reserve(held := sum(rows_memory(t, rows) for t, rows in mapped.rows.items())):
                    remap = None
                    if any(isinstance(rows, CopyRows) for rows in mapped.rows.values()):
                        remap = functools.partial(
                            self._remap, request.signal, chunk, received_ns, new_id.head, first_id
                        )
                    commit = asyncio.ensure_future(
                        self._batcher.submit(
                            mapped.rows,
                            mapped.resources,
                            nrows,
                            len(chunk),
                            continuation=writes.submitted > 0,
                            remap=remap,
                        )
                    )
                else:
                    held = 0  # not reserved: the request failed (it is spooled)
            writes.add(commit, held, mapped.decoded)
            del mapped
            await writes.settle(keep=1)  # this chunk's commit overlaps the next chunk's mapping
        await writes.settle(keep=0)
        if writes.failure is not None:
            await self._after_failure(request, writes, received_ns, seed)
        messages = [request.reason, describe_rejections(reasons, *request.signal.noun)]
        rejected = request.rejected + sum(reasons.values())
        if writes.refused:
            n, message = await self._refused(request, writes.refused, received_ns, seed)
            rejected += n
            messages.append(message)
        return ConsumeResult(rejected, "; ".join(m for m in messages if m))

    async def _after_failure(self, request: ExportRequest, writes: _Writes, received_ns: int, seed: int) -> None:
        """A chunk could not be committed now: spool the whole request, or raise for the client."""
        failure = writes.failure
        assert failure is not None
        # Nothing committed yet and otelpg is closing: 503, the client retries elsewhere or later.
        # Otherwise the request is finished via the spool: replay skips the rows of the chunks
        # already committed (same ids), so it is stored once.
        first_refused = isinstance(failure, ShuttingDownError) and not writes.committed
        if self._spool is None or not isinstance(failure, RetryableError) or first_refused:
            raise failure
        await self._to_spool(request, received_ns, seed)
        writes.observe_rest()

    def _remap(self, signal: Signal, chunk: bytes, received_ns: int, head: bytes, first_id: int) -> Tables:
        """A chunk's rows as tuples, with the ids the native encoder gave them (for narrowing a
        refusal down to rows). A Mapper of its own: the mapping thread's counted this chunk once."""
        mapper = self._mapping.mapper
        again = Mapper(mapper.max_attributes, mapper.max_value_length)
        return map_chunk(signal, chunk, received_ns, RequestIds(head, first_id), mapper=again, native=False).rows

    def _observe(self, signal: Signal, message: Message | TraceSummary) -> None:
        for observe in self._after_commit:
            try:  # the chunk is durable: nothing here may fail the request (the client would resend it)
                observe(signal, message)
            except Exception:
                log.exception("after-commit observer failed for a %s request", signal.name)

    async def _refused(
        self, request: ExportRequest, refused: list[RefusedRow], received_ns: int, seed: int
    ) -> tuple[int, str]:
        """Rows PostgreSQL refused for good (the rest of the request is committed): how many items
        they are, the message naming them, and a dead letter for the operator."""
        signal = request.signal
        table, row, error = refused[0]
        # A span's events are refused with it or alone: count spans.
        # (span rows and span event rows have the trace and span ids at the same places)
        spans = {(r[SPAN.TRACE_ID], r[SPAN.SPAN_ID]) for t, r, _ in refused if t in (OTEL_SPANS, OTEL_SPAN_EVENTS)}
        items = len(spans) if signal is TRACES else len(refused)
        name, service = row_name(table, row), row_service(table, row)
        services = sorted({row_service(t, r) for t, r, _ in refused})
        example = f"{signal.noun[0]} {_shown(name)!r} of service {_shown(service)!r}"
        message = rejection_message(items, *signal.noun, f"{error} (e.g. {example})")
        log.warning(
            "PostgreSQL refused %d %s of service(s) %s: %s",
            items,
            signal.noun[1],
            ", ".join(_shown(s) for s in services[:5]),
            error.detail,
        )
        if self._telemetry is not None:
            for t, _, _ in refused:
                self._telemetry.send_failed_rows.labels(t, "permanent").inc()
        if self._dead_letter is not None:
            await self._dead_letter.add(
                Letter(
                    signal.name,
                    "live",
                    str(error),
                    error.detail,
                    items,
                    [_shown(s) for s in services],
                    received_ns,
                    seed,
                    request.body,
                )
            )
        return items, message

    async def _to_spool(self, request: ExportRequest, received_ns: int, seed: int) -> None:
        if self._spool is None:
            raise DatabaseUnavailableError("PostgreSQL is unavailable, retry later", retry_after=5)
        await self._spool.append(request.signal, received_ns, request.body, seed)
        if self._telemetry is not None:
            self._telemetry.spooled_requests.labels(request.signal.name).inc()
        self._on_spooled()


def _shown(name: Any) -> str:
    s = str(name)
    return s if len(s) <= _SHOWN else s[:_SHOWN] + "…"


class _Writes:
    """A request's chunk commits under way, in order: at most `keep` + 1 outstanding, each
    holding its rows' reservation until it is settled, and observed once durable."""

    def __init__(self, request: ExportRequest, observe: Callable[[Signal, Any], None]) -> None:
        self._request = request
        self._observe = observe
        self._pending: deque[tuple[asyncio.Future[list[RefusedRow]] | None, int, Any]] = deque()
        self._unobserved: list[Any] = []  # chunks after a failure: observed once spooled
        self.submitted = 0
        self.committed = 0
        self.refused: list[RefusedRow] = []
        self.failure: BaseException | None = None

    async def reserve(self, nbytes: int) -> bool:
        """Grow the reservation for a chunk's rows; False if it is the request's failure. Refused
        before anything is submitted: raised (503, nothing stored). Refused later: the commits
        under way are waited for (their memory freed) and it is tried again; refused still, it is
        the request's failure (spooled)."""
        try:
            self._request.reservation.grow(nbytes)
            return True
        except BackpressureError as e:
            if not self.submitted:
                raise
            await self.settle(keep=0)
            if self.failure is None:  # (a commit waited for may have failed the request meanwhile)
                try:
                    self._request.reservation.grow(nbytes)
                    return True
                except BackpressureError:
                    self.failure = e
            return False

    def add(self, commit: asyncio.Future[list[RefusedRow]] | None, held: int, decoded: Any) -> None:
        self._pending.append((commit, held, decoded))
        self.submitted += commit is not None

    async def settle(self, keep: int) -> None:
        while len(self._pending) > keep:
            commit, held, decoded = self._pending.popleft()
            if commit is not None:
                try:
                    self.refused.extend(await commit)
                    self.committed += 1
                except Exception as e:
                    self.failure = self.failure or e
                finally:
                    self._request.reservation.shrink(held)
            if self.failure is None:
                self._observe(self._request.signal, decoded)
            else:
                self._unobserved.append(decoded)

    def observe_rest(self) -> None:
        for decoded in self._unobserved:
            self._observe(self._request.signal, decoded)
        self._unobserved.clear()
