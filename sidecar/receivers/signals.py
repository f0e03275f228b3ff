"""One table drives every per-signal difference between traces, metrics and logs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def count_log_records(request: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)


def count_metric_points(request: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(m, kind).data_points)
    return n


@dataclass(frozen=True)
class Signal:
    name: str  # traces | metrics | logs
    path: str  # OTLP/HTTP path
    item: str  # spans | metric_points | log_records (self-metric vocabulary)
    request_type: type[Message]
    response_type: type[Message]
    rejected_field: str  # field of partial_success
    count: Callable[[Any], int]
    consume: str  # Consumer method name
    grpc_service: str  # fully qualified gRPC service

    def response(self, rejected: int = 0, message: str = "") -> Message:
        """An Export*ServiceResponse; partial_success only when something was rejected or said."""
        resp = self.response_type()
        if rejected or message:
            setattr(resp.partial_success, self.rejected_field, rejected)
            resp.partial_success.error_message = message
        return resp


TRACES = Signal(
    "traces", "/v1/traces", "spans", ExportTraceServiceRequest, ExportTraceServiceResponse,
    "rejected_spans", count_spans, "consume_traces", "opentelemetry.proto.collector.trace.v1.TraceService",
)
METRICS = Signal(
    "metrics", "/v1/metrics", "metric_points", ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    "rejected_data_points", count_metric_points, "consume_metrics",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
)
LOGS = Signal(
    "logs", "/v1/logs", "log_records", ExportLogsServiceRequest, ExportLogsServiceResponse,
    "rejected_log_records", count_log_records, "consume_logs",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)

SIGNALS: tuple[Signal, ...] = (TRACES, METRICS, LOGS)
