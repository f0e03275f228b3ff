"""OTLP payload encodings: binary protobuf and OTLP/JSON, plus `google.rpc.Status` error bodies.

OTLP/JSON is proto3 JSON with deviations (opentelemetry-proto `docs/specification.md`): trace and
span ids are case-insensitive hex, not base64; enums are integers (names are tolerated here, as the
Collector does); unknown fields are ignored. Like the Collector we also accept snake_case keys and
64-bit integers as numbers or strings.

`google.protobuf.json_format` reads bytes as base64 and walks every field in pure Python, so
requests are decoded by a per-message-type plan compiled once from the descriptors (about 5x
faster): a dict from both key spellings to a small setter closure. The plan mirrors
json_format's leniency (int64 as strings, "NaN"/"Infinity", enum names, null = unset) and
delegates maps and well-known types, which OTLP doesn't use, to json_format itself.
"""

from __future__ import annotations

import binascii
import math
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf import message as pb_message
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from sidecar.pipeline.errors import DecodeError, UnsupportedMediaTypeError
from sidecar.pipeline.signals import SIGNALS, Signal

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_MEDIA_TYPES = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "application/json": JSON,
}
_SUPPORTED_MEDIA = f"{PROTOBUF}, {JSON}"

# Bytes fields carried as hex in OTLP/JSON ("traceId and spanId ... in all OTLP messages";
# parentSpanId is a span id; profiles' profileId follows the same rule in the Collector).
_HEX_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id", "profile_id"})

# upb refuses binary payloads nested deeper than 100 messages; JSON gets the same bound so both
# encodings accept the same shapes (and Python recursion stays far from its limit).
_MAX_NESTING = 100


# --- Content-Type -----------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
# type/subtype, then `; name=value` parameters, like Go's mime.ParseMediaType (which the Collector
# uses): case-insensitive, parameters ignored but a malformed one rejects the whole header.
_CONTENT_TYPE = re.compile(rf"\s*({_TOKEN}/{_TOKEN})\s*(?:;\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|{_QUOTED})\s*)*;?\s*")


def media_type(content_type: str | None) -> str:
    """PROTOBUF or JSON for a Content-Type header; anything else is UnsupportedMediaTypeError."""
    match = _CONTENT_TYPE.fullmatch(content_type) if content_type else None
    media = _MEDIA_TYPES.get(match.group(1).lower()) if match else None
    if media is None:
        shown = f'"{content_type[:100]}"' if content_type else "missing"
        raise UnsupportedMediaTypeError(f"unsupported Content-Type {shown}; supported: {_SUPPORTED_MEDIA}")
    return media


def _canonical(media: str) -> str:
    return media if media in (PROTOBUF, JSON) else media_type(media)


# --- decoding ---------------------------------------------------------------------------------


def decode_request(signal: Signal, body: bytes, media: str) -> Message:
    """The signal's Export*ServiceRequest from a (decompressed) body; DecodeError if it isn't one.

    An empty body is an empty request in both encodings.
    """
    if _canonical(media) == PROTOBUF:
        return _decode_protobuf(signal.request_type, body)
    return _decode_json(signal.request_type, body)


def _decode_protobuf(message_type: type[Message], body: bytes) -> Message:
    message = message_type()
    try:
        message.ParseFromString(body)
    except (pb_message.DecodeError, RecursionError, ValueError, TypeError) as exc:
        raise DecodeError(f"invalid protobuf {message.DESCRIPTOR.name}: {exc}") from None
    return message


def _decode_json(message_type: type[Message], body: bytes) -> Message:
    if not body:
        return message_type()
    try:
        obj = orjson.loads(body)  # rejects invalid UTF-8, lone surrogates and nesting > 1024
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    return message_from_otlp_json(obj, message_type)


