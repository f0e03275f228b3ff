"""A reader of PostgreSQL binary COPY tuples, for the tests that compare the native encoder's rows
with the Python path's row tuples (the column types are schema.py's: given per column)."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _value(kind: str, b: bytes) -> Any:
    if kind == "uuid":
        return uuid.UUID(bytes=b)
    if kind == "timestamptz":
        return _PG_EPOCH + timedelta(microseconds=struct.unpack(">q", b)[0])
    if kind == "int2":
        return struct.unpack(">h", b)[0]
    if kind == "int4":
        return struct.unpack(">i", b)[0]
    if kind == "int8":
        return struct.unpack(">q", b)[0]
    if kind == "text":
        return b.decode()
    if kind == "bytea":
        return b
    if kind == "jsonb":
        assert b[:1] == b"\x01", "JSONB binary format version 1"
        return orjson.loads(b[1:])
    raise ValueError(kind)


def read_tuples(data: bytes, kinds: tuple[str, ...]) -> list[tuple]:
    """The tuples of binary COPY data (no header or trailer), each value decoded by its kind."""
    out: list[tuple] = []
    p = 0
    while p < len(data):
        (n,) = struct.unpack_from(">h", data, p)
        assert n == len(kinds), f"{n} fields, expected {len(kinds)}"
        p += 2
        row = []
        for kind in kinds:
            (size,) = struct.unpack_from(">i", data, p)
            p += 4
            if size < 0:
                row.append(None)
                continue
            row.append(_value(kind, data[p : p + size]))
            p += size
        out.append(tuple(row))
    return out
