"""Small builders for OTLP protobuf messages used by the mapping tests."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

RECEIVED_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456Z
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z


def anyv(value: Any) -> AnyValue:
    """A Python value as an AnyValue (bytes → bytes_value, dict → kvlist, list → array)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=kvs(value)))
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[anyv(v) for v in value]))
    raise TypeError(value)


def kvs(d: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=anyv(v)) for k, v in d.items()]


def resource(attrs: dict[str, Any]) -> Resource:
    return Resource(attributes=kvs(attrs))


class Ids:
    """A deterministic new_id: uuid.UUID(int=1), uuid.UUID(int=2), ..."""

    def __init__(self) -> None:
        self._n = itertools.count(1)

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=next(self._n))


def loads(s: str | None) -> Any:
    return None if s is None else orjson.loads(s)
