"""Conversions shared by the three signals: AnyValue → typed JSON, attributes, resources, scopes,
ids, timestamps, and the NUL/UTF-8 sanitising PostgreSQL needs.

Everything here is called once per attribute or per row, so it is written for speed: local
names, no intermediate objects, and the rare cases (NUL bytes, non-finite doubles, absurd
timestamps) pushed off the common path. See docs/mapping.md for the rules.

What depends on state (the limits, the counts of what they cut, the resource memo, the C
converter switch) are methods of a `Mapper` the caller owns; there is no module-level state.
"""

from __future__ import annotations

import uuid
from base64 import b64encode
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any

import orjson
from google.protobuf.message import DecodeError as _ProtobufDecodeError
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as _Scope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as _Resource

from exporters.postgres.schema import LARGE_COLUMNS

try:  # the C attribute converter (setup.py builds it when a compiler is there): same results, ~3x faster
    from exporters.postgres.mapping import _fast  # type: ignore[attr-defined]  # the C extension: no stub
except ImportError:  # pragma: no cover - the parity tests compare with Mapper(fast=False)
    _fast = None

try:  # asyncpg's UUID is a uuid.UUID subclass, 8x cheaper to build and its COPY encoder's fast path.
    from asyncpg.pgproto.pgproto import UUID as _PgUUID
except ImportError:  # pragma: no cover - asyncpg is a dependency; keep the mapping importable without it
    _PgUUID = None

__all__ = [
    "FAST_AVAILABLE",
    "INT64_MAX",
    "KEY_MAX_BYTES",
    "MAX_ATTRIBUTES",
    "MAX_VALUE_LENGTH",
    "MEMO_KEY_MAX_BYTES",
    "RESOURCE_MEMO_MAX",
    "UNKNOWN_SERVICE",
    "ZERO_SPAN_ID",
    "ZERO_TRACE_ID",
    "CopyRows",
    "Mapped",
    "Mapper",
    "describe_rejections",
    "json_dumps",
    "json_dumps_sorted",
    "json_float",
    "key_text",
    "rejection_message",
    "rows_memory",
    "text",
    "to_datetime",
    "trace_uuid",
]

UNKNOWN_SERVICE = "unknown_service"
INT64_MAX = (1 << 63) - 1

ZERO_TRACE_ID = bytes(16)
ZERO_SPAN_ID = bytes(8)


