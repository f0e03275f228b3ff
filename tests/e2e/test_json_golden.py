"""OTLP/JSON and binary protobuf land as identical rows.

For each signal, one rich protobuf request is sent to a real `otelpg run`; then its OTLP/JSON twins
(canonical, uppercase hex ids, int64 as JSON numbers, enum names, snake_case keys, unknown fields
everywhere, and all of it at once). After each request the rows it produced are read back and
compared, every column but `id`, with the rows the protobuf twin produced.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.otelpg_process import OtelpgProcess
from tests.otlp_json import message_to_otlp_json

pytestmark = pytest.mark.e2e

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "otlp"
PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
T0 = 1_700_000_000_123_456_789  # above 2**53: a float on the way would lose the last digits
TRACE_A = bytes.fromhex("5b8efff798038103d269b633813fc60c")
TRACE_B = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


# --- rich requests ----------------------------------------------------------------------------


def kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(kv(k, v) for k, v in value.items())
        return out
    if value is None:
        return AnyValue()
    return AnyValue(string_value=value)


ATTRS = {
    "str": "héllo \u2603",
    "bool": True,
    "int": -(2**62) - 7,
    "big.int": 2**63 - 1,
    "double": 637.704,
    "nan": math.nan,
    "inf": -math.inf,
    "bytes": b"\xde\xad\xbe\xef",
    "array": ["a", 1, 2.5, False, [1, 2]],
    "map": {"k": "v", "nested": {"n": 1}},
    "empty": None,
}


def resource(target: Any, service: str | None, **extra: Any) -> None:
    if service is not None:
        target.resource.attributes.append(kv("service.name", service))
    target.resource.attributes.extend(kv(k, v) for k, v in extra.items())
    target.resource.dropped_attributes_count = 2
    target.schema_url = "https://opentelemetry.io/schemas/1.26.0"


def rich_traces() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    resource(rs, "golden", **{"k8s.pod.name": "p-1", "host.cpus": 8})
    ss = rs.scope_spans.add(schema_url="https://scope.example/1")
    ss.scope.name, ss.scope.version = "golden.tracer", "1.0.0"
    ss.scope.attributes.append(kv("scope.attr", 3))
    ss.scope.dropped_attributes_count = 1
    for kind in range(6):
        sp = ss.spans.add(
            trace_id=TRACE_A,
            span_id=bytes([kind + 1] * 8),
            parent_span_id=b"\x01" * 8 if kind else b"",
            name=f"span kind {kind}",
            kind=kind,
            start_time_unix_nano=T0 + kind,
            end_time_unix_nano=T0 + kind + 1_234_567_891,
            trace_state="vendor=a,other=b",
            flags=0x301 if kind == 2 else 0,
            dropped_attributes_count=kind,
            dropped_events_count=4,
            dropped_links_count=5,
        )
        sp.attributes.extend(kv(k, v) for k, v in ATTRS.items())
        sp.status.code = kind % 3
        if kind == 2:
            sp.status.message = "it broke"
        ev = sp.events.add(time_unix_nano=T0 + 10, name="cache.miss", dropped_attributes_count=1)
        ev.attributes.append(kv("key", "cart:42"))
        exc = sp.events.add(time_unix_nano=0, name="exception")
        exc.attributes.extend([kv("exception.type", "ValueError"), kv("exception.message", "bad")])
        link = sp.links.add(
            trace_id=TRACE_B, span_id=b"\xab" * 8, trace_state="l=1", flags=0x100, dropped_attributes_count=3
        )
        link.attributes.append(kv("link.reason", "batch"))
    # No service.name: unknown_service. End before start: no duration.
    rs = req.resource_spans.add()
    ss = rs.scope_spans.add()
    ss.spans.add(
        trace_id=TRACE_B, span_id=b"\xff" * 8, name="backwards", start_time_unix_nano=T0, end_time_unix_nano=T0 - 5
    )
    return req


def rich_logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    resource(rl, "golden", **{"deployment.environment": "prod"})
    sl = rl.scope_logs.add(schema_url="https://scope.example/1")
    sl.scope.name = "golden.logger"
    bodies: list[Any] = ["text", 42, 2.5, True, b"\x00\x01", ["a", {"b": 1}], {"msg": "hi", "n": [1]}, None]
    for i, body in enumerate(bodies):
        rec = sl.log_records.add(
            time_unix_nano=T0 + i if i != 3 else 0,
            observed_time_unix_nano=T0 + 100 + i,
            severity_number=i * 3,
            severity_text=["", "WARN", "Information", "fatal"][i % 4],
            flags=i % 2,
            dropped_attributes_count=i,
        )
        if body is not None:
            rec.body.CopyFrom(any_value(body))
        rec.attributes.extend(kv(k, v) for k, v in ATTRS.items())
        if i % 2:
            rec.trace_id, rec.span_id = TRACE_A, bytes([i] * 8)
        if i == 5:
            rec.attributes.append(kv("event.name", "user.login"))
        if i == 6:
            rec.event_name = "device.app.lifecycle"
    return req


def rich_metrics() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    resource(rm, "golden")
    sm = rm.scope_metrics.add(schema_url="https://scope.example/1")
    sm.scope.name, sm.scope.version = "golden.meter", "0.1"
    points = {"a": "b", "n": 7}

    gauge = sm.metrics.add(name="g.double", unit="Cel", description="temperature")
    gauge.metadata.append(kv("meta", "data"))
    for i, v in enumerate([21.5, math.nan, math.inf, -0.0, 1e308]):
        dp = gauge.gauge.data_points.add(time_unix_nano=T0 + i, start_time_unix_nano=T0 - 1, as_double=v, flags=i % 2)
        dp.attributes.extend(kv(k, x) for k, x in {**points, "i": i}.items())
    ints = sm.metrics.add(name="g.int", unit="By")
    ints.gauge.data_points.add(time_unix_nano=T0, as_int=2**53 + 1)
    ints.gauge.data_points.add(time_unix_nano=T0, as_int=-(2**63))
    ex = ints.gauge.data_points[0].exemplars.add(time_unix_nano=T0 - 3, as_int=5, trace_id=TRACE_A, span_id=b"\x0a" * 8)
    ex.filtered_attributes.append(kv("user", "u1"))

    for temporality, monotonic in ((1, False), (2, True)):
        s = sm.metrics.add(name=f"sum.{temporality}", unit="{request}")
        s.sum.aggregation_temporality, s.sum.is_monotonic = temporality, monotonic
        dp = s.sum.data_points.add(start_time_unix_nano=T0 - 10, time_unix_nano=T0, as_double=12.25)
        dp.attributes.extend(kv(k, x) for k, x in points.items())

    hist = sm.metrics.add(name="h.explicit", unit="s")
    hist.histogram.aggregation_temporality = 2
    dp = hist.histogram.data_points.add(
        start_time_unix_nano=T0 - 10, time_unix_nano=T0, count=2**64 - 1, sum=123.5, min=0.001, max=99.0, flags=1
    )
    dp.explicit_bounds.extend([0.005, 0.1, 1.0, 10.0])
    dp.bucket_counts.extend([2**63 + 3, 0, 7, 0, 2**40])
    dp.attributes.append(kv("route", "/cart"))
    ex = dp.exemplars.add(time_unix_nano=T0 - 1, as_double=0.07, trace_id=TRACE_B, span_id=b"\x0b" * 8)
    ex.filtered_attributes.append(kv("k", True))
    hist.histogram.data_points.add(time_unix_nano=T0, count=0)  # no buckets at all

    exp = sm.metrics.add(name="h.exponential", unit="By")
    exp.exponential_histogram.aggregation_temporality = 1
    dp = exp.exponential_histogram.data_points.add(
        start_time_unix_nano=T0 - 10,
        time_unix_nano=T0,
        count=23,
        sum=-4.5,
        min=-20.0,
        max=3000.0,
        scale=3,
        zero_count=2,
        zero_threshold=1e-9,
    )
    dp.positive.offset, dp.negative.offset = -4, 2
    dp.positive.bucket_counts.extend([1, 0, 5, 9])
    dp.negative.bucket_counts.extend([3, 3])
    dp.attributes.append(kv("host", "h1"))

    summary = sm.metrics.add(name="summary", unit="ms")
    dp = summary.summary.data_points.add(start_time_unix_nano=T0 - 10, time_unix_nano=T0, count=10, sum=55.5)
    for q, v in ((0.0, 1.0), (0.5, 5.0), (0.99, math.inf), (1.0, 9.5)):
        dp.quantile_values.add(quantile=q, value=v)
    # A second resource without service.name.
    other = req.resource_metrics.add()
    other.scope_metrics.add().metrics.add(name="bare").gauge.data_points.add(time_unix_nano=T0, as_int=1)
    return req


def from_testdata(name: str, message_type: type[Message]) -> Message:
    return text_format.Parse((TESTDATA / f"{name}.textproto").read_text(), message_type())


REQUESTS: dict[str, Callable[[], Message]] = {
    "traces": rich_traces,
    "logs": rich_logs,
    "metrics": rich_metrics,
}
SPEC_EXAMPLES = {  # opentelemetry-proto's examples (uppercase hex ids, int64 strings) and their decoding
    "traces": ("trace", ExportTraceServiceRequest),
    "logs": ("logs", ExportLogsServiceRequest),
    "metrics": ("metrics", ExportMetricsServiceRequest),
}


# --- JSON twins -------------------------------------------------------------------------------

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT64,
}
_HEX_IDS = {"trace_id", "span_id", "parent_span_id"}


def twin(
    obj: dict[str, Any],
    descriptor: Descriptor,
    *,
    upper_hex: bool = False,
    int64_numbers: bool = False,
    enum_names: bool = False,
    snake_case: bool = False,
    unknown_fields: bool = False,
) -> dict[str, Any]:
    """Rewrite canonical OTLP/JSON (`message_to_otlp_json`) in one of the spellings receivers accept."""
    options = {
        "upper_hex": upper_hex,
        "int64_numbers": int64_numbers,
        "enum_names": enum_names,
        "snake_case": snake_case,
        "unknown_fields": unknown_fields,
    }
    by_json_name = {f.json_name: f for f in descriptor.fields}
    out: dict[str, Any] = {}
    if unknown_fields:  # before and after the known ones, of every JSON kind
        out["unknownBefore"] = {"deep": [1, "two", {"three": None}], "traceId": "not-an-id"}
    for key, value in obj.items():
        field = by_json_name[key]
        values = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            values = [twin(v, field.message_type, **options) for v in values]
        elif field.type == FieldDescriptor.TYPE_ENUM and enum_names:
            values = [field.enum_type.values_by_number[v].name for v in values]
        elif field.type in _INT64 and int64_numbers:
            values = [int(v) for v in values]
        elif field.name in _HEX_IDS and upper_hex:
            values = [v.upper() for v in values]
        out[field.name if snake_case else key] = values if field.is_repeated else values[0]
    if unknown_fields:
        out["zzUnknownAfter"] = 12345678901234567890
        out["unknown_snake"] = [True, 1.5]
    return out


VARIANTS: dict[str, dict[str, bool]] = {
    "canonical": {},
    "uppercase-hex": {"upper_hex": True},
    "int64-numbers": {"int64_numbers": True},
    "enum-names": {"enum_names": True},
    "snake-case": {"snake_case": True},
    "unknown-fields": {"unknown_fields": True},
    "everything": {
        "upper_hex": True,
        "int64_numbers": True,
        "enum_names": True,
        "snake_case": True,
        "unknown_fields": True,
    },
}


def json_twin(request: Message, variant: str) -> bytes:
    canonical = message_to_otlp_json(request)
    return json.dumps(twin(copy.deepcopy(canonical), request.DESCRIPTOR, **VARIANTS[variant])).encode()


# --- rows -------------------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    """NaN != NaN: compare it as a marker instead."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


