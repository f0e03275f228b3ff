"""OTLP encodings: Content-Type parsing, protobuf and OTLP/JSON decoding, encoding, Status bodies."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_ERROR
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sidecar.pipeline.errors import DecodeError, UnsupportedMediaTypeError
from sidecar.pipeline.signals import LOGS, METRICS, SIGNALS, TRACES, Signal
from sidecar.receivers.encoding import (
    JSON,
    PROTOBUF,
    decode_request,
    encode_message,
    media_type,
    message_from_otlp_json,
    status_body,
)
from tests.otlp_json import message_to_otlp_json, otlp_json

TESTDATA = Path(__file__).parent.parent / "testdata" / "otlp"

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")
LINK_TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
LINK_SPAN_ID = bytes.fromhex("b7ad6b7169203331")
T0 = 1_700_000_000_123_456_789  # above 2**53: int64 precision matters


# --- Content-Type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/x-protobuf", PROTOBUF),
        ("application/protobuf", PROTOBUF),
        ("Application/X-Protobuf", PROTOBUF),
        ("application/json", JSON),
        ("APPLICATION/JSON", JSON),
        ("APPLICATION/JSON; charset=utf-8", JSON),
        ("application/json;charset=UTF-8", JSON),
        ('application/json; charset="utf-8"', JSON),
        ('application/json; a="b;c"; d=e', JSON),
        (" application/json ", JSON),
        ("application/json;", JSON),
    ],
)
def test_media_type_accepted(content_type: str, expected: str) -> None:
    assert media_type(content_type) == expected


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/xml",
        "application/jsonx",
        "application/json-seq",
        "application/json/extra",
        "application",
        "json",
        "application/json; charset",  # malformed parameter: Go's ParseMediaType fails too
        "application/json; =utf-8",
        "application/grpc",
    ],
)
def test_media_type_rejected(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as info:
        media_type(content_type)
    assert "application/x-protobuf" in str(info.value)
    assert "application/json" in str(info.value)


def test_decode_request_accepts_a_raw_content_type() -> None:
    request = build_traces()
    body = orjson.dumps(message_to_otlp_json(request))
    assert decode_request(TRACES, body, "application/json; charset=utf-8") == request


def test_decode_request_rejects_an_unsupported_media() -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        decode_request(TRACES, b"", "text/plain")


# --- requests to test with ---------------------------------------------------------------------


def attrs(target: Any, **values: Any) -> None:
    for key, value in values.items():
        kv = target.add(key=key)
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        elif isinstance(value, bytes):
            kv.value.bytes_value = value
        else:
            kv.value.string_value = value


def build_traces() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    attrs(rs.resource.attributes, **{"service.name": "checkout", "host.cpus": 8})
    ss = rs.scope_spans.add()
    ss.scope.name = "checkout.http"
    ss.scope.version = "1.0"
    span = ss.spans.add(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        trace_state="k=v",
        flags=0x301,
        name="POST /cart",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 5,
        dropped_attributes_count=2,
        dropped_events_count=1,
        dropped_links_count=3,
    )
    attrs(span.attributes, method="POST", status=201, ratio=0.25, cached=False, blob=b"\x00\xff")
    nested = span.attributes.add(key="nested")
    nested.value.array_value.values.add(string_value="a")
    nested.value.array_value.values.add().kvlist_value.values.add(key="k", value=AnyValue(int_value=-7))
    event = span.events.add(time_unix_nano=T0 + 1, name="exception", dropped_attributes_count=1)
    attrs(event.attributes, **{"exception.message": "boom"})
    link = span.links.add(trace_id=LINK_TRACE_ID, span_id=LINK_SPAN_ID, trace_state="a=b", flags=1)
    attrs(link.attributes, reason="batch")
    span.status.code = Status.STATUS_CODE_ERROR
    span.status.message = "failed"
    ss.spans.add(trace_id=TRACE_ID, span_id=PARENT_ID, name="root", kind=Span.SPAN_KIND_INTERNAL)
    return request


def build_metrics() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    attrs(rm.resource.attributes, **{"service.name": "checkout"})
    sm = rm.scope_metrics.add()
    sm.scope.name = "checkout.meter"

    gauge = sm.metrics.add(name="cpu", unit="1", description="CPU use").gauge
    gauge_point = gauge.data_points.add(time_unix_nano=T0, as_double=0.75)
    gauge_point.exemplars.add(time_unix_nano=T0, as_double=0.9, trace_id=TRACE_ID, span_id=SPAN_ID)
    gauge.data_points.add(time_unix_nano=T0, as_double=math.inf)

    total = sm.metrics.add(name="requests").sum
    total.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    total.is_monotonic = True
    point = total.data_points.add(start_time_unix_nano=T0 - 10, time_unix_nano=T0, as_int=-(2**63), flags=1)
    attrs(point.attributes, route="/cart")
    exemplar = point.exemplars.add(time_unix_nano=T0, as_int=2**62, trace_id=LINK_TRACE_ID, span_id=LINK_SPAN_ID)
    attrs(exemplar.filtered_attributes, user="u1")

    histogram = sm.metrics.add(name="latency", unit="ms").histogram
    histogram.aggregation_temporality = 1
    hp = histogram.data_points.add(
        start_time_unix_nano=T0 - 10,
        time_unix_nano=T0,
        count=2**64 - 1,
        sum=12.5,
        bucket_counts=[1, 0, 2**64 - 2],
        explicit_bounds=[-math.inf, 0.5, 1e300],
        min=-1.5,
        max=9.0,
    )
    hp.exemplars.add(time_unix_nano=T0, as_double=-0.0, trace_id=TRACE_ID, span_id=SPAN_ID)

    exponential = sm.metrics.add(name="size").exponential_histogram
    exponential.aggregation_temporality = 2
    ep = exponential.data_points.add(
        time_unix_nano=T0,
        count=10,
        sum=100.0,
        scale=-3,
        zero_count=1,
        zero_threshold=1e-9,
        min=0.0,
        max=50.0,
    )
    ep.positive.offset = -2
    ep.positive.bucket_counts.extend([1, 2, 3])
    ep.negative.offset = 5
    ep.negative.bucket_counts.extend([4])
    ep.exemplars.add(as_int=3, trace_id=TRACE_ID, span_id=SPAN_ID)

    summary = sm.metrics.add(name="gc").summary
    sp = summary.data_points.add(time_unix_nano=T0, count=3, sum=1.5)
    sp.quantile_values.add(quantile=0.0, value=0.1)
    sp.quantile_values.add(quantile=1.0, value=0.9)
    return request


def build_logs() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    attrs(rl.resource.attributes, **{"service.name": "checkout"})
    sl = rl.scope_logs.add(schema_url="s")
    sl.scope.name = "checkout.logger"
    record = sl.log_records.add(
        time_unix_nano=T0,
        observed_time_unix_nano=T0 + 1,
        severity_number=SEVERITY_NUMBER_ERROR,
        severity_text="ERROR",
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        flags=1,
        dropped_attributes_count=4,
        event_name="checkout.failed",
    )
    record.body.kvlist_value.values.add(key="msg", value=AnyValue(string_value="payment declined"))
    attrs(record.attributes, code=402, retry=True)
    sl.log_records.add(time_unix_nano=T0, body=AnyValue(string_value="no trace context"))
    return request


BUILDERS = {"traces": (TRACES, build_traces), "metrics": (METRICS, build_metrics), "logs": (LOGS, build_logs)}


# --- OTLP/JSON spellings -----------------------------------------------------------------------

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT64,
}
_HEX_KEYS = {"traceId", "spanId", "parentSpanId"}


def respell(
    obj: dict[str, Any],
    descriptor: Descriptor,
    *,
    upper_hex: bool = False,
    snake_case: bool = False,
    int64_numbers: bool = False,
    enum_names: bool = False,
) -> dict[str, Any]:
    """Re-spell canonical OTLP/JSON (camelCase keys, lowercase hex, int64 strings, int enums)."""
    options = {
        "upper_hex": upper_hex,
        "snake_case": snake_case,
        "int64_numbers": int64_numbers,
        "enum_names": enum_names,
    }
    out: dict[str, Any] = {}
    for key, value in obj.items():
        field = descriptor.fields_by_camelcase_name[key]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = field.message_type
            value = [respell(v, sub, **options) for v in value] if field.is_repeated else respell(value, sub, **options)
        elif key in _HEX_KEYS and upper_hex:
            value = value.upper()
        elif field.type in _INT64_TYPES and int64_numbers:
            value = [int(v) for v in value] if field.is_repeated else int(value)
        elif field.type == FieldDescriptor.TYPE_ENUM and enum_names:
            value = field.enum_type.values_by_number[value].name
        out[field.name if snake_case else key] = value
    return out


SPELLINGS = {
    "canonical": {},
    "upper_hex": {"upper_hex": True},
    "snake_case": {"snake_case": True},
    "int64_numbers": {"int64_numbers": True},
    "enum_names": {"enum_names": True},
    "everything": {"upper_hex": True, "snake_case": True, "int64_numbers": True, "enum_names": True},
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("signal_name", sorted(BUILDERS))
def test_json_spellings_decode_to_the_original(signal_name: str, spelling: str) -> None:
    signal, build = BUILDERS[signal_name]
    request = build()
    obj = respell(message_to_otlp_json(request), request.DESCRIPTOR, **SPELLINGS[spelling])
    assert decode_request(signal, orjson.dumps(obj), JSON) == request


@pytest.mark.parametrize("signal_name", sorted(BUILDERS))
def test_protobuf_round_trip(signal_name: str) -> None:
    signal, build = BUILDERS[signal_name]
    request = build()
    assert decode_request(signal, encode_message(request, PROTOBUF), PROTOBUF) == request


@pytest.mark.parametrize("signal_name", sorted(BUILDERS))
def test_json_round_trip(signal_name: str) -> None:
    signal, build = BUILDERS[signal_name]
    request = build()
    assert decode_request(signal, otlp_json(request), JSON) == request


def test_canonical_json_uses_lowercase_hex_ids_and_integer_enums() -> None:
    span = message_to_otlp_json(build_traces())["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "eee19b7ec3c1b174"
    assert span["parentSpanId"] == "eee19b7ec3c1b173"
    assert span["links"][0]["traceId"] == LINK_TRACE_ID.hex()
    assert span["kind"] == 2
    assert span["status"] == {"code": 2, "message": "failed"}
    assert span["startTimeUnixNano"] == str(T0)
    blob = next(a for a in span["attributes"] if a["key"] == "blob")
    assert blob["value"]["bytesValue"] == base64.b64encode(b"\x00\xff").decode()  # only ids are hex


def test_canonical_json_hex_ids_in_exemplars_and_logs() -> None:
    metrics = message_to_otlp_json(build_metrics())
    exemplar = metrics["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    assert exemplar["exemplars"][0]["traceId"] == TRACE_ID.hex()
    record = message_to_otlp_json(build_logs())["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert (record["traceId"], record["spanId"]) == (TRACE_ID.hex(), SPAN_ID.hex())


# --- golden payloads (the OTLP spec's example shape) -------------------------------------------


@pytest.mark.parametrize(("name", "signal"), [("trace", TRACES), ("metrics", METRICS), ("logs", LOGS)])
def test_golden_payload(name: str, signal: Signal) -> None:
    expected = text_format.Parse((TESTDATA / f"{name}.textproto").read_text(), signal.request_type())
    body = (TESTDATA / f"{name}.json").read_bytes()
    assert b"5B8EFFF798038103D269B633813FC60C" in body
    assert decode_request(signal, body, JSON) == expected


@pytest.mark.parametrize(("name", "signal"), [("trace", TRACES), ("metrics", METRICS), ("logs", LOGS)])
def test_golden_payload_with_int64_numbers(name: str, signal: Signal) -> None:
    expected = text_format.Parse((TESTDATA / f"{name}.textproto").read_text(), signal.request_type())
    obj = orjson.loads((TESTDATA / f"{name}.json").read_bytes())
    numbers = respell(obj, signal.request_type.DESCRIPTOR, int64_numbers=True)
    assert decode_request(signal, orjson.dumps(numbers), JSON) == expected


# --- ids ---------------------------------------------------------------------------------------


def span_json(**fields: Any) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [fields]}]}]})


def first_span(request: Message) -> Span:
    return request.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[attr-defined]


def gauge_json(as_double: Any) -> bytes:
    point = {"asDouble": as_double}
    metric = {"gauge": {"dataPoints": [point]}}
    return orjson.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]})


def attribute_json(value: dict[str, Any]) -> bytes:
    attribute = {"key": "k", "value": value}
    return orjson.dumps({"resourceLogs": [{"resource": {"attributes": [attribute]}}]})


def test_mixed_case_hex_id() -> None:
    span = first_span(decode_request(TRACES, span_json(traceId="5b8EFFF798038103d269B633813FC60C"), JSON))
    assert span.trace_id == TRACE_ID


@pytest.mark.parametrize("key", ["traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"])
def test_empty_id_means_unset(key: str) -> None:
    span = first_span(decode_request(TRACES, span_json(**{key: "", "name": "x"}), JSON))
    assert span == Span(name="x")


def test_hex_of_the_wrong_length_is_passed_through() -> None:
    # The mapping step rejects that one span (partial success); decoding must not fail the batch.
    span = first_span(decode_request(TRACES, span_json(traceId="01020304", spanId="0A0B0C"), JSON))
    assert (span.trace_id, span.span_id) == (b"\x01\x02\x03\x04", b"\x0a\x0b\x0c")


def test_invalid_hex_names_the_field() -> None:
    with pytest.raises(DecodeError, match=r'^invalid traceId "xyz": not hex'):
        decode_request(TRACES, span_json(traceId="xyz"), JSON)


def test_invalid_hex_error_gives_the_path() -> None:
    with pytest.raises(DecodeError) as info:
        decode_request(TRACES, span_json(name="ok", parent_span_id="nothex!!"), JSON)
    assert str(info.value) == (
        'invalid parent_span_id "nothex!!": not hex (at resourceSpans[0].scopeSpans[0].spans[0].parent_span_id)'
    )


BASE64_TRACE_ID = base64.b64encode(TRACE_ID).decode()  # "W47/95gDgQPSabYzgT/GDA=="
BASE64_SPAN_ID = base64.b64encode(SPAN_ID).decode()


@pytest.mark.parametrize(
    ("signal", "obj", "key"),
    [
        (TRACES, {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": BASE64_TRACE_ID}]}]}]}, "traceId"),
        (TRACES, {"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": BASE64_SPAN_ID}]}]}]}, "spanId"),
        (
            TRACES,
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{"traceId": BASE64_TRACE_ID}]}]}]}]},
            "traceId",
        ),
        (LOGS, {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"spanId": BASE64_SPAN_ID}]}]}]}, "spanId"),
        (
            METRICS,
            {
                "resourceMetrics": [
                    {
                        "scopeMetrics": [
                            {"metrics": [{"gauge": {"dataPoints": [{"exemplars": [{"traceId": BASE64_TRACE_ID}]}]}}]}
                        ]
                    }
                ]
            },
            "traceId",
        ),
    ],
)
def test_base64_ids_are_rejected(signal: Signal, obj: dict[str, Any], key: str) -> None:
    with pytest.raises(DecodeError, match=f'^invalid {key} ".*": not hex'):
        decode_request(signal, orjson.dumps(obj), JSON)


@pytest.mark.parametrize("value", [123, True, ["ab"], {"a": "b"}])
def test_id_of_the_wrong_json_type_is_rejected(value: Any) -> None:
    with pytest.raises(DecodeError, match=r"^invalid traceId .*: expected a hex string"):
        decode_request(TRACES, span_json(traceId=value), JSON)


def test_hex_with_whitespace_is_rejected() -> None:
    with pytest.raises(DecodeError, match="not hex"):
        decode_request(TRACES, span_json(spanId="eee19b7e c3c1b174"), JSON)


# --- JSON leniency and strictness ----------------------------------------------------------------


def test_unknown_fields_are_ignored_everywhere() -> None:
    obj = {
        "futureTopLevel": {"deep": [1, 2, {"x": None}]},
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "k", "value": {"stringValue": "v", "futureValue": 1}}]},
                "futureField": "x",
                "scopeSpans": [{"spans": [{"name": "s", "futureSpanField": [{"a": 1}]}], "futureScope": True}],
            }
        ],
    }
    request = decode_request(TRACES, orjson.dumps(obj), JSON)
    assert first_span(request).name == "s"
    attribute = request.resource_spans[0].resource.attributes[0]
    assert attribute == KeyValue(key="k", value=AnyValue(string_value="v"))


def test_null_means_unset() -> None:
    request = decode_request(TRACES, span_json(name=None, traceId=None, status=None, attributes=None, kind=None), JSON)
    assert first_span(request) == Span()


def test_empty_object_marks_a_message_present() -> None:
    span = first_span(decode_request(TRACES, span_json(status={}), JSON))
    assert span.HasField("status")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NaN", math.nan),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        ("1.5", 1.5),
        (2, 2.0),
        (-0.25, -0.25),
    ],
)
def test_double_spellings(value: Any, expected: float) -> None:
    request = decode_request(METRICS, gauge_json(value), JSON)
    got = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].as_double
    assert got == expected or (math.isnan(expected) and math.isnan(got))


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "abc", "", True, [1.0], {"v": 1}])
def test_bad_doubles_are_rejected(value: Any) -> None:
    with pytest.raises(DecodeError, match=r"^invalid asDouble"):
        decode_request(METRICS, gauge_json(value), JSON)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("18446744073709551615", 2**64 - 1),
        (18446744073709551615, 2**64 - 1),
        ("1e3", 1000),
        ("5.0", 5),
        (7.0, 7),
        ("+12", 12),
        ("0", 0),
    ],
)
def test_uint64_spellings(value: Any, expected: int) -> None:
    span = first_span(decode_request(TRACES, span_json(startTimeUnixNano=value), JSON))
    assert span.start_time_unix_nano == expected


@pytest.mark.parametrize(
    "value", ["-1", "18446744073709551616", "1.5", 1.5, "1e400", "1e99999999", " 1", "0x10", "abc", True, [1]]
)
def test_bad_uint64_values_are_rejected(value: Any) -> None:
    with pytest.raises(DecodeError, match=r"^invalid startTimeUnixNano"):
        decode_request(TRACES, span_json(startTimeUnixNano=value), JSON)


def test_int64_extremes() -> None:
    for value in ("-9223372036854775808", "9223372036854775807"):
        request = decode_request(LOGS, attribute_json({"intValue": value}), JSON)
        assert request.resource_logs[0].resource.attributes[0].value.int_value == int(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2), ("SPAN_KIND_SERVER", 2), ("3", 3), (99, 99), ("SPAN_KIND_FROM_THE_FUTURE", 0)],
)
def test_enum_spellings(value: Any, expected: int) -> None:
    # Unknown numbers are kept (open enums); unknown names are ignored like unknown fields.
    assert first_span(decode_request(TRACES, span_json(kind=value), JSON)).kind == expected


@pytest.mark.parametrize("value", [2**31, True, 1.5, [2]])
def test_bad_enums_are_rejected(value: Any) -> None:
    with pytest.raises(DecodeError, match=r"^invalid kind"):
        decode_request(TRACES, span_json(kind=value), JSON)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"name": 5}, "name"),
        ({"name": ["x"]}, "name"),
        ({"attributes": {"key": "k"}}, "attributes"),
        ({"status": "ok"}, "status"),
        ({"status": [{}]}, "status"),
        ({"flags": "x"}, "flags"),
        ({"flags": -1}, "flags"),
        ({"droppedAttributesCount": 2**32}, "droppedAttributesCount"),
    ],
)
def test_wrong_json_types_are_rejected(fields: dict[str, Any], key: str) -> None:
    with pytest.raises(DecodeError, match=f"^invalid {key}"):
        decode_request(TRACES, span_json(**fields), JSON)


def test_null_array_element_is_rejected() -> None:
    with pytest.raises(DecodeError, match="expected an object"):
        decode_request(TRACES, span_json(attributes=[None]), JSON)


def test_bool_must_be_a_json_bool() -> None:
    with pytest.raises(DecodeError, match=r"^invalid boolValue"):
        decode_request(LOGS, attribute_json({"boolValue": "true"}), JSON)


@pytest.mark.parametrize("text", ["3q2+7w==", "3q2-7w"])
def test_bytes_values_are_base64_standard_or_url_safe(text: str) -> None:
    request = decode_request(LOGS, attribute_json({"bytesValue": text}), JSON)
    assert request.resource_logs[0].resource.attributes[0].value.bytes_value == b"\xde\xad\xbe\xef"


def test_bad_base64_bytes_value_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"^invalid bytesValue"):
        decode_request(LOGS, attribute_json({"bytesValue": "not base64!"}), JSON)


def test_the_later_spelling_of_a_field_wins() -> None:
    # The Collector's decoder treats "traceId" and "trace_id" as one key; the last one wins.
    span = first_span(decode_request(TRACES, span_json(name="a", traceId="01", trace_id="02"), JSON))
    assert span.trace_id == b"\x02"


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null", b"true"])
def test_top_level_must_be_an_object(body: bytes) -> None:
    with pytest.raises(DecodeError, match="must be a JSON object"):
        decode_request(TRACES, body, JSON)


@pytest.mark.parametrize("body", [b"{", b"{}x", b"{'a': 1}", b'{"a": NaN}', b"   ", b'{"a":1,}'])
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^invalid JSON"):
        decode_request(TRACES, body, JSON)


@pytest.mark.parametrize("body", [b'{"resourceSpans": "\xff"}', b'{"\xc3\x28": 1}', b'{"a": "\\ud800"}'])
def test_invalid_utf8_json(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(TRACES, body, JSON)


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("media", [PROTOBUF, JSON])
def test_empty_body_is_an_empty_request(signal: Signal, media: str) -> None:
    assert decode_request(signal, b"", media) == signal.request_type()


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.name)
def test_empty_json_object_is_an_empty_request(signal: Signal) -> None:
    assert decode_request(signal, b"{}", JSON) == signal.request_type()


# --- nesting -------------------------------------------------------------------------------------


def log_with_nested_body(levels: int) -> bytes:
    """A log whose body is `levels` arrayValues deep (3 JSON levels each), written as text because
    orjson.dumps stops at 254 levels."""
    value = '{"arrayValue":{"values":[' * levels + '{"stringValue":"leaf"}' + "]}}" * levels
    return ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + value + "}]}]}]}").encode()


def test_deeply_nested_json_arrays() -> None:
    body = b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(DecodeError):
        decode_request(TRACES, body, JSON)


def test_deeply_nested_kvlists() -> None:
    levels = 100_000
    opening = '{"kvlistValue":{"values":[{"key":"k","value":' * levels
    body = (
        '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":'
        + opening
        + '{"stringValue":"x"}'
        + "}}]}" * levels
        + "}]}]}]}"
    ).encode()
    with pytest.raises(DecodeError):
        decode_request(LOGS, body, JSON)


def test_nesting_within_json_limits_but_beyond_protobuf_depth() -> None:
    with pytest.raises(DecodeError, match="nested deeper than 100 messages"):
        decode_request(LOGS, log_with_nested_body(200), JSON)


def test_reasonable_nesting_decodes_like_protobuf() -> None:
    body = log_with_nested_body(40)
    request = decode_request(LOGS, body, JSON)
    assert decode_request(LOGS, request.SerializeToString(), PROTOBUF) == request


def test_deeply_nested_protobuf() -> None:
    # AnyValue.array_value (field 5) -> ArrayValue.values (field 1), 5000 levels deep.
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(5000):
        array = b"\x0a" + varint(len(value)) + value
        value = b"\x2a" + varint(len(array)) + array
    record = b"\x2a" + varint(len(value)) + value  # LogRecord.body = 5
    scope_logs = b"\x12" + varint(len(record)) + record  # ScopeLogs.log_records = 2
    resource_logs = b"\x12" + varint(len(scope_logs)) + scope_logs  # ResourceLogs.scope_logs = 2
    request = b"\x0a" + varint(len(resource_logs)) + resource_logs  # resource_logs = 1
    with pytest.raises(DecodeError, match=r"^invalid protobuf"):
        decode_request(LOGS, request, PROTOBUF)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# --- protobuf ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05abc", b"\x0a\xff\xff\xff\xff\x0f", b"garbage!"])
def test_malformed_protobuf(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^invalid protobuf ExportTraceServiceRequest"):
        decode_request(TRACES, body, PROTOBUF)


def test_invalid_utf8_in_a_protobuf_string() -> None:
    span = b"\x2a\x02\xc3\x28"  # Span.name (field 5) = invalid UTF-8
    scope_spans = b"\x12" + varint(len(span)) + span
    resource_spans = b"\x12" + varint(len(scope_spans)) + scope_spans
    with pytest.raises(DecodeError):
        decode_request(TRACES, b"\x0a" + varint(len(resource_spans)) + resource_spans, PROTOBUF)


# --- encoding responses ------------------------------------------------------------------------


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.name)
def test_empty_response_encodes_as_empty_object(signal: Signal) -> None:
    assert encode_message(signal.response(), JSON) == b"{}"
    assert encode_message(signal.response(), PROTOBUF) == b""


def test_partial_success_json_shape() -> None:
    body = encode_message(TRACES.response(3, "3 spans had an invalid traceId"), JSON)
    assert orjson.loads(body) == {
        "partialSuccess": {"rejectedSpans": "3", "errorMessage": "3 spans had an invalid traceId"}
    }


def test_partial_success_protobuf() -> None:
    body = encode_message(LOGS.response(2, "bad"), PROTOBUF)
    partial = LOGS.response_type.FromString(body).partial_success
    assert (partial.rejected_log_records, partial.error_message) == (2, "bad")


def test_encode_message_accepts_a_raw_content_type() -> None:
    assert encode_message(METRICS.response(), "application/json; charset=utf-8") == b"{}"


# --- Status bodies -----------------------------------------------------------------------------


def test_status_body_protobuf() -> None:
    status = status_pb2.Status.FromString(status_body(3, "gzip: invalid header", PROTOBUF))
    assert (status.code, status.message, len(status.details)) == (3, "gzip: invalid header", 0)


def test_status_body_json() -> None:
    assert orjson.loads(status_body(3, "gzip: invalid header", JSON)) == {"code": 3, "message": "gzip: invalid header"}


def test_status_body_with_retry_info_protobuf() -> None:
    status = status_pb2.Status.FromString(status_body(14, "queue full", PROTOBUF, retry_after=1.5))
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 500_000_000)


def test_status_body_with_retry_info_json() -> None:
    body = status_body(14, "queue full", JSON, retry_after=2)
    assert orjson.loads(body) == {
        "code": 14,
        "message": "queue full",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
    }
    # ... and it reads back (json_format handles the Any detail) to the protobuf form.
    parsed = message_from_otlp_json(orjson.loads(body), status_pb2.Status)
    assert parsed == status_pb2.Status.FromString(status_body(14, "queue full", PROTOBUF, retry_after=2))


def test_status_body_negative_retry_after_is_zero() -> None:
    status = status_pb2.Status.FromString(status_body(14, "x", PROTOBUF, retry_after=-3))
    info = error_details_pb2.RetryInfo()
    status.details[0].Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (0, 0)


def test_status_body_for_an_unsupported_media_is_protobuf() -> None:
    assert status_pb2.Status.FromString(status_body(3, "x", "text/plain")).message == "x"


# --- fuzzing -----------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_decode_error(signal: Signal, body: bytes, media: str) -> None:
    try:
        message = decode_request(signal, body, media)
    except DecodeError:
        return
    assert isinstance(message, signal.request_type)


@FUZZ
@given(
    signal=st.sampled_from(SIGNALS),
    media=st.sampled_from([PROTOBUF, JSON]),
    body=st.binary(max_size=512),
)
def test_random_bytes_only_raise_decode_error(signal: Signal, media: str, body: bytes) -> None:
    decode_or_decode_error(signal, body, media)


def field_names(descriptor: Descriptor, seen: set[Descriptor] | None = None) -> set[str]:
    """Both spellings of every field name under `descriptor`: keys that reach deep into plans."""
    seen = set() if seen is None else seen
    if descriptor in seen:
        return set()
    seen.add(descriptor)
    names: set[str] = set()
    for field in descriptor.fields:
        names |= {field.name, field.json_name}
        if field.message_type is not None:
            names |= field_names(field.message_type, seen)
    return names


OTLP_KEYS = sorted(set().union(*(field_names(signal.request_type.DESCRIPTOR) for signal in SIGNALS)))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "NaN", "Infinity", "5B8EFFF798038103D269B633813FC60C", "xyz", "1e3", "-1", "3q=="])
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(OTLP_KEYS) | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=40,
)


@FUZZ
@given(
    signal=st.sampled_from(SIGNALS),
    obj=st.dictionaries(st.sampled_from(OTLP_KEYS), json_values, max_size=4),
)
def test_random_otlp_shaped_json_only_raises_decode_error(signal: Signal, obj: dict[str, Any]) -> None:
    decode_or_decode_error(signal, orjson.dumps(obj), JSON)


@FUZZ
@given(
    trace_id=st.binary(max_size=20),
    span_id=st.binary(max_size=12),
    upper=st.booleans(),
    name=st.text(max_size=20),
    start=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_ids_and_int64s_round_trip(trace_id: bytes, span_id: bytes, upper: bool, name: str, start: int) -> None:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=trace_id, span_id=span_id, name=name, start_time_unix_nano=start)
    )
    span.links.add(trace_id=trace_id, span_id=span_id)
    obj = respell(message_to_otlp_json(request), request.DESCRIPTOR, upper_hex=upper, int64_numbers=upper)
    assert decode_request(TRACES, orjson.dumps(obj), JSON) == request
