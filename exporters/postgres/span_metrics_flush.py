"""Span-derived RED aggregates written to `performance_metrics` every interval (docs/mapping.md), like the
Collector's spanmetrics connector: per (service, span name, kind, status code), a delta sum of calls
(`traces.span.metrics.calls`) and a delta histogram of durations (`traces.span.metrics.duration`).

The Prometheus aggregator keeps the deltas observed since its last drain; this component drains
them every `interval` seconds, turns them into rows and submits them through the batcher like any
request (one transaction, ack after commit). Deltas that can't be written (PostgreSQL away, queue
full) are kept, merged with the next interval's and retried, so none are lost while otelpg runs; the
kept keys are bounded (past `max_keys`, new keys fold into the overflow key, totals stay exact).
At shutdown `close()` writes what is left directly, once the batcher has drained.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from operator import add
from typing import Any

from uuid_utils import uuid7

from exporters.postgres.mapping.common import Tables, json_dumps, key_text
from exporters.postgres.schema import PERFORMANCE_METRICS, PERFORMANCE_METRICS_COLUMNS
from sidecar.pipeline.component import HEALTHY, Health, Tasks
from sidecar.pipeline.errors import OtelpgError, PermanentError
from sidecar.pipeline.span_metrics import OVERFLOW_SPAN_KEY, SpanKey, SpanMetricsDelta

log = logging.getLogger("otelpg.span_metrics")

CALLS_METRIC = "traces.span.metrics.calls"
DURATION_METRIC = "traces.span.metrics.duration"
# Keys folded past the series cap span many services: no service of their own, flagged in tags
# the way the SDKs flag their overflow point.
OVERFLOW_SERVICE = ""
OVERFLOW_TAGS: dict[str, Any] = {"otel.metric.overflow": True}
_DETAILS = {
    CALLS_METRIC: json_dumps(
        {"description": "Number of spans, by service, span name, kind and status code", "source": "otelpg span metrics"}
    ),
    DURATION_METRIC: json_dumps(
        {
            "description": "Duration of spans, by service, span name, kind and status code",
            "source": "otelpg span metrics",
        }
    ),
}
_ROW_BYTES = 300  # queue accounting: about what one row costs in memory

Drain = Callable[[], dict[SpanKey, SpanMetricsDelta]]
# Batcher.submit's shape: (rows by table, resources, row count, byte estimate), returns once committed.
Submit = Callable[[Tables, dict[int, tuple], int, int], Awaitable[object]]
WriteRows = Callable[[Tables, dict[int, tuple], int], Awaitable[None]]


def _row(**values: Any) -> tuple:
    return tuple(values.get(column) for column in PERFORMANCE_METRICS_COLUMNS)


def span_metric_rows(
    deltas: dict[SpanKey, SpanMetricsDelta],
    start: dt.datetime,
    end: dt.datetime,
    new_id: Callable[[], Any] = uuid7,
    truncated: dict[str, int] | None = None,
) -> list[tuple]:
    """Two rows per key (calls, duration), in PERFORMANCE_METRICS_COLUMNS order, covering [start, end];
    service names cut to an indexable length are counted in `truncated["keys"]`."""
    rows = []
    for key, delta in deltas.items():
        if key.is_overflow:
            service, tags = OVERFLOW_SERVICE, OVERFLOW_TAGS
        else:
            service = key_text(key.service_name, truncated)  # an indexed key
            tags = {
                "span.name": key.span_name,
                "span.kind": key.span_kind,
                "status.code": key.status_code,
            }
        tags_json = json_dumps(tags)
        common: dict[str, Any] = {
            "tags": tags_json,
            "timestamp": end,
            "start_timestamp": start,
            "service_name": service,
            "temporality": "delta",
        }
        rows.append(
            _row(
                id=new_id(),
                metric_name=CALLS_METRIC,
                value=float(delta.calls),
                unit="{call}",
                metric_type="sum",
                is_monotonic=True,
                details=_DETAILS[CALLS_METRIC],
                **common,
            )
        )
        rows.append(
            _row(
                id=new_id(),
                metric_name=DURATION_METRIC,
                value=delta.sum,
                unit="s",
                metric_type="histogram",
                count=delta.count,
                sum=delta.sum,
                bucket_bounds=list(delta.bounds),
                bucket_counts=list(delta.bucket_counts),
                details=_DETAILS[DURATION_METRIC],
                **common,
            )
        )
    return rows


def merge(a: SpanMetricsDelta, b: SpanMetricsDelta) -> SpanMetricsDelta:
    """Two deltas of one key (same bounds: they come from one aggregator) added together."""
    return SpanMetricsDelta(
        a.calls + b.calls, a.bounds, tuple(map(add, a.bucket_counts, b.bucket_counts)), a.sum + b.sum, a.count + b.count
    )


class SpanMetricsFlush:
    """Drains the aggregator's span deltas every `interval` seconds into performance_metrics. With
    `interval` 0 nothing is written, and the deltas are drained and dropped every `discard_every`
    seconds so they don't pile up in the aggregator."""

    discard_every = 60.0

    def __init__(
        self,
        drain: Drain,
        submit: Submit,
        *,
        interval: float,
        database_ok: Callable[[], bool] = lambda: True,
        write_rows: WriteRows | None = None,
        max_keys: int = 10_000,
        truncated: dict[str, int] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._drain = drain
        self._submit = submit
        self.interval = interval
        self._database_ok = database_ok
        self._write_rows = write_rows
        self._tasks = Tasks()
        self._max_keys = max_keys
        self._clock = clock
        self._truncated = truncated
        self._pending: dict[SpanKey, SpanMetricsDelta] = {}  # drained, not yet committed
        self._since = clock()  # start of the interval the pending deltas cover
        self._lock = asyncio.Lock()  # one flush at a time: the periodic one, or close()'s
        self._failing = False
        self._closed = False

    @property
    def pending_keys(self) -> int:
        return len(self._pending)

    name = "span metrics flush"

    async def start(self) -> None:
        self._tasks.spawn(self.run(), "otelpg-span-metrics")

    async def stop(self) -> None:
        """The last flush, through `write_rows` (see close): stopped after the batcher drained."""
        await self._tasks.cancel()
        if self._write_rows is not None:
            await self.close(self._write_rows)

    def health(self) -> Health:
        return HEALTHY

    async def run(self) -> None:
        while not self._closed:
            if self.interval <= 0:
                await asyncio.sleep(self.discard_every)
                self._drain()
                continue
            await asyncio.sleep(self.interval)
            if not self._closed:
                await self.flush()

    async def flush(self, submit: Submit | None = None) -> bool:
        """Drain, then write everything pending. True when nothing is left pending."""
        async with self._lock:
            return await self._flush(submit or self._submit)

    async def close(self, write_rows: WriteRows, within: float = 10.0) -> bool:
        """The last flush at shutdown, once the batcher has drained (so every committed span is in the
        deltas): written straight through the writer, since the batcher takes no more requests."""
        self._closed = True
        if self.interval <= 0:
            return True

        async def write(rows: Tables, resources: dict[int, tuple], nrows: int, nbytes: int) -> None:
            await write_rows(rows, resources, nrows)

        try:
            async with asyncio.timeout(within):
                done = await self.flush(write)
        except TimeoutError:
            done = False
        if not done:
            log.warning("span metrics of %d keys not written before shutdown", len(self._pending))
        return done

    async def _flush(self, submit: Submit) -> bool:
        end = self._clock()
        self._merge(self._drain())
        if not self._pending:
            self._since = end
            return True
        if not self._database_ok():
            self._failed("PostgreSQL is unavailable")
            return False
        rows = span_metric_rows(self._pending, self._since, end, truncated=self._truncated)
        try:
            await submit({PERFORMANCE_METRICS: rows}, {}, len(rows), _ROW_BYTES * len(rows))
        except PermanentError as e:
            # Our own rows refused: retrying can't help, and keeping them would block every later flush.
            log.error("span metrics of %d keys dropped, PostgreSQL refused them: %s", len(self._pending), e)
        except OtelpgError as e:  # retryable: queue full, database away, shutting down
            self._failed(str(e))
            return False
        else:
            if self._failing:
                log.info("span metrics written again")
                self._failing = False
        self._pending = {}
        self._since = end
        return True

    def _merge(self, deltas: dict[SpanKey, SpanMetricsDelta]) -> None:
        pending = self._pending
        if not pending and len(deltas) <= self._max_keys:
            self._pending = deltas  # the common case: nothing kept from a failed flush
            return
        for key, delta in deltas.items():
            if key not in pending and len(pending) >= self._max_keys:
                key = OVERFLOW_SPAN_KEY
            previous = pending.get(key)
            pending[key] = delta if previous is None else merge(previous, delta)

    def _failed(self, why: str) -> None:
        if not self._failing:
            log.warning("span metrics not written (%s): %d keys kept for the next interval", why, len(self._pending))
        self._failing = True
