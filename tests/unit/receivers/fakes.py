"""What receiver tests share: a recording consumer (the seam's fake) and small valid requests."""

from __future__ import annotations

import asyncio
import os
import time

from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from sidecar.pipeline.consumer import OK, ConsumeResult, ExportRequest
from sidecar.pipeline.signals import LOGS, METRICS, TRACES, Signal
from sidecar.pipeline.telemetry import Telemetry


class RecordingConsumer:
    """Keeps every request it is given; waits for `hold` if set; answers `result`, or raises
    `error` (only the first time if `once`)."""

    def __init__(self) -> None:
        self.requests: list[ExportRequest] = []
        self.result: ConsumeResult = OK
        self.error: Exception | None = None
        self.once = False
        self.called = asyncio.Event()
        self.hold: asyncio.Event | None = None

    async def consume(self, request: ExportRequest) -> ConsumeResult:
        self.requests.append(request)
        self.called.set()
        if self.hold is not None:
            await self.hold.wait()
        error = self.error
        if error is not None:
            if self.once:
                self.error = None
            raise error
        return self.result

    @property
    def only(self) -> ExportRequest:
        """The one request consumed."""
        assert len(self.requests) == 1, self.requests
        return self.requests[0]


def counter(telemetry: Telemetry, name: str, **labels: str) -> float:
    """A self-metric's value (0 when never incremented)."""
    return telemetry.registry.get_sample_value(name, labels) or 0.0


def new_telemetry() -> Telemetry:
    return Telemetry(CollectorRegistry())


def build(signal: Signal, n: int = 2) -> Message:
    """A request of `n` valid items of `signal`, each with one attribute."""
    now = time.time_ns()
    if signal is TRACES:
        req = TRACES.request_type()
        spans = req.resource_spans.add().scope_spans.add().spans
        for i in range(n):
            span = spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=f"op-{i}", start_time_unix_nano=now)
            span.attributes.add(key="seq").value.int_value = i
        return req
    if signal is LOGS:
        req = LOGS.request_type()
        records = req.resource_logs.add().scope_logs.add().log_records
        for i in range(n):
            record = records.add(time_unix_nano=now, trace_id=os.urandom(16), span_id=os.urandom(8))
            record.body.string_value = f"log {i}"
        return req
    assert signal is METRICS
    req = METRICS.request_type()
    metric = req.resource_metrics.add().scope_metrics.add().metrics.add(name="g")
    for i in range(n):
        metric.gauge.data_points.add(time_unix_nano=now, as_int=i)
    return req


def items_of(signal: Signal, chunks: list[bytes]) -> int:
    """Items in the chunks of a request, each decoded on its own."""
    total = 0
    for chunk in chunks:
        request = signal.decode(chunk)
        if signal is TRACES:
            total += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        elif signal is LOGS:
            total += sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        else:
            total += sum(
                len(m.gauge.data_points)
                for rm in request.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
            )
    return total


def nested_span(depth: int) -> bytes:
    """One span whose attribute value nests `depth` arrays deep (the wire splitter rejects it)."""
    req = TRACES.request_type()
    span = req.resource_spans.add().scope_spans.add().spans.add(trace_id=os.urandom(16), span_id=os.urandom(8))
    value = span.attributes.add(key="deep").value
    for _ in range(depth):
        value = value.array_value.values.add()
    value.int_value = 1
    return req.SerializeToString()
