"""A tiny shop that emits OpenTelemetry the way a real service does: the OTel SDK and its OTLP exporters.

Each simulated request crosses two services, `frontend` and `checkout` (one process, two resources),
and produces server/client/database spans with realistic latencies, a few errors with recorded
exceptions, log records inside the spans (so they carry trace ids), and metrics: a request-duration
histogram, an order counter, a queue-depth gauge.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python app.py             # forever, 5 requests/s
    python app.py --endpoint http://127.0.0.1:4318 --protocol http/protobuf --iterations 100 --rate 0
    python app.py --iterations 500 --backfill 3600   # spread span and log times over the last hour

Only the standard OTEL_* variables and these flags configure it.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

ROUTES = [("GET /", 0.02), ("GET /products/{id}", 0.04), ("GET /cart", 0.03), ("POST /checkout", 0.12)]
PRODUCTS = ["book", "lamp", "mug", "plant", "socks"]


def _exporters(endpoint: str | None, protocol: str) -> tuple[object, object, object]:
    kw = {} if endpoint is None else {"endpoint": endpoint}
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kw), OTLPLogExporter(**kw), OTLPMetricExporter(**kw)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoint is None:  # the exporters append /v1/<signal> to OTEL_EXPORTER_OTLP_ENDPOINT themselves
        return OTLPSpanExporter(), OTLPLogExporter(), OTLPMetricExporter()
    base = endpoint.rstrip("/")
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces"),
        OTLPLogExporter(endpoint=f"{base}/v1/logs"),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
    )


@dataclass
class Service:
    """One service: its own resource and providers, as if it were its own process."""

    name: str
    tracer: trace.Tracer
    log: logging.Logger
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    meter_provider: MeterProvider

    @classmethod
    def start(cls, name: str, endpoint: str | None, protocol: str, metric_interval_ms: int) -> Service:
        resource = Resource.create(
            {
                "service.name": name,
                "service.version": "1.4.2",
                "deployment.environment.name": "demo",
                "service.instance.id": f"{name}-{socket.gethostname()}-{os.getpid()}",
            }
        )
        spans, logs, metrics = _exporters(endpoint, protocol)
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs))
        reader = PeriodicExportingMetricReader(metrics, export_interval_millis=metric_interval_ms)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        log = logging.getLogger(f"shop.{name}")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        with warnings.catch_warnings():  # newer SDKs point to opentelemetry-instrumentation-logging
            warnings.simplefilter("ignore", DeprecationWarning)
            log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider))
        return cls(
            name, tracer_provider.get_tracer("shop", "1.4.2"), log, tracer_provider, logger_provider, meter_provider
        )

    def emit_log(self, level: int, at_ns: int, msg: str, **attributes: object) -> None:
        """A log record at a given time, inside the current span (so it carries the trace id)."""
        record = self.log.makeRecord(self.log.name, level, __file__, 0, msg, (), None, extra=attributes)
        record.created = at_ns / 1e9
        self.log.handle(record)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()


class Shop:
    def __init__(
        self, endpoint: str | None, protocol: str, metric_interval_ms: int | None = None, seed: int | None = None
    ) -> None:
        metric_interval_ms = metric_interval_ms or int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "10000"))
        self.rng = random.Random(seed)
        self.frontend = Service.start("frontend", endpoint, protocol, metric_interval_ms)
        self.checkout = Service.start("checkout", endpoint, protocol, metric_interval_ms)
        meter = self.frontend.meter_provider.get_meter("shop", "1.4.2")
        self.duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            # the semantic conventions' buckets (the SDK's defaults are meant for milliseconds)
            explicit_bucket_boundaries_advisory=[
                0.005,
                0.01,
                0.025,
                0.05,
                0.075,
                0.1,
                0.25,
                0.5,
                0.75,
                1,
                2.5,
                5,
                7.5,
                10,
            ],
        )
        self.orders = self.checkout.meter_provider.get_meter("shop", "1.4.2").create_counter(
            "shop.orders", unit="{order}", description="Orders placed."
        )
        self.queue_depth = 0
        self.checkout.meter_provider.get_meter("shop", "1.4.2").create_observable_gauge(
            "shop.payment.queue.depth", [lambda options: [_observation(self.queue_depth)]], unit="{payment}"
        )

    def _seconds(self, typical: float) -> float:
        """A long-tailed latency around `typical` seconds (a few slow outliers)."""
        slow = 12.0 if self.rng.random() < 0.02 else 1.0
        return self.rng.lognormvariate(0, 0.5) * typical * slow

    def request(self, end_ns: int) -> None:
        """One request ending at end_ns: frontend server span, checkout call, database query."""
        route, typical = self.rng.choice(ROUTES)
        total = self._seconds(typical)
        start_ns = end_ns - int(total * 1e9)
        failed = route == "POST /checkout" and self.rng.random() < 0.15
        fe = self.frontend
        with fe.tracer.start_as_current_span(
            route,
            kind=SpanKind.SERVER,
            start_time=start_ns,
            end_on_exit=False,
            attributes={"http.request.method": route.split()[0], "http.route": route.split()[1]},
        ) as server:
            fe.emit_log(logging.DEBUG, start_ns, f"handling {route}", **{"http.route": route.split()[1]})
            if route == "POST /checkout":
                self._checkout(start_ns, end_ns, failed)
            elif route == "GET /products/{id}":
                product = self.rng.choice(PRODUCTS)
                server.add_event(
                    "cache.miss" if self.rng.random() < 0.3 else "cache.hit",
                    {"product": product},
                    timestamp=start_ns + 1000,
                )
            status = 500 if failed else 200
            server.set_attribute("http.response.status_code", status)
            if failed:
                server.set_status(Status(StatusCode.ERROR, "payment declined"))
                fe.emit_log(logging.ERROR, end_ns, "checkout failed: payment declined", **{"http.status": status})
            elif total > 1.0:
                fe.emit_log(logging.WARNING, end_ns, f"slow request {route} took {total * 1000:.0f} ms")
            else:
                fe.emit_log(logging.INFO, end_ns, f"{route} {status}")
            server.end(end_time=end_ns)
        self.duration.record(total, {"http.route": route.split()[1], "http.response.status_code": status})

    def _checkout(self, start_ns: int, end_ns: int, failed: bool) -> None:
        fe, co = self.frontend, self.checkout
        call_start = start_ns + (end_ns - start_ns) // 10
        call_end = end_ns - (end_ns - start_ns) // 10
        with fe.tracer.start_as_current_span(
            "POST checkout/charge", kind=SpanKind.CLIENT, start_time=call_start, end_on_exit=False
        ) as client:
            with co.tracer.start_as_current_span(
                "charge", kind=SpanKind.SERVER, start_time=call_start + 200_000, end_on_exit=False
            ) as charge:
                db_end = call_start + (call_end - call_start) // 2
                with co.tracer.start_as_current_span(
                    "SELECT payments",
                    kind=SpanKind.CLIENT,
                    start_time=call_start + 300_000,
                    end_on_exit=False,
                    attributes={"db.system.name": "postgresql"},
                ) as query:
                    query.end(end_time=db_end)
                if failed:
                    try:
                        raise RuntimeError("payment declined by issuer")
                    except RuntimeError as exc:
                        charge.record_exception(exc, timestamp=db_end + 1000)
                    charge.set_status(Status(StatusCode.ERROR, "payment declined"))
                    co.emit_log(logging.ERROR, db_end, "payment declined", **{"order.amount": 42.5})
                else:
                    self.orders.add(1, {"product": self.rng.choice(PRODUCTS)})
                    co.emit_log(logging.INFO, db_end, "order placed", **{"order.amount": 42.5})
                self.queue_depth = self.rng.randint(0, 20)
                charge.end(end_time=call_end - 200_000)
            if failed:
                client.set_status(Status(StatusCode.ERROR))
            client.end(end_time=call_end)

    def shutdown(self) -> None:
        self.frontend.shutdown()
        self.checkout.shutdown()


def _observation(value: float) -> object:
    from opentelemetry.metrics import Observation

    return Observation(value)


def simulate(
    shop: Shop, iterations: int, rate: float, backfill: float = 0.0, stopping: threading.Event | None = None
) -> int:
    """Simulate `iterations` requests (0: until `stopping` is set), `rate` per second (0: no pause).
    With `backfill`, request end times are spread evenly over the last `backfill` seconds."""
    stopping = stopping or threading.Event()
    n = 0
    while not stopping.is_set() and (iterations == 0 or n < iterations):
        now = time.time_ns()
        if backfill and iterations:
            now -= int(backfill * 1e9 * (1 - n / iterations))
        shop.request(now)
        n += 1
        if rate > 0:
            stopping.wait(1 / rate)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--endpoint", default=None, help="OTLP endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT, else the SDK default)"
    )
    parser.add_argument(
        "--protocol", default=os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), choices=["grpc", "http/protobuf"]
    )
    parser.add_argument("--iterations", type=int, default=0, help="requests to simulate; 0 = until SIGTERM")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second; 0 = as fast as possible")
    parser.add_argument(
        "--backfill", type=float, default=0.0, help="spread span and log timestamps evenly over the last N seconds"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    shop = Shop(args.endpoint, args.protocol, seed=args.seed)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        n = simulate(shop, args.iterations, args.rate, args.backfill, stopping)
    finally:
        shop.shutdown()  # flushes every batch processor and the metric reader
    print(f"example-app: simulated {n} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
