"""CPU cost of each in-process step of otelpg's pipeline, per item, on the benchmark's requests.

Measured with time.process_time (CPU time of this process), so other processes on a shared
machine slow it less than wall-clock figures. Steps: wire check and split, protobuf decode, mapping
to rows (and within it the JSON encoding, timed separately on the same values), Prometheus
aggregation (observe_*), and asyncpg's binary COPY encoding
(taken from the raw COPY reference run: the client's CPU per row). Whatever otelpg spends beyond
these (HTTP/gRPC server, asyncio, batcher, writer, telemetry) is the residual against the CPU the
sidecar process actually used in the run.
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench._otlp_gen import REQUEST_TYPES, Template


def _cpu(fn, reps: int) -> float:
    """CPU seconds per call, best of 3 rounds of `reps` calls."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.process_time() - t0) / reps)
    return best


def component_costs(signal: str, templates: list[Template], reps: int = 20) -> dict[str, Any]:
    """Per-item CPU µs of each step for one request of `signal` (averaged over the templates)."""
    from exporters.postgres.mapping import Mapper, common, logs, map_logs, map_metrics, map_traces, metrics, traces
    from exporters.prometheus.aggregator import PrometheusAggregator
    from sidecar.pipeline import otlpwire
    from sidecar.pipeline.signals import BY_NAME

    mapper = {"traces": map_traces, "metrics": map_metrics, "logs": map_logs}[signal]
    state = Mapper()  # one, as the app has: the resource memo warm after the first request
    module = {"traces": traces, "metrics": metrics, "logs": logs}[signal]
    code = BY_NAME[signal].code
    req_type = REQUEST_TYPES[signal]
    agg = PrometheusAggregator()
    observe = {"traces": agg.observe_traces, "metrics": agg.observe_metrics, "logs": agg.observe_logs}[signal]
    if signal in ("traces", "logs") and common.NATIVE_AVAILABLE:
        return _native_costs(signal, templates, reps)
    totals: dict[str, float] = {}
    items = rows = 0
    for i, template in enumerate(templates):
        body = template.make(900_000_000 + i, i)
        msg = req_type.FromString(body)
        n = template.items
        items += n
        now = time.time_ns()
        steps = {
            f"check and split ({otlpwire.IMPLEMENTATION})": lambda body=body: otlpwire.split(code, body),
            "decode (ParseFromString)": lambda body=body: req_type.FromString(body),
            "map to rows (incl. JSON)": lambda msg=msg, now=now: mapper(msg, now, mapper=state),
            "Prometheus observe_*": lambda msg=msg: observe(msg),
        }
        for name, fn in steps.items():
            totals[name] = totals.get(name, 0.0) + _cpu(fn, reps) * 1e6
        # JSON: capture every value the mapping serialises, then time json_dumps on them alone.
        captured: list[Any] = []
        real = common.json_dumps

        def capture(obj: Any, _real=real, _captured=captured) -> str:
            _captured.append(obj)
            return _real(obj)

        patched = [m for m in (module,) if getattr(m, "json_dumps", None) is real]
        for m in patched:
            m.json_dumps = capture
        try:
            mapped = mapper(msg, now, mapper=state)
        finally:
            for m in patched:
                m.json_dumps = real
        rows += sum(len(r) for r in mapped.rows.values())
        totals["  of which JSON encoding"] = (
            totals.get("  of which JSON encoding", 0.0)
            + _cpu(lambda real=real, captured=captured: [real(o) for o in captured], reps) * 1e6
        )
    per_item = {k: v / items for k, v in totals.items()}
    return {"per_item_us": per_item, "items": items, "rows": rows, "rows_per_item": rows / items}


def _native_costs(signal: str, templates: list[Template], reps: int) -> dict[str, Any]:
    """The steps of the native path (traces, logs): one C pass from the request's bytes to COPY data
    and per-request tallies, then the observers, which work per tally, not per item."""
    from exporters.postgres.agent_states import AgentTracker
    from exporters.postgres.ids import request_ids
    from exporters.postgres.mapping.common import Mapper
    from exporters.postgres.mapping.native import map_logs_native, map_traces_native
    from exporters.prometheus.aggregator import PrometheusAggregator
    from sidecar.pipeline import otlpwire
    from sidecar.pipeline.signals import BY_NAME

    sig = BY_NAME[signal]
    encode = map_traces_native if signal == "traces" else map_logs_native
    state = Mapper()
    state.user_rows = 1  # user_analytics on, ids not hashed: the configuration's default
    agg, agents = PrometheusAggregator(), AgentTracker()
    totals: dict[str, float] = {}
    items = rows = 0
    for i, template in enumerate(templates):
        body = template.make(900_000_000 + i, i)
        now = time.time_ns()
        mapped = encode(body, now, request_ids(now, 1), state)
        assert mapped is not None, "the native encoder stepped aside on the benchmark's requests"
        summary = mapped.decoded
        items += template.items
        rows += sum(len(r) for r in mapped.rows.values())
        steps = {
            f"check and split ({otlpwire.IMPLEMENTATION})": lambda body=body: otlpwire.split(sig.code, body),
            "encode to COPY rows + tallies (native, one pass)": lambda body=body, now=now: encode(
                body, now, request_ids(now, 1), state
            ),
            "Prometheus observe (per tally)": lambda summary=summary: agg.observe(sig, summary),
            "agent_states observe (per resource)": lambda summary=summary: agents.observe(sig, summary),
        }
        for name, fn in steps.items():
            totals[name] = totals.get(name, 0.0) + _cpu(fn, reps) * 1e6
    per_item = {k: v / items for k, v in totals.items()}
    return {"per_item_us": per_item, "items": items, "rows": rows, "rows_per_item": rows / items, "native": True}


def format_costs(
    signal: str, costs: dict[str, Any], item: str, copy_us_per_row: float | None, measured_us_per_item: float | None
) -> list[str]:
    per = dict(costs["per_item_us"])
    lines = []
    accounted = sum(v for k, v in per.items() if not k.startswith("  "))
    if copy_us_per_row is not None and not costs.get("native"):  # native rows need no client-side encoding
        per["COPY binary encoding (asyncpg, client side)"] = copy_us_per_row * costs["rows_per_item"]
        accounted += per["COPY binary encoding (asyncpg, client side)"]
    for k, v in per.items():
        share = f"  {100 * v / measured_us_per_item:4.1f}% of measured" if measured_us_per_item else ""
        lines.append(f"{v:6.2f} µs/{item}  {k}{share}")
    if measured_us_per_item:
        rest = measured_us_per_item - accounted
        lines.append(
            f"{rest:6.2f} µs/{item}  rest: HTTP/gRPC server, asyncio, batcher, writer, telemetry "
            f"{100 * rest / measured_us_per_item:4.1f}% of measured"
        )
        lines.append(f"{measured_us_per_item:6.2f} µs/{item}  measured: otelpg process CPU / items acked in the run")
    return lines
