from __future__ import annotations

import uuid
from datetime import UTC, datetime

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from exporters.postgres.mapping import Mapped, map_traces
from exporters.postgres.mapping.common import Mapper
from exporters.postgres.schema import OTEL_SCOPES, OTEL_SPAN_EVENTS, OTEL_SPANS
from tests.system_events_view import system_events_dicts

from .builders import RECEIVED_NS, T0, Ids, kvs, loads, resource

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")


def request(spans, res=None, scope=None, schema_url="") -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=res if res is not None else resource({"service.name": "checkout", "host.name": "h1"}),
        scope_spans=[ScopeSpans(scope=scope, spans=spans, schema_url=schema_url)],
    )])  # fmt: skip


def span(**kw) -> Span:
    fields = {"trace_id": TRACE, "span_id": SPAN, "name": "GET /orders", "start_time_unix_nano": T0,
              "end_time_unix_nano": T0 + 1_500_000}  # fmt: skip
    fields.update(kw)
    return Span(**fields)


def rows(mapped: Mapped) -> list[dict]:
    """The rows as the system_events view shows them."""
    return system_events_dicts(mapped)


def test_span_golden():
    req = request(
        [span(
            parent_span_id=PARENT, kind=Span.SPAN_KIND_SERVER, trace_state="rojo=00f067aa0ba902b7",
            flags=0x301, attributes=kvs({"http.route": "/orders", "http.response.status_code": 500}),
            dropped_attributes_count=1, dropped_events_count=2, dropped_links_count=3,
            status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
            links=[Span.Link(trace_id=bytes(range(16)), span_id=bytes(range(8)), trace_state="a=b",
                             attributes=kvs({"link.kind": "follows"}), dropped_attributes_count=4, flags=1)],
            events=[Span.Event(time_unix_nano=T0 + 1000, name="exception",
                               attributes=kvs({"exception.type": "ValueError", "exception.message": "bad",
                                               "exception.stacktrace": "Traceback..."}),
                               dropped_attributes_count=5),
                    Span.Event(name="cache.miss")],
        )],
        scope=InstrumentationScope(name="flask", version="3.0", attributes=kvs({"a": 1})),
        schema_url="https://opentelemetry.io/schemas/1.26.0",
    )  # fmt: skip
    mapped = map_traces(req, RECEIVED_NS, new_id=Ids())
    rid = Mapper().resource_row(resource({"service.name": "checkout", "host.name": "h1"}), "")[0]
    assert (mapped.items, mapped.rejected, mapped.message) == (1, 0, "")
    assert mapped.resources == {rid: (rid, "checkout", '{"host.name":"h1","service.name":"checkout"}', None)}
    span_row, exc_row, miss_row = rows(mapped)
    meta = {"scope": {"name": "flask", "version": "3.0", "attributes": {"a": 1}},
            "schema_url": "https://opentelemetry.io/schemas/1.26.0"}  # fmt: skip
    ts = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert {**span_row, "payload": loads(span_row["payload"]), "metadata": loads(span_row["metadata"])} == {
        "id": uuid.UUID(int=1),
        "event_type": "span",
        "source": "checkout",
        "severity": "error",
        "payload": {
            "kind": "SPAN_KIND_SERVER",
            "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
            "attributes": {"http.route": "/orders", "http.response.status_code": 500},
            "start_time_unix_nano": T0,
            "end_time_unix_nano": T0 + 1_500_000,
            "links": [{"trace_id": "000102030405060708090a0b0c0d0e0f", "span_id": "0001020304050607",
                       "attributes": {"link.kind": "follows"}, "trace_state": "a=b", "flags": 1,
                       "dropped_attributes_count": 4}],
            "trace_state": "rojo=00f067aa0ba902b7",
            "flags": 0x301,
            "dropped_attributes_count": 1,
            "dropped_events_count": 2,
            "dropped_links_count": 3,
        },
        "timestamp": ts,
        "metadata": meta,
        "service_name": "checkout",
        "resource_id": rid,
        "trace_id": uuid.UUID("5b8efff7-9803-8103-d269-b633813fc60c"),
        "span_id": "eee19b7ec3c1b174",
        "parent_span_id": "eee19b7ec3c1b173",
        "name": "GET /orders",
        "duration_ms": 1.5,
    }  # fmt: skip
    assert isinstance(span_row["trace_id"], uuid.UUID)
    assert span_row["metadata"] == exc_row["metadata"]
    assert {**exc_row, "payload": loads(exc_row["payload"]), "metadata": None} == {
        "id": uuid.UUID(int=2),
        "event_type": "span_event",
        "source": "checkout",
        "severity": "error",
        "payload": {
            "span_name": "GET /orders",
            "attributes": {"exception.type": "ValueError", "exception.message": "bad",
                           "exception.stacktrace": "Traceback..."},
            "time_unix_nano": T0 + 1000,
            "dropped_attributes_count": 5,
        },
        "timestamp": datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC),
        "metadata": None,
        "service_name": "checkout",
        "resource_id": rid,
        "trace_id": span_row["trace_id"],
        "span_id": "eee19b7ec3c1b174",
        "parent_span_id": None,
        "name": "exception",
        "duration_ms": None,
    }  # fmt: skip
    # an event without a time takes the span's timestamp
    assert miss_row["severity"] == "info"
    assert miss_row["timestamp"] == ts
    assert loads(miss_row["payload"]) == {"span_name": "GET /orders", "attributes": {}, "time_unix_nano": 0}


