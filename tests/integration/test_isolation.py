"""No client's data holds back, stalls or damages another's: against a real PostgreSQL.

A value PostgreSQL refuses for good is provoked for real, with CHECK constraints on the test
schema's tables ('poison' in a name), and keys too long for a B-tree with 10 KB strings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client import CollectorRegistry

from exporters.postgres.batcher import Batcher
from exporters.postgres.dead_letter import DeadLetter, read_letters
from exporters.postgres.derived import DerivedRows
from exporters.postgres.exporter import PostgresExporter
from exporters.postgres.ids import request_ids
from exporters.postgres.mapping.common import rows_memory
from exporters.postgres.mapping_thread import MappingThread, map_chunk
from exporters.postgres.replayer import Replayer
from exporters.postgres.spool import Spool
from exporters.postgres.writer import Writer
from sidecar.config import Config
from sidecar.pipeline import otlpwire
from sidecar.pipeline.admission import Admission
from sidecar.pipeline.consumer import ExportRequest
from sidecar.pipeline.signals import LOGS, METRICS, Signal
from sidecar.pipeline.span_metrics import LogSummary
from sidecar.pipeline.telemetry import Telemetry
from tests.unit.mapping.builders import kvs, resource

NOW_NS = time.time_ns()


def logs_request(service: str, n: int, *, event: str = "", user: str = "") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.CopyFrom(resource({"service.name": service}))
    scope = rl.scope_logs.add()
    for i in range(n):
        rec = scope.log_records.add(time_unix_nano=NOW_NS + i, severity_number=9)
        rec.body.string_value = f"{service} {i}"
        attrs = {"i": i}
        if event:
            attrs["event.name"] = event
        if user:
            attrs["enduser.id"] = user
        rec.attributes.extend(kvs(attrs))
    return req


def metrics_request(service: str, n: int, name: str = "requests") -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.CopyFrom(resource({"service.name": service}))
    metric = rm.scope_metrics.add().metrics.add(name=name)
    for i in range(n):
        dp = metric.gauge.data_points.add(time_unix_nano=NOW_NS + i * 1_000_000_000, as_double=float(i))
        dp.attributes.extend(kvs({"k": i % 3}))
    return req


def export(signal: Signal, message) -> ExportRequest:
    body = message.SerializeToString()
    split = otlpwire.split(signal.code, body)
    return ExportRequest.from_split(signal, body, split)


class Pipeline:
    """The write path as otelpg wires it (mapping thread, batcher, writer with the derived rows' hook,
    exporter, spool, replayer, dead letters), on a fresh schema."""

    def __init__(self, pool: asyncpg.Pool, tmp_path: Path) -> None:
        self.telemetry = Telemetry(CollectorRegistry())
        config = Config(data_dir=str(tmp_path))
        self.derived = DerivedRows.configured(config.rollups, config.user_analytics, config.data_dir)
        self.writer = Writer(pool, self.telemetry, hooks=[self.derived.batch_hook], retry_delays=())
        self.batcher = Batcher(
            self.writer.write,
            max_rows=5000,
            max_delay=0.5,
            linger=0.2,
            queue_max_rows=100_000,
            queue_max_bytes=1 << 30,
            writers=1,
        )
        self.mapping = MappingThread()
        self.dead_letter = DeadLetter(tmp_path / "dead-letter", max_bytes=1 << 30)
        self.spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
        self.database_ok = True
        self.exporter = PostgresExporter(
            self.batcher,
            self.mapping,
            lambda: self.database_ok,
            spool=self.spool,
            dead_letter=self.dead_letter,
            telemetry=self.telemetry,
        )
        self.replayer = Replayer(
            self.spool,
            self.writer,
            self.mapping,
            self.telemetry,
            database_ok=lambda: True,
            on_replayed=lambda info: None,
            dead_letter=self.dead_letter,
        )

    async def close(self) -> None:
        await self.batcher.close(5)
        self.spool.close()
        self.mapping.close()


@pytest.fixture
async def pipeline(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Pipeline]:
    p = Pipeline(pool, tmp_path)
    await p.batcher.start()
    try:
        yield p
    finally:
        await p.close()


async def poison(db: asyncpg.Connection, table: str, column: str) -> None:
    """Make PostgreSQL refuse, for good, any row whose `column` is 'poison' (a real check_violation)."""
    await db.execute(f"ALTER TABLE {table} ADD CONSTRAINT no_poison CHECK ({column} IS DISTINCT FROM 'poison')")


async def logs_of(db: asyncpg.Connection, service: str) -> int:
    return await db.fetchval("SELECT count(*) FROM system_events WHERE service_name = $1", service)


# --------------------------------------------------------------------------- live requests


async def test_an_item_postgresql_refuses_costs_only_itself(pipeline, db):
    await poison(db, "otel_logs", "event_type")
    innocent = [pipeline.exporter.consume(export(LOGS, logs_request(f"innocent-{k}", 30))) for k in range(5)]
    bad = logs_request("mixed", 10)
    bad.resource_logs[0].scope_logs[0].log_records[3].attributes.extend(kvs({"event.name": "poison"}))
    results = await asyncio.gather(*innocent, pipeline.exporter.consume(export(LOGS, bad)))
    for k, result in enumerate(results[:5]):
        assert result.rejected == 0 and result.message == ""
        assert await logs_of(db, f"innocent-{k}") == 30
    assert results[5].rejected == 1
    assert await logs_of(db, "mixed") == 9  # the other records of the same request are stored
    message = results[5].message
    assert "1 log record rejected" in message and "'poison'" in message and "'mixed'" in message
    for internal in ("system_events", "otel_logs", "no_poison", "Failing row", "partition", "index"):
        assert internal not in message  # names the item, not database internals
    letters = read_letters(pipeline.dead_letter.path)
    assert len(letters) == 1 and letters[0]["source"] == "live" and letters[0]["services"] == ["mixed"]
    assert ExportLogsServiceRequest.FromString(letters[0]["payload"]) == bad


async def test_names_too_long_for_an_index_are_truncated_not_refused(pipeline, db):
    long_event, long_service, long_user = "e" * 10_000, "s" * 10_000, "u" * 3_000
    results = await asyncio.gather(
        pipeline.exporter.consume(export(LOGS, logs_request("innocent", 10))),
        pipeline.exporter.consume(export(LOGS, logs_request(long_service, 10, event=long_event, user=long_user))),
        pipeline.exporter.consume(export(METRICS, metrics_request("innocent", 5, name="m" * 10_000))),
    )
    assert [(r.rejected, r.message) for r in results] == [(0, "")] * 3
    assert await logs_of(db, "innocent") == 10
    stored = await db.fetch("SELECT service_name, event_type, payload FROM system_events WHERE event_type LIKE 'eee%'")
    assert len(stored) == 10
    assert {len(r["service_name"]) for r in stored} == {1024} and {len(r["event_type"]) for r in stored} == {1024}
    assert await db.fetchval("SELECT count(*) FROM user_analytics WHERE length(user_id) = 1024") == 10
    assert await db.fetchval("SELECT count(*) FROM performance_metrics WHERE length(metric_name) = 1024") == 5
    # the whole name is kept where nothing indexes it
    assert await db.fetchval("SELECT count(*) FROM performance_metrics WHERE details->>'name' = $1", "m" * 10_000) == 5


# --------------------------------------------------------------------------- derived rows


async def test_derived_rows_failing_for_one_request_cost_no_other_request_its_own(pipeline, db, caplog):
    await poison(db, "user_analytics", "user_id")
    results = await asyncio.gather(  # merged into one batch (linger 0.2 s)
        pipeline.exporter.consume(export(METRICS, metrics_request("innocent", 60))),
        pipeline.exporter.consume(export(LOGS, logs_request("innocent", 10, user="alice"))),
        pipeline.exporter.consume(export(LOGS, logs_request("guilty", 10, user="poison"))),
    )
    assert all(r.rejected == 0 for r in results)  # raw rows: all stored
    assert await db.fetchval("SELECT count(*) FROM performance_metrics WHERE service_name = 'innocent'") == 60
    assert await db.fetchval("SELECT sum(count) FROM performance_metrics_1m WHERE service_name = 'innocent'") == 60
    assert await db.fetchval("SELECT count(*) FROM user_analytics WHERE user_id = 'alice'") == 10
    assert await db.fetchval("SELECT count(*) FROM user_analytics WHERE service_name = 'guilty'") == 0
    assert await db.fetchval("SELECT count(*) FROM otelpg_event_types WHERE service_name = 'guilty'") == 1
    assert pipeline.derived.failures == {"user_analytics": 10}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "user_analytics" in r.getMessage()]
    assert warnings and "guilty" in warnings[0].getMessage()


# --------------------------------------------------------------------------- spool replay


async def test_a_spooled_request_postgresql_refuses_never_blocks_the_replay_of_others(pipeline, db):
    await poison(db, "otel_logs", "event_type")
    pipeline.database_ok = False  # as during an outage: every request is spooled and acknowledged
    first = logs_request("innocent-before", 40)
    bad = logs_request("guilty", 5, event="poison")
    later = [logs_request(f"innocent-{k}", 40) for k in range(3)]
    for message in (first, bad, *later):
        assert (await pipeline.exporter.consume(export(LOGS, message))).rejected == 0
    broken = (pipeline.spool.directory / "segment-000000000001.spool").read_bytes()
    assert broken  # all in one segment, the poisoned request in the middle
    pipeline.database_ok = True
    rows = await asyncio.wait_for(pipeline.replayer.replay(), 30)
    assert rows == 160
    assert await logs_of(db, "innocent-before") == 40
    for k in range(3):
        assert await logs_of(db, f"innocent-{k}") == 40
    assert await logs_of(db, "guilty") == 0
    assert pipeline.spool.empty  # the segment is gone: replay is not stuck
    letters = read_letters(pipeline.dead_letter.path)
    assert [(x["source"], x["services"], x["items"]) for x in letters] == [("spool", ["guilty"], 5)]
    assert ExportLogsServiceRequest.FromString(letters[0]["payload"]) == bad
    # replaying the dead letter after the constraint is dropped stores exactly what was refused
    await db.execute("ALTER TABLE otel_logs DROP CONSTRAINT no_poison")
    await pipeline.spool.append(LOGS, letters[0]["received_ns"], letters[0]["payload"], letters[0]["seed"])
    await pipeline.replayer.replay()
    assert await logs_of(db, "guilty") == 5


async def test_an_undecodable_spooled_request_becomes_a_dead_letter(pipeline, db):
    await pipeline.spool.append(LOGS, NOW_NS, b"\x0a\x05garbage", 1)
    await pipeline.spool.append(LOGS, NOW_NS, logs_request("innocent", 7).SerializeToString(), 2)
    assert await pipeline.replayer.replay() == 7
    assert await logs_of(db, "innocent") == 7
    letters = read_letters(pipeline.dead_letter.path)
    assert len(letters) == 1 and "can't be decoded" in letters[0]["reason"]


# --------------------------------------------------------------------------- large requests


class PeakAdmission(Admission):
    """An Admission that remembers the most it held at once."""

    peak = 0

    def _resize(self, r, new: int) -> None:  # type: ignore[no-untyped-def]
        super()._resize(r, new)
        self.peak = max(self.peak, self.bytes)


def chunked(signal: Signal, message, admission: Admission, chunk_messages: int) -> ExportRequest:
    body = message.SerializeToString()
    split = otlpwire.split(signal.code, body, chunk_messages=chunk_messages)
    return ExportRequest.from_split(signal, body, split, admission.reserve(len(body)))


async def test_a_large_request_holds_the_rows_of_a_chunk_or_two_not_all_of_them(pipeline, db):
    admission = PeakAdmission(1 << 40)
    request = chunked(LOGS, logs_request("big", 6000), admission, chunk_messages=3000)
    assert len(request.chunks) >= 8
    whole = sum(
        rows_memory(table, rows)
        for chunk in request.chunks
        for table, rows in map_chunk(LOGS, chunk, NOW_NS, request_ids(NOW_NS, 1)).rows.items()
    )
    with request.reservation:
        assert (await pipeline.exporter.consume(request)).rejected == 0
    assert admission.bytes == 0
    assert admission.peak - len(request.body) < whole / 3, (admission.peak, whole)
    stored = await db.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM system_events WHERE service_name = 'big'"
    )
    assert stored["n"] == stored["ids"] == 6000


async def test_an_outage_in_the_middle_of_a_request_spools_it_and_replay_stores_it_once(pipeline, db, tmp_path):
    observed: list[int] = []

    def outage_after_first_chunk(signal: str, message) -> None:
        if isinstance(message, LogSummary):  # a chunk the native encoder encoded
            observed.append(sum(r.records for r in message.resources))
        else:
            observed.append(sum(len(s.log_records) for r in message.resource_logs for s in r.scope_logs))
        pipeline.database_ok = False  # the health check notices PostgreSQL is gone

    exporter = PostgresExporter(
        pipeline.batcher,
        pipeline.mapping,
        lambda: pipeline.database_ok,
        [outage_after_first_chunk],
        spool=pipeline.spool,
        dead_letter=pipeline.dead_letter,
        telemetry=pipeline.telemetry,
    )
    request = chunked(LOGS, logs_request("interrupted", 3000), Admission(1 << 40), chunk_messages=2000)
    assert len(request.chunks) >= 4
    with request.reservation:
        assert (await exporter.consume(request)).rejected == 0  # acknowledged: committed in part, spooled whole
    assert 0 < await logs_of(db, "interrupted") < 3000
    assert sum(observed) == 3000  # every chunk observed once: committed, or durable in the spool
    pipeline.database_ok = True
    await asyncio.wait_for(pipeline.replayer.replay(), 30)
    stored = await db.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM system_events WHERE service_name = 'interrupted'"
    )
    assert stored["n"] == stored["ids"] == 3000  # the committed chunks were not stored twice
