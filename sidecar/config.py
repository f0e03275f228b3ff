"""Configuration: defaults, then the YAML file, then environment variables.

Every key is a field of one of the section dataclasses below, with its default, help text
and environment variables in the field's metadata. That one table drives loading,
validation, `otelpg check-config` and the test that `config/otelpg.yaml` documents every key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from sidecar.pipeline.errors import ConfigError

REDACTED = "***"


def setting(default: Any, help: str, env: tuple[str, ...] = (), secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "env": env, "secret": secret})


@dataclass(frozen=True)
class DatabaseConfig:
    url: str | None = setting(
        None,
        "PostgreSQL DSN (postgresql://user:pass@host:5432/db). Unset: an embedded PostgreSQL in data_dir.",
        env=("OTELPG_DATABASE_URL", "DATABASE_URL"),
        secret=True,
    )
    pool_min_size: int = setting(2, "Connections opened at start.")
    pool_max_size: int = setting(8, "Most connections in the pool.", env=("OTELPG_DATABASE_POOL_SIZE",))
    connect_timeout: float = setting(10.0, "Seconds to wait for the database at start before failing.")


@dataclass(frozen=True)
class HttpReceiverConfig:
    enabled: bool = setting(True, "Serve OTLP/HTTP.")
    endpoint: str = setting("127.0.0.1:4318", "OTLP/HTTP listen host:port.", env=("OTELPG_HTTP_ENDPOINT",))
    max_request_body_size: int = setting(
        20 * 1024 * 1024, "Largest request body in bytes, after decompression (413 beyond)."
    )
    read_timeout: float = setting(30.0, "Seconds a client may take to send its request body.")
    idle_timeout: float = setting(
        60.0, "Seconds before closing a connection that sends nothing (or a request that never completes)."
    )


@dataclass(frozen=True)
class GrpcReceiverConfig:
    enabled: bool = setting(True, "Serve OTLP/gRPC.")
    endpoint: str = setting("127.0.0.1:4317", "OTLP/gRPC listen host:port.", env=("OTELPG_GRPC_ENDPOINT",))
    max_recv_msg_size: int = setting(
        4 * 1024 * 1024,
        "Largest message in bytes, after decompression (RESOURCE_EXHAUSTED beyond); the Collector's default. "
        "Reading a message reserves this much of queue.max_inflight_bytes until its real size is known.",
    )
    read_timeout: float = setting(30.0, "Seconds a client may take to send its request message.")


@dataclass(frozen=True)
class AuthConfig:
    bearer_token: str | None = setting(
        None,
        "When set, both receivers require 'Authorization: Bearer <token>'.",
        env=("OTELPG_BEARER_TOKEN",),
        secret=True,
    )


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str | None = setting(None, "PEM certificate: serve both receivers over TLS.")
    key_file: str | None = setting(None, "PEM private key for cert_file.")
    client_ca_file: str | None = setting(None, "PEM CA bundle: require client certificates (mTLS).")


@dataclass(frozen=True)
class AdminConfig:
    endpoint: str = setting(
        "127.0.0.1:9464",
        "Listen host:port of /metrics, /health and /api/health/ready.",
        env=("OTELPG_ADMIN_ENDPOINT",),
    )


@dataclass(frozen=True)
class BatchConfig:
    max_rows: int = setting(5000, "Flush a batch to PostgreSQL at this many rows...")
    max_delay: float = setting(0.2, "Longest a batch waits for more rows while a writer is free (caps linger).")
    linger: float = setting(
        0.01, "Wait this long for more rows before a free writer flushes; batches grow only while every writer is busy."
    )
    writers: int = setting(
        2,
        "Batches written at once (each on its own connection, so at most database.pool_max_size - 1). More "
        "overlap COPYs, but concurrent batches of the same series wait on each other's rollup rows.",
    )


@dataclass(frozen=True)
class QueueConfig:
    max_rows: int = setting(
        50_000, "Rows waiting for COPY; beyond it requests go to the spool (or get 503 without one)."
    )
    max_bytes: int = setting(64 * 1024 * 1024, "Request bytes waiting for COPY; beyond it, as for max_rows.")
    max_inflight_bytes: int = setting(
        64 * 1024 * 1024,
        "Memory budget of the requests being handled, from receipt to answer: their bodies as read and "
        "inflated, their decoding and rows, each reserved before it is taken. Beyond it new requests get "
        "503 / UNAVAILABLE with Retry-After; the oldest request in flight is always let through its next "
        "step, large ones (over an eighth) share at most half.",
    )
    high_water_mark: float = setting(0.8, "Fraction of the queue above which /api/health/ready says not ready.")


@dataclass(frozen=True)
class PartitionsConfig:
    days_ahead: int = setting(3, "Daily partitions created ahead of today.")
    days_behind: int = setting(1, "Daily partitions created behind today (late data).")
    maintenance_interval: float = setting(
        600.0,
        "Seconds between partition maintenance runs: create ahead, move rows out of the default "
        "partitions, drop past retention (`otelpg maintain` runs one, e.g. from cron).",
    )


@dataclass(frozen=True)
class RetentionConfig:
    system_events_days: int = setting(30, "Days of system_events kept (whole partitions dropped).")
    performance_metrics_days: int = setting(30, "Days of performance_metrics kept.")
    user_analytics_days: int = setting(30, "Days of user_analytics kept.")
    performance_metrics_1m_days: int = setting(90, "Days of the per-minute rollup performance_metrics_1m kept.")
    performance_metrics_1h_days: int = setting(
        400, "Days of the per-hour rollup performance_metrics_1h kept (monthly partitions: whole months go)."
    )


@dataclass(frozen=True)
class RollupsConfig:
    enabled: bool = setting(True, "Maintain performance_metrics_1m and performance_metrics_1h as points are written.")


@dataclass(frozen=True)
class AgentStatesConfig:
    enabled: bool = setting(True, "Keep one agent_states row per service instance otelpg hears from.")
    flush_interval: float = setting(5.0, "Seconds between agent_states upserts (one statement for all instances).")
    stale_after: float = setting(300.0, "Seconds of silence after which an instance's status becomes 'stale'.")
    window: float = setting(60.0, "Seconds of recent traffic the throughput and error counts cover.")
    error_log_size: int = setting(20, "Most recent errors kept per instance in error_log.")
    max_instances: int = setting(
        10_000, "Service instances tracked in memory at once; requests from more are not tracked (counted)."
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
class PrometheusConfig:
    series_expiry: float = setting(300.0, "Seconds a received metric series is exported after its last update.")
    max_series_per_metric: int = setting(
        2000, "Series per metric name; beyond it, points fold into one otel_metric_overflow series."
    )
    max_series_total: int = setting(20_000, "Series across all received metrics (bounds the exposition size).")
    span_metrics_flush_interval: float = setting(
        60.0, "Seconds between flushes of span-derived aggregates to performance_metrics (0 disables)."
    )
    database_stats_interval: float = setting(
        30.0, "Seconds between refreshes of the database utilization gauges from the catalog (0 disables)."
    )


@dataclass(frozen=True)
class LimitsConfig:
    max_attributes: int = setting(
        1024, "Attributes kept per attribute map (and elements per array); the rest are dropped and counted."
    )
    max_attribute_value_length: int = setting(
        65536, "Characters kept per string value (bytes per bytes value); longer values are truncated and counted."
    )


@dataclass(frozen=True)
class SpoolConfig:
    enabled: bool = setting(
        True,
        "Spool requests to disk (fsynced, then acknowledged) while PostgreSQL is "
        "unavailable or the queue is full; replay them when it is back.",
    )
    max_bytes: int = setting(1024 * 1024 * 1024, "Spool size limit in bytes; beyond it requests get 503.")


@dataclass(frozen=True)
class DeadLetterConfig:
    max_bytes: int = setting(
        256 * 1024 * 1024,
        "Size limit of data_dir/dead-letter/dead-letter.jsonl, where data PostgreSQL refuses for "
        "good is kept with the reason; beyond it such data is counted and logged, not kept.",
    )


@dataclass(frozen=True)
class ShutdownConfig:
    grace_period: float = setting(20.0, "Seconds SIGTERM waits for queued data to be written.")


@dataclass(frozen=True)
class Config:
    data_dir: str = setting(".otelpg", "Embedded database and durable spool.", env=("OTELPG_DATA_DIR",))
    log_level: str = setting("info", "debug | info | warning | error.", env=("OTELPG_LOG_LEVEL",))
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    http: HttpReceiverConfig = field(default_factory=HttpReceiverConfig)
    grpc: GrpcReceiverConfig = field(default_factory=GrpcReceiverConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    partitions: PartitionsConfig = field(default_factory=PartitionsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    rollups: RollupsConfig = field(default_factory=RollupsConfig)
    agent_states: AgentStatesConfig = field(default_factory=AgentStatesConfig)
    user_analytics: UserAnalyticsConfig = field(default_factory=UserAnalyticsConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    dead_letter: DeadLetterConfig = field(default_factory=DeadLetterConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)


@dataclass(frozen=True)
class Setting:
    key: str  # dotted, e.g. "batch.max_rows"
    type: Any
    default: Any
    help: str
    env: tuple[str, ...]
    secret: bool


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _settings(cls: type = Config, prefix: str = "") -> list[Setting]:
    hints = typing.get_type_hints(cls)
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            out.extend(_settings(tp, f"{prefix}{f.name}."))
        else:
            out.append(
                Setting(f"{prefix}{f.name}", tp, f.default, f.metadata["help"], f.metadata["env"], f.metadata["secret"])
            )
    return out


SETTINGS: tuple[Setting, ...] = tuple(_settings())
_BY_KEY = {s.key: s for s in SETTINGS}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_ENDPOINT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s\[\]]*):(?P<port>\d{1,5})$")


def _coerce(s: Setting, raw: Any) -> Any:
    """Convert a YAML or environment value to the setting's type, or raise ConfigError."""
    tp = s.type
    optional = isinstance(tp, types.UnionType) and type(None) in typing.get_args(tp)
    if optional:
        if raw is None or raw == "":
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if raw is None:
        raise ConfigError(s.key, "must not be empty")
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if tp is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if tp is str:
            if isinstance(raw, (dict, list)):
                raise ValueError
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(s.key, f"expected {tp.__name__}, got {raw!r}") from None
    raise ConfigError(s.key, f"unsupported type {tp}")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in _BY_KEY:
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _validate(values: dict[str, Any]) -> None:
    for key in ("http.endpoint", "grpc.endpoint", "admin.endpoint"):
        parse_endpoint(values[key], key)
    if values["log_level"].lower() not in _LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(_LOG_LEVELS)}, got {values['log_level']!r}")
    values["log_level"] = values["log_level"].lower()
    for s in SETTINGS:
        v = values[s.key]
        if s.type in (int, float) and v is not None and v < 0:
            raise ConfigError(s.key, f"must not be negative, got {v}")
    for key in (
        "limits.max_attributes",
        "limits.max_attribute_value_length",
        "spool.max_bytes",
        "batch.max_rows",
        "batch.writers",
        "queue.max_rows",
        "queue.max_bytes",
        "queue.max_inflight_bytes",
        "dead_letter.max_bytes",
        "agent_states.max_instances",
        "database.pool_max_size",
        "http.max_request_body_size",
        "grpc.max_recv_msg_size",
    ):
        if values[key] <= 0:
            raise ConfigError(key, f"must be positive, got {values[key]}")
    for key in (
        "partitions.maintenance_interval",
        "agent_states.flush_interval",
        "agent_states.window",
        *(s.key for s in SETTINGS if s.key.startswith("retention.")),
    ):
        if values[key] <= 0:
            raise ConfigError(key, f"must be positive, got {values[key]}")
    if values["database.pool_min_size"] > values["database.pool_max_size"]:
        raise ConfigError("database.pool_min_size", "must not exceed database.pool_max_size")
    if not 0 < values["queue.high_water_mark"] <= 1:
        raise ConfigError("queue.high_water_mark", "must be in (0, 1]")
    url = values["database.url"]
    if url is not None and urlsplit(url).scheme not in ("postgres", "postgresql"):
        raise ConfigError("database.url", "must be a postgresql:// or postgres:// URL")
    if bool(values["tls.cert_file"]) != bool(values["tls.key_file"]):
        raise ConfigError("tls.key_file", "tls.cert_file and tls.key_file must be set together")
    for key in ("tls.cert_file", "tls.key_file", "tls.client_ca_file"):
        if values[key] and not Path(values[key]).is_file():
            raise ConfigError(key, f"no such file: {values[key]}")


