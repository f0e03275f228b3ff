"""Send telemetry the way a service would: the real OpenTelemetry SDK and its OTLP exporters."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

RESOURCE = Resource.create({"service.name": "checkout", "service.instance.id": "pod-1", "k8s.pod.name": "p1"})


@dataclass
class Exporters:
    spans: object
    logs: object
    metrics: object


def http_exporters(base: str, compression: str | None = None, headers: dict[str, str] | None = None) -> Exporters:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    comp = Compression(compression) if compression else Compression.NoCompression
    kw = {"compression": comp, "headers": headers or {}, "timeout": 10}
    return Exporters(
        OTLPSpanExporter(endpoint=f"{base}/v1/traces", **kw),
        OTLPLogExporter(endpoint=f"{base}/v1/logs", **kw),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", **kw, preferred_temporality=_temporality("cumulative")),
    )


def grpc_exporters(
    target: str, compression: str | None = None, headers: dict[str, str] | None = None, temporality: str = "cumulative"
) -> Exporters:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    comp = grpc.Compression.Gzip if compression == "gzip" else None
    kw = {
        "endpoint": f"http://{target}",
        "insecure": True,
        "compression": comp,
        "headers": tuple((headers or {}).items()) or None,
        "timeout": 10,
    }
    return Exporters(
        OTLPSpanExporter(**kw),
        OTLPLogExporter(**kw),
        OTLPMetricExporter(**kw, preferred_temporality=_temporality(temporality)),
    )


def _temporality(kind: str) -> dict:
    from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter, UpDownCounter

    t = AggregationTemporality.DELTA if kind == "delta" else AggregationTemporality.CUMULATIVE
    return {Counter: t, Histogram: t, ObservableCounter: t, UpDownCounter: AggregationTemporality.CUMULATIVE}


def send_spans(exporter: object) -> None:
    """3 spans: a server root with an event and an exception, a client child with a link, an error."""
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.tracer", "1.2.3")
    with tracer.start_as_current_span(
        "GET /cart", kind=SpanKind.SERVER, attributes={"http.route": "/cart", "http.status_code": 200}
    ) as root:
        root.add_event("cache.miss", {"key": "cart:42"})
        link = Link(root.get_span_context(), {"link.kind": "cause"})
        with tracer.start_as_current_span(
            "SELECT carts", kind=SpanKind.CLIENT, links=[link], attributes={"db.system": "postgresql"}
        ):
            pass
        with tracer.start_as_current_span("charge", attributes={"amount": 12.5}) as failing:
            failing.record_exception(ValueError("card declined"))
            failing.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.shutdown()


SEVERITIES = [
    (logging.DEBUG, "debug"),
    (logging.INFO, "info"),
    (logging.WARNING, "warn"),
    (logging.ERROR, "error"),
    (logging.CRITICAL, "fatal"),
]


def send_logs(exporter: object) -> None:
    """One log per severity through the logging bridge, with a trace context on the error one."""
    from opentelemetry.sdk._logs import LoggingHandler

    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger = logging.getLogger(f"otelpg.test.sdk.{id(provider)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    tracer = TracerProvider(resource=RESOURCE).get_tracer("t")
    for level, name in SEVERITIES:
        if level == logging.ERROR:
            with tracer.start_as_current_span("failing-op"):
                logger.log(level, "message at %s", name, extra={"order.id": 42})
        else:
            logger.log(level, "message at %s", name, extra={"order.id": 42})
    logger.removeHandler(handler)
    provider.shutdown()


def send_metrics(exporter: object) -> None:
    """Every instrument kind once, exported in one collection."""
    from opentelemetry.metrics import CallbackOptions, Observation

    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = [View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())]
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], views=views)
    meter = provider.get_meter("shop.meter", "0.1")
    meter.create_counter("orders", unit="{order}").add(5, {"region": "eu"})
    meter.create_up_down_counter("queue.depth").add(-3, {"queue": "q1"})
    meter.create_histogram("request.duration", unit="s").record(0.25, {"route": "/cart"})
    meter.create_histogram("payload.size", unit="By").record(1500, {"route": "/cart"})
    meter.create_gauge("temperature", unit="Cel").set(21.5, {"room": "a"})

    def observe(options: CallbackOptions) -> list[Observation]:
        return [Observation(7_000_000_000, {"host": "h1"})]

    meter.create_observable_gauge("memory.usage", [observe], unit="By")
    meter.create_observable_counter("cpu.time", [lambda o: [Observation(3.5, {"cpu": "0"})]], unit="s")
    meter.create_observable_up_down_counter("connections", [lambda o: [Observation(4, {})]])
    provider.force_flush()
    provider.shutdown()