def message_from_otlp_json(obj: Any, message_type: type[Message]) -> Message:
    """Build `message_type` from parsed OTLP/JSON (a dict); DecodeError if it doesn't fit."""
    if not isinstance(obj, dict):
        raise DecodeError(f"OTLP/JSON body must be a JSON object, not {_json_kind(obj)}")
    message = message_type()
    try:
        _merge(message, obj, _plan_for(message.DESCRIPTOR), 0)
    except _Invalid as exc:
        raise DecodeError(exc.describe()) from None
    except RecursionError:  # unreachable with _MAX_NESTING, unless the caller's stack is deep
        raise DecodeError("OTLP/JSON nested too deeply") from None
    return message


class _BadValue(Exception):
    """A JSON value that doesn't fit its field; the message says why (the caller adds the key)."""


class _Invalid(Exception):
    """A decode failure on its way up; `path` collects keys and indexes, innermost first."""

    def __init__(self, reason: str, path: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path if path is not None else []

    def describe(self) -> str:
        if not self.path:
            return self.reason
        where = "".join(p if p.startswith("[") else f".{p}" for p in reversed(self.path))
        return f"{self.reason} (at {where.lstrip('.')})"


_Decoder = Callable[[Message, Any, int], None]
_Converter = Callable[[Any], Any]


class _Plan:
    """How to read one message type: JSON key (camelCase or snake_case) -> (field name, decoder)."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: dict[str, tuple[str, _Decoder]] = {}


def _merge(message: Message, obj: dict[str, Any], plan: _Plan, depth: int) -> None:
    if depth > _MAX_NESTING:
        raise _Invalid(f"nested deeper than {_MAX_NESTING} messages")
    fields = plan.fields
    for key, value in obj.items():
        entry = fields.get(key)
        if entry is None:
            continue  # unknown field: OTLP receivers MUST ignore it
        name, decode = entry
        try:
            if value is None:
                message.ClearField(name)  # proto3 JSON: null means "not set"
            else:
                decode(message, value, depth)
        except _Invalid as exc:
            exc.path.append(key)
            raise
        except (_BadValue, ValueError, TypeError, OverflowError) as exc:
            # ValueError/TypeError: upb's own range and type checks on assignment.
            raise _Invalid(f"invalid {key} {_show(value)}: {exc}", [key]) from None


_PLANS: dict[Descriptor, _Plan] = {}
_PLANS_LOCK = threading.Lock()


def _plan_for(descriptor: Descriptor) -> _Plan:
    plan = _PLANS.get(descriptor)
    if plan is None:
        with _PLANS_LOCK:
            # Built aside and published whole: another thread never sees a half-filled plan.
            building: dict[Descriptor, _Plan] = {}
            plan = _build_plan(descriptor, building)
            _PLANS.update(building)
    return plan


def _build_plan(descriptor: Descriptor, building: dict[Descriptor, _Plan]) -> _Plan:
    plan = _PLANS.get(descriptor) or building.get(descriptor)
    if plan is None:
        plan = building[descriptor] = _Plan()  # registered first: message types are recursive
        for field in descriptor.fields:
            entry = (field.name, _field_decoder(field, building))
            plan.fields[field.name] = entry
            plan.fields[field.json_name] = entry
    return plan


def _field_decoder(field: FieldDescriptor, building: dict[Descriptor, _Plan]) -> _Decoder:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if _is_map(field) or _is_well_known(field.message_type):
            return _json_format_decoder(field)
        plan = _build_plan(field.message_type, building)
        return _repeated_message(field.name, plan) if field.is_repeated else _message(field.name, plan)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum(field)
    convert = _converter(field)
    return _repeated_scalar(field.name, convert) if field.is_repeated else _scalar(field.name, convert)


def _message(name: str, plan: _Plan) -> _Decoder:
    def decode(message: Message, value: Any, depth: int) -> None:
        if not isinstance(value, dict):
            raise _BadValue("expected an object")
        sub = getattr(message, name)
        sub.SetInParent()  # `{}` still marks the field present, as in protobuf
        _merge(sub, value, plan, depth + 1)

    return decode


def _repeated_message(name: str, plan: _Plan) -> _Decoder:
    def decode(message: Message, value: Any, depth: int) -> None:
        if not isinstance(value, list):
            raise _BadValue("expected an array")
        repeated = getattr(message, name)
        if len(repeated):
            del repeated[:]  # the same field spelt twice: last one wins
        add = repeated.add
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise _Invalid(f"invalid element {_show(item)}: expected an object", [f"[{index}]"])
            try:
                _merge(add(), item, plan, depth + 1)
            except _Invalid as exc:
                exc.path.append(f"[{index}]")
                raise

    return decode


def _scalar(name: str, convert: _Converter) -> _Decoder:
    def decode(message: Message, value: Any, depth: int) -> None:
        setattr(message, name, convert(value))

    return decode


def _repeated_scalar(name: str, convert: _Converter) -> _Decoder:
    def decode(message: Message, value: Any, depth: int) -> None:
        if not isinstance(value, list):
            raise _BadValue("expected an array")
        repeated = getattr(message, name)
        if len(repeated):
            del repeated[:]
        repeated.extend([convert(item) for item in value])

    return decode


_SKIP = object()  # an unknown enum name: ignored like an unknown field (json_format does too)


def _enum(field: FieldDescriptor) -> _Decoder:
    by_name = {value.name: value.number for value in field.enum_type.values}
    name = field.name

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is int:
            return value  # open enum: unknown numbers are kept
        if kind is str:
            number = by_name.get(value)
            if number is not None:
                return number
            return int(value) if _INTEGER.fullmatch(value) else _SKIP
        if kind is float and value.is_integer():
            return int(value)
        raise _BadValue("expected an enum number or name")

    if field.is_repeated:

        def decode_repeated(message: Message, value: Any, depth: int) -> None:
            if not isinstance(value, list):
                raise _BadValue("expected an array")
            repeated = getattr(message, name)
            del repeated[:]
            repeated.extend([v for v in map(convert, value) if v is not _SKIP])

        return decode_repeated

    def decode(message: Message, value: Any, depth: int) -> None:
        number = convert(value)
        if number is not _SKIP:
            setattr(message, name, number)

    return decode


def _json_format_decoder(field: FieldDescriptor) -> _Decoder:
    """Maps and well-known types (absent from OTLP today): json_format knows their JSON forms."""
    key = field.json_name

    def decode(message: Message, value: Any, depth: int) -> None:
        try:
            json_format.ParseDict(
                {key: value},
                message,
                ignore_unknown_fields=True,
                max_recursion_depth=max(1, _MAX_NESTING - depth),
            )
        except json_format.ParseError as exc:
            raise _BadValue(str(exc)) from None

    return decode


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type.GetOptions().map_entry


def _is_well_known(descriptor: Descriptor) -> bool:
    return descriptor.full_name.startswith("google.protobuf.")


def _is_hex_id(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_BYTES and field.name in _HEX_ID_FIELDS


# Scalar converters: JSON value -> Python value for setattr; _BadValue says what was expected.

_INTEGER = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_FLOAT_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


def _converter(field: FieldDescriptor) -> _Converter:
    if _is_hex_id(field):
        return _to_hex_id
    return _CONVERTERS[field.type]


def _to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is str:
        if _INTEGER.fullmatch(value):
            return int(value)
        if _NUMBER.fullmatch(value):
            return _integral(Decimal(value))  # "1e3", "5.0": exponent notation is allowed
    elif kind is float and value.is_integer():
        return int(value)
    raise _BadValue("expected an integer")


def _integral(number: Decimal) -> int:
    # Bound the exponent before int(): "1e999999999" would otherwise build a gigantic int.
    if number.adjusted() > 20 or number != number.to_integral_value():
        raise _BadValue("expected an integer in range")
    return int(number)


def _to_float(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value  # orjson never yields NaN/Infinity from numbers
    if kind is int:
        return float(value)
    if kind is str:
        special = _FLOAT_NAMES.get(value)
        if special is not None:
            return special
        if _NUMBER.fullmatch(value):
            number = float(value)
            if math.isfinite(number):
                return number
    raise _BadValue('expected a number, "NaN", "Infinity" or "-Infinity"')


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise _BadValue("expected true or false")


def _to_str(value: Any) -> str:
    if type(value) is str:
        return value
    raise _BadValue("expected a string")


def _to_base64_bytes(value: Any) -> bytes:
    """Standard or URL-safe base64, padding optional (proto3 JSON)."""
    if type(value) is str:
        text = value.translate(_URLSAFE_TO_STD)
        text += "=" * (-len(text) % 4)
        try:
            return binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
    raise _BadValue("expected base64")


def _to_hex_id(value: Any) -> bytes:
    """Hex in either case; "" is an unset id. The length is the mapping step's business."""
    if type(value) is str:
        try:
            return binascii.unhexlify(value)
        except (binascii.Error, ValueError):
            raise _BadValue("not hex") from None
    raise _BadValue("expected a hex string")


_CONVERTERS: dict[int, _Converter] = {
    FieldDescriptor.TYPE_DOUBLE: _to_float,
    FieldDescriptor.TYPE_FLOAT: _to_float,
    FieldDescriptor.TYPE_INT64: _to_int,
    FieldDescriptor.TYPE_UINT64: _to_int,
    FieldDescriptor.TYPE_INT32: _to_int,
    FieldDescriptor.TYPE_FIXED64: _to_int,
    FieldDescriptor.TYPE_FIXED32: _to_int,
    FieldDescriptor.TYPE_UINT32: _to_int,
    FieldDescriptor.TYPE_SFIXED32: _to_int,
    FieldDescriptor.TYPE_SFIXED64: _to_int,
    FieldDescriptor.TYPE_SINT32: _to_int,
    FieldDescriptor.TYPE_SINT64: _to_int,
    FieldDescriptor.TYPE_BOOL: _to_bool,
    FieldDescriptor.TYPE_STRING: _to_str,
    FieldDescriptor.TYPE_BYTES: _to_base64_bytes,
}


def _show(value: Any) -> str:
    """A short rendering of a JSON value for error messages (never a full repr of a big tree)."""
    if isinstance(value, str):
        return f'"{value[:64]}..."' if len(value) > 64 else f'"{value}"'
    if value is None or isinstance(value, bool):
        return orjson.dumps(value).decode()
    if isinstance(value, (int, float)):
        text = str(value)
        return text if len(text) <= 64 else text[:64] + "..."
    return _json_kind(value)


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (str, int, float)) or value is None:
        return _show(value)
    return type(value).__name__


