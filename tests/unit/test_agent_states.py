"""AgentTracker in memory: identity keys PostgreSQL can index, and a bound on tracked instances."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporters.postgres.agent_states import _MEMO_MAX, AgentTracker, agent_identity
from exporters.postgres.mapping.common import KEY_MAX_BYTES
from sidecar.pipeline.signals import LOGS, METRICS, TRACES
from tests.unit.mapping.builders import resource


def logs(*instances: str, service: str = "svc") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for instance in instances:
        rl = req.resource_logs.add(resource=resource({"service.name": service, "service.instance.id": instance}))
        rl.scope_logs.add().log_records.add().body.string_value = "hello"
    return req


def test_identity_keys_are_cut_to_what_postgresql_can_index():
    huge, wide = "i" * 10_000, "日" * 1000  # 10 KB; 3 KB of UTF-8
    key, service, instance, _ = agent_identity(resource({"service.name": "s" * 5000, "service.instance.id": huge}))
    assert (service, instance) == ("s" * KEY_MAX_BYTES, "i" * KEY_MAX_BYTES)
    assert key == f"{service}/{instance}" and len(key.encode()) == 2 * KEY_MAX_BYTES + 1
    _, _, instance, _ = agent_identity(resource({"service.name": "s", "host.name": wide}))
    assert instance == "日" * (KEY_MAX_BYTES // 3)  # at a character boundary
    key, service, instance, _ = agent_identity(resource({"service.name": "web", "service.instance.id": "a\x00b"}))
    assert (key, instance) == ("web/a\ufffdb", "a\ufffdb")  # PostgreSQL text can't hold NUL
    assert agent_identity(resource({"service.name": "web"}))[:3] == ("web", "web", None)


def test_new_instances_beyond_max_instances_are_not_tracked_and_counted():
    clock = [1000.0]
    tracker = AgentTracker(max_instances=3, window=60, clock=lambda: clock[0])
    assert tracker.max_instances == 3 and tracker.overflow == 0
    tracker.observe(LOGS, logs("a", "b", "c"))
    tracker.observe(LOGS, logs("d", "e", "d"))  # refused: counted once per new instance
    assert len(tracker) == 3 and tracker.overflow == 2
    tracker.observe(LOGS, logs("d", "a"))  # known ones keep updating; "d" already counted this interval
    assert tracker.overflow == 2
    rows = {row[0]: row for row in tracker.pending()}
    assert set(rows) == {"svc/a", "svc/b", "svc/c"}
    assert '"log_records":2' in rows["svc/a"][5] and '"requests":2' in rows["svc/a"][5]

    # Next flush interval: still full, "d" counted again.
    tracker.observe(LOGS, logs("d"))
    assert tracker.overflow == 3 and len(tracker) == 3
    tracker.pending()

    # Idle instances are forgotten (after their last flush): room for new ones.
    clock[0] += 120
    tracker.observe(LOGS, logs("a"))
    tracker.pending()
    tracker.forget_idle(clock[0] - 60)
    assert len(tracker) == 1
    tracker.observe(LOGS, logs("d", "e"))
    assert len(tracker) == 3 and tracker.overflow == 3
    assert {row[0] for row in tracker.pending()} == {"svc/d", "svc/e"}


def test_memory_stays_bounded_with_endless_new_instances():
    tracker = AgentTracker(max_instances=1000)
    for batch in range(30):  # 30_000 distinct instances, like a client minting one per request
        tracker.observe(LOGS, logs(*(f"i-{batch}-{i}" for i in range(1000))))
        traces, metrics = ExportTraceServiceRequest(), ExportMetricsServiceRequest()
        traces.resource_spans.add(resource=resource({"service.name": "svc", "service.instance.id": f"t-{batch}"}))
        metrics.resource_metrics.add(resource=resource({"service.name": "svc", "service.instance.id": f"m-{batch}"}))
        tracker.observe(TRACES, traces)
        tracker.observe(METRICS, metrics)
        tracker.pending()
        assert len(tracker) <= 1000
        assert len(tracker._identity) <= _MEMO_MAX and len(tracker._refused) <= 1000
    assert len(tracker) == 1000 and tracker.overflow == 29 * 1002 + 2
