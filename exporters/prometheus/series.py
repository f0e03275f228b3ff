"""The aggregator's state: families of series, bounded, expiring, and cheap to snapshot.

Concurrency model. Every series value is an immutable record (NamedTuple) that is *replaced*,
never mutated, when a point arrives. A snapshot therefore only has to copy each changed family's
dict of references (`tuple(dict.values())`, C speed); the records it holds can be read from any
thread while the event loop keeps replacing them. The caller (PrometheusAggregator) serialises
`put`/`snapshot` with one lock that is held for a request's bookkeeping or a family copy, never for
rendering.

Expiry. A series dict is kept in last-update order (an update re-inserts its key at the end), so
expiring is a scan from the front that stops at the first fresh series: O(expired), not O(series).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple

from exporters.prometheus.labels import LabelKey

Kind = Literal["counter", "gauge", "histogram", "summary", "info"]


class Reason(StrEnum):
    """Why points were dropped: the `reason` label of otelpg_prometheus_dropped_points_total."""

    TYPE_CONFLICT = "type_conflict"  # the name already has another TYPE (first one wins)
    NAME_CLASH = "name_clash"  # a sample name of another family, or a name otelpg reserves
    INVALID_NAME = "invalid_name"  # the metric name sanitizes to nothing
    UNSUPPORTED_TEMPORALITY = "unsupported_temporality"  # unspecified temporality, non-monotonic delta
    MISALIGNED = "misaligned"  # a delta overlapping what was already accumulated
    OUT_OF_ORDER = "out_of_order"  # older than the point already held
    INVALID_POINT = "invalid_point"  # bucket counts not matching bounds, NaN bounds, unusable scale
    OVERFLOW = "overflow"  # series cap reached: folded into the otel_metric_overflow series
    CARDINALITY_LIMIT = "cardinality_limit"  # series cap reached and the point can't be folded: dropped


_log = logging.getLogger(__name__)
_MAX_WARNED = 1000

OVERFLOW_KEY: LabelKey = (("otel_metric_overflow", "true"),)
OVERFLOW_LABELS: dict[str, str] = dict(OVERFLOW_KEY)


# --- immutable series records: `labels` first, `updated` (arrival time, for expiry) last ---


class Scalar(NamedTuple):
    """A counter or gauge value."""

    labels: dict[str, str]
    value: float
    start: int  # ns; 0 = unknown
    time: int  # ns
    updated: float


class Hist(NamedTuple):
    """An explicit-bucket histogram; `counts` are per bucket (not cumulative), the last one is +Inf."""

    labels: dict[str, str]
    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float | None
    start: int
    time: int
    updated: float


class ExpHist(NamedTuple):
    """An exponential histogram already downscaled to the exported scale; rendered as fixed buckets."""

    labels: dict[str, str]
    scale: int
    zero_threshold: float
    zero_count: int
    positive: tuple[int, tuple[int, ...]]  # (offset, counts)
    negative: tuple[int, tuple[int, ...]]
    sum: float | None
    start: int
    time: int
    updated: float


class Quantiles(NamedTuple):
    """A summary: quantiles sorted by quantile."""

    labels: dict[str, str]
    quantiles: tuple[tuple[float, float], ...]
    count: int  # type: ignore[assignment]  # shadows tuple.count, as the OTLP field is named
    sum: float
    start: int
    time: int
    updated: float


class Info(NamedTuple):
    """An info series (`target_info`): the value is always 1."""

    labels: dict[str, str]
    updated: float


Record = Scalar | Hist | ExpHist | Quantiles | Info


@dataclass(frozen=True, slots=True)
class FamilyView:
    """One metric family as a snapshot sees it. `name` is the OpenMetrics family name
    (a counter's without `_total`)."""

    name: str
    kind: Kind
    help: str
    unit: str
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Stats:
    active_series: int
    families: int
    dropped: dict[str, int]  # reason → points, every Reason present


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of every non-empty family, sorted by name."""

    families: tuple[FamilyView, ...]
    stats: Stats


_SAMPLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("", "_total", "_created"),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("", "_info"),
}


def sample_names(name: str, kind: Kind) -> tuple[str, ...]:
    """Every name a family writes in text 0.0.4 or OpenMetrics; two families must not share one."""
    return tuple(name + suffix for suffix in _SAMPLE_SUFFIXES[kind])


class Family:
    __slots__ = ("builtin", "help", "kind", "name", "series", "unit", "version")

    def __init__(self, name: str, kind: Kind, help: str, unit: str, builtin: bool) -> None:
        self.name = name
        self.kind: Kind = kind
        self.help = help
        self.unit = unit
        self.builtin = builtin  # otelpg's own: never expires as a family, never taken by client data
        self.series: dict[LabelKey, Record] = {}
        self.version = 0  # bumped on every change; a snapshot reuses its view while unchanged


class SeriesStore:
    """Families keyed by name, with one TYPE per name, series caps and expiry.

    Not thread-safe on its own: the aggregator holds its lock around every call.
    """

    def __init__(
        self,
        *,
        max_series_per_metric: int,
        max_series_total: int,
        expiry_seconds: float,
        reserved_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.max_series_per_metric = max_series_per_metric
        self.max_series_total = max_series_total
        self.expiry_seconds = expiry_seconds
        self._reserved_prefixes = reserved_prefixes
        self.families: dict[str, Family] = {}
        self._claims: dict[str, str] = {}  # sample name → family name that writes it
        self.active = 0
        self.dropped: Counter[str] = Counter()
        self._views: dict[str, tuple[int, FamilyView]] = {}
        self._warned: set[tuple[str, str]] = set()

    def warn_once(self, subject: str, topic: str, message: str, *args: object) -> None:
        """Log a warning the first time `topic` happens to `subject`; the counters carry the rest."""
        if (subject, topic) in self._warned:
            return
        if len(self._warned) >= _MAX_WARNED:
            self._warned.clear()
        self._warned.add((subject, topic))
        _log.warning(message, *args)

    # --- families ---

    def builtin(self, name: str, kind: Kind, help: str, unit: str = "") -> Family:
        """Register one of otelpg's own families (span metrics, log counts, target_info)."""
        family = self._create(name, kind, help, unit, builtin=True)
        assert family is not None, f"builtin family {name} clashes"
        return family

    def reserve(self, *names: str) -> None:
        """Claim sample names that another collector on the same registry writes."""
        for name in names:
            self._claims.setdefault(name, name)

    def family(self, name: str, kind: Kind, help: str, unit: str) -> Family | Reason:
        """The family for a client metric, created on first use, or why its points must be dropped."""
        family = self.families.get(name)
        if family is not None:
            if family.kind != kind:
                self.warn_once(
                    name, kind, "instrument type conflict: %s is a %s, dropping %s points", name, family.kind, kind
                )
                return Reason.TYPE_CONFLICT
            if not family.builtin:
                return family
        elif self.active >= self.max_series_total:
            self.warn_once("*", "cap", "global series cap (%d) reached: new metrics are dropped", self.max_series_total)
            return Reason.CARDINALITY_LIMIT  # a new family would need a new series
        elif not name.startswith(self._reserved_prefixes):
            created = self._create(name, kind, help, unit, builtin=False)
            if created is not None:
                return created
        self.warn_once(
            name,
            "clash",
            "metric name %s clashes with another family's samples or a name otelpg writes, dropping its points",
            name,
        )
        return Reason.NAME_CLASH

    def _create(self, name: str, kind: Kind, help: str, unit: str, builtin: bool) -> Family | None:
        names = sample_names(name, kind)
        if any(n in self._claims for n in names):
            return None
        for n in names:
            self._claims[n] = name
        family = self.families[name] = Family(name, kind, help, unit, builtin)
        return family

    def _remove(self, family: Family) -> None:
        del self.families[family.name]
        for n in sample_names(family.name, family.kind):
            if self._claims.get(n) == family.name:
                del self._claims[n]
        self._views.pop(family.name, None)

    # --- series ---

    def admit(self, family: Family, key: LabelKey, additive: bool) -> LabelKey | None:
        """The key a point should update: its own, the overflow series', or None (dropped).

        Past the per-metric or global cap a new label set folds into the one `otel_metric_overflow`
        series when its points are additive (deltas, span and log counts): totals stay exact and only
        the breakdown is lost, as with the SDK cardinality limit. A cumulative or last-value point
        can't be folded without keeping per-stream state, which is what the cap forbids: dropped.
        """
        series = family.series
        if key in series:
            return key
        if len(series) < self.max_series_per_metric and self.active < self.max_series_total:
            return key
        self.warn_once(
            family.name,
            "cap",
            "series cap reached for %s: new label sets are %s",
            family.name,
            "folded into its otel_metric_overflow series" if additive else "dropped",
        )
        if additive:
            self.dropped[Reason.OVERFLOW] += 1
            return OVERFLOW_KEY
        self.dropped[Reason.CARDINALITY_LIMIT] += 1
        return None

    def put(self, family: Family, key: LabelKey, record: Record) -> None:
        series = family.series
        if key in series:
            del series[key]  # re-insert at the end: the dict stays in last-update order
        else:
            self.active += 1
        series[key] = record
        family.version += 1

    def delete(self, family: Family, key: LabelKey) -> None:
        if family.series.pop(key, None) is not None:
            self.active -= 1
            family.version += 1

    def drop(self, reason: Reason, points: int = 1) -> None:
        self.dropped[reason] += points

    def expire(self, now: float) -> int:
        """Remove series not updated for expiry_seconds, then empty client families (so a name
        may come back later with another type). Returns how many series went."""
        cutoff = now - self.expiry_seconds
        removed = 0
        for family in list(self.families.values()):
            series = family.series
            stale = []
            for key, record in series.items():
                if record.updated > cutoff:
                    break
                stale.append(key)
            if stale:
                for key in stale:
                    del series[key]
                removed += len(stale)
                family.version += 1
            if not series and not family.builtin:
                self._remove(family)
        self.active -= removed
        return removed

    # --- reading ---

    def stats(self) -> Stats:
        dropped = {reason.value: self.dropped.get(reason, 0) for reason in Reason}
        families = sum(1 for f in self.families.values() if f.series)
        return Stats(self.active, families, dropped)

    def snapshot(self) -> Snapshot:
        """Views of every non-empty family; unchanged families reuse their previous view."""
        views = []
        for name in sorted(self.families):
            family = self.families[name]
            cached = self._views.get(name)
            if cached is not None and cached[0] == family.version:
                view = cached[1]
            else:
                view = FamilyView(name, family.kind, family.help, family.unit, tuple(family.series.values()))
                self._views[name] = (family.version, view)
            if view.records:
                views.append(view)
        return Snapshot(tuple(views), self.stats())
