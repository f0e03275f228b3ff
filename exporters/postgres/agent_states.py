"""agent_states: one row per service instance otelpg hears from, kept current in memory and
upserted in one statement every few seconds (never per row).

The tracker is fed after a request is durable (PostgresExporter's after_commit), so a request the
client retries is never counted twice. An instance is `service.name/service.instance.id`, else
`service.name/host.name`, else `service.name`. Per instance it keeps:
- `last_active` (when otelpg last received from it) and `current_task` (the last span name seen);
- `performance_metrics`: counts over the last `window` seconds (spans, log records, metric
  points, errors, requests) and the rates they make;
- errors (spans with status ERROR, log records of severity error/fatal) since the last flush,
  prepended in SQL to the stored `error_log` and cut to the newest `error_log_size`, so the log
  survives restarts and several sidecars writing the same instance.
The same flush marks `stale` every row (from any sidecar) silent for longer than `stale_after`.

No client can keep other instances' rows out: service name and instance id are cut to what
PostgreSQL can index (`key_text`), and when PostgreSQL refuses the one-statement upsert for good,
the rows are upserted one by one, each in a savepoint, and only a row refused alone is dropped
(logged, counted in `failed_rows`). At most `max_instances` instances are tracked: a new one
beyond that is not (counted in `overflow`) until idle ones are forgotten.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporters.postgres.config import AgentStatesConfig
from exporters.postgres.mapping.common import MEMO_KEY_MAX_BYTES, Mapper, json_dumps
from exporters.postgres.mapping.logs import severity
from exporters.postgres.schema import AGENT_STATES, Positions
from exporters.postgres.writer import classify
from sidecar.pipeline.component import HEALTHY, Health, Tasks
from sidecar.pipeline.errors import RetryableError
from sidecar.pipeline.signals import LOGS, METRICS, TRACES, Signal
from sidecar.pipeline.span_metrics import LogSummary, TraceSummary

__all__ = ["AgentTracker", "agent_identity"]

log = logging.getLogger("otelpg.agent_states")

# A pending row: the parameters of _UPSERT ($1-$8), in this order.
_ROW_COLUMNS = (
    "agent_key", "service_name", "instance_id", "current_task", "last_active", "performance_metrics",
    "error_log", "resource_id",
)  # fmt: skip


class _Row(Positions, columns=_ROW_COLUMNS):
    AGENT_KEY: int
    SERVICE_NAME: int
    INSTANCE_ID: int
    CURRENT_TASK: int
    LAST_ACTIVE: int
    PERFORMANCE_METRICS: int
    ERROR_LOG: int
    RESOURCE_ID: int


_SLOT = 10.0  # seconds per throughput slot
_MESSAGE_MAX = 512
_STATUS_ERROR = 2
_ERROR_SEVERITY = 17  # severity_number 17-24: error, fatal
_MEMO_MAX = 4096
_KEY_IN_LOG = 100  # characters of an agent_key a warning shows
_REASON_IN_LOG = 300
_KINDS = ("spans", "log_records", "metric_points", "errors", "requests")
_SPANS, _LOGS, _POINTS, _ERRORS, _REQUESTS = range(5)

_UPSERT = f"""
INSERT INTO {AGENT_STATES} AS a (agent_key, service_name, instance_id, status, current_task, last_active,
                                 performance_metrics, error_log, resource_id, updated_at)
SELECT u.k, u.s, u.i, 'active', u.t, u.la, u.pm::jsonb, u.el::jsonb, u.rid, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
            $8::bigint[]) AS u(k, s, i, t, la, pm, el, rid)
ON CONFLICT (agent_key) DO UPDATE SET
    service_name = EXCLUDED.service_name,
    instance_id = EXCLUDED.instance_id,
    status = 'active',
    current_task = coalesce(EXCLUDED.current_task, a.current_task),
    last_active = greatest(a.last_active, EXCLUDED.last_active),
    performance_metrics = EXCLUDED.performance_metrics,
    error_log = (SELECT coalesce(jsonb_agg(x.e ORDER BY x.n), '[]'::jsonb)
                 FROM jsonb_array_elements(EXCLUDED.error_log || a.error_log) WITH ORDINALITY AS x(e, n)
                 WHERE x.n <= $9),
    resource_id = coalesce(EXCLUDED.resource_id, a.resource_id),
    updated_at = now()
