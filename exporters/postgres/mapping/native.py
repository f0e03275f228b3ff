"""The native path: a serialized traces request → binary COPY rows in one C pass (`_native.c`).

Python works per request here: it resolves each resource and scope (memoised, in the Mapper)
when the encoder reaches it, and wraps the encoded rows. Nothing is done per span, span event
or attribute; the after-commit observers get a `TraceSummary` the encoder tallied on the way
instead of a decoded request.

The rows equal what `traces.map_traces` makes once stored (tests/integration/test_native_parity.py
compares them fetched back from PostgreSQL). `encode_traces` returns None when the request needs
something only the Python path does (see `_native.c`); the caller then maps it in Python.
"""

from __future__ import annotations

from exporters.postgres.ids import RequestIds
from exporters.postgres.mapping.common import CopyRows, Mapped, Mapper, describe_rejections
from exporters.postgres.schema import OTEL_SCOPES, OTEL_SPAN_EVENTS, OTEL_SPANS, USER_ANALYTICS
from sidecar.pipeline.span_metrics import (
    SPAN_DURATION_BOUNDS_SECONDS,
    ResourceSpansSummary,
    SpanTally,
    TraceSummary,
)

try:  # built by setup.py when a compiler is there
    from exporters.postgres.mapping import _native  # type: ignore[attr-defined]  # the C extension: no stub
except ImportError:  # pragma: no cover - installs without a compiler use the Python path
    _native = None

NATIVE_AVAILABLE = _native is not None
_INVALID_IDS = "invalid trace_id, span_id or parent_span_id"  # as traces.py says it


def map_traces_native(raw: bytes, received_ns: int, ids: RequestIds, mapper: Mapper) -> Mapped | None:
    """Encode a serialized ExportTraceServiceRequest, continuing `ids`; None: use the Python path."""
    resources: list[tuple[bytes, str, tuple]] = []  # per ResourceSpans: raw Resource, schema_url, row
    scopes: dict[int, tuple] = {}

    def resolve_resource(resource: bytes, schema_url: bytes) -> tuple[int, str] | None:
        row = mapper.resource_row_bytes(resource, schema_url)
        if row is None:
            return None
        resources.append((resource, schema_url.decode(), row))
        return row[0], row[1]

    def resolve_scope(scope: bytes, schema_url: bytes) -> int | bool | None:
        row = mapper.scope_row_bytes(scope, schema_url)
        if row is None or row is False:
            return row
        assert isinstance(row, tuple)
        scopes[row[0]] = row
        return int(row[0])

    out = _native.encode_traces(
        raw,
        received_ns,
        ids.head,
        ids.counter,
        mapper.max_attributes,
        mapper.max_value_length,
        SPAN_DURATION_BOUNDS_SECONDS,
        resolve_resource,
        resolve_scope,
        mapper.user_rows,
        mapper.recent_errors,
    )
    if out is None:
        return None
    (spans, nspans, events, nevents, users, nusers, items, rejected, counter,
     cut_attrs, cut_values, cut_keys, tallies, agents) = out  # fmt: skip
    ids.counter = counter
    mapper.count_truncated(cut_attrs, cut_values)
    if cut_keys:
        mapper.truncated["keys"] += cut_keys
    stored = {row[0]: row for (_, _, row), agent in zip(resources, agents, strict=True) if agent[1]}
    span_types = frozenset(("span", row[1]) for row in stored.values())
    event_types = frozenset(
        ("span_event", row[1]) for (_, _, row), agent in zip(resources, agents, strict=True) if agent[2]
    )
    rows: dict[str, list[tuple] | CopyRows] = {
        OTEL_SPANS: CopyRows(spans, nspans, span_types),
        OTEL_SPAN_EVENTS: CopyRows(events, nevents, event_types),
        OTEL_SCOPES: list(scopes.values()),
    }
    if nusers:
        rows[USER_ANALYTICS] = CopyRows(users, nusers)
    reasons = {_INVALID_IDS: rejected} if rejected else {}
    summary = TraceSummary(
        [
            ResourceSpansSummary(resource, url, *agent)
            for (resource, url, _), agent in zip(resources, agents, strict=True)
        ],
        [SpanTally(*t) for t in tallies],
    )
    mapped = Mapped(rows, stored, items, rejected, describe_rejections(reasons, "span", "spans"), reasons)
    mapped.decoded = summary
    return mapped
