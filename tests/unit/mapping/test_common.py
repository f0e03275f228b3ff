from __future__ import annotations

import base64
import math
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from exporters.postgres.mapping import common
from exporters.postgres.mapping.common import (
    Mapper,
    json_dumps,
    json_float,
    text,
    to_datetime,
    trace_uuid,
)

from .builders import anyv, kvs, resource

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAPPER = Mapper()
any_value = _MAPPER.any_value
attributes = _MAPPER.attributes
resource_row = _MAPPER.resource_row


# ------------------------------------------------------------------ AnyValue


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello", "hello"),
        ("", ""),
        (True, True),
        (False, False),
        (0, 0),
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (1.5, 1.5),
        (0.0, 0.0),
        (b"\x00\xffbin", base64.b64encode(b"\x00\xffbin").decode()),
        (b"", ""),
        ([1, "a", [True, None]], [1, "a", [True, None]]),
        ([], []),
        ({"a": 1, "b": {"c": [1.25]}}, {"a": 1, "b": {"c": [1.25]}}),
        ({}, {}),
        (None, None),
    ],
)
def test_any_value_every_kind(value, expected):
    got = any_value(anyv(value))
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("x", "expected"), [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"), (-0.0, -0.0)]
)
def test_non_finite_doubles_become_strings(x, expected):
    assert any_value(AnyValue(double_value=x)) == expected
    assert json_float(x) == expected
    assert orjson.loads(json_dumps({"v": any_value(AnyValue(double_value=x))})) == {"v": expected}


def test_string_value_strindex_is_null():
    assert any_value(AnyValue(string_value_strindex=3)) is None


def test_attributes_repeated_key_last_wins():
    attrs = [
        KeyValue(key="a", value=anyv(1)),
        KeyValue(key="b", value=anyv(2)),
        KeyValue(key="a", value=anyv("x")),
    ]
    assert attributes(attrs) == {"a": "x", "b": 2}


def test_attributes_keep_types():
    d = {"s": "v", "i": 7, "f": 2.5, "b": True, "arr": ["x", 1], "kv": {"n": None}, "bytes": b"\x01"}
    got = attributes(kvs(d))
    assert got == {**d, "bytes": "AQ=="}


# ------------------------------------------------------------------ sanitising


def test_json_dumps_replaces_nul_in_keys_and_values():
    out = json_dumps({"k\x00": ["a\x00b", {"x": "\x00"}], "ok": 1})
    assert "\\u0000" not in out
    assert orjson.loads(out) == {"k\ufffd": ["a\ufffdb", {"x": "\ufffd"}], "ok": 1}


def test_json_dumps_keeps_a_literal_backslash_u0000():
    # the text \u0000 (backslash, 'u', digits) is not a NUL and must survive unchanged
    out = json_dumps({"k": "\\u0000"})
    assert orjson.loads(out) == {"k": "\\u0000"}


def test_json_dumps_repairs_lone_surrogates():
    out = json_dumps({"a": "x\ud800y", "\udfff": 1})
    assert orjson.loads(out) == {"a": "x\ufffdy", "\ufffd": 1}


def test_json_dumps_non_finite_floats_on_slow_path():
    assert orjson.loads(json_dumps({"a": "\x00", "f": math.nan})) == {"a": "\ufffd", "f": "NaN"}


def test_text_replaces_nul():
    assert text("a\x00b\x00") == "a\ufffdb\ufffd"
    s = "plain"
    assert text(s) is s


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(), st.binary(max_size=8)
)
_any_tree = st.recursive(
    _json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_any_tree)
def test_any_value_round_trips_to_postgres_safe_json(value):
    out = json_dumps(any_value(anyv(value)))
    assert "\\u0000" not in out
    assert "\x00" not in out
    orjson.loads(out)  # valid JSON, valid UTF-8


# ------------------------------------------------------------------ timestamps


