"""Wiring only: build the components from the config, start them in order, stop them in reverse.

The order is the pipeline's, from the database up to the receivers, so nothing takes data before
what it hands data to is running, and at shutdown the receivers stop first (answering what they
hold), then the queue drains into PostgreSQL, and the database goes last. Components that must
see the drained queue (the span-metrics and agent_states flushes) come before the batcher.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from exporters.postgres.agent_states import AgentStates
from exporters.postgres.batcher import Batcher
from exporters.postgres.database import Database
from exporters.postgres.database_metrics import DatabaseUtilization
from exporters.postgres.database_monitor import DatabaseMonitor
from exporters.postgres.dead_letter import DeadLetter
from exporters.postgres.derived import DerivedRows
from exporters.postgres.events import EventLog
from exporters.postgres.exporter import AfterCommit, PostgresExporter
from exporters.postgres.mapping.common import FAST_AVAILABLE, NATIVE_AVAILABLE, Mapper
from exporters.postgres.mapping_thread import MappingThread
from exporters.postgres.partition_maintenance import PartitionMaintenance
from exporters.postgres.replayer import Replayer
from exporters.postgres.span_metrics_flush import SpanMetricsFlush
from exporters.postgres.spool import Spool
from exporters.postgres.system_config import SystemConfig
from exporters.postgres.writer import Writer
from exporters.prometheus.aggregator import PrometheusAggregator
from exporters.prometheus.collector import register
from sidecar import __version__
from sidecar.admin import AdminServer
from sidecar.config import SETTINGS, Config, effective_config
from sidecar.health import HealthState
from sidecar.pipeline import otlpwire
from sidecar.pipeline.admission import Admission
from sidecar.pipeline.component import Component
from sidecar.pipeline.telemetry import Telemetry
from sidecar.receivers.config import parse_endpoint
from sidecar.receivers.otlp_grpc import GrpcReceiver
from sidecar.receivers.otlp_http import HttpReceiver

log = logging.getLogger("otelpg")

# /metrics renders in a worker thread that holds the GIL for seconds on a large exposition; a 1 ms
# switch interval (default 5) hands it back to the event loop sooner: with 50k series scraped back to
# back, ingest p99 rose 1.1-1.3x instead of 1.8x in alternating runs (tests/bench/bench_scrape_latency.py).
GIL_SWITCH_INTERVAL = 0.001
# Receivers answer the requests under way at shutdown within this (at most the grace period): they
# normally wait only for a commit; a client still sending its body is cut off.
RECEIVER_DRAIN_SECONDS = 5.0


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls.cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    if config.tls.client_ca_file:
        ctx.load_verify_locations(config.tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.telemetry = Telemetry(self.registry)
        limits = config.limits
        self.mapper = Mapper(limits.max_attributes, limits.max_attribute_value_length)  # the mapping thread's
        # The event loop's: agent_states, user_analytics and span-metric rows, and the traces chunks
        # encoded natively on the loop, cut keys and values too. Two mappers, so that each
        # truncation count is written by one thread only.
        self.loop_mapper = Mapper(limits.max_attributes, limits.max_attribute_value_length)
        # What the native encoder does with spans naming a user, and how many span errors per
        # resource it keeps for agent_states: as the derived rows and agent_states are configured.
        ua = config.user_analytics
        for m in (self.mapper, self.loop_mapper):
            m.user_rows = 0 if not ua.enabled else 2 if ua.hash_user_ids else 1
            m.recent_errors = config.agent_states.error_log_size
        if not FAST_AVAILABLE:
            log.warning(
                "the C attribute converter is not built (no C compiler at install?): "
                "mapping spans and logs in pure Python, about a third slower"
            )
        if not NATIVE_AVAILABLE:
            log.warning(
                "the native encoder is not built (no C compiler at install?): spans and log records are "
                "mapped in Python and COPY-encoded by asyncpg, about four times the CPU per item"
            )
        if otlpwire.IMPLEMENTATION != "c":
            log.warning(
                "the C wire splitter is not built (no C compiler at install?): requests are checked and "
                "split in pure Python, hundreds of times slower (a hostile request costs seconds of CPU)"
            )
        self.telemetry.bind_truncations(self.mapper.truncated, self.loop_mapper.truncated)
        self.admission = Admission(config.queue.max_inflight_bytes)  # one budget for both receivers
        self.telemetry.bind_inflight(lambda: self.admission.bytes, config.queue.max_inflight_bytes)
        self.aggregator = PrometheusAggregator(config.prometheus)
        register(self.registry, self.aggregator)
        self.database = Database(
            config.database, config.partitions, config.data_dir, self.telemetry, may_start_without=config.spool.enabled
        )
        self.components: list[Component] = []  # started so far, in order
        self.health = HealthState(
            self.database,
            embedded_database=config.database.url is None,
            high_water_mark=config.queue.high_water_mark,
            components=self.components,
        )

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Where each server listens (its bound port when configured with port 0)."""
        servers = (c for c in self.components if isinstance(c, (AdminServer, HttpReceiver, GrpcReceiver)))
        return {c.name: c.address for c in servers}

    async def start(self) -> None:
        await asyncio.to_thread(Path(self.config.data_dir).mkdir, parents=True, exist_ok=True)
        await self._start(self.database)
        for component in await self._build(self.database.pool):
            await self._start(component)

    async def _start(self, component: Component) -> None:
        self.components.append(component)
        await component.start()

    async def stop(self) -> None:
        """Stop what started, in reverse: intake first, then drain the queue, the database last."""
        self.health.draining = True
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:  # the others must still stop (and the database close)
                log.exception("%s did not stop cleanly", component.name)

    async def _build(self, pool: asyncpg.Pool) -> list[Component]:
        """Every component after the database, in start order."""
        cfg, telemetry, database = self.config, self.telemetry, self.database
        self._bind_pool(pool)
        admin = AdminServer(self.registry, self.health, *parse_endpoint(cfg.admin.endpoint, "admin.endpoint"))
        mapping = MappingThread(self.mapper, self.loop_mapper)
        dead_letter = DeadLetter(Path(cfg.data_dir) / "dead-letter", max_bytes=cfg.dead_letter.max_bytes)
        telemetry.bind_dead_letter(lambda: dead_letter.entries, lambda: dead_letter.bytes)
        spool = None
        if cfg.spool.enabled:
            spool = await asyncio.to_thread(Spool, Path(cfg.data_dir) / "spool", max_bytes=cfg.spool.max_bytes)
            self._bind_spool(spool)
        derived = DerivedRows.configured(
            cfg.rollups, cfg.user_analytics, cfg.data_dir, truncated=self.loop_mapper.truncated
        )
        telemetry.bind_counter(
            "otelpg_derived_failed_rows",
            "Rows whose derived rows (rollups, user_analytics, "
            "lookups) PostgreSQL refused; the rows themselves are stored.",
            lambda: dict(derived.failures),
            "kind",
        )
        writer = Writer(pool, telemetry, on_unavailable=database.lost, hooks=[derived.batch_hook])
        batcher = Batcher(
            writer.write,
            max_rows=cfg.batch.max_rows,
            max_delay=cfg.batch.max_delay,
            linger=cfg.batch.linger,
            queue_max_rows=cfg.queue.max_rows,
            queue_max_bytes=cfg.queue.max_bytes,
            writers=max(1, min(cfg.batch.writers, cfg.database.pool_max_size - 1)),
            grace=cfg.shutdown.grace_period,
        )
        telemetry.bind_queue(lambda: batcher.queued_rows, cfg.queue.max_rows)
        self.health.queue_fill = batcher.fill
        events = EventLog(
            batcher,
            started={"version": __version__, "embedded_database": database.embedded is not None},
            database_ok=lambda: database.ok,
        )
        database.observers.append(events)
        span_metrics = SpanMetricsFlush(
            self.aggregator.drain_span_metrics,
            batcher.submit,
            interval=cfg.prometheus.span_metrics_flush_interval,
            database_ok=lambda: database.ok,
            write_rows=writer.write_rows,  # its last flush, after the batcher drained
            truncated=self.loop_mapper.truncated,
        )
        after_commit: list[AfterCommit] = [self.aggregator.observe]
        agents = None
        if cfg.agent_states.enabled:
            agents = AgentStates(pool, cfg.agent_states, mapper=self.loop_mapper)
            after_commit.append(agents.after_commit)
            self._bind_agents(agents)
        replayer = None
        if spool is not None:
            replayer = Replayer(
                spool,
                writer,
                mapping,
                telemetry,
                database_ok=lambda: database.ok,
                on_replayed=lambda info: events.emit("spool_replayed", **info),
                dead_letter=dead_letter,
                batch_rows=cfg.batch.max_rows,
            )
            database.observers.append(replayer)
            self.health.spooling = spool.takes_data
        exporter = PostgresExporter(
            batcher,
            mapping,
            lambda: database.ok,
            after_commit,
            spool=spool,
            dead_letter=dead_letter,
            telemetry=telemetry,
            on_spooled=replayer.wake if replayer is not None else lambda: None,
        )
        values = effective_config(cfg)
        helps = {s.key: s.help for s in SETTINGS}
        return [
            admin,
            mapping,
            dead_letter,
            *([spool] if spool is not None else []),
            *([agents] if agents is not None else []),
            span_metrics,
            batcher,
            events,
            *([replayer] if replayer is not None else []),
            derived,
            DatabaseMonitor(database, lambda: writer.last_success),
            PartitionMaintenance(pool, cfg.partitions, cfg.retention),
            SystemConfig(pool, values, helps, database.schema_ready),
            DatabaseUtilization(cfg.prometheus.database_stats_interval, self.registry, pool=pool),
            *self._receivers(exporter),
        ]

    def _receivers(self, exporter: PostgresExporter) -> list[Component]:
        cfg = self.config
        # What both transports share: one admission budget, one token, the mapping's list limit.
        shared: dict[str, Any] = {
            "admission": self.admission,
            "bearer_token": cfg.auth.bearer_token,
            "max_list": cfg.limits.max_attributes,
            "grace": min(RECEIVER_DRAIN_SECONDS, cfg.shutdown.grace_period),
        }
        receivers: list[Component] = []
        if cfg.http.enabled:
            host, port = parse_endpoint(cfg.http.endpoint, "http.endpoint")
            receivers.append(
                HttpReceiver(
                    exporter,
                    self.telemetry,
                    max_body=cfg.http.max_request_body_size,
                    read_timeout=cfg.http.read_timeout,
                    idle_timeout=cfg.http.idle_timeout,
                    tls=_tls_context(cfg),
                    host=host,
                    port=port,
                    **shared,
                )
            )
        if cfg.grpc.enabled:
            host, port = parse_endpoint(cfg.grpc.endpoint, "grpc.endpoint")
            receivers.append(
                GrpcReceiver(
                    exporter,
                    self.telemetry,
                    max_message_size=cfg.grpc.max_recv_msg_size,
                    read_timeout=cfg.grpc.read_timeout,
                    tls=cfg.tls,
                    host=host,
                    port=port,
                    **shared,
                )
            )
        return receivers

    def _bind_pool(self, pool: asyncpg.Pool) -> None:
        self.telemetry.bind_pool(pool.get_size, lambda: pool.get_size() - pool.get_idle_size(), pool.get_max_size())

    def _bind_spool(self, spool: Spool) -> None:
        self.telemetry.bind_counter(
            "otelpg_spool_write_failures",
            "Spool writes or fsyncs that failed (disk full...): their requests got 503.",
            lambda: spool.write_failures,
        )
        self.telemetry.spool_bytes.set_function(lambda: spool.bytes)
        self.telemetry.spool_capacity.set(self.config.spool.max_bytes)

    def _bind_agents(self, agents: AgentStates) -> None:
        tracker = agents.tracker
        self.telemetry.bind_counter(
            "otelpg_agent_states_dropped",
            "Service instances not tracked (over agent_states.max_instances) and agent_states rows PostgreSQL refused.",
            lambda: {"overflow": tracker.overflow, "refused": tracker.failed_rows},
            "reason",
        )


async def run(config: Config, ready: Callable[[App], Awaitable[None]] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down in order."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    app = App(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        # What start-up created (modules, protobuf descriptors, config, pools) lives as long as the
        # process: keep it out of every full collection. Measured: full-collection pauses 62 -> 31 ms
        # at most, 1.13 -> 0.37 s over 22 collections in a 30-s http logs run.
        gc.collect()
        gc.freeze()
        log.info("otelpg ready")
        if ready is not None:
            await ready(app)
        await stop.wait()
        log.info("shutting down")
    finally:
        await app.stop()
        log.info("stopped")