def test_minimal_span_payload_and_defaults():
    [row] = rows(map_traces(request([span()], res=resource({}), scope=None), RECEIVED_NS, new_id=Ids()))
    assert row["severity"] == "info"
    assert row["source"] == row["service_name"] == "unknown_service"
    assert row["parent_span_id"] is None
    assert row["metadata"] == "{}"
    assert loads(row["payload"]) == {
        "kind": "SPAN_KIND_UNSPECIFIED",
        "status": {"code": "STATUS_CODE_UNSET"},
        "attributes": {},
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 1_500_000,
    }


def test_status_ok_is_info_and_unknown_enum_values_are_kept_as_numbers():
    [row] = rows(map_traces(request([span(kind=9, status=Status(code=1))]), RECEIVED_NS))
    assert row["severity"] == "info"
    p = loads(row["payload"])
    assert p["kind"] == 9
    assert p["status"] == {"code": "STATUS_CODE_OK"}


def test_all_zero_parent_span_id_is_a_root():
    [row] = rows(map_traces(request([span(parent_span_id=bytes(8))]), RECEIVED_NS))
    assert row["parent_span_id"] is None


def test_invalid_ids_are_rejected_and_the_rest_is_stored():
    good = span(span_id=b"\x01" * 8)
    bad = [
        span(trace_id=b"\x01" * 8),  # 8-byte trace id
        span(trace_id=bytes(16)),  # all-zero trace id
        span(trace_id=b""),
        span(span_id=bytes(8)),  # all-zero span id
        span(span_id=b"\x01" * 16),
        span(parent_span_id=b"\x01" * 4),
        span(trace_id=b"\x01" * 8, events=[Span.Event(name="e")]),  # its events go with it
    ]
    mapped = map_traces(request([*bad, good]), RECEIVED_NS)
    assert mapped.items == 8
    assert mapped.rejected == 7
    assert mapped.message == "7 spans rejected: invalid trace_id, span_id or parent_span_id"
    [row] = rows(mapped)
    assert row["span_id"] == "01" * 8
    one = map_traces(request([bad[0], good]), RECEIVED_NS)
    assert one.message == "1 span rejected: invalid trace_id, span_id or parent_span_id"


def test_everything_rejected_yields_no_rows_and_no_resource():
    mapped = map_traces(request([span(trace_id=bytes(16))]), RECEIVED_NS)
    assert mapped.rows[OTEL_SPANS] == [] and mapped.rows[OTEL_SPAN_EVENTS] == []
    assert mapped.resources == {}
    assert (mapped.items, mapped.rejected) == (1, 1)


