"""performance_metrics_1m / _1h: per-minute and per-hour aggregates kept in step with the raw points.

A batch hook: the batch's performance_metrics rows are aggregated in Python by (metric, service,
series, minute), then merged into both rollup tables by one statement, inside the transaction
that COPYs the raw rows: `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE` into the 1m
table, and the same rows by hour into the 1h table. The rollups commit or roll back with the points
they summarise, read no table, and cost one upsert per series and bucket.

Merging follows SQL aggregate semantics, so a rollup row equals a GROUP BY over the raw rows of
its bucket: count(*), sum/min/max(value) ignoring NULLs (NaN above every number, as PostgreSQL
orders doubles), `last` = value at the greatest timestamp, distributions' count/min/max, bucket
counts summed element-wise. The series is identified by a hash of the metric type, the tags with
their keys sorted (the same attributes in another order are the same series) and the bucket
bounds (counts with different bounds are never added up).

Keys are upserted in one fixed order (metric, service, series, bucket), so concurrent writers lock
rollup rows in the same order (no deadlock), and a metric's new rows land next to each other in
the heap: a long-range panel over one metric reads fewer pages.

Histogram bounds and counts travel as two flat binary arrays sliced per row in SQL: an array of
arrays can't go through unnest(), and text literals would cost a parse per number.
Tags go as text[] cast to jsonb in SQL and buckets as epoch seconds: asyncpg encodes a jsonb[]
parameter about twice as slowly, and datetimes four times as slowly as integers.
"""

from __future__ import annotations

import datetime as dt
from hashlib import blake2b
from itertools import pairwise
from typing import Any

import asyncpg
import orjson

from exporters.postgres.schema import PERFORMANCE_METRICS_1H, PERFORMANCE_METRICS_1M, PM

__all__ = ["ROLLUPS", "Rollups", "aggregate", "parameters", "series_hash"]

ROLLUPS: dict[str, int] = {PERFORMANCE_METRICS_1M: 60, PERFORMANCE_METRICS_1H: 3600}  # table -> bucket seconds

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MEMO_MAX = 50_000  # series hashes remembered (each entry holds its tags JSON)

# Accumulator: a list per key, mutated in place.
_COUNT, _SUM, _MIN, _MAX, _LAST, _LAST_TS, _SCOUNT, _SMIN, _SMAX, _BCOUNTS, _STATIC = range(11)
# _STATIC = (tags JSON, metric_type, temporality, unit, bounds list | None), from the key's first point.

_COLUMNS = """bucket, metric_name, service_name, series_hash, tags, metric_type, temporality, unit, count, sum,
    min, max, last, last_timestamp, sample_count, sample_min, sample_max, bucket_bounds, bucket_counts"""

_MERGE = """ON CONFLICT (metric_name, service_name, series_hash, bucket) DO UPDATE SET
    count = t.count + EXCLUDED.count,
    sum = coalesce(t.sum + EXCLUDED.sum, t.sum, EXCLUDED.sum),
    min = least(t.min, EXCLUDED.min),
    max = greatest(t.max, EXCLUDED.max),
    last = CASE WHEN EXCLUDED.last_timestamp >= t.last_timestamp THEN EXCLUDED.last ELSE t.last END,
    last_timestamp = greatest(t.last_timestamp, EXCLUDED.last_timestamp),
    sample_count = coalesce(t.sample_count + EXCLUDED.sample_count, t.sample_count, EXCLUDED.sample_count),
    sample_min = least(t.sample_min, EXCLUDED.sample_min),
    sample_max = greatest(t.sample_max, EXCLUDED.sample_max),
    bucket_counts = otelpg_add_buckets(t.bucket_counts, EXCLUDED.bucket_counts)"""