async def take_rows(db: asyncpg.Connection) -> dict[str, list[tuple]]:
    """Every client row (all columns but id), sorted, then deleted so the next request starts clean."""
    out = {}
    for table in ("system_events", "performance_metrics"):
        # Not otelpg's own events, nor its span-derived aggregates (flushed on a timer).
        where = (
            "WHERE source <> 'otelpg'"
            if table == "system_events"
            else "WHERE metric_name NOT LIKE 'traces.span.metrics.%'"
        )
        records = await db.fetch(f"SELECT * FROM {table} {where}")
        rows = [tuple((k, _normal(v)) for k, v in r.items() if k != "id") for r in records]
        out[table] = sorted(rows, key=repr)
        await db.execute(f"DELETE FROM {table} {where}")
    for derived in ("performance_metrics_1m", "performance_metrics_1h"):  # rollups: every twin starts equal
        if await db.fetchval("SELECT to_regclass($1) IS NOT NULL", derived):
            await db.execute(f"DELETE FROM {derived}")
    return out


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelpgProcess]:
    tmp = tmp_path_factory.mktemp("otelpg-golden")
    (tmp / "otelpg.yaml").write_text("batch:\n  max_delay: 0.02\n")
    proc = OtelpgProcess(tmp, {"OTELPG_DATABASE_URL": module_dsn}, args=("--config", str(tmp / "otelpg.yaml")))
    proc.start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log