def test_to_datetime_examples():
    assert to_datetime(0) == EPOCH
    assert to_datetime(1_700_000_000_123_456_789) == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert to_datetime(999) == EPOCH  # truncated to the microsecond
    # the largest uint64: year 2554, still a valid datetime
    assert to_datetime(2**64 - 1) == EPOCH + timedelta(microseconds=(2**64 - 1) // 1000)
    assert to_datetime(2**64 - 1).year == 2554
    assert to_datetime(2**64 - 1).tzinfo is UTC


def test_to_datetime_clamps_out_of_range():
    assert to_datetime(10**30) == datetime.max.replace(tzinfo=UTC)
    assert to_datetime(-(10**30)) == datetime.min.replace(tzinfo=UTC)
    assert to_datetime(-1_500) == EPOCH - timedelta(microseconds=2)


@given(st.integers(min_value=0, max_value=common._FAST_NS_LIMIT - 1))
def test_to_datetime_fast_path_is_exact(ns):
    assert to_datetime(ns) == EPOCH + timedelta(microseconds=ns // 1000)


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_to_datetime_never_raises(ns):
    assert to_datetime(ns).tzinfo is not None


def test_trace_uuid_equals_uuid_from_bytes():
    b = bytes(range(1, 17))
    u = trace_uuid(b)
    assert isinstance(u, uuid.UUID)
    assert u == uuid.UUID(bytes=b)
    assert hash(u) == hash(uuid.UUID(bytes=b))
    assert u.bytes == b


# ------------------------------------------------------------------ resources


def test_resource_id_is_stable_across_attribute_order():
    a = resource({"service.name": "api", "host.name": "h1", "k8s": {"pod": "p", "ns": "n"}})
    b = resource({"k8s": {"ns": "n", "pod": "p"}, "host.name": "h1", "service.name": "api"})
    ra, rb = resource_row(a, ""), resource_row(b, "")
    assert ra == rb
    assert ra[1] == "api"
    assert orjson.loads(ra[2]) == {"service.name": "api", "host.name": "h1", "k8s": {"pod": "p", "ns": "n"}}
    assert ra[2] == '{"host.name":"h1","k8s":{"ns":"n","pod":"p"},"service.name":"api"}'  # canonical
    assert ra[3] is None


def test_resource_id_is_a_known_signed_64bit_value():
    rid, *_ = resource_row(resource({"service.name": "api"}), "")
    from hashlib import blake2b

    digest = blake2b(b'{"service.name":"api"}\n', digest_size=8).digest()
    assert rid == int.from_bytes(digest, "big", signed=True)
    assert -(2**63) <= rid < 2**63


def test_resource_id_depends_on_values_and_schema_url():
    base = resource_row(resource({"service.name": "api"}), "")
    assert resource_row(resource({"service.name": "api2"}), "")[0] != base[0]
    with_url = resource_row(resource({"service.name": "api"}), "https://opentelemetry.io/schemas/1.26.0")
    assert with_url[0] != base[0]
    assert with_url[3] == "https://opentelemetry.io/schemas/1.26.0"
    # typed: the int 1 and the string "1" are different resources
    assert resource_row(resource({"x": 1}), "")[0] != resource_row(resource({"x": "1"}), "")[0]


@pytest.mark.parametrize("attrs", [{}, {"host.name": "h"}, {"service.name": ""}, {"service.name": 42}])
def test_missing_service_name_is_unknown_service(attrs):
    assert resource_row(resource(attrs), "")[1] == "unknown_service"


def test_service_name_nul_is_sanitised():
    _, service, attrs_json, _ = resource_row(resource({"service.name": "a\x00b"}), "")
    assert service == "a\ufffdb"
    assert orjson.loads(attrs_json) == {"service.name": "a\ufffdb"}


def test_resource_memo_is_bounded():
    mapper = Mapper()
    for i in range(common.RESOURCE_MEMO_MAX + 10):
        mapper.resource_row(resource({"service.name": f"s{i}"}), "")
    assert len(mapper._resources) <= common.RESOURCE_MEMO_MAX
