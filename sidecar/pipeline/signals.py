"""One table drives every per-signal difference between traces, metrics and logs."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Signal:
    name: str  # traces | metrics | logs
    code: int  # its number on the wire splitter and in spool records
    path: str  # OTLP/HTTP path
    item: str  # spans | metric_points | log_records (self-metric vocabulary)
    noun: tuple[str, str]  # singular and plural, for messages: ("span", "spans")
    request_type: type[Message]
    response_type: type[Message]
    rejected_field: str  # field of partial_success
    grpc_service: str  # fully qualified gRPC service

    def response(self, rejected: int = 0, message: str = "") -> Message:
        """An Export*ServiceResponse; partial_success only when something was rejected or said."""
        resp = self.response_type()
        if rejected or message:
            setattr(resp.partial_success, self.rejected_field, rejected)
            resp.partial_success.error_message = message
        return resp

    def decode(self, data: bytes) -> Message:
        """The request message of protobuf bytes (raises google.protobuf's DecodeError)."""
        message = self.request_type()
        message.ParseFromString(data)
        return message


TRACES = Signal(
    "traces",
    0,
    "/v1/traces",
    "spans",
    ("span", "spans"),
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    "rejected_spans",
    "opentelemetry.proto.collector.trace.v1.TraceService",
)
METRICS = Signal(
    "metrics",
    1,
    "/v1/metrics",
    "metric_points",
    ("data point", "data points"),
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    "rejected_data_points",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
)
LOGS = Signal(
    "logs",
    2,
    "/v1/logs",
    "log_records",
    ("log record", "log records"),
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
    "rejected_log_records",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)

SIGNALS: tuple[Signal, ...] = (TRACES, METRICS, LOGS)
BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
BY_CODE: dict[int, Signal] = {s.code: s for s in SIGNALS}
