"""SpanMetricsFlush: rows shaped for performance_metrics, retries that lose nothing, bounded keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from exporters.postgres.mapping.common import KEY_MAX_BYTES
from exporters.postgres.schema import PERFORMANCE_METRICS, PERFORMANCE_METRICS_COLUMNS
from exporters.postgres.span_metrics_flush import (
    CALLS_METRIC,
    DURATION_METRIC,
    SpanMetricsFlush,
    span_metric_rows,
)
from exporters.prometheus.config import SPAN_DURATION_BOUNDS_SECONDS
from sidecar.pipeline.errors import DatabaseUnavailableError, PermanentError
from sidecar.pipeline.span_metrics import OVERFLOW_SPAN_KEY, SpanKey, SpanMetricsDelta
from tests.unit.prometheus.builders import new_aggregator, span, traces_request

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, seconds: float = 60) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


class Sink:
    """Batcher.submit's stand-in: records what was submitted, or raises the error it is given."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self, rows: dict[str, list[tuple]], resources: dict, nrows: int, nbytes: int) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        assert set(rows) == {PERFORMANCE_METRICS} and resources == {} and nrows == len(rows[PERFORMANCE_METRICS])
        self.rows += [dict(zip(PERFORMANCE_METRICS_COLUMNS, r, strict=True)) for r in rows[PERFORMANCE_METRICS]]

    def by_metric(self, name: str) -> list[dict]:
        return [r for r in self.rows if r["metric_name"] == name]


class Setup:
    """An aggregator, and a SpanMetricsFlush draining it into a Sink on a fake clock."""

    def __init__(self, **kwargs) -> None:
        self.agg, _ = new_aggregator()
        self.sink, self.clock = Sink(), Clock()
        self.flusher = SpanMetricsFlush(self.agg.drain_span_metrics, self.sink, interval=60, clock=self.clock, **kwargs)

    def spans(self, *spans: Span) -> None:
        self.agg.observe_traces(traces_request(*spans))


async def test_rows_for_calls_and_duration_per_key():
    t = Setup()
    t.spans(span("GET /cart", 0.003), span("GET /cart", 0.5), span("charge", 1.2, status=Status.STATUS_CODE_ERROR))
    end = t.clock.tick()
    assert await t.flusher.flush()

    calls = {json.loads(r["tags"])["span.name"]: r for r in t.sink.by_metric(CALLS_METRIC)}
    assert set(calls) == {"GET /cart", "charge"}
    cart = calls["GET /cart"]
    assert json.loads(cart["tags"]) == {
        "span.name": "GET /cart",
        "span.kind": "SPAN_KIND_SERVER",
        "status.code": "STATUS_CODE_UNSET",
    }
    assert (cart["value"], cart["unit"], cart["metric_type"], cart["temporality"], cart["is_monotonic"]) == (
        2.0,
        "{call}",
        "sum",
        "delta",
        True,
    )
    assert (cart["service_name"], cart["timestamp"], cart["start_timestamp"]) == ("checkout", end, T0)
    assert cart["resource_id"] is None and cart["id"] is not None
    assert json.loads(calls["charge"]["tags"])["status.code"] == "STATUS_CODE_ERROR"

    durations = {json.loads(r["tags"])["span.name"]: r for r in t.sink.by_metric(DURATION_METRIC)}
    hist = durations["GET /cart"]
    assert (hist["metric_type"], hist["temporality"], hist["unit"], hist["count"]) == ("histogram", "delta", "s", 2)
    assert hist["sum"] == hist["value"] == pytest.approx(0.503)
    assert hist["bucket_bounds"] == list(SPAN_DURATION_BOUNDS_SECONDS)
    assert len(hist["bucket_counts"]) == len(SPAN_DURATION_BOUNDS_SECONDS) + 1 and sum(hist["bucket_counts"]) == 2
    assert hist["bucket_counts"][1] == 1  # 0.003 s: in (0.002, 0.004]


async def test_intervals_chain_and_an_empty_interval_writes_nothing():
    t = Setup()
    t.spans(span("a", 0.01))
    first = t.clock.tick()
    await t.flusher.flush()
    second = t.clock.tick()
    await t.flusher.flush()  # nothing observed: no rows, but the next interval starts here
    assert t.sink.calls == 1
    t.spans(span("a", 0.01))
    third = t.clock.tick()
    await t.flusher.flush()
    starts = [(r["start_timestamp"], r["timestamp"]) for r in t.sink.by_metric(CALLS_METRIC)]
    assert starts == [(T0, first), (second, third)]


