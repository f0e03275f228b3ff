from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from exporters.postgres.mapping import Mapped, map_logs
from exporters.postgres.mapping.common import Mapper
from exporters.postgres.mapping.logs import severity
from exporters.postgres.schema import OTEL_LOGS, OTEL_SCOPES
from tests.system_events_view import system_events_dicts

from .builders import RECEIVED_NS, T0, Ids, anyv, kvs, loads, resource

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
RES = {"service.name": "worker", "service.instance.id": "w-1"}
HAS_EVENT_NAME = "event_name" in LogRecord.DESCRIPTOR.fields_by_name


def request(records, res=None, scope=None, schema_url="") -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=res if res is not None else resource(RES),
        scope_logs=[ScopeLogs(scope=scope, log_records=records, schema_url=schema_url)],
    )])  # fmt: skip


def rows(mapped: Mapped) -> list[dict]:
    """The rows as the system_events view shows them."""
    return system_events_dicts(mapped)


def one(record: LogRecord, **kw) -> dict:
    mapped = map_logs(request([record], **kw), RECEIVED_NS, new_id=Ids())
    assert (mapped.items, mapped.rejected, mapped.message) == (1, 0, "")
    [row] = rows(mapped)
    return row


def test_log_golden():
    row = one(
        LogRecord(time_unix_nano=T0, observed_time_unix_nano=T0 + 5000, severity_number=17,
                  severity_text="ERROR", body=anyv("payment failed"), flags=1, dropped_attributes_count=2,
                  attributes=kvs({"order.id": 42, "retry": True}), trace_id=TRACE, span_id=SPAN),
        scope=InstrumentationScope(name="app.payments", version="2.1"),
    )  # fmt: skip
    rid = Mapper().resource_row(resource(RES), "")[0]
    assert {**row, "payload": loads(row["payload"])} == {
        "id": uuid.UUID(int=1),
        "event_type": "log",
        "source": "worker",
        "severity": "error",
        "payload": {
            "body": "payment failed",
            "attributes": {"order.id": 42, "retry": True},
            "severity_number": 17,
            "severity_text": "ERROR",
            "time_unix_nano": T0,
            "observed_time_unix_nano": T0 + 5000,
            "flags": 1,
            "dropped_attributes_count": 2,
        },
        "timestamp": datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        "metadata": '{"scope":{"name":"app.payments","version":"2.1"}}',
        "service_name": "worker",
        "resource_id": rid,
        "trace_id": uuid.UUID(bytes=TRACE),
        "span_id": "eee19b7ec3c1b174",
        "parent_span_id": None,
        "name": None,
        "duration_ms": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, None),
        ("text", "text"),
        (12, 12),
        (1.5, 1.5),
        (True, True),
        (b"\x01\x02", "AQI="),
        (["a", 1], ["a", 1]),
        ({"msg": "hi", "nested": {"n": [1.0, None]}}, {"msg": "hi", "nested": {"n": [1.0, None]}}),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
    ],
)
def test_body_keeps_its_type(body, expected):
    rec = LogRecord(time_unix_nano=T0)
    if body is not None:
        rec.body.CopyFrom(anyv(body))
    assert loads(one(rec)["payload"])["body"] == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [(0, "info"), (1, "trace"), (4, "trace"), (5, "debug"), (8, "debug"), (9, "info"), (12, "info"),
     (13, "warn"), (16, "warn"), (17, "error"), (20, "error"), (21, "fatal"), (24, "fatal"), (25, "info"),
     (99, "info")],
)  # fmt: skip
def test_severity_from_number(number, expected):
    assert severity(number, "") == expected
    assert one(LogRecord(time_unix_nano=T0, severity_number=number))["severity"] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("TRACE", "trace"), ("finest", "trace"), ("DEBUG", "debug"), ("dbg", "debug"), ("fine", "debug"),
     ("INFO", "info"), ("Information", "info"), ("notice", "info"), ("INFO2", "info"),
     ("WARN", "warn"), ("WARNING", "warn"), ("warning ", "warn"), ("WARN4", "warn"),
     ("ERROR", "error"), ("ERR", "error"), ("severe", "error"), ("alert", "error"),
     ("FATAL", "fatal"), ("CRITICAL", "fatal"), ("crit", "fatal"), ("emerg", "fatal"), ("panic", "fatal"),
     ("bogus", "info"), ("", "info")],
)  # fmt: skip
def test_severity_from_text_when_number_is_unspecified(text, expected):
    assert severity(0, text) == expected
    assert one(LogRecord(time_unix_nano=T0, severity_text=text))["severity"] == expected


