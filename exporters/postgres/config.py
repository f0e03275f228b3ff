"""The PostgreSQL exporter's settings: the database, batching and queueing, partitions and
retention, the derived tables (rollups, agent_states, user_analytics), attribute limits, the
spool and the dead letters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from sidecar.pipeline.errors import ConfigError
from sidecar.pipeline.settings import REDACTED, setting


def redact_dsn(url: str | None) -> str | None:
    """The DSN with its password (in the URL or a `password=` query) replaced by ***."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hostinfo = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":" + REDACTED
            netloc = f"{userinfo}@{hostinfo}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1" + REDACTED, parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return REDACTED


@dataclass(frozen=True)
class DatabaseConfig:
    url: str | None = setting(
        None,
        "PostgreSQL DSN (postgresql://user:pass@host:5432/db). Unset: an embedded PostgreSQL in data_dir.",
        env=("OTELPG_DATABASE_URL", "DATABASE_URL"),
        secret=redact_dsn,
    )
    pool_min_size: int = setting(2, "Connections opened at start.")
    pool_max_size: int = setting(8, "Most connections in the pool.", env=("OTELPG_DATABASE_POOL_SIZE",), positive=True)
    connect_timeout: float = setting(10.0, "Seconds to wait for the database at start before failing.")

    def validate(self) -> None:
        if self.pool_min_size > self.pool_max_size:
            raise ConfigError("pool_min_size", "must not exceed database.pool_max_size")
        if self.url is not None and urlsplit(self.url).scheme not in ("postgres", "postgresql"):
            raise ConfigError("url", "must be a postgresql:// or postgres:// URL")


@dataclass(frozen=True)
class BatchConfig:
    max_rows: int = setting(5000, "Flush a batch to PostgreSQL at this many rows...", positive=True)
    max_delay: float = setting(0.2, "Longest a batch waits for more rows while a writer is free (caps linger).")
    linger: float = setting(
        0.01, "Wait this long for more rows before a free writer flushes; batches grow only while every writer is busy."
    )
    writers: int = setting(
        2,
        "Batches written at once (each on its own connection, so at most database.pool_max_size - 1). More "
        "overlap COPYs, but concurrent batches of the same series wait on each other's rollup rows.",
        positive=True,
    )


@dataclass(frozen=True)
class QueueConfig:
    max_rows: int = setting(
        50_000,
        "Rows waiting for COPY; beyond it requests go to the spool (or get 503 without one).",
        positive=True,
    )
    max_bytes: int = setting(
        64 * 1024 * 1024, "Request bytes waiting for COPY; beyond it, as for max_rows.", positive=True
    )
    max_inflight_bytes: int = setting(
        64 * 1024 * 1024,
        "Memory budget of the requests being handled, from receipt to answer: their bodies as read and "
        "inflated, their decoding and rows, each reserved before it is taken. Beyond it new requests get "
        "503 / UNAVAILABLE with Retry-After; the oldest request in flight is always let through its next "
        "step, large ones (over an eighth) share at most half.",
        positive=True,
    )
    high_water_mark: float = setting(0.8, "Fraction of the queue above which /api/health/ready says not ready.")

    def validate(self) -> None:
        if not 0 < self.high_water_mark <= 1:
            raise ConfigError("high_water_mark", "must be in (0, 1]")


@dataclass(frozen=True)
class PartitionsConfig:
    days_ahead: int = setting(3, "Daily partitions created ahead of today.")
    days_behind: int = setting(1, "Daily partitions created behind today (late data).")
    maintenance_interval: float = setting(
        600.0,
        "Seconds between partition maintenance runs: create ahead, move rows out of the default "
        "partitions, drop past retention (`otelpg maintain` runs one, e.g. from cron).",
        positive=True,
    )


@dataclass(frozen=True)
class RetentionConfig:
    system_events_days: int = setting(
        30,
        "Days of otelpg's own events kept (whole partitions dropped), and of spans and log records "
        "when spans_days / logs_days are not set.",
        positive=True,
    )
    spans_days: int | None = setting(
        None, "Days of spans and span events kept (unset: system_events_days).", positive=True
    )
    logs_days: int | None = setting(None, "Days of log records kept (unset: system_events_days).", positive=True)
    performance_metrics_days: int = setting(30, "Days of performance_metrics kept.", positive=True)
    user_analytics_days: int = setting(30, "Days of user_analytics kept.", positive=True)
    performance_metrics_1m_days: int = setting(
        90, "Days of the per-minute rollup performance_metrics_1m kept.", positive=True
    )
    performance_metrics_1h_days: int = setting(
        400,
        "Days of the per-hour rollup performance_metrics_1h kept (monthly partitions: whole months go).",
        positive=True,
    )


@dataclass(frozen=True)
class RollupsConfig:
    enabled: bool = setting(True, "Maintain performance_metrics_1m and performance_metrics_1h as points are written.")


@dataclass(frozen=True)
class AgentStatesConfig:
    enabled: bool = setting(True, "Keep one agent_states row per service instance otelpg hears from.")
    flush_interval: float = setting(
        5.0, "Seconds between agent_states upserts (one statement for all instances).", positive=True
    )
    stale_after: float = setting(300.0, "Seconds of silence after which an instance's status becomes 'stale'.")
    window: float = setting(60.0, "Seconds of recent traffic the throughput and error counts cover.", positive=True)
    error_log_size: int = setting(20, "Most recent errors kept per instance in error_log.")
    max_instances: int = setting(
        10_000,
        "Service instances tracked in memory at once; requests from more are not tracked (counted).",
        positive=True,
    )


@dataclass(frozen=True)
class UserAnalyticsConfig:
    enabled: bool = setting(True, "Write user_analytics rows for spans and logs carrying enduser.id or user.id.")
    hash_user_ids: bool = setting(False, "Store an HMAC-SHA256 of the user id instead of the id.")
    hash_key: str | None = setting(
        None,
        "Key of the user id hash. Unset: one is generated and kept in data_dir/user_hash_key "
        "(give sidecars sharing a database the same key).",
        env=("OTELPG_USER_HASH_KEY",),
        secret=True,
    )


@dataclass(frozen=True)
class LimitsConfig:
    max_attributes: int = setting(
        1024,
        "Attributes kept per attribute map (and elements per array); the rest are dropped and counted.",
        positive=True,
    )
    max_attribute_value_length: int = setting(
        65536,
        "Characters kept per string value (bytes per bytes value); longer values are truncated and counted.",
        positive=True,
    )


@dataclass(frozen=True)
class SpoolConfig:
    enabled: bool = setting(
        True,
        "Spool requests to disk (fsynced, then acknowledged) while PostgreSQL is "
        "unavailable or the queue is full; replay them when it is back.",
    )
    max_bytes: int = setting(
        1024 * 1024 * 1024, "Spool size limit in bytes; beyond it requests get 503.", positive=True
    )


@dataclass(frozen=True)
class DeadLetterConfig:
    max_bytes: int = setting(
        256 * 1024 * 1024,
        "Size limit of data_dir/dead-letter/dead-letter.jsonl, where data PostgreSQL refuses for "
        "good is kept with the reason; beyond it such data is counted and logged, not kept.",
        positive=True,
    )