async def test_a_failed_flush_keeps_the_deltas_and_the_next_one_writes_them_merged():
    t = Setup()
    t.spans(span("a", 0.01), span("b", 0.01))
    t.sink.error = DatabaseUnavailableError("down")
    t.clock.tick()
    assert not await t.flusher.flush()
    assert t.flusher.pending_keys == 2 and t.sink.rows == []

    t.spans(span("a", 0.02))
    t.sink.error = None
    end = t.clock.tick()
    assert await t.flusher.flush()
    calls = {json.loads(r["tags"])["span.name"]: r for r in t.sink.by_metric(CALLS_METRIC)}
    assert calls["a"]["value"] == 2 and calls["b"]["value"] == 1
    assert calls["a"]["start_timestamp"] == T0 and calls["a"]["timestamp"] == end  # covers both intervals
    assert t.flusher.pending_keys == 0


async def test_unavailable_database_is_not_even_tried():
    database_ok = False
    t = Setup(database_ok=lambda: database_ok)
    t.spans(span("a", 0.01))
    assert not await t.flusher.flush()
    assert t.sink.calls == 0 and t.flusher.pending_keys == 1
    database_ok = True
    assert await t.flusher.flush()
    assert len(t.sink.by_metric(CALLS_METRIC)) == 1


async def test_permanent_errors_drop_the_deltas_instead_of_blocking_later_flushes():
    t = Setup()
    t.spans(span("a", 0.01))
    t.sink.error = PermanentError("rejected")
    await t.flusher.flush()
    assert t.flusher.pending_keys == 0


async def test_kept_keys_are_bounded_and_fold_into_the_overflow_key_with_exact_totals():
    t = Setup(max_keys=3)
    t.sink.error = DatabaseUnavailableError("down")
    for batch in range(3):  # three failed intervals, 2 new names each
        t.spans(span(f"s{batch}a", 0.01), span(f"s{batch}b", 0.01), span("s0a", 0.01))
        await t.flusher.flush()
    assert t.flusher.pending_keys == 4  # 3 keys + the overflow key
    t.sink.error = None
    await t.flusher.flush()
    calls = t.sink.by_metric(CALLS_METRIC)
    assert sum(r["value"] for r in calls) == 9
    overflow = [r for r in calls if json.loads(r["tags"]) == {"otel.metric.overflow": True}]
    assert len(overflow) == 1 and overflow[0]["value"] == 3 and overflow[0]["service_name"] == ""


async def test_aggregator_overflow_key_becomes_one_flagged_row():
    rows = span_metric_rows(
        {
            OVERFLOW_SPAN_KEY: SpanMetricsDelta(5, (1.0,), (4, 1), 3.0, 5),
            SpanKey("svc\x00", "n", "SPAN_KIND_SERVER", "STATUS_CODE_OK"): SpanMetricsDelta(1, (1.0,), (1, 0), 0.5, 1),
        },
        T0,
        T0,
    )
    named = [dict(zip(PERFORMANCE_METRICS_COLUMNS, r, strict=True)) for r in rows]
    assert [r["service_name"] for r in named] == ["", "", "svc\ufffd", "svc\ufffd"]  # NUL can't go in TEXT
    assert json.loads(named[0]["tags"]) == {"otel.metric.overflow": True}


async def test_close_writes_what_is_left_through_the_given_writer():
    t = Setup()
    t.spans(span("a", 0.01))
    written = []

    async def write_rows(rows, resources, nrows):
        written.append(nrows)

    assert await t.flusher.close(write_rows)
    assert written == [2] and t.sink.calls == 0


async def test_zero_interval_writes_nothing_but_keeps_draining():
    t = Setup()
    t.flusher.interval, t.flusher.discard_every = 0, 0.01
    t.spans(span("a", 0.01))
    task = asyncio.create_task(t.flusher.run())
    await asyncio.sleep(0.1)
    task.cancel()
    assert t.agg.drain_span_metrics() == {}  # drained and dropped, not piling up
    assert t.sink.calls == 0 and t.flusher.pending_keys == 0
    written = []

    async def write_rows(rows, resources, nrows):
        written.append(nrows)

    t.spans(span("b", 0.01))
    assert await t.flusher.close(write_rows)
    assert written == []


async def test_a_service_name_cut_to_an_indexable_length_is_counted():
    truncated = {"keys": 0}
    long_key = SpanKey("s" * 5000, "n", "SPAN_KIND_SERVER", "STATUS_CODE_OK")
    rows = span_metric_rows({long_key: SpanMetricsDelta(1, (1.0,), (1, 0), 0.5, 1)}, T0, T0, truncated=truncated)
    named = [dict(zip(PERFORMANCE_METRICS_COLUMNS, r, strict=True)) for r in rows]
    assert {len(r["service_name"]) for r in named} == {KEY_MAX_BYTES}
    assert truncated == {"keys": 1}  # one name cut, used by both rows