# The per-minute aggregates, one row per 1m key, in the order Python sorted them (`ord`).
_MINUTES = """
SELECT u.bucket, u.metric_name, u.service_name, u.series_hash, u.tags::jsonb AS tags, u.metric_type,
       u.temporality, u.unit, u.count, u.sum, u.min, u.max, u.last, u.last_timestamp, u.sample_count,
       u.sample_min, u.sample_max,
       CASE WHEN u.nb > 0 THEN ($18::float8[])[u.ob + 1 : u.ob + u.nb] END AS bucket_bounds,
       CASE WHEN u.nc > 0 THEN ($19::bigint[])[u.oc + 1 : u.oc + u.nc] END AS bucket_counts,
       u.ord, u.bucket - u.bucket % 3600 AS hour
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::bigint[], $10::float8[], $11::float8[], $12::float8[], $13::float8[],
            $14::timestamptz[], $15::bigint[], $16::float8[], $17::float8[],
            $20::int[], $21::int[], $22::int[], $23::int[]) WITH ORDINALITY
     AS u(bucket, metric_name, service_name, series_hash, tags, metric_type, temporality, unit,
          count, sum, min, max, last, last_timestamp, sample_count, sample_min, sample_max, ob, nb, oc, nc, ord)
"""
_HOUR_ORDER = 'ORDER BY metric_name COLLATE "C", service_name COLLATE "C", series_hash, hour'
# The hours: when no two minutes of a batch fall in one series-hour (the usual case: a series
# sends once per export interval), each minute row is its hour row; else they are merged here
# with the same semantics as aggregate() merges points.
_HOURS = f"""
SELECT to_timestamp(hour), metric_name, service_name, series_hash, tags, metric_type, temporality, unit, count,
       sum, min, max, last, last_timestamp, sample_count, sample_min, sample_max, bucket_bounds, bucket_counts
FROM m {_HOUR_ORDER}
"""
_HOURS_MERGED = f"""
SELECT to_timestamp(hour), metric_name, service_name, series_hash, (array_agg(tags ORDER BY ord))[1],
       (array_agg(metric_type ORDER BY ord))[1], (array_agg(temporality ORDER BY ord))[1],
       (array_agg(unit ORDER BY ord))[1], sum(count), sum(sum), min(min), max(max),
       (array_agg(last ORDER BY last_timestamp DESC, ord DESC))[1], max(last_timestamp), sum(sample_count),
       min(sample_min), max(sample_max), min(bucket_bounds), otelpg_sum_buckets(bucket_counts)
FROM m GROUP BY metric_name, service_name, series_hash, hour {_HOUR_ORDER}
"""
# One statement for both tables: the minutes are sent once, the hours derived from them in SQL.
# Every writer runs this same statement shape, so all lock rollup rows in the same order.
_UPSERT = f"""
WITH m AS MATERIALIZED ({_MINUTES}),
minutes AS (
    INSERT INTO {PERFORMANCE_METRICS_1M} AS t ({_COLUMNS})
    SELECT to_timestamp(bucket), metric_name, service_name, series_hash, tags, metric_type, temporality, unit,
           count, sum, min, max, last, last_timestamp, sample_count, sample_min, sample_max, bucket_bounds,
           bucket_counts
    FROM m ORDER BY ord
    {_MERGE}
)
INSERT INTO {PERFORMANCE_METRICS_1H} AS t ({_COLUMNS})
{{hours}}
{_MERGE}
"""


def _min(a: float | None, b: float | None) -> float | None:
    """min() as PostgreSQL orders doubles: NULL ignored, NaN above every number."""
    if a is None or a != a:
        return b if b is not None else a
    if b is None or b != b:
        return a
    return b if b < a else a


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None or a != a:
        return a
    if b != b:
        return b
    return b if b > a else a


_series_memo: dict[tuple, int] = {}


def series_hash(metric_type: str, tags: str, bounds: tuple[float, ...] | None) -> int:
    """The series of a point within its metric and service: blake2b-64 (signed) of the metric
    type, the tags JSON re-serialised with sorted keys, and the bucket bounds."""
    key = (metric_type, tags, bounds)
    h = _series_memo.get(key)
    if h is None:
        try:
            canonical = orjson.dumps(orjson.loads(tags), option=orjson.OPT_SORT_KEYS)
        except orjson.JSONDecodeError:
            canonical = tags.encode()
        parts = [metric_type.encode(), canonical]
        if bounds is not None:
            parts.append(",".join(map(repr, bounds)).encode())
        h = int.from_bytes(blake2b(b"\n".join(parts), digest_size=8).digest(), "big", signed=True)
        if len(_series_memo) >= _MEMO_MAX:
            _series_memo.clear()
        _series_memo[key] = h
    return h