"""

_MARK_STALE = f"""
UPDATE {AGENT_STATES} SET status = 'stale', updated_at = now()
WHERE status = 'active' AND last_active < $1
"""


def _attr(resource: Any, key: str, mapper: Mapper) -> str | None:
    for kv in resource.attributes:
        if kv.key == key:
            v = mapper.any_value(kv.value)
            return str(v) if v not in (None, "") else None
    return None


def agent_identity(
    resource: Any, schema_url: str = "", mapper: Mapper | None = None
) -> tuple[str, str, str | None, int]:
    """(agent_key, service_name, instance_id, resource_id) of an OTLP Resource. `mapper`: the
    limits the mapping uses (resource_id must be the one it gives), and the counts of cut keys."""
    m = Mapper() if mapper is None else mapper
    rid, service, _, _ = m.resource_row(resource, schema_url)
    service = m.key_text(service)  # indexed (agent_key): a 10 KB id must not make the row unstorable
    instance = _attr(resource, "service.instance.id", m) or _attr(resource, "host.name", m)
    instance = m.key_text(instance) if instance else None
    key = f"{service}/{instance}" if instance else service
    return key, service, instance, rid


@dataclass
class _Agent:
    service: str
    instance: str | None
    resource_id: int
    last_active: float = 0.0
    current_task: str | None = None
    slots: deque[list] = field(default_factory=deque)  # [slot start, spans, logs, points, errors, requests]
    errors: deque[dict] = field(default_factory=deque)  # newest first, not yet flushed
    dirty: bool = False


def _iso(ns: int) -> str | None:
    if not ns:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()


def _short(s: str) -> str:
    return s if len(s) <= _MESSAGE_MAX else s[:_MESSAGE_MAX] + "…"


def _key_for_log(key: str) -> str:
    return key if len(key) <= _KEY_IN_LOG else key[:_KEY_IN_LOG] + "…"


class AgentTracker:
    def __init__(
        self,
        *,
        window: float = 60.0,
        error_log_size: int = 20,
        max_instances: int = 10_000,
        clock: Any = time.time,
        mapper: Mapper | None = None,
    ) -> None:
        """`mapper`: the limits resources are read with, so resource_id is the mapping's (it must
        not be the mapping thread's own Mapper: the tracker runs on the event loop)."""
        self._mapper = Mapper() if mapper is None else mapper
        self.window = window
        self.error_log_size = error_log_size
        self.max_instances = max_instances
        self._clock = clock
        self._agents: dict[str, _Agent] = {}
        self._identity: dict[tuple[bytes, str], tuple[str, str, str | None, int]] = {}
        # hash() of the keys refused since the last flush: each counted once per flush interval.
        # Capped like the instances (ints, not keys: a refused key may be 2 KB).
        self._refused: set[int] = set()
        self.overflow = 0  # new instances not tracked because max_instances were
        self.failed_rows = 0  # rows PostgreSQL refused even alone: dropped

    def __len__(self) -> int:
        return len(self._agents)

    # ------------------------------------------------------------------ observing (sync, cheap)

    def _agent(self, resource: Any, schema_url: str, now: float) -> _Agent | None:
        """The resource's instance (a Resource, or a serialized one), None when it is new and
        max_instances are tracked already."""
        raw = resource if isinstance(resource, bytes) else resource.SerializeToString()
        memo_key = (raw, schema_url)
        ident = self._identity.get(memo_key)
        if ident is None:
            if isinstance(resource, bytes):
                resource = Resource.FromString(resource)
            ident = agent_identity(resource, schema_url, self._mapper)
            if len(memo_key[0]) <= MEMO_KEY_MAX_BYTES:  # bounded in bytes too: huge resources aren't kept
                if len(self._identity) >= _MEMO_MAX:
                    self._identity.clear()
                self._identity[memo_key] = ident
        key, service, instance, rid = ident
        agent = self._agents.get(key)
        if agent is None:
            if len(self._agents) >= self.max_instances:
                self._refuse(key)
                return None
            agent = self._agents[key] = _Agent(service, instance, rid)
        agent.last_active = now
        agent.dirty = True
        return agent

    def _refuse(self, key: str) -> None:
        h = hash(key)
        if h not in self._refused:
            self.overflow += 1
            if len(self._refused) < self.max_instances:
                self._refused.add(h)

    def _count(self, agent: _Agent, now: float, what: int, n: int, errors: int) -> None:
        start = now - now % _SLOT
        slots = agent.slots
        if not slots or slots[-1][0] != start:
            slots.append([start, 0, 0, 0, 0, 0])
            horizon = now - self.window - _SLOT
            while slots and slots[0][0] < horizon:
                slots.popleft()
        slot = slots[-1]
        slot[1 + what] += n
        slot[1 + _ERRORS] += errors
        slot[1 + _REQUESTS] += 1

    def _error(self, agent: _Agent, entry: dict) -> None:
        agent.errors.appendleft(entry)
        if len(agent.errors) > self.error_log_size:
            agent.errors.pop()

    def observe(self, signal: Signal, request: Any, now: float | None = None) -> None:
        """Account for one durable OTLP export request of any signal."""
        now = self._clock() if now is None else now
        if isinstance(request, TraceSummary):
            self._observe_summary(request, now)
        elif isinstance(request, LogSummary):
            self._observe_log_summary(request, now)
        elif signal is TRACES:
            for rs in request.resource_spans:
                agent = self._agent(rs.resource, rs.schema_url, now)
                if agent is None:
                    continue
                n = errors = 0
                for ss in rs.scope_spans:
                    spans = ss.spans
                    if not spans:
                        continue
                    n += len(spans)
                    agent.current_task = spans[-1].name or agent.current_task
                    for sp in spans:
                        if sp.status.code == _STATUS_ERROR:
                            errors += 1
                            self._error(agent, {
                                "time": _iso(sp.start_time_unix_nano), "signal": "span", "name": sp.name,
                                "message": _short(sp.status.message), "trace_id": sp.trace_id.hex(),
                            })  # fmt: skip
                self._count(agent, now, _SPANS, n, errors)
        elif signal is LOGS:
            for rl in request.resource_logs:
                agent = self._agent(rl.resource, rl.schema_url, now)
                if agent is None:
                    continue
                n = errors = 0
                for sl in rl.scope_logs:
                    records = sl.log_records
                    n += len(records)
                    for rec in records:
                        number = rec.severity_number
                        if number >= _ERROR_SEVERITY or (
                            number == 0 and rec.severity_text and severity(0, rec.severity_text) in ("error", "fatal")
                        ):
                            errors += 1
                            body = self._mapper.any_value(rec.body)
                            entry = {
                                "time": _iso(rec.time_unix_nano or rec.observed_time_unix_nano), "signal": "log",
                                "severity": severity(number, rec.severity_text),
                                "message": _short(body if isinstance(body, str) else json_dumps(body)),
                            }  # fmt: skip
                            if rec.trace_id:
                                entry["trace_id"] = rec.trace_id.hex()
                            self._error(agent, entry)
                self._count(agent, now, _LOGS, n, errors)
        elif signal is METRICS:
            for rm in request.resource_metrics:
                agent = self._agent(rm.resource, rm.schema_url, now)
                if agent is None:
                    continue
                n = 0
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        if kind is not None:
                            n += len(getattr(metric, kind).data_points)
                self._count(agent, now, _POINTS, n, 0)

    def _observe_summary(self, summary: TraceSummary, now: float) -> None:
        """The native encoder's per-resource counts: what the TRACES branch of `observe` counts."""
        for r in summary.resources:
            agent = self._agent(r.resource, r.schema_url, now)
            if agent is None:
                continue
            if r.current_task:
                agent.current_task = r.current_task
            for start, name, message, trace_id in r.recent_errors:
                self._error(agent, {
                    "time": _iso(start), "signal": "span", "name": name,
                    "message": _short(message), "trace_id": trace_id.hex(),
                })  # fmt: skip
            self._count(agent, now, _SPANS, r.spans, r.errors)

    def _observe_log_summary(self, summary: LogSummary, now: float) -> None:
        """The native encoder's per-resource counts: what the LOGS branch of `observe` counts (the
        bodies of the newest errors are converted here, a bounded few per resource)."""
        for r in summary.resources:
            agent = self._agent(r.resource, r.schema_url, now)
            if agent is None:
                continue
            for time_ns, text, body_bytes, trace_id, number in r.recent_errors:
                body = self._mapper.any_value(AnyValue.FromString(body_bytes))
                entry = {
                    "time": _iso(time_ns), "signal": "log", "severity": severity(number, text),
                    "message": _short(body if isinstance(body, str) else json_dumps(body)),
                }  # fmt: skip
                if trace_id:
                    entry["trace_id"] = trace_id.hex()
                self._error(agent, entry)
            self._count(agent, now, _LOGS, r.records, r.errors)

    # ------------------------------------------------------------------ flushing

    def _window_metrics(self, agent: _Agent, now: float) -> dict[str, Any]:
        horizon = now - self.window
        totals = [0] * len(_KINDS)
        for slot in agent.slots:
            if slot[0] + _SLOT > horizon:
                for i in range(len(_KINDS)):
                    totals[i] += slot[1 + i]
        out: dict[str, Any] = {"window_seconds": self.window}
        for name, total in zip(_KINDS, totals, strict=True):
            out[name] = total
        items = totals[_SPANS] + totals[_LOGS] + totals[_POINTS]
        out["items_per_second"] = round(items / self.window, 3)
        out["errors_per_second"] = round(totals[_ERRORS] / self.window, 3)
        return out

    def pending(self, now: float | None = None) -> list[tuple]:
        """Rows for the instances heard from since the last flush, sorted by key (lock order);
        marks them flushed (call `restore` with them if the write fails)."""
        now = self._clock() if now is None else now
        self._refused.clear()
        rows = []
        for key in sorted(k for k, a in self._agents.items() if a.dirty):
            agent = self._agents[key]
            rows.append((
                key, agent.service, agent.instance, agent.current_task,
                dt.datetime.fromtimestamp(agent.last_active, dt.UTC),
                json_dumps(self._window_metrics(agent, now)), json_dumps(list(agent.errors)), agent.resource_id,
            ))  # fmt: skip
            agent.dirty = False
            agent.errors.clear()
        return rows

    def restore(self, rows: list[tuple]) -> None:
        """Put back rows whose write failed: flushed again next time (their errors included)."""
        for row in rows:
            agent = self._agents.get(row[_Row.AGENT_KEY])
            if agent is None:
                continue
            agent.dirty = True
            for entry in orjson.loads(row[_Row.ERROR_LOG]):  # newest first, older than any error seen since
                if len(agent.errors) < self.error_log_size:
                    agent.errors.append(entry)

    def forget_idle(self, older_than: float) -> None:
        """Drop the in-memory state of instances silent since before `older_than` (epoch s)."""
        for key in [k for k, a in self._agents.items() if a.last_active < older_than and not a.dirty]:
            del self._agents[key]

    async def flush(self, conn: asyncpg.Connection, stale_after: float, now: float | None = None) -> tuple[int, int]:
        """Upsert the instances heard from since the last flush and mark silent ones stale;
        return (rows upserted, rows marked stale). On a transient failure the rows not yet
        written are kept for the next flush."""
        now = self._clock() if now is None else now
        rows = self.pending(now)
        done = written = 0  # rows[:done] are written or dropped: never restored
        try:
            if rows:
                try:
                    await self._upsert(conn, rows)
                    done = written = len(rows)
                except Exception as e:
                    if isinstance(classify(e), RetryableError):
                        raise
                    # Refused for good: find the row(s) PostgreSQL refuses, write every other one.
                    for row in rows:
                        written += await self._upsert_alone(conn, row)
                        done += 1
            status = await conn.execute(_MARK_STALE, dt.datetime.fromtimestamp(now - stale_after, dt.UTC))
        except BaseException:
            self.restore(rows[done:])
            raise
        self.forget_idle(now - max(stale_after, self.window) - _SLOT)
        return written, int(status.split()[-1])

    async def _upsert(self, conn: asyncpg.Connection, rows: list[tuple]) -> None:
        async with conn.transaction():  # a savepoint if the caller has a transaction: it stays usable
            await conn.execute(_UPSERT, *map(list, zip(*rows, strict=True)), self.error_log_size)

    async def _upsert_alone(self, conn: asyncpg.Connection, row: tuple) -> int:
        """Upsert one row; 1 if written, 0 if PostgreSQL refuses it for good (dropped, logged)."""
        try:
            await self._upsert(conn, [row])
        except Exception as e:
            if isinstance(classify(e), RetryableError):
                raise
            self.failed_rows += 1
            # PostgreSQL's primary message only: its DETAIL repeats the whole row, over lines.
            reason = str(getattr(e, "message", None) or e).partition("\n")[0][:_REASON_IN_LOG]
            log.warning(
                "agent_states row %s dropped: %s: %s", _key_for_log(row[_Row.AGENT_KEY]), type(e).__name__, reason
            )
            return 0
        return 1


