"""Configuration: defaults, then the YAML file, then environment variables.

Every key is a field of a section dataclass that lives next to the component it configures
(`sidecar.receivers.config`, `exporters.postgres.config`, `exporters.prometheus.config`; the
admin server's and shutdown's are here), with its default, help text, environment variables
and checks in the field's metadata (`sidecar.pipeline.settings.setting`). `Config` composes
the sections; the one table of settings derived from it drives loading, validation,
`otelpg check-config` and the test that `config/otelpg.yaml` documents every key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporters.postgres.config import (
    AgentStatesConfig,
    BatchConfig,
    DatabaseConfig,
    DeadLetterConfig,
    LimitsConfig,
    PartitionsConfig,
    QueueConfig,
    RetentionConfig,
    RollupsConfig,
    SpoolConfig,
    UserAnalyticsConfig,
)
from exporters.prometheus.config import PrometheusConfig
from sidecar.pipeline.errors import ConfigError
from sidecar.pipeline.settings import REDACTED, setting
from sidecar.receivers.config import AuthConfig, GrpcReceiverConfig, HttpReceiverConfig, TlsConfig, parse_endpoint


@dataclass(frozen=True)
class AdminConfig:
    endpoint: str = setting(
        "127.0.0.1:9464",
        "Listen host:port of /metrics, /health and /api/health/ready.",
        env=("OTELPG_ADMIN_ENDPOINT",),
    )

    def validate(self) -> None:
        parse_endpoint(self.endpoint, "endpoint")


@dataclass(frozen=True)
class ShutdownConfig:
    grace_period: float = setting(20.0, "Seconds SIGTERM waits for queued data to be written.")


@dataclass(frozen=True)
class Config:
    data_dir: str = setting(".otelpg", "Embedded database and durable spool.", env=("OTELPG_DATA_DIR",))
    log_level: str = setting(
        "info",
        "debug | info | warning | error.",
        env=("OTELPG_LOG_LEVEL",),
        choices=("debug", "info", "warning", "error"),
    )
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
    secret: bool | Callable[[str], str | None]
    positive: bool = False
    minimum: float | None = 0
    choices: tuple[str, ...] = ()


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
            m = f.metadata
            out.append(
                Setting(
                    f"{prefix}{f.name}",
                    tp,
                    f.default,
                    m["help"],
                    m["env"],
                    m["secret"],
                    m["positive"],
                    m["minimum"],
                    m["choices"],
                )
            )
    return out


SETTINGS: tuple[Setting, ...] = tuple(_settings())
_BY_KEY = {s.key: s for s in SETTINGS}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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


def _check(s: Setting, v: Any) -> Any:
    """What the setting declares of a value: sign, bounds, choices (returns it normalised)."""
    if s.choices and v is not None:
        if str(v).lower() not in s.choices:
            raise ConfigError(s.key, f"must be one of {', '.join(s.choices)}, got {v!r}")
        return str(v).lower()
    if s.type in (int, float) and v is not None:
        if s.positive and v <= 0:
            raise ConfigError(s.key, f"must be positive, got {v}")
        if s.minimum is not None and v < s.minimum:
            raise ConfigError(s.key, "must not be negative" if s.minimum == 0 else f"must be at least {s.minimum}")
    return v


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """The section `cls` from the flat values, each checked, then the section's own rules."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        kwargs[f.name] = _build(tp, values, key + ".") if _is_section(tp) else _check(_BY_KEY[key], values[key])
    section = cls(**kwargs)
    validate = getattr(section, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:  # a section names its own field: the user needs the whole key
            raise ConfigError(prefix + e.key, e.problem) from None
    return section


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
    return _build(Config, values)


def effective_config(config: Config) -> dict[str, Any]:
    """Every key with its effective value, secrets redacted (for check-config and system_config)."""
    out: dict[str, Any] = {}
    flat = {s.key: s for s in SETTINGS}
    for key, s in flat.items():
        obj: Any = config
        for part in key.split("."):
            obj = getattr(obj, part)
        if s.secret and obj:
            obj = s.secret(obj) if callable(s.secret) else REDACTED
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