def aggregate(rows: list[tuple], seconds: int) -> dict[tuple, list]:
    """performance_metrics rows (schema.PERFORMANCE_METRICS_COLUMNS order) → {(metric_name,
    service_name, series_hash, bucket_epoch): accumulator}, buckets `seconds` wide."""
    acc: dict[tuple, list] = {}
    get = acc.get
    memo = _series_memo
    hashes = series_hash
    last_ts: Any = None
    bucket = 0
    for r in rows:
        ts = r[PM.TIMESTAMP]
        if ts is not last_ts:  # the points of a request share their datetime objects
            last_ts = ts
            bucket = int((ts - _EPOCH).total_seconds() // seconds) * seconds
        bounds = r[PM.BUCKET_BOUNDS]
        mtype = r[PM.METRIC_TYPE]
        tags = r[PM.TAGS]
        if bounds is None:
            shash = memo.get((mtype, tags, None)) or hashes(mtype, tags, None)
        else:
            shash = hashes(mtype, tags, tuple(bounds))
        key = (r[PM.METRIC_NAME], r[PM.SERVICE_NAME], shash, bucket)
        value = r[PM.VALUE]
        a = get(key)
        if a is None:
            # Lists from the row are shared, never mutated: merging builds new ones.
            acc[key] = [
                1, value, value, value, value, ts, r[PM.COUNT], r[PM.MIN], r[PM.MAX], r[PM.BUCKET_COUNTS],
                (tags, mtype, r[PM.TEMPORALITY], r[PM.UNIT], bounds),
            ]  # fmt: skip
            continue
        a[_COUNT] += 1
        if value is not None:
            a[_SUM] = value if a[_SUM] is None else a[_SUM] + value
            a[_MIN] = _min(a[_MIN], value)
            a[_MAX] = _max(a[_MAX], value)
        if ts >= a[_LAST_TS]:
            a[_LAST] = value
            a[_LAST_TS] = ts
        n = r[PM.COUNT]
        if n is not None:
            a[_SCOUNT] = n if a[_SCOUNT] is None else a[_SCOUNT] + n
        a[_SMIN] = _min(a[_SMIN], r[PM.MIN])
        a[_SMAX] = _max(a[_SMAX], r[PM.MAX])
        counts = r[PM.BUCKET_COUNTS]
        if counts is not None:
            mine = a[_BCOUNTS]
            a[_BCOUNTS] = counts if mine is None else [x + y for x, y in zip(mine, counts, strict=True)]
    return acc


def parameters(acc: dict[tuple, list]) -> tuple[list, bool]:
    """The 23 parameters of _UPSERT, keys sorted (so a metric's rows are inserted next to each
    other, and a series' minutes come one after the other), and whether two minutes fall in one
    series-hour."""
    keys = sorted(acc)
    if not keys:
        return [[] for _ in range(23)], False
    vals = [acc[k] for k in keys]
    names, services, shash, buckets = zip(*keys, strict=True)
    count, sum_, min_, max_, last, last_ts, scount, smin, smax, bcounts, statics = zip(*vals, strict=True)
    tags, mtype, temporality, unit, bounds = zip(*statics, strict=True)
    flat_bounds: list[float] = []
    flat_counts: list[int] = []
    ob, nb, oc, nc = [], [], [], []
    for b, c in zip(bounds, bcounts, strict=True):
        ob.append(len(flat_bounds))
        if b is None:
            nb.append(0)
        else:
            nb.append(len(b))
            flat_bounds.extend(b)
        oc.append(len(flat_counts))
        if c is None:
            nc.append(0)
        else:
            nc.append(len(c))
            flat_counts.extend(c)
    merged = any(
        k[2] == j[2] and k[3] - k[3] % 3600 == j[3] - j[3] % 3600 and k[0] == j[0] and k[1] == j[1]
        for k, j in pairwise(keys)
    )  # fmt: skip
    return [
        buckets, names, services, shash, tags, mtype, temporality, unit, count, sum_, min_, max_, last, last_ts,
        scount, smin, smax, flat_bounds, flat_counts, ob, nb, oc, nc,
    ], merged  # fmt: skip


class Rollups:
    """Merges a batch's points into performance_metrics_1m and performance_metrics_1h."""

    def __init__(self) -> None:
        self._sql = _UPSERT.format(hours=_HOURS)
        self._sql_merged = _UPSERT.format(hours=_HOURS_MERGED)

    async def write(self, conn: asyncpg.Connection, rows: list[tuple]) -> int:
        """Upsert the rollups of `rows` (inside the caller's transaction); return the 1m rows touched."""
        if not rows:
            return 0
        minutes = aggregate(rows, ROLLUPS[PERFORMANCE_METRICS_1M])
        params, merged = parameters(minutes)
        await conn.execute(self._sql_merged if merged else self._sql, *params)
        return len(minutes)
