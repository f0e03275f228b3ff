"""OTLP names → Prometheus names: pure functions, no state.

Metric names follow prometheus/otlptranslator's `UnderscoreEscapingWithSuffixes` strategy (what the
Collector's prometheus exporter and Prometheus' own OTLP receiver produce), so dashboards keep working
when otelpg replaces a Collector. Label names follow the OTel compatibility spec: invalid characters
become `_`, runs of `_` collapse, and user attributes can never produce a reserved `__*` name.
Sources: the OpenTelemetry specification, "Prometheus and OpenMetrics Compatibility" (metric and
label names), and prometheus/otlptranslator's name tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

MetricType = Literal[
    "gauge",
    "monotonic_counter",
    "non_monotonic_counter",
    "histogram",
    "exponential_histogram",
    "summary",
]


class InvalidNameError(ValueError):
    """The name sanitizes to nothing usable (empty, or only underscores)."""


# UCUM unit → Prometheus word (otlptranslator unitMap). "1" is dimensionless: no word.
UNIT_WORDS: dict[str, str] = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}

# The denominator of a rate unit ("By/s") is singular: bytes_per_second.
PER_UNIT_WORDS: dict[str, str] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}

# Label names that a user attribute must not take: the histogram/summary sample labels.
RESERVED_LABELS = frozenset({"le", "quantile"})

_METRIC_TOKEN = re.compile(r"[a-zA-Z0-9:]+")
_INVALID_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORE_RUN = re.compile(r"__+")


def _clean_unit(word: str) -> str:
    """otlptranslator cleanUpUnit: legal characters only, `_` runs collapsed, no leading `_`."""
    word = _UNDERSCORE_RUN.sub("_", _INVALID_METRIC_CHARS.sub("_", word))
    return word[1:] if word.startswith("_") else word


def unit_suffixes(unit: str) -> tuple[str, str]:
    """(main, per) name suffixes for a UCUM unit: `By/s` → (`bytes`, `per_second`).

    Parts in braces (`{packet}`) are annotations and give no suffix; unknown units are kept, cleaned.
    """
    main_unit, _, per_unit = unit.partition("/")
    main_unit, per_unit = main_unit.strip(), per_unit.strip()
    main = ""
    if main_unit and "{" not in main_unit and "}" not in main_unit:
        main = _clean_unit(UNIT_WORDS.get(main_unit, main_unit))
    per = ""
    if per_unit and "{" not in per_unit and "}" not in per_unit:
        per = _clean_unit("per_" + PER_UNIT_WORDS.get(per_unit, per_unit))
    return main, per


def unit_word(unit: str) -> str:
    """The unit as OpenMetrics `# UNIT` metadata: `By/s` → `bytes_per_second`, `1` → ``."""
    main, per = unit_suffixes(unit)
    word = f"{main}_{per}" if main and per else main or per
    return word.strip("_")


def _tokens(name: str) -> list[str]:
    # Splitting on every illegal character also drops leading, trailing and repeated underscores.
    return _METRIC_TOKEN.findall(name)


def metric_name(
    name: str,
    unit: str,
    metric_type: MetricType,
    namespace: str = "",
    *,
    ratio_for_unit_one: bool = True,
) -> str:
    """The Prometheus metric name for an OTLP metric, suffixes included.

    `http.server.request.duration` [s] histogram → `http_server_request_duration_seconds`;
    `requests` monotonic counter → `requests_total`; `cpu_usage` [1] gauge → `cpu_usage_ratio`.
    Raises InvalidNameError when nothing usable is left.
    """
    tokens = _tokens(name)
    main, per = unit_suffixes(unit)
    # otlptranslator addUnitTokens: a suffix is added only when the name lacks it *as a token*.
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.removesuffix("_")
        if per in tokens:
            per = ""
    if per:
        main = main.removesuffix("_")
    if main:
        tokens.append(main)
    if per:
        tokens.append(per)
    if metric_type == "monotonic_counter":
        tokens = [t for t in tokens if t != "total"]
        tokens.append("total")
    # The spec dropped "1 → ratio" (spec PR #4966); the Collector and Prometheus still do it, for gauges only.
    if ratio_for_unit_one and unit == "1" and metric_type == "gauge":
        tokens = [t for t in tokens if t != "ratio"]
        tokens.append("ratio")
    if namespace:
        tokens = [*_tokens(namespace), *tokens]
    result = "_".join(tokens)
    if result[:1].isdigit():
        result = "_" + result
    if not result.strip("_"):
        raise InvalidNameError(f"metric name {name!r} sanitizes to nothing")
    return result


def label_name(key: str) -> str:
    """A Prometheus label name for an OTel attribute key.

    `http.method` → `http_method`; `123invalid` → `key_123invalid`; `__name__` → `key_name_`
    (`__*` is reserved for Prometheus itself, so attributes never produce it).
    Raises InvalidNameError when nothing usable is left.
    """
    replaced = _INVALID_LABEL_CHARS.sub("_", key)
    result = _UNDERSCORE_RUN.sub("_", replaced)
    if not result.strip("_"):
        raise InvalidNameError(f"label name {key!r} sanitizes to nothing")
    if result[0].isdigit():
        return "key_" + result
    if replaced.startswith("__"):
        return "key" + result
    return result


def attribute_label_name(key: str) -> str:
    """label_name() for a data point attribute, which must also avoid `le` and `quantile`.

    Those belong to histogram buckets and summary quantiles; a user attribute taking them would
    duplicate a label (an unparseable scrape) or be mistaken for one. They become `key_le`, `key_quantile`.
    """
    result = label_name(key)
    return "key_" + result if result in RESERVED_LABELS else result


def merge_labels(items: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Labels from (label name, original key, value) triples, merging collisions.

    Per the spec, values of keys that sanitize to the same label are joined with `;` in the
    lexicographical order of their original keys (ties keep input order). Empty values are skipped:
    in Prometheus an empty label value is the same as an absent label.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for label, original, value in items:
        if value:
            groups.setdefault(label, []).append((original, value))
    merged: dict[str, str] = {}
    for label, pairs in groups.items():
        if len(pairs) == 1:
            merged[label] = pairs[0][1]
        else:
            pairs.sort(key=lambda pair: pair[0])  # stable: equal original keys keep input order
            merged[label] = ";".join(value for _, value in pairs)
    return merged
