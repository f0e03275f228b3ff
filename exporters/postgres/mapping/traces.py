"""ExportTraceServiceRequest → otel_spans rows (one per span), otel_span_events rows (one per span
event) and the otel_scopes rows they reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from uuid_utils import uuid7

from exporters.postgres.mapping.common import (
    BIGINT_MAX,
    INT_MAX,
    SMALLINT_MAX,
    ZERO_SPAN_ID,
    ZERO_TRACE_ID,
    Mapped,
    Mapper,
    Tables,
    describe_rejections,
    json_dumps,
    text,
    to_datetime,
    trace_uuid,
)
from exporters.postgres.schema import OTEL_SCOPES, OTEL_SPAN_EVENTS, OTEL_SPANS

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


def _extra(
    sp: Any,
    attrs_of: Callable[[Any], dict[str, Any]],
    start: int,
    end: int,
    duration: int | None,
    kind: int,
    code: int,
    flags: int,
) -> dict[str, Any] | None:
    """What of a span has no column, None for most spans: links, trace_state, dropped counts, the
    exact start and end times when `timestamp`, `nanos` and `duration_ns` can't give them, and
    kind, status and flags beyond their columns' range (the columns then get 0)."""
    links, trace_state = sp.links, sp.trace_state
    dropped_attributes, dropped_events, dropped_links = (
        sp.dropped_attributes_count, sp.dropped_events_count, sp.dropped_links_count
    )  # fmt: skip
    in_range = 0 <= kind <= SMALLINT_MAX and 0 <= code <= SMALLINT_MAX and flags <= INT_MAX
    if not (
        links or trace_state or duration is None or dropped_attributes or dropped_events or dropped_links
        or not in_range
    ):  # fmt: skip
        return None
    extra: dict[str, Any] = {}
    if links:
        extra["links"] = [_link(link, attrs_of) for link in links]
    if trace_state:
        extra["trace_state"] = trace_state
    if dropped_attributes:
        extra["dropped_attributes_count"] = dropped_attributes
    if dropped_events:
        extra["dropped_events_count"] = dropped_events
    if dropped_links:
        extra["dropped_links_count"] = dropped_links
    if not start:
        extra["start_time_unix_nano"] = 0
        extra["end_time_unix_nano"] = end
    elif duration is None:
        extra["end_time_unix_nano"] = end
    if not 0 <= kind <= SMALLINT_MAX:
        extra["kind"] = kind
    if not 0 <= code <= SMALLINT_MAX:
        message = sp.status.message
        extra["status"] = {"code": code, "message": text(message)} if message else {"code": code}
    if flags > INT_MAX:
        extra["flags"] = flags
    return extra


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
    spans_out: list[tuple] = []
    append = spans_out.append
    events_out: list[tuple] = []
    append_event = events_out.append
    scopes: dict[int, tuple] = {}
    resources: dict[int, tuple] = {}
    items = rejected = 0
    received = to_datetime(received_ns)
    traces: dict[bytes, Any] = {}  # trace_id bytes -> UUID, shared by the spans of one trace
    to_dt = to_datetime
    attrs_of = m.attributes
    resource_row = m.resource_row
    scope_row = m.scope_row
    dumps = json_dumps
    z16 = ZERO_TRACE_ID
    z8 = ZERO_SPAN_ID

    for rs in request.resource_spans:
        resource = resource_row(rs.resource, rs.schema_url)
        rid = resource[0]
        service = resource[1]
        first = len(spans_out)
        for ss in rs.scope_spans:
            scope = scope_row(ss.scope, ss.schema_url)
            scope_id = None
            if scope is not None:
                scope_id = scope[0]
                scopes[scope_id] = scope
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
                name = sp.name
                if "\x00" in name:
                    name = name.replace("\x00", "\ufffd")
                start = sp.start_time_unix_nano
                end = sp.end_time_unix_nano
                status = sp.status
                message = status.message
                if start:
                    ts = to_dt(start)
                    nanos = start % 1000
                    duration = end - start if start <= end <= start + BIGINT_MAX else None
                else:
                    ts = received
                    nanos = 0
                    duration = None
                kind = sp.kind
                code = status.code
                flags = sp.flags
                extra = _extra(sp, attrs_of, start, end, duration, kind, code, flags)
                if extra is not None:  # what it keeps exactly, the columns hold as 0
                    kind = 0 if "kind" in extra else kind
                    code = 0 if "status" in extra else code
                    flags = 0 if "flags" in extra else flags
                append((
                    new_id(), ts, nanos, service, rid, scope_id, trace, sid,
                    psid if psid and psid != z8 else None, name, kind, code,
                    text(message) if message else None, duration, flags or None,
                    dumps(attrs if fast else attrs_of(sp.attributes)), dumps(extra) if extra else None,
                ))  # fmt: skip
                events = sp.events
                if events:
                    for ev in events:
                        ev_name = ev.name
                        if "\x00" in ev_name:
                            ev_name = ev_name.replace("\x00", "\ufffd")
                        ev_ns = ev.time_unix_nano
                        ev_extra: dict[str, Any] = {}
                        if ev.dropped_attributes_count:
                            ev_extra["dropped_attributes_count"] = ev.dropped_attributes_count
                        if not ev_ns:
                            ev_extra["time_unix_nano"] = 0
                        append_event((
                            new_id(), to_dt(ev_ns) if ev_ns else ts, ev_ns % 1000 if ev_ns else nanos,
                            service, rid, scope_id, trace, sid, ev_name, name,
                            dumps(event_attrs[ei] if fast else attrs_of(ev.attributes)),
                            dumps(ev_extra) if ev_extra else None,
                        ))  # fmt: skip
                        ei += 1
        if len(spans_out) > first:
            resources[rid] = resource

    if fast:
        m.count_truncated(fast[2], fast[3])
    reasons = {_INVALID_IDS: rejected} if rejected else {}
    message = describe_rejections(reasons, "span", "spans")
    rows: Tables = {OTEL_SPANS: spans_out, OTEL_SPAN_EVENTS: events_out, OTEL_SCOPES: list(scopes.values())}
    return Mapped(rows, resources, items, rejected, message, reasons)
