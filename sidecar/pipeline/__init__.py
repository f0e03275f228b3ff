"""The core every component depends on, and which depends on no component.

- `errors`: the error types, each knowing its OTLP/HTTP and gRPC status;
- `signals`: the one model of a signal (traces, metrics, logs): paths, messages, nouns;
- `consumer`: the seam, `ExportRequest` in and `ConsumeResult` out;
- `otlpwire`: the wire splitter that checks and cuts a request before anything parses it;
- `admission`: the memory budget requests reserve from as they are read and handled;
- `component`: the lifecycle every long-lived part has (start, stop, health);
- `telemetry`: otelpg's own metrics;
- `span_metrics`: span-derived aggregates as they pass between the two exporters.
"""