# --- encoding ---------------------------------------------------------------------------------


def encode_message(message: Message, media: str) -> bytes:
    """Binary protobuf, or OTLP/JSON (`{}` for an empty message) of a message without ids: the
    receiver's responses (int64 counts as strings, integer enums). Requests, whose trace and span
    ids OTLP/JSON spells as hex rather than base64, are only decoded here, never encoded."""
    if _canonical(media) == PROTOBUF:
        return message.SerializeToString()
    return orjson.dumps(json_format.MessageToDict(message, use_integers_for_enums=True))


# --- error bodies -----------------------------------------------------------------------------


def status_body(code: int, message: str, media: str, retry_after: float | None = None) -> bytes:
    """A `google.rpc.Status` with gRPC `code`, `message` and, if given, a `RetryInfo` detail.

    JSON only when `media` is JSON; any other media (including an unsupported one) gets protobuf,
    the encoding the OTLP spec mandates for error bodies.
    """
    status = status_pb2.Status(code=code, message=message)
    if retry_after is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(round(max(0.0, retry_after) * 1e9))
        status.details.add().Pack(info)
    if media == JSON:
        # protojson shape, as the Collector sends: {"code":14,"message":"...","details":[{"@type":
        #   "type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.500s"}]}
        return orjson.dumps(json_format.MessageToDict(status))
    return status.SerializeToString()


# Compile the request plans now, so the first request doesn't pay for it.
for _signal in SIGNALS:
    _plan_for(_signal.request_type.DESCRIPTOR)
del _signal