def test_severity_number_wins_over_text():
    assert one(LogRecord(time_unix_nano=T0, severity_number=9, severity_text="ERROR"))["severity"] == "info"


def test_event_name_attribute_sets_event_type_and_name():
    row = one(LogRecord(time_unix_nano=T0, attributes=kvs({"event.name": "browser.page_view", "x": 1})))
    assert (row["event_type"], row["name"]) == ("browser.page_view", "browser.page_view")
    assert loads(row["payload"])["attributes"] == {"event.name": "browser.page_view", "x": 1}


def test_non_string_event_name_attribute_is_ignored():
    row = one(LogRecord(time_unix_nano=T0, attributes=kvs({"event.name": 5})))
    assert (row["event_type"], row["name"]) == ("log", None)


@pytest.mark.skipif(not HAS_EVENT_NAME, reason="LogRecord.event_name needs a newer opentelemetry-proto")
def test_event_name_field():
    row = one(LogRecord(time_unix_nano=T0, event_name="session.start"))
    assert (row["event_type"], row["name"]) == ("session.start", "session.start")
    # the attribute wins over the field
    row = one(LogRecord(time_unix_nano=T0, event_name="b", attributes=kvs({"event.name": "a"})))
    assert (row["event_type"], row["name"]) == ("a", "a")


def test_timestamp_fallbacks():
    assert one(LogRecord(time_unix_nano=T0, observed_time_unix_nano=T0 + 10**9))["timestamp"] == datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # fmt: skip
    assert one(LogRecord(observed_time_unix_nano=T0 + 10**9))["timestamp"] == datetime(
        2023, 11, 14, 22, 13, 21, tzinfo=UTC)  # fmt: skip
    assert one(LogRecord())["timestamp"] == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert one(LogRecord(time_unix_nano=2**64 - 1))["timestamp"].year == 2554


def test_absent_and_all_zero_ids_are_none():
    for rec in (LogRecord(), LogRecord(trace_id=bytes(16), span_id=bytes(8))):
        row = one(rec)
        assert row["trace_id"] is None and row["span_id"] is None
    row = one(LogRecord(trace_id=TRACE))
    assert row["trace_id"] == uuid.UUID(bytes=TRACE) and row["span_id"] is None


def test_wrong_length_ids_reject_the_record_and_keep_the_rest():
    mapped = map_logs(request([
        LogRecord(trace_id=b"\x01" * 8, body=anyv("bad trace")),
        LogRecord(span_id=b"\x01" * 16, body=anyv("bad span")),
        LogRecord(trace_id=TRACE, span_id=b"\x01" * 4),
        LogRecord(body=anyv("ok")),
    ]), RECEIVED_NS)  # fmt: skip
    assert (mapped.items, mapped.rejected) == (4, 3)
    assert mapped.message == "3 log records rejected: invalid trace_id or span_id"
    [row] = rows(mapped)
    assert loads(row["payload"])["body"] == "ok"


def test_nul_bytes_are_replaced_everywhere():
    row = one(LogRecord(body=anyv({"m\x00": "a\x00"}), severity_text="WARN\x00",
                        attributes=kvs({"event.name": "ev\x00", "k": "\x00"})),
              res=resource({"service.name": "s\x00"}),
              scope=InstrumentationScope(version="\x00"))  # fmt: skip
    for col, value in row.items():
        assert "\x00" not in str(value) and "\\u0000" not in str(value), col
    assert (row["event_type"], row["name"], row["service_name"]) == ("ev\ufffd", "ev\ufffd", "s\ufffd")
    assert loads(row["payload"])["body"] == {"m\ufffd": "a\ufffd"}


def test_unknown_service_and_resources():
    mapped = map_logs(request([LogRecord()], res=resource({})), RECEIVED_NS)
    [row] = rows(mapped)
    assert row["source"] == row["service_name"] == "unknown_service"
    [(rid, res)] = mapped.resources.items()
    assert res == (rid, "unknown_service", "{}", None)


def test_empty_request():
    assert map_logs(ExportLogsServiceRequest(), RECEIVED_NS) == Mapped({OTEL_LOGS: [], OTEL_SCOPES: []}, {}, 0, 0, "")