class AgentStates:
    """The tracker as a component: fed after each commit (an after-commit observer), flushed every
    `agent_states.flush_interval` seconds and once more at stop (after the queue drained)."""

    name = "agent_states"

    def __init__(
        self, pool: asyncpg.Pool, config: AgentStatesConfig, *, clock: Any = time.time, mapper: Mapper | None = None
    ) -> None:
        self._pool = pool
        self._config = config
        self.tracker = AgentTracker(
            window=config.window,
            error_log_size=config.error_log_size,
            max_instances=config.max_instances,
            clock=clock,
            mapper=mapper,
        )
        self._tasks = Tasks()

    def after_commit(self, signal: Signal, request: Any) -> None:
        self.tracker.observe(signal, request)

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), "otelpg-agent-states")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        await self._tasks.cancel()
        try:
            await asyncio.wait_for(self.flush(), flush_timeout)
        except Exception as e:
            log.info("agent_states not flushed at shutdown: %s", e)

    def health(self) -> Health:
        return HEALTHY

    async def flush(self, now: float | None = None) -> tuple[int, int]:
        async with self._pool.acquire() as conn:
            return await self.tracker.flush(conn, self._config.stale_after, now)

    async def _loop(self) -> None:
        interval = max(0.1, self._config.flush_interval)
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as e:  # kept in memory and flushed next time
                log.log(
                    logging.INFO if failing else logging.WARNING,
                    "agent_states not flushed: %s: %s",
                    type(e).__name__,
                    e,
                )
                failing = True
            else:
                if failing:
                    log.info("agent_states flushed again")
                failing = False