@pytest.fixture
def db(module_db: asyncpg.Connection) -> asyncpg.Connection:
    return module_db  # this module's tests share one otelpg process and its schema


async def send(proc: OtelpgProcess, signal: str, body: bytes, content_type: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(proc.url("http", PATHS[signal]), data=body, headers={"Content-Type": content_type}) as r,
    ):
        payload = await r.read()
        assert r.status == 200, payload
        assert r.headers["Content-Type"] == content_type
        # Full success, no partial success: every item became rows.
        assert payload in (b"", b"{}"), payload


# --- tests ------------------------------------------------------------------------------------

EXPECTED_ROWS = {  # (system_events, performance_metrics) rows of each rich request
    "traces": (7 + 6 * 2, 0),  # 7 spans, 2 events on each of the first 6
    "logs": (8, 0),
    "metrics": (0, 5 + 2 + 2 + 2 + 1 + 1 + 1),
}


@pytest.mark.parametrize("signal", list(REQUESTS))
async def test_json_twins_store_the_same_rows_as_protobuf(server, db, signal):
    request = REQUESTS[signal]()
    await take_rows(db)
    await send(server, signal, request.SerializeToString(), "application/x-protobuf")
    expected = await take_rows(db)
    assert (len(expected["system_events"]), len(expected["performance_metrics"])) == EXPECTED_ROWS[signal]
    for variant in VARIANTS:
        await send(server, signal, json_twin(request, variant), "application/json")
        got = await take_rows(db)
        for table in expected:
            assert got[table] == expected[table], (variant, table)