def test_empty_request():
    mapped = map_traces(ExportTraceServiceRequest(), RECEIVED_NS)
    assert mapped == Mapped({OTEL_SPANS: [], OTEL_SPAN_EVENTS: [], OTEL_SCOPES: []}, {}, 0, 0, "")


def test_start_zero_falls_back_to_received_time_and_has_no_duration():
    [row] = rows(map_traces(request([span(start_time_unix_nano=0)]), RECEIVED_NS))
    assert row["timestamp"] == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert row["duration_ms"] is None


def test_end_before_start_or_unset_has_no_duration():
    [a, b] = rows(map_traces(request([span(end_time_unix_nano=T0 - 1), span(end_time_unix_nano=0)]), RECEIVED_NS))
    assert a["duration_ms"] is None
    assert b["duration_ms"] is None
    [c] = rows(map_traces(request([span(end_time_unix_nano=T0)]), RECEIVED_NS))
    assert c["duration_ms"] == 0.0


def test_huge_timestamps_still_map():
    [row] = rows(map_traces(request([span(start_time_unix_nano=2**64 - 1, end_time_unix_nano=2**64 - 1)]),
                            RECEIVED_NS))  # fmt: skip
    assert row["timestamp"].year == 2554
    assert row["duration_ms"] == 0.0


def test_nul_bytes_are_replaced_everywhere():
    req = request(
        [span(name="a\x00b", attributes=kvs({"k\x00": "v\x00"}), trace_state="x\x00",
              events=[Span.Event(name="ev\x00", attributes=kvs({"m": "\x00"}))])],
        res=resource({"service.name": "svc\x00"}),
        scope=InstrumentationScope(name="sc\x00ope"),
    )  # fmt: skip
    span_row, ev_row = rows(map_traces(req, RECEIVED_NS))
    for row in (span_row, ev_row):
        for col, value in row.items():
            assert "\x00" not in str(value), col
            assert "\\u0000" not in str(value), col
    assert span_row["name"] == "a\ufffdb"
    assert span_row["source"] == span_row["service_name"] == "svc\ufffd"
    assert loads(span_row["payload"])["attributes"] == {"k\ufffd": "v\ufffd"}
    assert loads(span_row["metadata"]) == {"scope": {"name": "sc\ufffdope"}}
    assert ev_row["name"] == "ev\ufffd"
    assert loads(ev_row["payload"])["span_name"] == "a\ufffdb"


def test_ids_are_distinct_with_the_default_generator():
    spans = [span(span_id=i.to_bytes(8, "big"), events=[Span.Event(name="e")] * 3) for i in range(1, 201)]
    mapped = map_traces(request(spans), RECEIVED_NS)
    ids = [r[0] for r in mapped.rows[OTEL_SPANS] + mapped.rows[OTEL_SPAN_EVENTS]]
    assert len(ids) == 800
    assert len(set(ids)) == 800
    assert all(hasattr(i, "bytes") and len(i.bytes) == 16 for i in ids)


def test_resources_are_deduplicated_and_shared_trace_ids_map_to_equal_uuids():
    res_a = resource({"service.name": "a", "x": 1})
    res_a2 = resource({"x": 1, "service.name": "a"})
    res_b = resource({"service.name": "b"})
    req = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=r, scope_spans=[ScopeSpans(spans=[span()])]) for r in (res_a, res_a2, res_b)
    ])  # fmt: skip
    mapped = map_traces(req, RECEIVED_NS)
    assert len(mapped.resources) == 2
    assert {v[1] for v in mapped.resources.values()} == {"a", "b"}
    assert all(k == v[0] for k, v in mapped.resources.items())
    services = [r["service_name"] for r in rows(mapped)]
    assert services == ["a", "a", "b"]
    assert len({r["trace_id"] for r in rows(mapped)}) == 1
