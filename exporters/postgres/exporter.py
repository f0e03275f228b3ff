"""The PostgreSQL exporter: the Consumer receivers call. Map → batch → COPY → commit → ack.

When PostgreSQL is unavailable or the queue is full, a request goes to the durable spool
instead (acknowledged once fsynced) and is replayed later; without a spool, or with the spool
full, the error reaches the client as 503 / UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from exporters.postgres.batcher import Batcher
from exporters.postgres.ids import new_seed
from exporters.postgres.mapping_thread import MappingThread
from exporters.postgres.spool import Spool
from sidecar.consumer import ConsumeResult
from sidecar.errors import DatabaseUnavailableError, PermanentError, RetryableError, ShuttingDownError
from sidecar.telemetry import Telemetry

# Called once a request is durable (committed, or fsynced to the spool), e.g. to feed the
# Prometheus aggregates, so a request the client retries is never counted twice.
AfterCommit = Callable[[str, Any], None]


def _nop(signal: str, request: Any) -> None:
    return None


class PostgresExporter:
    def __init__(self, batcher: Batcher, mapping: MappingThread, database_ok: Callable[[], bool],
                 after_commit: AfterCommit = _nop, *, spool: Spool | None = None, telemetry: Telemetry | None = None,
                 on_spooled: Callable[[], None] = lambda: None) -> None:
        self._batcher = batcher
        self._mapping = mapping
        self._database_ok = database_ok
        self._after_commit = after_commit
        self._spool = spool
        self._telemetry = telemetry
        self._on_spooled = on_spooled

    async def consume_traces(self, request: Any, nbytes: int = 0, raw: bytes | None = None) -> ConsumeResult:
        return await self._consume("traces", request, nbytes, raw)

    async def consume_metrics(self, request: Any, nbytes: int = 0, raw: bytes | None = None) -> ConsumeResult:
        return await self._consume("metrics", request, nbytes, raw)

    async def consume_logs(self, request: Any, nbytes: int = 0, raw: bytes | None = None) -> ConsumeResult:
        return await self._consume("logs", request, nbytes, raw)

    async def _consume(self, signal: str, request: Any, nbytes: int, raw: bytes | None) -> ConsumeResult:
        received_ns = time.time_ns()
        if self._batcher.closed:
            raise ShuttingDownError("otelpg is shutting down", retry_after=5)
        if self._spool is None and not self._database_ok():
            raise DatabaseUnavailableError("PostgreSQL is unavailable, retry later", retry_after=5)
        seed = new_seed()
        mapped = await self._mapping.map(signal, request, received_ns, seed, raw)
        nrows = sum(len(rows) for rows in mapped.rows.values())
        if nrows:
            if not self._database_ok():
                await self._to_spool(signal, request, received_ns, seed)
            else:
                try:
                    # The receiver's body length: ByteSize() would serialise the whole message again.
                    await self._batcher.submit(mapped.rows, mapped.resources, nrows, nbytes or request.ByteSize())
                except ShuttingDownError:
                    raise  # intake is closed: 503, the client retries elsewhere or later
                except RetryableError:
                    if self._spool is None:
                        raise
                    await self._to_spool(signal, request, received_ns, seed)
                except PermanentError as e:
                    # PostgreSQL refused this request's data: report it as rejected, never retry it.
                    return ConsumeResult(mapped.items, f"{mapped.items} items could not be stored: {e}")
        self._after_commit(signal, request)
        return ConsumeResult(mapped.rejected, mapped.message)

    async def _to_spool(self, signal: str, request: Any, received_ns: int, seed: int) -> None:
        if self._spool is None:
            raise DatabaseUnavailableError("PostgreSQL is unavailable, retry later", retry_after=5)
        await self._spool.append(signal, received_ns, request.SerializeToString(), seed)
        if self._telemetry is not None:
            self._telemetry.spooled_requests.labels(signal).inc()
        self._on_spooled()
