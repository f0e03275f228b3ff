"""ExportTraceServiceRequest → system_events rows: one per span, one per span event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from uuid_utils import uuid7

from exporters.postgres.mapping.common import (
    ZERO_SPAN_ID,
    ZERO_TRACE_ID,
    Mapped,
    Mapper,
    describe_rejections,
    json_dumps,
    to_datetime,
    trace_uuid,
)
from exporters.postgres.schema import SYSTEM_EVENTS

SPAN_KIND_NAMES = {
    0: "SPAN_KIND_UNSPECIFIED",
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
}
STATUS_CODE_NAMES = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}
_STATUS_ERROR = 2
# Shared, never mutated: the payload's "status" when there is no message.
_STATUSES = {code: {"code": name} for code, name in STATUS_CODE_NAMES.items()}
_INVALID_IDS = "invalid trace_id, span_id or parent_span_id"


def _link(link: Any, attributes: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "trace_id": link.trace_id.hex(),
        "span_id": link.span_id.hex(),
        "attributes": attributes(link.attributes),
    }
    if link.trace_state:
        d["trace_state"] = link.trace_state
    if link.flags:
        d["flags"] = link.flags
    if link.dropped_attributes_count:
        d["dropped_attributes_count"] = link.dropped_attributes_count
    return d


def _aligned(request: ExportTraceServiceRequest, fast: tuple[list, list, int, int] | None) -> bool:
    """The C converter walked the same spans and events the protobuf API iterates."""
    if fast is None:
        return False
    spans = [sp for rs in request.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    return len(fast[0]) == len(spans) and len(fast[1]) == sum(len(sp.events) for sp in spans)


def map_traces(
    request: ExportTraceServiceRequest,
    received_ns: int,
    new_id: Callable[[], Any] = uuid7,
    raw: bytes | None = None,
    mapper: Mapper | None = None,
) -> Mapped:
    """`raw`: the request's protobuf bytes, when the receiver has them (for the C converter).
    `mapper`: the limits, counters and memo to map with (None: a new Mapper, default limits)."""
    m = Mapper() if mapper is None else mapper
    fast = m.fast_attributes("spans", request, raw)
    if not _aligned(request, fast):
        fast = None
    span_attrs, event_attrs = (fast[0], fast[1]) if fast else ((), ())
    si = ei = 0  # index of the next span / span event in span_attrs / event_attrs
    rows: list[tuple] = []
    append = rows.append
    resources: dict[int, tuple] = {}
    items = rejected = 0
    received = to_datetime(received_ns)
    traces: dict[bytes, Any] = {}  # trace_id bytes -> UUID, shared by the spans of one trace
    kinds = SPAN_KIND_NAMES
    codes = STATUS_CODE_NAMES
    statuses = _STATUSES
    to_dt = to_datetime
    attrs_of = m.attributes
    resource_row = m.resource_row
    scope_metadata = m.scope_metadata
    dumps = json_dumps
    z16 = ZERO_TRACE_ID
    z8 = ZERO_SPAN_ID

    for rs in request.resource_spans:
        resource = resource_row(rs.resource, rs.schema_url)
        rid = resource[0]
        service = resource[1]
        first = len(rows)
        for ss in rs.scope_spans:
            meta = scope_metadata(ss.scope, ss.schema_url)
            spans = ss.spans
            items += len(spans)
            for sp in spans:
                tid = sp.trace_id
                sid = sp.span_id
                psid = sp.parent_span_id
                if fast:
                    attrs = span_attrs[si]
                    si += 1
                if len(tid) != 16 or len(sid) != 8 or tid == z16 or sid == z8 or (psid and len(psid) != 8):
                    rejected += 1
                    if fast:
                        ei += len(sp.events)
                    continue
                trace = traces.get(tid)
                if trace is None:
                    trace = traces[tid] = trace_uuid(tid)
                span_id = sid.hex()
                name = sp.name
                if "\x00" in name:
                    name = name.replace("\x00", "\ufffd")
                start = sp.start_time_unix_nano
                end = sp.end_time_unix_nano
                status = sp.status
                code = status.code
                kind = sp.kind
                status_message = status.message
                st = (
                    {"code": codes.get(code, code), "message": status_message} if status_message else statuses.get(code)
                )
                if st is None:
                    st = {"code": code}
                payload: dict[str, Any] = {
                    "kind": kinds.get(kind, kind),
                    "status": st,
                    "attributes": attrs if fast else attrs_of(sp.attributes),
                    "start_time_unix_nano": start,
                    "end_time_unix_nano": end,
                }
                if sp.links:
                    payload["links"] = [_link(link, attrs_of) for link in sp.links]
                if sp.trace_state:
                    payload["trace_state"] = sp.trace_state
                if sp.flags:
                    payload["flags"] = sp.flags
                if sp.dropped_attributes_count:
                    payload["dropped_attributes_count"] = sp.dropped_attributes_count
                if sp.dropped_events_count:
                    payload["dropped_events_count"] = sp.dropped_events_count
                if sp.dropped_links_count:
                    payload["dropped_links_count"] = sp.dropped_links_count
                if start:
                    ts = to_dt(start)
                    duration = (end - start) / 1e6 if end >= start else None
                else:
                    ts = received
                    duration = None
                append((
                    new_id(), "span", service, "error" if code == _STATUS_ERROR else "info",
                    dumps(payload), ts, meta, service, rid, trace, span_id,
                    psid.hex() if psid and psid != z8 else None, name, duration,
                ))  # fmt: skip
                events = sp.events
                if events:
                    for ev in events:
                        ev_name = ev.name
                        if "\x00" in ev_name:
                            ev_name = ev_name.replace("\x00", "\ufffd")
                        ev_ns = ev.time_unix_nano
                        ev_payload: dict[str, Any] = {
                            "span_name": name,
                            "attributes": event_attrs[ei] if fast else attrs_of(ev.attributes),
                            "time_unix_nano": ev_ns,
                        }
                        ei += 1
                        if ev.dropped_attributes_count:
                            ev_payload["dropped_attributes_count"] = ev.dropped_attributes_count
                        append((
                            new_id(), "span_event", service,
                            "error" if ev_name == "exception" else "info",
                            dumps(ev_payload), to_dt(ev_ns) if ev_ns else ts, meta, service, rid,
                            trace, span_id, None, ev_name, None,
                        ))  # fmt: skip
        if len(rows) > first:
            resources[rid] = resource

    if fast:
        m.count_truncated(fast[2], fast[3])
    reasons = {_INVALID_IDS: rejected} if rejected else {}
    message = describe_rejections(reasons, "span", "spans")
    return Mapped({SYSTEM_EVENTS: rows}, resources, items, rejected, message, reasons)
