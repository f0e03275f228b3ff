"""The seam between receivers and exporters.

Receivers decode a request and await `consume_*(request, nbytes, raw)` (`nbytes`: the decoded
body's size, for the queue's byte bound, 0 if unknown; `raw`: the body itself when it is
protobuf, which the mapping can read faster than the decoded message); it returns once the data is durable
(committed in PostgreSQL or fsynced to the spool) or raises a `sidecar.errors` error.
Receivers never import asyncpg; exporters never import aiohttp or grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    """What became of a request's items: `rejected` of them could not be stored, and why."""

    rejected: int = 0
    message: str = ""


OK = ConsumeResult()


class Consumer(Protocol):
    async def consume_traces(self, request: ExportTraceServiceRequest, nbytes: int = 0,
                             raw: bytes | None = None) -> ConsumeResult: ...

    async def consume_metrics(self, request: ExportMetricsServiceRequest, nbytes: int = 0,
                             raw: bytes | None = None) -> ConsumeResult: ...

    async def consume_logs(self, request: ExportLogsServiceRequest, nbytes: int = 0,
                             raw: bytes | None = None) -> ConsumeResult: ...
