"""Upgrade in place: the spans, span events and log records a schema-2 database stored in its
system_events table (renamed otelpg_events by migration 0003) are moved into otel_spans,
otel_span_events and otel_logs, one partition at a time.

Each partition is converted in one transaction (its rows are inserted into the new tables and
deleted from it together), so a conversion that stops — killed, a lost connection — resumes with
the partitions left, and the rows read the same through the system_events view before, during and
after. otelpg's own events (source 'otelpg' without a resource) and rows clients inserted that are
neither spans nor logs stay in otelpg_events. `otelpg migrate` converts everything; `otelpg run`
converts in its partition maintenance, a few partitions per run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import asyncpg
import orjson

from exporters.postgres.mapping.common import json_dumps_sorted, scope_id
from exporters.postgres.schema import OTEL_LOGS, OTEL_SCOPES, OTEL_SPAN_EVENTS, OTEL_SPANS, OTELPG_EVENTS

log = logging.getLogger("otelpg.legacy")

# Rows that are otelpg's own events (kept in otelpg_events) rather than spans or logs; log records
# (schema 2 gave every one a payload with these keys; rows clients inserted may have other shapes).
_OWN = "(source = 'otelpg' AND resource_id IS NULL)"
_LOG = "(event_type NOT IN ('span', 'span_event') AND payload ? 'severity_number' AND payload ? 'body')"
_LEGACY = f"((event_type IN ('span', 'span_event') OR {_LOG}) AND NOT {_OWN})"
_KINDS = "ARRAY['SPAN_KIND_UNSPECIFIED','SPAN_KIND_INTERNAL','SPAN_KIND_SERVER','SPAN_KIND_CLIENT','SPAN_KIND_PRODUCER','SPAN_KIND_CONSUMER']"  # noqa: E501
_CODES = "ARRAY['STATUS_CODE_UNSET','STATUS_CODE_OK','STATUS_CODE_ERROR']"

# An enum in schema 2's payload: its name, or a number; NULL when it doesn't fit a SMALLINT.
_ENUM = """CASE WHEN jsonb_typeof({v}) = 'number' THEN
                 CASE WHEN ({v})::numeric BETWEEN 0 AND 32767 THEN ({v})::text::smallint END
            ELSE (array_position({names}, {v} #>> '{{}}') - 1)::smallint END"""

_SPANS = f"""
WITH moved AS (
    DELETE FROM {{part}} WHERE event_type = 'span' AND NOT {_OWN} RETURNING *
), t AS (
    SELECT m.*, (payload->>'start_time_unix_nano')::numeric AS s, (payload->>'end_time_unix_nano')::numeric AS e,
           {_ENUM.format(v="payload->'kind'", names=_KINDS)} AS k,
           {_ENUM.format(v="payload->'status'->'code'", names=_CODES)} AS c,
           (payload->>'flags')::numeric AS f
    FROM moved m
)
INSERT INTO {OTEL_SPANS} (id, timestamp, nanos, service_name, resource_id, scope_id, trace_id, span_id,
                        parent_span_id, name, kind, status_code, status_message, duration_ns, flags, attributes, extra)
SELECT id, timestamp, CASE WHEN s > 0 THEN (s % 1000)::smallint ELSE 0 END, service_name, resource_id, sc.scope_id,
       trace_id, decode(span_id, 'hex'), decode(parent_span_id, 'hex'), coalesce(name, ''), coalesce(k, 0),
       coalesce(c, 0), nullif(payload->'status'->>'message', ''),
       CASE WHEN s > 0 AND e >= s AND e - s <= 9223372036854775807 THEN (e - s)::bigint END,
       CASE WHEN f BETWEEN 1 AND 2147483647 THEN f::integer END,
       coalesce(payload->'attributes', '{{}}'::jsonb),
       nullif(
           (payload - 'kind' - 'status' - 'attributes' - 'start_time_unix_nano' - 'end_time_unix_nano' - 'flags')
           || CASE WHEN k IS NULL THEN jsonb_build_object('kind', payload->'kind') ELSE '{{}}' END
           || CASE WHEN c IS NULL THEN jsonb_build_object('status', payload->'status') ELSE '{{}}' END
           || CASE WHEN f > 2147483647 THEN jsonb_build_object('flags', payload->'flags') ELSE '{{}}' END
           || CASE WHEN s IS NULL OR s = 0 THEN jsonb_build_object('start_time_unix_nano', coalesce(s, 0),
                                                                    'end_time_unix_nano', coalesce(e, 0))
                   WHEN e IS NULL OR e < s OR e - s > 9223372036854775807
                       THEN jsonb_build_object('end_time_unix_nano', coalesce(e, 0))
                   ELSE '{{}}' END,
           '{{}}'::jsonb)
FROM t LEFT JOIN scope_ids sc ON sc.metadata = t.metadata
"""

_SPAN_EVENTS = f"""
WITH moved AS (
    DELETE FROM {{part}} WHERE event_type = 'span_event' AND NOT {_OWN} RETURNING *
), t AS (
    SELECT m.*, (payload->>'time_unix_nano')::numeric AS tn FROM moved m
)
INSERT INTO {OTEL_SPAN_EVENTS} (id, timestamp, nanos, service_name, resource_id, scope_id, trace_id, span_id, name,
                              span_name, attributes, extra)
SELECT id, timestamp, CASE WHEN tn > 0 THEN (tn % 1000)::smallint ELSE 0 END,
       service_name, resource_id, sc.scope_id, trace_id, decode(span_id, 'hex'), coalesce(name, ''),
       coalesce(payload->>'span_name', ''), coalesce(payload->'attributes', '{{}}'::jsonb),
       nullif((payload - 'span_name' - 'attributes' - 'time_unix_nano')
              || CASE WHEN tn IS NULL OR tn = 0 THEN jsonb_build_object('time_unix_nano', coalesce(tn, 0))
                      ELSE '{{}}' END, '{{}}'::jsonb)
FROM t LEFT JOIN scope_ids sc ON sc.metadata = t.metadata
"""

_LOGS = f"""
WITH moved AS (
    DELETE FROM {{part}} WHERE {_LOG} AND NOT {_OWN} RETURNING *
), t AS (
    SELECT m.*, (payload->>'time_unix_nano')::numeric AS tn, (payload->>'observed_time_unix_nano')::numeric AS o,
           (payload->>'severity_number')::numeric AS sn, (payload->>'flags')::numeric AS f
    FROM moved m
)
INSERT INTO {OTEL_LOGS} (id, timestamp, nanos, service_name, resource_id, scope_id, trace_id, span_id, event_type,
                       severity, severity_number, severity_text, observed_time_unix_nano, flags, body, body_value,
                       attributes, extra)
SELECT id, timestamp, CASE WHEN tn > 0 THEN (tn % 1000)::smallint
                           WHEN o > 0 AND o <= 9223372036854775807 THEN (o % 1000)::smallint ELSE 0 END,
       service_name, resource_id, sc.scope_id, trace_id, decode(span_id, 'hex'), event_type,
       left(severity, 1)::"char",
       CASE WHEN sn BETWEEN -32767 AND 32767 THEN sn::smallint ELSE 0 END,
       nullif(payload->>'severity_text', ''),
       CASE WHEN o BETWEEN 1 AND 9223372036854775807 THEN o::bigint END,
       CASE WHEN f BETWEEN 1 AND 2147483647 THEN f::integer END,
       CASE WHEN jsonb_typeof(payload->'body') = 'string' THEN payload->>'body' END,
       CASE WHEN jsonb_typeof(payload->'body') NOT IN ('string', 'null') THEN payload->'body' END,
       coalesce(payload->'attributes', '{{}}'::jsonb),
       nullif(
           (payload - 'body' - 'attributes' - 'severity_number' - 'severity_text' - 'time_unix_nano'
                    - 'observed_time_unix_nano' - 'flags')
           || CASE WHEN sn NOT BETWEEN -32767 AND 32767 THEN jsonb_build_object('severity_number', payload->'severity_number') ELSE '{{}}' END
           || CASE WHEN f > 2147483647 THEN jsonb_build_object('flags', payload->'flags') ELSE '{{}}' END
           || CASE WHEN o > 9223372036854775807 THEN jsonb_build_object('observed_time_unix_nano', payload->'observed_time_unix_nano') ELSE '{{}}' END
           || CASE WHEN tn IS NULL OR tn = 0 THEN jsonb_build_object('time_unix_nano', coalesce(tn, 0)) ELSE '{{}}' END,
           '{{}}'::jsonb)
FROM t LEFT JOIN scope_ids sc ON sc.metadata = t.metadata
"""  # noqa: E501

_PARTITIONS = f"""
SELECT partition FROM otelpg_partitions WHERE parent = '{OTELPG_EVENTS}' ORDER BY range_start NULLS FIRST
"""


@dataclass
class Conversion:
    partitions: int = 0  # partitions converted
    spans: int = 0
    span_events: int = 0
    logs: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.spans + self.span_events + self.logs


async def _has_legacy_rows(conn: asyncpg.Connection, part: str) -> bool:
    return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {_ident(part)} WHERE {_LEGACY})"))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def convert_partition(conn: asyncpg.Connection, part: str) -> tuple[int, int, int]:
    """Move one otelpg_events partition's spans, span events and logs (one transaction)."""
    async with conn.transaction():
        metadata = [
            r["metadata"]
            for r in await conn.fetch(f"SELECT DISTINCT metadata::text AS metadata FROM {_ident(part)} WHERE {_LEGACY}")
        ]
        await conn.execute("CREATE TEMPORARY TABLE scope_ids (metadata JSONB, scope_id BIGINT) ON COMMIT DROP")
        scopes = []
        for m in metadata:
            if m == "{}":
                continue
            meta = orjson.loads(m)
            info = meta.get("scope") or {}
            canonical = json_dumps_sorted(meta)  # what the mapping hashes: the same scope, the same id
            scopes.append((scope_id(canonical), info.get("name") or None, info.get("version") or None, canonical))
        if scopes:
            await conn.executemany(
                f"INSERT INTO {OTEL_SCOPES} (scope_id, name, version, metadata) VALUES ($1, $2, $3, $4::jsonb) "
                "ON CONFLICT (scope_id) DO NOTHING",
                scopes,
            )
            await conn.executemany(
                "INSERT INTO scope_ids (metadata, scope_id) VALUES ($1::jsonb, $2)", [(s[3], s[0]) for s in scopes]
            )
        counts = []
        for sql in (_SPANS, _SPAN_EVENTS, _LOGS):
            status = await conn.execute(sql.replace("{part}", _ident(part)))
            counts.append(int(status.split()[-1]))
    return counts[0], counts[1], counts[2]


async def convert_legacy_rows(conn: asyncpg.Connection, max_partitions: int | None = None) -> Conversion:
    """Convert otelpg_events partitions that still hold spans, span events or log records, oldest
    first (at most `max_partitions` of them)."""
    done = Conversion()
    started = time.perf_counter()
    for r in await conn.fetch(_PARTITIONS):
        if max_partitions is not None and done.partitions >= max_partitions:
            break
        part = r["partition"]
        if not await _has_legacy_rows(conn, part):
            continue
        spans, events, logs = await convert_partition(conn, part)
        done.partitions += 1
        done.spans += spans
        done.span_events += events
        done.logs += logs
        log.info("converted %s: %d spans, %d span events, %d log records", part, spans, events, logs)
    done.seconds = time.perf_counter() - started
    return done