def parse_endpoint(value: str, key: str = "endpoint") -> tuple[str, int]:
    """'host:port' → (host, port); port 0 means any free port. '[::1]:4317' for IPv6."""
    m = _ENDPOINT.match(value or "")
    if not m or int(m["port"]) > 65535:
        raise ConfigError(key, f"expected host:port, got {value!r}")
    host = m["host"].strip("[]") or "0.0.0.0"
    return host, int(m["port"])


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        kwargs[f.name] = _build(tp, values, key + ".") if _is_section(tp) else values[key]
    return cls(**kwargs)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the YAML file (`path`, else $OTELPG_CONFIG), then environment overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    path = path or env.get("OTELPG_CONFIG") or None
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError("--config", f"can't read {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError("--config", f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, Mapping):
            raise ConfigError("--config", f"{path} must hold a mapping of keys")
        for key, raw in _flatten(data).items():
            if key not in _BY_KEY:
                raise ConfigError(key, "unknown key")
            values[key] = _coerce(_BY_KEY[key], raw)
    for s in SETTINGS:
        for var in s.env:
            if env.get(var, "") != "":
                values[s.key] = _coerce(Setting(f"{s.key} (${var})", s.type, None, "", (), False), env[var])
                break
    _validate(values)
    return _build(Config, values)


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


def effective_config(config: Config) -> dict[str, Any]:
    """Every key with its effective value, secrets redacted (for check-config and system_config)."""
    out: dict[str, Any] = {}
    flat = {s.key: s for s in SETTINGS}
    for key, s in flat.items():
        obj: Any = config
        for part in key.split("."):
            obj = getattr(obj, part)
        if s.secret and obj:
            obj = redact_dsn(obj) if key == "database.url" else REDACTED
        out[key] = obj
    return out


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} → {'a': {'b': 1}}, for printing as YAML."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


_YAML_HEADER = """\
# otelpg configuration: every key with its default.
# Precedence: defaults < this file (--config or $OTELPG_CONFIG) < environment variables.
# Endpoints are host:port; port 0 binds a free port (the log says which). otelpg binds to
# 127.0.0.1 by default: a sidecar shares its pod's network; use 0.0.0.0 to accept remote clients."""


def _yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def documented_yaml() -> str:
    """config/otelpg.yaml: every key with its default and help, generated from SETTINGS
    (`python -m sidecar.config > config/otelpg.yaml`; a test checks the file is current)."""
    lines = [_YAML_HEADER]
    section = None
    for s in SETTINGS:
        *parents, leaf = s.key.split(".")
        parent = parents[0] if parents else None
        if parent != section or parent is None:
            lines.append("")
            if parent is not None:
                lines.append(f"{parent}:")
            section = parent
        indent = "  " if parent else ""
        env = f" [env: {', '.join('$' + e for e in s.env)}]" if s.env else ""
        lines.append(f"{indent}# {s.help}{env}")
        lines.append(f"{indent}{leaf}: {_yaml_value(s.default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(documented_yaml(), end="")