class CopyRows:
    """Rows of one table already encoded as PostgreSQL binary COPY tuples (no header or trailer),
    as the native encoder makes them: the writer sends `data` as it is. `event_types`: the
    (event type, service) pairs of the rows, for the lookup table, which would otherwise need the
    rows decoded. They can't be iterated: code that needs row tuples maps the request in Python."""

    __slots__ = ("count", "data", "event_types")

    def __init__(self, data: bytes, count: int, event_types: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.data = data
        self.count = count
        self.event_types = event_types

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Any:
        raise TypeError("encoded COPY rows can't be iterated: map the request in Python for row tuples")

    @staticmethod
    def join(parts: list[CopyRows]) -> CopyRows:
        if len(parts) == 1:
            return parts[0]
        types: frozenset[tuple[str, str]] = frozenset().union(*(p.event_types for p in parts))
        return CopyRows(b"".join(p.data for p in parts), sum(p.count for p in parts), types)


Tables = dict[str, list[tuple] | CopyRows]
"""Rows by table name: row tuples in schema.py column order, or encoded (CopyRows)."""


@dataclass(slots=True)
class Mapped:
    """One OTLP request turned into rows, plus what could not be stored."""

    rows: Tables
    resources: dict[int, tuple] = field(default_factory=dict)  # resource_id -> otel_resources row
    items: int = 0  # spans / data points / log records in the request
    rejected: int = 0  # items that could not be stored
    message: str = ""  # why, for OTLP partial_success ("" when nothing was rejected)
    reasons: dict[str, int] = field(default_factory=dict)  # why items were rejected -> how many
    decoded: Any = None  # the decoded request these rows come from (for after-commit observers)


def rejection_message(count: int, singular: str, plural: str, reason: str) -> str:
    return f"{count} {singular if count == 1 else plural} rejected: {reason}"


def describe_rejections(reasons: dict[str, int], singular: str, plural: str) -> str:
    """One partial_success message for every reason: "3 spans rejected: why", or with several
    reasons "5 data points rejected: why (2), other reason (3)"."""
    total = sum(reasons.values())
    if not total:
        return ""
    why = ", ".join(f"{reason} ({n})" if n != total else reason for reason, n in reasons.items() if n)
    return rejection_message(total, singular, plural, why)


# Column types' ranges: OTLP values beyond them (enums are int32, flags fixed32, times uint64) are
# kept exactly in the row's `extra` JSON and the column gets 0 / NULL.
SMALLINT_MAX = 2**15 - 1
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


def rows_memory(table: str, rows: list[tuple] | CopyRows) -> int:
    """About the bytes rows hold in memory (measured: 440-740 per row besides its JSON and other
    unbounded columns), for admission control."""
    if isinstance(rows, CopyRows):
        return len(rows.data) + 64
    size = 768 * len(rows)
    for at in LARGE_COLUMNS[table]:
        size += sum(len(v) for r in rows if (v := r[at]) is not None)
    return size


# --------------------------------------------------------------------------- strings and JSON

_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def text(s: str) -> str:
    """A client string made safe for a TEXT column: NUL (rejected by PostgreSQL) becomes U+FFFD.

    protobuf already refuses invalid UTF-8 and lone surrogates in string fields, so NUL is the
    only thing left to fix for values read from a decoded message.
    """
    if _NUL in s:
        s = s.replace(_NUL, _REPLACEMENT)
    return s


def _clean_str(s: str) -> str:
    if _NUL in s:
        s = s.replace(_NUL, _REPLACEMENT)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: each becomes one U+FFFD, valid pairs are joined
        s = s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return s


_MAX_DEPTH = 200  # orjson refuses to nest deeper than 254


def _clean(obj: Any, depth: int = 0) -> Any:
    """Slow path of json_dumps: sanitise every string (keys included) of a JSON-able value."""
    if isinstance(obj, str):
        return _clean_str(obj)
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(obj, dict):
        return {_clean_str(str(k)): _clean(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, depth + 1) for v in obj]
    if isinstance(obj, float) and obj - obj != 0.0:
        return json_float(obj)
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    return _clean_str(str(obj))


_dumps = orjson.dumps
_JSONEncodeError = orjson.JSONEncodeError
_ESCAPED_NUL = b"\\u0000"


def json_dumps(obj: Any) -> str:
    """JSON text PostgreSQL's JSONB accepts: no \\u0000 escapes, valid UTF-8, never raises.

    The common case is one orjson call plus one memmem over its output; the slow path
    sanitises the value and serialises again.
    """
    try:
        out = _dumps(obj)
    except _JSONEncodeError:
        out = _dumps(_clean(obj))
    else:
        if _ESCAPED_NUL in out:
            out = _dumps(_clean(obj))
    return out.decode()


def json_float(x: float) -> float | str:
    """A double as JSON: NaN and ±Inf have no JSON number, so they become strings."""
    if x - x == 0.0:
        return x
    if x != x:
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


# --------------------------------------------------------------------------- limits

# Names and keys that PostgreSQL indexes (service_name, event_type, metric_name, user_id, agent_key...)
# are cut to this many bytes of UTF-8. A B-tree entry must fit in a third of a page (2704 bytes on
# 8 KiB pages): two such keys plus a timestamp and an id still fit, so no name can make a row
# unstorable. The full value stays in the JSON where there is one (attributes, resource).
KEY_MAX_BYTES = 1024

FAST_AVAILABLE = _fast is not None


def _native_built() -> bool:
    try:
        from exporters.postgres.mapping import _native  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return True


NATIVE_AVAILABLE = _native_built()
"""Whether the native encoder (mapping/_native.c) is built."""

"""Whether the C attribute converter is built (a Mapper uses it unless told not to)."""

MAX_ATTRIBUTES = 1024
MAX_VALUE_LENGTH = 64 * 1024


def key_text(s: str, truncated: dict[str, int] | None = None) -> str:
    """`text(s)` cut to KEY_MAX_BYTES bytes of UTF-8 at a character boundary (a cut is counted
    in `truncated["keys"]` when given)."""
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    if len(s) <= KEY_MAX_BYTES // 4:  # no character takes more than 4 bytes
        return s
    b = s.encode("utf-8", "surrogatepass")
    if len(b) <= KEY_MAX_BYTES:
        return s
    if truncated is not None:
        truncated["keys"] += 1
    return b[:KEY_MAX_BYTES].decode("utf-8", "ignore")


class Mapper:
    """The mapping's state, owned by whoever maps (the app's MappingThread; a test; a bench) and
    passed to map_traces / map_logs / map_metrics:

    - the bounds on what one client value may make otelpg store (hostile or runaway clients):
      `max_attributes` per map (and elements per array/kvlist), `max_value_length` characters
      per string value (bytes per bytes value);
    - `truncated`: what they cut, and the indexed keys cut to KEY_MAX_BYTES, by kind;
    - the memo of resource rows (an SDK sends the same Resource on every request);
    - `fast`: whether the C attribute converter is used (FAST_AVAILABLE by default).

    Not thread-safe: one thread maps with one Mapper. Its methods are the conversions that
    depend on that state; a mapper binds them to locals once per request.
    """

    __slots__ = (
        "_resources", "_scopes", "fast", "max_attributes", "max_value_length", "native", "recent_errors",
        "truncated", "user_rows",
    )  # fmt: skip

    def __init__(
        self,
        max_attributes: int = MAX_ATTRIBUTES,
        max_value_length: int = MAX_VALUE_LENGTH,
        *,
        fast: bool | None = None,
        native: bool | None = None,
    ) -> None:
        if fast and not FAST_AVAILABLE:
            raise ValueError("the C attribute converter is not built")
        if native and not NATIVE_AVAILABLE:
            raise ValueError("the native encoder is not built")
        self.max_attributes = max_attributes
        self.max_value_length = max_value_length
        self.fast = FAST_AVAILABLE if fast is None else fast
        # The native encoder (mapping/native.py) for traces: off where it isn't built. `user_rows`
        # says what it does with spans naming a user, and must agree with the derived rows'
        # configuration: 0 nothing (user_analytics off), 1 their user_analytics rows (encoded
        # with the spans), 2 leave those requests to the Python path, whose spans the batch hook
        # derives them from (the default: right whatever the configuration; hashing needs it).
        self.native = NATIVE_AVAILABLE and fast is not False if native is None else native
        self.user_rows = 2
        self.recent_errors = 20  # span errors per resource a TraceSummary keeps (agent_states' error_log_size)
        self.truncated = {"attributes": 0, "attribute_values": 0, "keys": 0}
        self._resources: dict[tuple[bytes, str], tuple] = {}
        self._scopes: dict[tuple[bytes, str], tuple | None] = {}

    def key_text(self, s: str) -> str:
        """`text(s)` cut to KEY_MAX_BYTES bytes of UTF-8 at a character boundary (counted)."""
        return key_text(s, self.truncated)

    def _cut(self, s: str) -> str:
        self.truncated["attribute_values"] += 1
        return s[: self.max_value_length]

    def _cap(self, seq: Any) -> Any:
        limit = self.max_attributes
        if len(seq) > limit:
            self.truncated["attributes"] += len(seq) - limit
            return seq[:limit]
        return seq

    def any_value(self, v: Any) -> Any:
        """An OTLP AnyValue as typed JSON: str, bool, int, float (non-finite as a string), base64
        bytes, list, object; None when empty."""
        s = v.string_value
        if s:
            return s if len(s) <= self.max_value_length else self._cut(s)
        w = v.WhichOneof("value")
        if w == "int_value":
            return v.int_value
        if w == "double_value":
            x = v.double_value
            return x if x - x == 0.0 else json_float(x)
        if w == "bool_value":
            return v.bool_value
        if w == "string_value":
            return ""
        if w == "kvlist_value":
            return self.attributes(v.kvlist_value.values)
        if w == "array_value":
            any_value = self.any_value
            return [any_value(x) for x in self._cap(v.array_value.values)]
        if w == "bytes_value":
            b = v.bytes_value
            if len(b) > self.max_value_length:
                self.truncated["attribute_values"] += 1
                b = b[: self.max_value_length]
            return b64encode(b).decode("ascii")
        # None (empty AnyValue), or string_value_strindex: an index into a profiles dictionary that
        # traces, metrics and logs don't have, so there is nothing to resolve it to.
        return None

    def attributes(self, kvs: Any) -> dict[str, Any]:
        """Repeated KeyValue → dict (a repeated key: the last one wins). Keys and strings are
        sanitised when the dict is serialised by json_dumps."""
        d: dict[str, Any] = {}
        if len(kvs) > self.max_attributes:
            kvs = self._cap(kvs)
        limit = self.max_value_length
        for kv in kvs:
            v = kv.value
            s = v.string_value
            if s:
                d[kv.key] = s if len(s) <= limit else self._cut(s)
                continue
            i = v.int_value  # non-zero means int: cheaper than WhichOneof for the second commonest type
            d[kv.key] = i if i else self.any_value(v)
        return d

    def fast_attributes(self, kind: str, request: Any, raw: bytes | None) -> tuple[list, list, int, int] | None:
        """The attribute dicts of every item of a request, in the order the protobuf API iterates
        them, from the C converter: ("spans": span dicts, event dicts) or ("logs": record dicts,
        bodies), plus the counts of attributes and values cut by the limits. None: use the Python
        path (converter not used, or wire data it leaves to protobuf's rules). `raw`: the
        request's protobuf bytes if the receiver has them; otherwise serialised here (cheap, in C)."""
        if not self.fast:
            return None
        if raw is None:
            raw = request.SerializeToString()
        fn = _fast.span_attributes if kind == "spans" else _fast.log_attributes
        return fn(raw, self.max_attributes, self.max_value_length)

    def count_truncated(self, attrs: int, values: int) -> None:
        """Count cuts made elsewhere (the C converter, the wire splitter)."""
        if attrs:
            self.truncated["attributes"] += attrs
        if values:
            self.truncated["attribute_values"] += values

    def resource_row(self, resource: Any, schema_url: str) -> tuple:
        """The otel_resources row (resource_id, service_name, attributes JSON, schema_url).

        resource_id = blake2b-64 (signed) of the canonical JSON of the attributes (keys sorted at
        every level, as stored) + b"\\n" + schema_url: the same attributes in any order give the
        same id. Memoised on the serialised Resource: an SDK sends the same one on every request.
        """
        key = (resource.SerializeToString(), schema_url)
        memo = self._resources
        row = memo.get(key)
        if row is not None:
            return row
        attrs = self.attributes(resource.attributes)
        canonical = json_dumps_sorted(attrs)
        digest = blake2b(canonical.encode() + b"\n" + schema_url.encode(), digest_size=8).digest()
        service = attrs.get("service.name")
        service = self.key_text(service) if isinstance(service, str) and service else UNKNOWN_SERVICE
        row = (int.from_bytes(digest, "big", signed=True), service, canonical, text(schema_url) or None)
        _remember(memo, key, row)
        return row

    def resource_row_bytes(self, raw: bytes, schema_url: bytes) -> tuple | None:
        """resource_row of a serialized Resource (the native encoder's callback); None when it
        can't be decoded (the Python path then reports why)."""
        try:
            url = schema_url.decode()
            row = self._resources.get((raw, url))
            if row is not None:
                return row
            row = self.resource_row(_Resource.FromString(raw), url)
        except (UnicodeDecodeError, _ProtobufDecodeError, RecursionError):
            return None
        _remember(self._resources, (raw, url), row)
        return row

    def scope_row_bytes(self, raw: bytes, schema_url: bytes) -> tuple | bool | None:
        """scope_row of a serialized InstrumentationScope; False when it can't be decoded."""
        try:
            url = schema_url.decode()
            key = (raw, url)
            if key in self._scopes:
                return self._scopes[key]
            row = self.scope_row(_Scope.FromString(raw), url)
        except (UnicodeDecodeError, _ProtobufDecodeError, RecursionError):
            return False
        _remember(self._scopes, key, row)
        return row

    def scope_info(self, scope: Any) -> dict[str, Any]:
        """InstrumentationScope → {name, version, attributes, dropped_attributes_count}, empty
        parts left out."""
        info: dict[str, Any] = {}
        if scope.name:
            info["name"] = scope.name
        if scope.version:
            info["version"] = scope.version
        if scope.attributes:
            info["attributes"] = self.attributes(scope.attributes)
        if scope.dropped_attributes_count:
            info["dropped_attributes_count"] = scope.dropped_attributes_count
        return info

    def scope_row(self, scope: Any, schema_url: str) -> tuple | None:
        """The otel_scopes row (scope_id, name, version, metadata JSON) of a ScopeSpans/ScopeLogs,
        None when it has neither a scope nor a schema_url. `metadata` is {scope, schema_url} with
        keys sorted; scope_id = blake2b-64 (signed) of it. Memoised like resources."""
        key = (scope.SerializeToString(), schema_url)
        memo = self._scopes
        if key in memo:
            return memo[key]
        meta: dict[str, Any] = {}
        info = self.scope_info(scope)
        if info:
            meta["scope"] = info
        if schema_url:
            meta["schema_url"] = schema_url
        row = None
        if meta:
            canonical = json_dumps_sorted(meta)
            name, version = info.get("name"), info.get("version")
            row = (scope_id(canonical), text(name) if name else None,
                   text(version) if version else None, canonical)  # fmt: skip
        _remember(memo, key, row)
        return row


# --------------------------------------------------------------------------- timestamps

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_fromtimestamp = datetime.fromtimestamp
# Up to 2**32 s (year 2106) a float holds microseconds exactly enough for fromtimestamp to
# round back to the exact microsecond; beyond it (and below 0) take the exact integer path.
_FAST_NS_LIMIT = (1 << 32) * 1_000_000_000
_MIN_US = -62135596800 * 1_000_000  # 0001-01-01T00:00:00Z
_MAX_US = 253402300799 * 1_000_000 + 999_999  # 9999-12-31T23:59:59.999999Z


def to_datetime(ns: int) -> datetime:
    """Nanoseconds since the epoch → aware UTC datetime, truncated to the microsecond (the
    precision of TIMESTAMPTZ). Values outside datetime's range are clamped; never raises."""
    if 0 <= ns < _FAST_NS_LIMIT:
        return _fromtimestamp(ns // 1000 / 1e6, UTC)
    us = ns // 1000
    if us < _MIN_US:
        us = _MIN_US
    elif us > _MAX_US:
        us = _MAX_US
    return _EPOCH + timedelta(microseconds=us)


# --------------------------------------------------------------------------- ids


def _uuid_from_bytes(b: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=b)


trace_uuid = _PgUUID if _PgUUID is not None else _uuid_from_bytes
"""16 bytes → a uuid.UUID (asyncpg's subclass when available: equal and hash-equal to
uuid.UUID(bytes=b), and what asyncpg's COPY encoder writes fastest)."""


# --------------------------------------------------------------------------- resources

RESOURCE_MEMO_MAX = 1024  # resource rows a Mapper memoises
MEMO_KEY_MAX_BYTES = 16 * 1024  # resources larger than this are not memoised: memos stay bounded in bytes


def _remember(memo: dict[tuple[bytes, str], Any], key: tuple[bytes, str], row: Any) -> None:
    """Memoise a resource or scope row: small keys only, at most RESOURCE_MEMO_MAX of them."""
    if len(key[0]) <= MEMO_KEY_MAX_BYTES:
        if len(memo) >= RESOURCE_MEMO_MAX:
            memo.clear()
        memo[key] = row


def scope_id(canonical_metadata: str) -> int:
    """otel_scopes.scope_id: blake2b-64 (signed) of a scope's metadata as canonical JSON."""
    return int.from_bytes(blake2b(canonical_metadata.encode(), digest_size=8).digest(), "big", signed=True)


def json_dumps_sorted(obj: Any) -> str:
    """json_dumps with keys sorted at every level: the canonical form hashed for resource_id."""
    try:
        out = _dumps(obj, option=orjson.OPT_SORT_KEYS)
    except _JSONEncodeError:
        out = _dumps(_clean(obj), option=orjson.OPT_SORT_KEYS)
    else:
        if _ESCAPED_NUL in out:
            out = _dumps(_clean(obj), option=orjson.OPT_SORT_KEYS)
    return out.decode()
