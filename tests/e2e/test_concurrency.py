"""50 concurrent clients against one `otelpg run`: every acknowledged item is in PostgreSQL exactly
once, nothing acknowledged is missing, nothing rejected or unacknowledged is there.

40 clients speak OTLP/HTTP (protobuf and JSON, plain and gzip, each on its own connection pool)
and 10 speak OTLP/gRPC, all at once, so group commit merges requests of every signal, encoding
and transport into the same batches. Every item carries a unique `uid` attribute to count by.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import os
import time
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from prometheus_client.parser import text_string_to_metric_families

from tests.otlp_json import message_to_otlp_json

pytestmark = pytest.mark.e2e

HTTP_CLIENTS = 40
GRPC_CLIENTS = 10
REQUESTS_PER_CLIENT = 12  # 4 of each signal
ITEMS_PER_REQUEST = 10  # -> 2000 spans, 2000 log records, 2000 metric points
BAD_EVERY = 5  # every 5th request also carries one item the mapper rejects (partial success)
SIGNALS = ("traces", "logs", "metrics")
PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
RESPONSES = {
    "traces": ExportTraceServiceResponse,
    "metrics": ExportMetricsServiceResponse,
    "logs": ExportLogsServiceResponse,
}
STUBS = {
    "traces": trace_service_pb2_grpc.TraceServiceStub,
    "metrics": metrics_service_pb2_grpc.MetricsServiceStub,
    "logs": logs_service_pb2_grpc.LogsServiceStub,
}
REJECTED_FIELD = {"traces": "rejected_spans", "metrics": "rejected_data_points", "logs": "rejected_log_records"}


def _kv(key: str, value: str | int) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, str):
        kv.value.string_value = value
    else:
        kv.value.int_value = value
    return kv


def build(signal: str, uids: list[str], bad_uid: str | None) -> Message:
    """One item per uid; plus, if `bad_uid`, one item otelpg must reject (and never store)."""
    now = time.time_ns()
    if signal == "traces":
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(_kv("service.name", f"svc-{len(uids) % 3}"))
        spans = rs.scope_spans.add().spans
        for u in uids:
            spans.add(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name="op",
                start_time_unix_nano=now,
                end_time_unix_nano=now + 5,
            ).attributes.append(_kv("uid", u))
        if bad_uid:
            spans.add(
                trace_id=b"\x01\x02\x03\x04", span_id=os.urandom(8), name="bad", start_time_unix_nano=now
            ).attributes.append(_kv("uid", bad_uid))
        return req
    if signal == "logs":
        req = ExportLogsServiceRequest()
        records = req.resource_logs.add().scope_logs.add().log_records
        for u in uids:
            rec = records.add(time_unix_nano=now, severity_number=9)
            rec.body.string_value = "concurrent"
            rec.attributes.append(_kv("uid", u))
        if bad_uid:
            records.add(time_unix_nano=now, span_id=b"\x01\x02").attributes.append(_kv("uid", bad_uid))
        return req
    req = ExportMetricsServiceRequest()
    metrics = req.resource_metrics.add().scope_metrics.add().metrics
    gauge = metrics.add(name="concurrency.gauge", unit="1")
    for i, u in enumerate(uids):
        gauge.gauge.data_points.add(time_unix_nano=now, as_int=i).attributes.append(_kv("uid", u))
    if bad_uid:
        bad = metrics.add(name="concurrency.histogram").histogram.data_points.add(time_unix_nano=now, count=1)
        bad.explicit_bounds.append(1.0)
        bad.bucket_counts.append(1)  # needs 2 counts
        bad.attributes.append(_kv("uid", bad_uid))
    return req


@dataclass
class Ledger:
    acked: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    rejected: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    unacked: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    failures: list[str] = field(default_factory=list)
    by_transport: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)


def plan(client: int, n: int) -> tuple[str, list[str], str | None]:
    signal = SIGNALS[n % 3]
    uids = [f"c{client}-r{n}-i{i}" for i in range(ITEMS_PER_REQUEST)]
    bad = f"c{client}-r{n}-bad" if (client + n) % BAD_EVERY == 0 else None
    return signal, uids, bad


def settle(
    ledger: Ledger,
    transport: str,
    signal: str,
    uids: list[str],
    bad: str | None,
    response: Message | None,
    failure: str | None,
) -> None:
    if failure is not None:
        ledger.failures.append(failure)
        ledger.unacked[signal].update(uids)
        return
    assert response is not None
    rejected = getattr(response.partial_success, REJECTED_FIELD[signal])
    if rejected != (1 if bad else 0) or (bad and not response.partial_success.error_message):
        ledger.failures.append(f"{signal} {uids[0]}: partial_success {response.partial_success}")
    ledger.acked[signal].update(uids)
    ledger.by_transport[(transport, signal)] += len(uids)
    if bad:
        ledger.rejected[signal].add(bad)


async def http_client(url: str, client: int, ledger: Ledger, start: asyncio.Event) -> None:
    json_encoding = client % 2 == 1
    compress = client % 4 >= 2
    headers = {"Content-Type": "application/json" if json_encoding else "application/x-protobuf"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await start.wait()
        for n in range(REQUESTS_PER_CLIENT):
            signal, uids, bad = plan(client, n)
            request = build(signal, uids, bad)
            body = json.dumps(message_to_otlp_json(request)).encode() if json_encoding else request.SerializeToString()
            if compress:
                body = gzip.compress(body)
            started = time.monotonic()
            async with session.post(f"{url}{PATHS[signal]}", data=body, headers=headers) as r:
                payload = await r.read()
                ledger.latencies.append(time.monotonic() - started)
                if r.status != 200:
                    settle(ledger, "http", signal, uids, bad, None, f"HTTP {r.status}: {payload[:200]!r}")
                    continue
                if json_encoding:
                    response = json_format.ParseDict(json.loads(payload), RESPONSES[signal]())
                else:
                    response = RESPONSES[signal].FromString(payload)
                settle(ledger, "http", signal, uids, bad, response, None)


async def grpc_client(target: str, client: int, ledger: Ledger, start: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stubs = {signal: STUBS[signal](channel) for signal in SIGNALS}
        await start.wait()
        for n in range(REQUESTS_PER_CLIENT):
            signal, uids, bad = plan(client, n)
            started = time.monotonic()
            try:
                response = await stubs[signal].Export(
                    build(signal, uids, bad),
                    timeout=60,
                    compression=grpc.Compression.Gzip if client % 2 else None,
                )
            except grpc.aio.AioRpcError as e:
                settle(ledger, "grpc", signal, uids, bad, None, f"gRPC {e.code()}: {e.details()}")
                continue
            finally:
                ledger.latencies.append(time.monotonic() - started)
            settle(ledger, "grpc", signal, uids, bad, response, None)


async def stored_uids(db: asyncpg.Connection, signal: str) -> collections.Counter[str]:
    if signal == "metrics":
        sql = "SELECT tags->>'uid' AS uid, count(*) AS n FROM performance_metrics WHERE tags ? 'uid' GROUP BY 1"
    else:  # (rows without a uid are otelpg's own: its events, its span-derived aggregates)
        kind = "span" if signal == "traces" else "log"
        sql = (
            f"SELECT payload->'attributes'->>'uid' AS uid, count(*) AS n FROM system_events "
            f"WHERE event_type = '{kind}' AND payload->'attributes' ? 'uid' GROUP BY 1"
        )
    return collections.Counter({r["uid"]: r["n"] for r in await db.fetch(sql)})


async def test_fifty_concurrent_clients_every_acknowledged_item_stored_exactly_once(otelpg, db):
    ledger = Ledger()
    start = asyncio.Event()
    clients = [http_client(otelpg.url("http"), c, ledger, start) for c in range(HTTP_CLIENTS)]
    clients += [grpc_client(otelpg.grpc_target, HTTP_CLIENTS + c, ledger, start) for c in range(GRPC_CLIENTS)]
    tasks = [asyncio.create_task(c) for c in clients]
    await asyncio.sleep(0.5)  # every client connected / session open, then all go at once
    started = time.monotonic()
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started

    requests = (HTTP_CLIENTS + GRPC_CLIENTS) * REQUESTS_PER_CLIENT
    assert len(ledger.latencies) == requests
    # The default queue is far larger than this load: nothing may be refused.
    assert ledger.failures == [], ledger.failures[:5]
    expected_items = requests // 3 * ITEMS_PER_REQUEST
    for signal in SIGNALS:
        acked = ledger.acked[signal]
        assert len(acked) == expected_items, signal
        counts = await stored_uids(db, signal)
        duplicated = {u: n for u, n in counts.items() if n > 1}
        missing = acked - counts.keys()
        assert not duplicated, (signal, list(duplicated.items())[:5])
        assert not missing, (signal, sorted(missing)[:5])
        assert not (counts.keys() & ledger.rejected[signal]), signal  # rejected items never stored
        assert ledger.rejected[signal], signal  # ...and there were some
        assert counts.keys() - ledger.unacked[signal] == acked, signal  # nothing stored that wasn't acked

    async with aiohttp.ClientSession() as session, session.get(otelpg.url("admin", "/metrics")) as r:
        text = await r.text()
    item = {"traces": "spans", "logs": "log_records", "metrics": "metric_points"}
    for (transport, signal), n in ledger.by_transport.items():
        name = f"otelpg_receiver_accepted_{item[signal]}_total"
        values = [
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == name and s.labels.get("transport") == transport
        ]
        assert values == [n], (transport, signal, values)
    print(
        f"\n{requests} requests, {3 * expected_items} items from {HTTP_CLIENTS + GRPC_CLIENTS} clients in "
        f"{elapsed:.2f}s; p99 ack latency {sorted(ledger.latencies)[int(0.99 * requests)] * 1000:.0f} ms"
    )
