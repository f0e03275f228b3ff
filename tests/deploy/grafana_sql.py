"""What Grafana's PostgreSQL data source does to a panel's SQL before PostgreSQL sees it.

Two steps, as in Grafana:
1. the frontend's template service replaces variables (`$service`, `${service:csv}`, `[[service]]`,
   `$__interval`, `$__interval_ms`, `$__range_s` ...), quoting values the way the SQL data sources'
   `interpolateVariable` does: a multi-value or include-All variable becomes `'a','b'`, a single value
   is inserted as is with `'` doubled;
2. the backend's macro engine (`pkg/tsdb/grafana-postgresql-datasource/macros.go`) expands
   `$__timeFilter(col)`, `$__timeFrom()`, `$__timeGroup(col, interval)`, ... with literal bounds.

"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# --- time helpers -------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_interval(text: str) -> dt.timedelta:
    """gtime.ParseInterval for the forms Grafana produces: '10s', '1m', '500ms', '1h', '1d'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*", text)
    if not m:
        raise ValueError(f"invalid interval {text!r}")
    return dt.timedelta(seconds=float(m[1]) * _UNITS[m[2]])


def format_interval(delta: dt.timedelta) -> str:
    """kbn.secondsToHms-like: the largest unit that divides the interval."""
    ms = round(delta.total_seconds() * 1000)
    for unit, seconds in (("y", 31536000), ("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if ms % (seconds * 1000) == 0:
            return f"{ms // (seconds * 1000)}{unit}"
    return f"{ms}ms"


# rangeutil.roundInterval: (upper limit in ms, rounded interval in ms)
_ROUND = [
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (24300000, 21600000),
    (64800000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
]


def grafana_interval(
    span: dt.timedelta, max_data_points: int = 1000, min_interval: dt.timedelta = dt.timedelta(seconds=10)
) -> dt.timedelta:
    """$__interval as Grafana computes it: range / max data points, rounded, at least the min interval."""
    raw_ms = span.total_seconds() * 1000 / max_data_points
    rounded = next((r for limit, r in _ROUND if raw_ms < limit), 31536000000)
    return max(dt.timedelta(milliseconds=rounded), min_interval)


def rfc3339nano(t: dt.datetime) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped, 'Z' suffix."""
    t = t.astimezone(dt.UTC)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def go_float(value: float) -> str:
    """fmt's %v for a float64 (strconv 'g', shortest digits; exponent form when exp < -4 or >= 6):
    60 → '60', 0.5 → '0.5', 86400 → '86400', 2592000 → '2.592e+06'."""
    d = decimal.Decimal(repr(float(value)))
    if d == 0:
        return "0"
    exp = d.adjusted()
    if -4 <= exp < 6:
        return format(d.normalize(), "f")
    digits = "".join(map(str, d.as_tuple().digits)).rstrip("0") or "0"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{'-' if d < 0 else ''}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


# --- step 1: template variables -----------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current value. `multi` covers multi-value and include-All variables."""

    value: str | Sequence[str]
    multi: bool = False


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _format(var: Variable, fmt: str | None) -> str:
    values = [var.value] if isinstance(var.value, str) else list(var.value)
    if fmt is None:  # the SQL data sources' interpolateVariable
        if var.multi or len(values) != 1:
            return ",".join(_quote(v) for v in values)
        return values[0].replace("'", "''")
    if fmt == "raw":
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt in ("sqlstring", "singlequote"):
        return ",".join(_quote(v) for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise ValueError(f"unsupported variable format :{fmt}")


# templateSrv's variable regex: $var | [[var(:fmt)]] | ${var(.prop)(:fmt)}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


@dataclass
class TimeRange:
    start: dt.datetime
    end: dt.datetime
    interval: dt.timedelta | None = None
    variables: Mapping[str, Variable] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interval is None:
            self.interval = grafana_interval(self.end - self.start)

    def builtins(self) -> dict[str, str]:
        span = self.end - self.start
        assert self.interval is not None
        return {
            "__interval": format_interval(self.interval),
            "__interval_ms": str(round(self.interval.total_seconds() * 1000)),
            "__range": format_interval(span),
            "__range_s": str(round(span.total_seconds())),
            "__range_ms": str(round(span.total_seconds() * 1000)),
            "__from": str(round(self.start.timestamp() * 1000)),
            "__to": str(round(self.end.timestamp() * 1000)),
        }


def replace_variables(sql: str, tr: TimeRange) -> str:
    builtins = tr.builtins()

    def repl(m: re.Match[str]) -> str:
        name = m[1] or m[2] or m[4]
        fmt = m[3] or m[6]
        if name in builtins:
            return builtins[name]
        var = tr.variables.get(name)
        if var is None:
            return m[0]  # not a variable (e.g. a macro name): left for the macro engine
        return _format(var, fmt)

    return _VARIABLE.sub(repl, sql)


# --- step 2: macros (macros.go) -----------------------------------------------------------------

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


class MacroError(ValueError):
    pass


def _evaluate(name: str, args: list[str], tr: TimeRange) -> str:
    frm, to = tr.start, tr.end
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{rfc3339nano(frm)}' AND '{rfc3339nano(to)}'"
    if name == "__timeFrom":
        return f"'{rfc3339nano(frm)}'"
    if name == "__timeTo":
        return f"'{rfc3339nano(to)}'"
    if name == "__timeGroup":
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        seconds = parse_interval(args[1].strip("'\"")).total_seconds()
        return f"floor(extract(epoch from {args[0]})/{go_float(seconds)})*{go_float(seconds)}"
    if name == "__timeGroupAlias":
        return _evaluate("__timeGroup", args, tr) + ' AS "time"'
    if name == "__unixEpochFilter":
        return f"{args[0]} >= {int(frm.timestamp())} AND {args[0]} <= {int(to.timestamp())}"
    if name == "__unixEpochFrom":
        return str(int(frm.timestamp()))
    if name == "__unixEpochTo":
        return str(int(to.timestamp()))
    if name == "__unixEpochGroup":
        seconds = parse_interval(args[1].strip("'\"")).total_seconds()
        return f"floor(({args[0]})/{go_float(seconds)})*{go_float(seconds)}"
    if name == "__unixEpochGroupAlias":
        return _evaluate("__unixEpochGroup", args, tr) + ' AS "time"'
    raise MacroError(f"unknown macro ${name}")


def expand_macros(sql: str, tr: TimeRange) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m[1]
        if name == "__timeGroup":  # pre-5.3 compatibility: directly followed by ',' → the alias form
            index = sql.find(m[0])
            if index >= 0 and sql[index + len(m[0]) : index + len(m[0]) + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m[2].split(",")]
        return _evaluate(name, args, tr)

    return _MACRO.sub(repl, sql)


def interpolate(sql: str, tr: TimeRange) -> str:
    """The SQL PostgreSQL receives for a panel's rawSql at this time range and these variables."""
    return expand_macros(replace_variables(sql, tr), tr)
