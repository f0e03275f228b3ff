"""The PostgreSQL exporter: the Consumer receivers call. Map → batch → COPY → commit → ack."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from exporters.postgres.batcher import Batcher
from exporters.postgres.mapping import map_logs, map_metrics, map_traces
from sidecar.consumer import ConsumeResult
from sidecar.errors import DatabaseUnavailableError, PermanentError

# Called after a request's rows are committed (e.g. to feed the Prometheus aggregates), so a
# retried request is never counted twice.
AfterCommit = Callable[[str, Any], None]


def _nop(signal: str, request: Any) -> None:
    return None


class PostgresExporter:
    def __init__(self, batcher: Batcher, database_ok: Callable[[], bool], after_commit: AfterCommit = _nop) -> None:
        self._batcher = batcher
        self._database_ok = database_ok
        self._after_commit = after_commit

    async def consume_traces(self, request: Any) -> ConsumeResult:
        return await self._consume("traces", map_traces, request)

    async def consume_metrics(self, request: Any) -> ConsumeResult:
        return await self._consume("metrics", map_metrics, request)

    async def consume_logs(self, request: Any) -> ConsumeResult:
        return await self._consume("logs", map_logs, request)

    async def _consume(self, signal: str, mapper: Callable[..., Any], request: Any) -> ConsumeResult:
        if not self._database_ok():
            raise DatabaseUnavailableError("PostgreSQL is unavailable, retry later", retry_after=5)
        mapped = mapper(request, time.time_ns())
        nrows = sum(len(rows) for rows in mapped.rows.values())
        if nrows:
            try:
                await self._batcher.submit(mapped.rows, mapped.resources, nrows, request.ByteSize())
            except PermanentError as e:
                # PostgreSQL refused this request's data: report it as rejected, never retry it.
                return ConsumeResult(mapped.items, f"{mapped.items} items could not be stored: {e}")
        self._after_commit(signal, request)
        return ConsumeResult(mapped.rejected, mapped.message)