@pytest.mark.parametrize("signal", list(SPEC_EXAMPLES))
async def test_spec_example_json_stores_the_same_rows_as_its_protobuf_decoding(server, db, signal):
    name, message_type = SPEC_EXAMPLES[signal]
    request = from_testdata(name, message_type)
    await take_rows(db)
    await send(server, signal, request.SerializeToString(), "application/x-protobuf")
    expected = await take_rows(db)
    assert expected["system_events"] or expected["performance_metrics"]
    await send(server, signal, (TESTDATA / f"{name}.json").read_bytes(), "application/json")
    assert await take_rows(db) == expected


def test_twins_really_differ_from_the_canonical_json():
    """The variants must exercise what they claim (a twin equal to the canonical JSON proves nothing)."""
    request = rich_traces()
    canonical = json_twin(request, "canonical").decode()
    assert "5b8efff798038103d269b633813fc60c" in canonical and '"startTimeUnixNano": "' in canonical
    assert "5B8EFFF798038103D269B633813FC60C" in json_twin(request, "uppercase-hex").decode()
    assert f'"startTimeUnixNano": {T0}' in json_twin(request, "int64-numbers").decode()
    assert '"SPAN_KIND_SERVER"' in json_twin(request, "enum-names").decode()
    assert '"start_time_unix_nano"' in json_twin(request, "snake-case").decode()
    assert "unknownBefore" in json_twin(request, "unknown-fields").decode()
