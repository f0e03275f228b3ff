"""The native path: a serialized traces or logs request → binary COPY rows in one C pass (`_native.c`).

Python works per request here: it resolves each resource and scope (memoised, in the Mapper)
when the encoder reaches it, and wraps the encoded rows. Nothing is done per span, span event,
log record or attribute; the after-commit observers get a `TraceSummary` / `LogSummary` the
encoder tallied on the way instead of a decoded request.

The rows equal what `traces.map_traces` / `logs.map_logs` make once stored
(tests/unit/mapping/test_native_parity.py compares them decoded, tests/integration/test_native_parity.py
fetched back from PostgreSQL). The encoder returns None when the request needs something only the
Python path does (see `_native.c`); the caller then maps it in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporters.postgres.ids import RequestIds
from exporters.postgres.mapping.common import CopyRows, Mapped, Mapper, describe_rejections, key_text
from exporters.postgres.schema import OTEL_LOGS, OTEL_SCOPES, OTEL_SPAN_EVENTS, OTEL_SPANS, USER_ANALYTICS
from sidecar.pipeline.span_metrics import (
    SPAN_DURATION_BOUNDS_SECONDS,
    LogSummary,
    LogTally,
    ResourceLogsSummary,
    ResourceSpansSummary,
    SpanTally,
    TraceSummary,
)

try:  # built by setup.py when a compiler is there
    from exporters.postgres.mapping import _native  # type: ignore[attr-defined]  # the C extension: no stub
except ImportError:  # pragma: no cover - installs without a compiler use the Python path
    _native = None

NATIVE_AVAILABLE = _native is not None
_EVENT_TYPE_TALLY = -1  # the encoder's tallies of kind -1 are the event types stored, by name


class _Encoded:
    """One call of the encoder: its output, and the resources and scopes it resolved."""

    def __init__(self, encode: Callable[..., Any], raw: bytes, received_ns: int, ids: RequestIds, mapper: Mapper):
        self.resources: list[tuple[bytes, str, tuple]] = []  # per Resource*: raw Resource, schema_url, row
        self.scopes: dict[int, tuple] = {}
        self.out = encode(
            raw,
            received_ns,
            ids.head,
            ids.counter,
            mapper.max_attributes,
            mapper.max_value_length,
            SPAN_DURATION_BOUNDS_SECONDS,
            self._resource(mapper),
            self._scope(mapper),
            mapper.user_rows,
            mapper.recent_errors,
        )
        if self.out is not None:
            ids.counter = self.out[8]
            mapper.count_truncated(self.out[9], self.out[10])
            if self.out[11]:
                mapper.truncated["keys"] += self.out[11]

    def _resource(self, mapper: Mapper) -> Callable[[bytes, bytes], tuple[int, str] | None]:
        def resolve(resource: bytes, schema_url: bytes) -> tuple[int, str] | None:
            row = mapper.resource_row_bytes(resource, schema_url)
            if row is None:
                return None
            self.resources.append((resource, schema_url.decode(), row))
            return row[0], row[1]

        return resolve

    def _scope(self, mapper: Mapper) -> Callable[[bytes, bytes], int | bool | None]:
        def resolve(scope: bytes, schema_url: bytes) -> int | bool | None:
            row = mapper.scope_row_bytes(scope, schema_url)
            if row is None or row is False:
                return row
            assert isinstance(row, tuple)
            self.scopes[row[0]] = row
            return int(row[0])

        return resolve

    def mapped(self, rows: dict[str, list[tuple] | CopyRows], stored: list[bool], why: str, noun: tuple[str, str]):
        out = self.out
        users, nusers, items, rejected = out[4], out[5], out[6], out[7]
        rows[OTEL_SCOPES] = list(self.scopes.values())
        if nusers:
            rows[USER_ANALYTICS] = CopyRows(users, nusers)
        resources = {row[0]: row for (_, _, row), kept in zip(self.resources, stored, strict=True) if kept}
        reasons = {why: rejected} if rejected else {}
        return Mapped(rows, resources, items, rejected, describe_rejections(reasons, *noun), reasons)


def map_traces_native(raw: bytes, received_ns: int, ids: RequestIds, mapper: Mapper) -> Mapped | None:
    """Encode a serialized ExportTraceServiceRequest, continuing `ids`; None: use the Python path."""
    enc = _Encoded(_native.encode_traces, raw, received_ns, ids, mapper)
    if enc.out is None:
        return None
    spans, nspans, events, nevents = enc.out[:4]
    tallies, agents = enc.out[12], enc.out[13]
    services = [row[1] for _, _, row in enc.resources]
    per_resource = list(zip(services, agents, strict=True))
    span_types = frozenset(("span", service) for service, agent in per_resource if agent[1])
    event_types = frozenset(("span_event", service) for service, agent in per_resource if agent[2])
    rows: dict[str, list[tuple] | CopyRows] = {
        OTEL_SPANS: CopyRows(spans, nspans, span_types),
        OTEL_SPAN_EVENTS: CopyRows(events, nevents, event_types),
    }
    mapped = enc.mapped(rows, [a[1] > 0 for a in agents], "invalid trace_id, span_id or parent_span_id",
                        ("span", "spans"))  # fmt: skip
    mapped.decoded = TraceSummary(
        [ResourceSpansSummary(r, url, *agent) for (r, url, _), agent in zip(enc.resources, agents, strict=True)],
        [SpanTally(*t) for t in tallies],
    )
    return mapped


def map_logs_native(raw: bytes, received_ns: int, ids: RequestIds, mapper: Mapper) -> Mapped | None:
    """Encode a serialized ExportLogsServiceRequest, continuing `ids`; None: use the Python path."""
    enc = _Encoded(_native.encode_logs, raw, received_ns, ids, mapper)
    if enc.out is None:
        return None
    records, nrecords = enc.out[:2]
    tallies, agents = enc.out[12], enc.out[13]
    services = [row[1] for _, _, row in enc.resources]
    event_types = frozenset(
        (key_text(name) if name else "log", services[resource])
        for resource, name, kind, _, _, _, _ in tallies
        if kind == _EVENT_TYPE_TALLY
    )
    rows: dict[str, list[tuple] | CopyRows] = {OTEL_LOGS: CopyRows(records, nrecords, event_types)}
    mapped = enc.mapped(rows, [a[1] > 0 for a in agents], "invalid trace_id or span_id",
                        ("log record", "log records"))  # fmt: skip
    mapped.decoded = LogSummary(
        [
            ResourceLogsSummary(r, url, records_, stored, errors, recent)
            for (r, url, _), (records_, stored, _, errors, _, recent) in zip(enc.resources, agents, strict=True)
        ],
        [LogTally(resource, kind, name, calls) for resource, name, kind, _, calls, _, _ in tallies if kind >= 0],
    )
    return mapped
