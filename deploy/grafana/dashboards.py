#!/usr/bin/env python3
"""Source of the otelpg Grafana dashboards.

    python deploy/grafana/dashboards.py          # rewrites provisioning/dashboards/otelpg/*.json

The JSON files are generated from this file so that the SQL stays readable and the range switch
(raw rows for short ranges, rollups for long ones) is written once. tests/deploy/test_dashboards.py
fails when the JSON and this file disagree, then runs every panel's SQL against PostgreSQL.

Range switch: a time-series panel's SQL is a UNION ALL of one SELECT per tier, each guarded by the
length of the dashboard's time range, `$__timeTo()::timestamptz - $__timeFrom()::timestamptz`.
Grafana expands both macros to literals, so the guard is a constant: PostgreSQL folds it at plan
time and the tiers that don't apply are removed from the plan (no scan, no partition opened):
  range <= 3 hours   raw rows        (system_events / performance_metrics)
  range <= 2 days    1-minute rollup (performance_metrics_1m)
  longer             1-hour rollup   (performance_metrics_1h)
Each SELECT filters its own time column with $__timeFilter, so partitions are pruned at plan time.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

OUT = Path(__file__).resolve().parent / "provisioning" / "dashboards" / "otelpg"
PG = {"type": "postgres", "uid": "otelpg-postgres"}
PROM = {"type": "prometheus", "uid": "${prometheus}"}
TAGS = ["otelpg"]

RAW_MAX = "3 hours"
MINUTE_MAX = "2 days"
RANGE = "($__timeTo()::timestamptz - $__timeFrom()::timestamptz)"
TIER_GUARD = {
    "raw": f"{RANGE} <= interval '{RAW_MAX}'",
    "1m": f"{RANGE} > interval '{RAW_MAX}' AND {RANGE} <= interval '{MINUTE_MAX}'",
    "1h": f"{RANGE} > interval '{MINUTE_MAX}'",
}
ROLLUPS = {"1m": ("performance_metrics_1m", 60), "1h": ("performance_metrics_1h", 3600)}

# Span-derived aggregates that otelpg flushes into performance_metrics every minute (a delta
# histogram in seconds per service, span name, kind and status code), and so into the rollups.
SPAN_DURATION = "traces.span.metrics.duration"
REQUEST_KINDS = "('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER')"


def sql(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def tiered(raw: str, rollup: str, tail: str = "") -> str:
    """One SELECT per tier, glued with UNION ALL. `raw` and `rollup` contain @GUARD@; `rollup` also
    @TABLE@ (the rollup table) and @WIDTH@ (its bucket width in seconds). `tail` (ORDER BY ...)
    applies to the union."""
    header = (
        f"-- raw rows up to {RAW_MAX}, then the 1-minute rollup up to {MINUTE_MAX}, "
        "then the 1-hour rollup (see deploy/README.md)"
    )
    parts = [sql(raw).replace("@GUARD@", TIER_GUARD["raw"])]
    for tier, (table, width) in ROLLUPS.items():
        parts.append(
            sql(rollup).replace("@GUARD@", TIER_GUARD[tier]).replace("@TABLE@", table).replace("@WIDTH@", str(width))
        )
    body = "\nUNION ALL\n".join(f"(\n{textwrap.indent(p, '  ')}\n)" for p in parts)
    return f"{header}\n{body}" + (f"\n{sql(tail)}" if tail else "")


# Time-series SQL with exactly three columns (time, a string named `metric`, a value) names each
# series by `metric` alone, as Grafana did before v8 (sqleng keeps that rule); wider results become
# one series per value column and string-column label set.

# --- panel builders ---------------------------------------------------------------------------------


def target(raw_sql: str, fmt: str = "time_series", ref: str = "A") -> dict:
    return {"refId": ref, "datasource": PG, "editorMode": "code", "format": fmt, "rawQuery": True, "rawSql": raw_sql}


def prom_target(expr: str, legend: str, ref: str = "A") -> dict:
    return {"refId": ref, "datasource": PROM, "editorMode": "code", "expr": expr, "legendFormat": legend, "range": True}


def timeseries(
    title: str,
    query: str,
    *,
    unit: str = "short",
    description: str = "",
    w: int = 12,
    h: int = 8,
    bars: bool = False,
    stack: bool = False,
    overrides: list | None = None,
    min_zero: bool = True,
) -> dict:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0 if min_zero else None,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    custom = {k: v for k, v in custom.items() if v is not None}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PG,
        "targets": [target(query)],
        "_size": (w, h),
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def table(
    title: str,
    query: str,
    *,
    description: str = "",
    w: int = 24,
    h: int = 9,
    overrides: list | None = None,
    sort: str | None = None,
) -> dict:
    options: dict = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if sort:
        options["sortBy"] = [{"displayName": sort, "desc": True}]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": PG,
        "targets": [target(query, "table")],
        "_size": (w, h),
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "filterable": True}}, "overrides": overrides or []},
        "options": options,
    }


def stat(
    title: str,
    query: str,
    *,
    unit: str = "short",
    description: str = "",
    w: int = 6,
    h: int = 4,
    thresholds: list | None = None,
    decimals: int | None = None,
) -> dict:
    defaults: dict = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PG,
        "targets": [target(query, "table")],
        "_size": (w, h),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
        },
    }


def prom_timeseries(
    title: str, targets: list[dict], *, unit: str, description: str = "", w: int = 12, h: int = 8
) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROM,
        "targets": targets,
        "_size": (w, h),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"drawStyle": "line", "fillOpacity": 10, "showPoints": "never", "axisSoftMin": 0},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def prom_stat(title: str, expr: str, *, unit: str, description: str = "", w: int = 6, h: int = 4) -> dict:
    panel = stat(title, "", unit=unit, description=description, w=w, h=h)
    query = prom_target(expr, title)
    query.update(range=False, instant=True)
    panel.update(datasource=PROM, targets=[query])
    return panel


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def link_override(field: str, title: str, url: str) -> dict:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": "links", "value": [{"title": title, "url": url}]}],
    }


def unit_override(pattern: str, unit: str, decimals: int | None = None) -> dict:
    props: list[dict] = [{"id": "unit", "value": unit}]
    if decimals is not None:
        props.append({"id": "decimals", "value": decimals})
    return {"matcher": {"id": "byRegexp", "options": pattern}, "properties": props}


def color_override(field: str, mapping: dict[str, str]) -> dict:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [
            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            {
                "id": "mappings",
                "value": [
                    {
                        "type": "value",
                        "options": {k: {"color": v, "index": i} for i, (k, v) in enumerate(mapping.items())},
                    }
                ],
            },
        ],
    }


SEVERITY_COLORS = {
    "trace": "text",
    "debug": "blue",
    "info": "green",
    "warn": "orange",
    "error": "red",
    "fatal": "dark-red",
}
TRACE_LINK = "/d/otelpg-traces/otelpg-traces-and-events?var-trace_id=${__value.raw}&${__url_time_range}"


# --- variables --------------------------------------------------------------------------------------


def query_var(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = True,
    include_all: bool = True,
    refresh: int = 1,
    current: str | None = None,
) -> dict:
    var = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PG,
        "query": query,
        "definition": query,
        "refresh": refresh,
        "multi": multi,
        "includeAll": include_all,
        "sort": 1,
        "options": [],
        "hide": 0,
    }
    if current is not None:
        var["current"] = {"selected": True, "text": [current], "value": [current]}
    elif include_all:
        var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return var


def custom_var(
    name: str, label: str, values: list[str], *, multi: bool, include_all: bool, current: str | None = None
) -> dict:
    """current=None with include_all: All selected."""
    text, value = (current, current) if current is not None else ("All", "$__all")
    if multi:
        text, value = [text], [value]
    return {
        "type": "custom",
        "name": name,
        "label": label,
        "query": ",".join(values),
        "multi": multi,
        "includeAll": include_all,
        "hide": 0,
        "current": {"selected": True, "text": text, "value": value},
        "options": [{"selected": v == current, "text": v, "value": v} for v in values],
    }


def textbox_var(name: str, label: str, default: str = "") -> dict:
    return {
        "type": "textbox",
        "name": name,
        "label": label,
        "query": default,
        "hide": 0,
        "current": {"selected": False, "text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
    }


def datasource_var(name: str, label: str, plugin: str) -> dict:
    return {
        "type": "datasource",
        "name": name,
        "label": label,
        "query": plugin,
        "refresh": 1,
        "hide": 0,
        "current": {},
        "regex": "",
        "multi": False,
        "includeAll": False,
        "options": [],
    }


SERVICE_VAR = query_var("service", "Service", "SELECT service_name FROM otelpg_services ORDER BY 1")


# --- dashboards ---------------------------------------------------------------------------------------


def layout(panels: list[dict]) -> list[dict]:
    """Give panels ids and grid positions, left to right, top to bottom."""
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > 24 or p["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        p = {"id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **p}
        if p["type"] != "row" and not p.get("description"):
            p.pop("description", None)
        out.append(p)
        x += w
        row_h = max(row_h, h)
    return out


def dashboard(
    uid: str, title: str, description: str, panels: list[dict], variables: list[dict], time_from: str = "now-1h"
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "links": [
            {
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "title": "otelpg",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": layout(panels),
    }


# 1. Services overview ------------------------------------------------------------------------------

_SPANS = "event_type = 'span' AND service_name IN ($service)"
# Raw-tier request panels read otel_spans' typed columns (kind 2 = server, 5 = consumer; status_code
# 2 = error) rather than the system_events view, which would rebuild every span's payload to filter it.
_REQUESTS_RAW = "service_name IN ($service) AND kind IN (2, 5)"
_DURATION_MS = "duration_ns / 1e6"
_IS_ERROR = "status_code = 2"
_KIND_NAME = (
    "coalesce((ARRAY['SPAN_KIND_UNSPECIFIED', 'SPAN_KIND_INTERNAL', 'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', "
    "'SPAN_KIND_PRODUCER', 'SPAN_KIND_CONSUMER'])[kind + 1], kind::text)"
)
_SPAN_ROLLUP = f"metric_name = '{SPAN_DURATION}' AND service_name IN ($service)"
_REQUESTS_ROLLUP = f"{_SPAN_ROLLUP} AND tags->>'span.kind' IN {REQUEST_KINDS}"


def services_overview() -> dict:
    request_rate = tiered(
        f"""
        SELECT $__timeGroupAlias(timestamp, $__interval), service_name AS metric,
               count(*) / ($__interval_ms / 1000.0) AS "requests/s"
        FROM otel_spans
        WHERE $__timeFilter(timestamp) AND {_REQUESTS_RAW}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        f"""
        SELECT $__timeGroupAlias(bucket, $__interval), service_name,
               sum(sample_count) / greatest($__interval_ms / 1000.0, @WIDTH@)
        FROM @TABLE@
        WHERE $__timeFilter(bucket) AND {_REQUESTS_ROLLUP}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        "ORDER BY 1, 2",
    )
    error_rate = tiered(
        f"""
        SELECT $__timeGroupAlias(timestamp, $__interval), service_name AS metric,
               100.0 * count(*) FILTER (WHERE {_IS_ERROR}) / count(*) AS "error %"
        FROM otel_spans
        WHERE $__timeFilter(timestamp) AND {_REQUESTS_RAW}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        f"""
        SELECT $__timeGroupAlias(bucket, $__interval), service_name,
               100.0 * coalesce(sum(sample_count) FILTER (WHERE tags->>'status.code' = 'STATUS_CODE_ERROR'), 0)
                     / nullif(sum(sample_count), 0)
        FROM @TABLE@
        WHERE $__timeFilter(bucket) AND {_REQUESTS_ROLLUP}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        "ORDER BY 1, 2",
    )
    latency = tiered(
        f"""
        SELECT "time", service_name, q[1] AS p50, q[2] AS p95, q[3] AS p99
        FROM (
          SELECT $__timeGroupAlias(timestamp, $__interval), service_name,
                 percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {_DURATION_MS}) AS q
          FROM otel_spans
          WHERE $__timeFilter(timestamp) AND {_REQUESTS_RAW} AND duration_ns IS NOT NULL
            AND @GUARD@
          GROUP BY 1, 2
        ) s
        """,
        f"""
        SELECT "time", service_name,
               1000 * otelpg_histogram_quantile(0.5, bounds, counts),
               1000 * otelpg_histogram_quantile(0.95, bounds, counts),
               1000 * otelpg_histogram_quantile(0.99, bounds, counts)
        FROM (
          SELECT $__timeGroupAlias(bucket, $__interval), service_name,
                 max(bucket_bounds) AS bounds, otelpg_sum_buckets(bucket_counts) AS counts
          FROM @TABLE@
          WHERE $__timeFilter(bucket) AND {_REQUESTS_ROLLUP}
            AND @GUARD@
          GROUP BY 1, 2
        ) s
        """,
        "ORDER BY 1, 2",
    )

    # Whole-range figures: no GROUP BY, so each tier's SELECT repeats its guard in HAVING (an
    # aggregate over no rows still returns one row).
    def whole_range(raw_expr: str, rollup_expr: str, alias: str, extra_raw: str = "") -> str:
        return tiered(
            f"""
            SELECT {raw_expr} AS "{alias}"
            FROM otel_spans
            WHERE $__timeFilter(timestamp) AND {_REQUESTS_RAW}{extra_raw}
              AND @GUARD@
            HAVING @GUARD@
            """,
            f"""
            SELECT {rollup_expr}
            FROM @TABLE@
            WHERE $__timeFilter(bucket) AND {_REQUESTS_ROLLUP}
              AND @GUARD@
            HAVING @GUARD@
            """,
        )

    seconds = "extract(epoch from " + RANGE + ")"
    stat_rate = whole_range(f"count(*) / {seconds}", f"sum(sample_count) / {seconds}", "requests/s")
    stat_errors = whole_range(
        f"100.0 * count(*) FILTER (WHERE {_IS_ERROR}) / nullif(count(*), 0)",
        "100.0 * coalesce(sum(sample_count) FILTER (WHERE tags->>'status.code' = 'STATUS_CODE_ERROR'), 0)"
        " / nullif(sum(sample_count), 0)",
        "error %",
    )
    stat_p95 = whole_range(
        f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {_DURATION_MS})",
        "1000 * otelpg_histogram_quantile(0.95, max(bucket_bounds), otelpg_sum_buckets(bucket_counts))",
        "p95 ms",
        " AND duration_ns IS NOT NULL",
    )
    stat_p99 = whole_range(
        f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {_DURATION_MS})",
        "1000 * otelpg_histogram_quantile(0.99, max(bucket_bounds), otelpg_sum_buckets(bucket_counts))",
        "p99 ms",
        " AND duration_ns IS NOT NULL",
    )

    operations = tiered(
        f"""
        SELECT service_name AS service, name AS operation, {_KIND_NAME} AS kind,
               count(*) AS calls,
               count(*) / extract(epoch from {RANGE}) AS "calls/s",
               100.0 * count(*) FILTER (WHERE {_IS_ERROR}) / count(*) AS "error %",
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {_DURATION_MS}) AS "p50 ms",
               percentile_cont(0.95) WITHIN GROUP (ORDER BY {_DURATION_MS}) AS "p95 ms",
               percentile_cont(0.99) WITHIN GROUP (ORDER BY {_DURATION_MS}) AS "p99 ms"
        FROM otel_spans
        WHERE $__timeFilter(timestamp) AND service_name IN ($service)
          AND @GUARD@
        GROUP BY 1, 2, 3
        """,
        f"""
        SELECT service_name, tags->>'span.name', tags->>'span.kind',
               sum(sample_count),
               sum(sample_count) / extract(epoch from {RANGE}),
               100.0 * coalesce(sum(sample_count) FILTER (WHERE tags->>'status.code' = 'STATUS_CODE_ERROR'), 0)
                     / nullif(sum(sample_count), 0),
               1000 * otelpg_histogram_quantile(0.5, max(bucket_bounds), otelpg_sum_buckets(bucket_counts)),
               1000 * otelpg_histogram_quantile(0.95, max(bucket_bounds), otelpg_sum_buckets(bucket_counts)),
               1000 * otelpg_histogram_quantile(0.99, max(bucket_bounds), otelpg_sum_buckets(bucket_counts))
        FROM @TABLE@
        WHERE $__timeFilter(bucket) AND {_SPAN_ROLLUP}
          AND @GUARD@
        GROUP BY 1, 2, 3
        """,
        "ORDER BY calls DESC, service, operation\nLIMIT 100",
    )

    percent = [{"color": "green", "value": None}, {"color": "orange", "value": 1}, {"color": "red", "value": 5}]
    panels = [
        stat(
            "Requests/s",
            stat_rate,
            unit="reqps",
            decimals=2,
            description="Server and consumer spans per second over the time range.",
        ),
        stat(
            "Error rate",
            stat_errors,
            unit="percent",
            thresholds=percent,
            decimals=2,
            description="Share of server and consumer spans with status ERROR.",
        ),
        stat("p95 latency", stat_p95, unit="ms", decimals=1),
        stat("p99 latency", stat_p99, unit="ms", decimals=1),
        timeseries(
            "Request rate by service",
            request_rate,
            unit="reqps",
            description="Server and consumer spans per second (raw spans for short ranges, the span "
            "aggregates in the rollups for long ones).",
        ),
        timeseries(
            "Error rate by service",
            error_rate,
            unit="percent",
            description="Share of server and consumer spans whose status is ERROR.",
        ),
        timeseries(
            "Latency p50 / p95 / p99 by service",
            latency,
            unit="ms",
            w=24,
            description="Exact percentiles of span durations for short ranges; "
            "otelpg_histogram_quantile over the merged duration histograms for long ones.",
        ),
        table(
            "Operations",
            operations,
            sort="calls",
            description="Every span name by service and kind, busiest first.",
            overrides=[
                unit_override("ms$", "ms", 1),
                unit_override("^error %$", "percent", 2),
                unit_override("^calls/s$", "reqps", 2),
            ],
        ),
    ]
    return dashboard(
        "otelpg-services",
        "otelpg / Services overview",
        "Request rate, errors and latency of every service, from the spans otelpg stored.",
        panels,
        [SERVICE_VAR],
    )


# 2. Traces and events -----------------------------------------------------------------------------

_TRACE_ID = "replace(trim('$trace_id'), '-', '')"
_TRACE_MATCH = f"trace_id = CASE WHEN {_TRACE_ID} ~* '^[0-9a-f]{{32}}$' THEN {_TRACE_ID}::uuid END"
_HEX_TRACE = "replace(trace_id::text, '-', '')"


def traces() -> dict:
    error_spans = tiered(
        f"""
        SELECT $__timeGroupAlias(timestamp, $__interval), service_name AS metric, count(*) AS "error spans"
        FROM system_events
        WHERE $__timeFilter(timestamp) AND {_SPANS} AND severity = 'error'
          AND @GUARD@
        GROUP BY 1, 2
        """,
        f"""
        SELECT $__timeGroupAlias(bucket, $__interval), service_name, sum(sample_count)
        FROM @TABLE@
        WHERE $__timeFilter(bucket) AND {_SPAN_ROLLUP} AND tags->>'status.code' = 'STATUS_CODE_ERROR'
          AND @GUARD@
        GROUP BY 1, 2
        """,
        "ORDER BY 1, 2",
    )
    recent_errors = sql(f"""
        SELECT timestamp AS "time", service_name AS service, name AS operation, payload->>'kind' AS kind,
               payload#>>'{{status,message}}' AS status, duration_ms AS "duration ms",
               {_HEX_TRACE} AS trace_id, span_id
        FROM system_events
        WHERE $__timeFilter(timestamp) AND {_SPANS} AND severity = 'error'
        ORDER BY timestamp DESC
        LIMIT 100
        """)
    slow_spans = sql(f"""
        SELECT timestamp AS "time", service_name AS service, name AS operation, payload->>'kind' AS kind,
               duration_ms AS "duration ms", severity AS status, {_HEX_TRACE} AS trace_id, span_id
        FROM system_events
        WHERE $__timeFilter(timestamp) AND {_SPANS} AND duration_ms >= $min_duration_ms
        ORDER BY timestamp DESC
        LIMIT 100
        """)
    trace = sql(f"""
        SELECT timestamp AS "time",
               round((extract(epoch from timestamp - min(timestamp) OVER ()) * 1000)::numeric, 3) AS "offset ms",
               service_name AS service, event_type AS type, coalesce(name, payload->>'body') AS name,
               payload->>'kind' AS kind, duration_ms AS "duration ms", severity,
               span_id, parent_span_id, payload->'attributes' AS attributes
        FROM system_events
        WHERE $__timeFilter(timestamp) AND {_TRACE_MATCH}
        ORDER BY timestamp, event_type <> 'span'
        LIMIT 1000
        """)
    exceptions = sql(f"""
        SELECT timestamp AS "time", service_name AS service, payload->>'span_name' AS operation,
               payload#>>'{{attributes,exception.type}}' AS "exception type",
               payload#>>'{{attributes,exception.message}}' AS message,
               {_HEX_TRACE} AS trace_id, span_id
        FROM system_events
        WHERE $__timeFilter(timestamp) AND event_type = 'span_event' AND service_name IN ($service)
          AND name = 'exception'
        ORDER BY timestamp DESC
        LIMIT 100
        """)
    span_events = sql(f"""
        SELECT timestamp AS "time", service_name AS service, name AS event, payload->>'span_name' AS operation,
               payload->'attributes' AS attributes, {_HEX_TRACE} AS trace_id, span_id
        FROM system_events
        WHERE $__timeFilter(timestamp) AND event_type = 'span_event' AND service_name IN ($service)
          AND name <> 'exception'
        ORDER BY timestamp DESC
        LIMIT 100
        """)
    link = link_override("trace_id", "Open this trace", TRACE_LINK)
    ms = unit_override("^duration ms$", "ms", 1)
    panels = [
        timeseries(
            "Error spans by service",
            error_spans,
            bars=True,
            stack=True,
            description="Spans with status ERROR (all kinds).",
        ),
        table(
            "Recent errors",
            recent_errors,
            w=12,
            overrides=[link, ms],
            description="The latest spans with status ERROR. Click a trace id to open the trace below.",
        ),
        table(
            "Slow spans",
            slow_spans,
            w=12,
            overrides=[link, ms],
            description="The latest spans lasting at least $min_duration_ms ms.",
        ),
        table(
            "Exceptions",
            exceptions,
            w=12,
            overrides=[link],
            description="Exceptions recorded on spans (span events named 'exception').",
        ),
        row("Trace"),
        table(
            "Trace ${trace_id}",
            trace,
            h=12,
            overrides=[ms, color_override("severity", SEVERITY_COLORS)],
            description="Every span, span event and log record of the trace id typed above, in time order. "
            "The trace must start within the dashboard's time range.",
        ),
        table("Recent span events", span_events, overrides=[link]),
    ]
    variables = [
        SERVICE_VAR,
        textbox_var("trace_id", "Trace id"),
        custom_var(
            "min_duration_ms",
            "Slow spans from (ms)",
            ["100", "250", "500", "1000", "2500", "5000"],
            multi=False,
            include_all=False,
            current="500",
        ),
    ]
    return dashboard(
        "otelpg-traces",
        "otelpg / Traces and events",
        "Failing and slow spans, exceptions, and every row of one trace.",
        panels,
        variables,
    )


# 3. Logs ------------------------------------------------------------------------------------------------

_LOGS = "event_type IN ($event_type) AND service_name IN ($service) AND severity IN ($severity)"
_SEARCH = "('$search' = '' OR payload->>'body' ILIKE '%' || '$search' || '%')"
SEVERITIES = ["trace", "debug", "info", "warn", "error", "fatal"]


def logs() -> dict:
    volume = sql(f"""
        SELECT $__timeGroupAlias(timestamp, $__interval), severity AS metric, count(*) AS "log records"
        FROM system_events
        WHERE $__timeFilter(timestamp) AND {_LOGS}
          AND {_SEARCH}
        GROUP BY 1, 2
        ORDER BY 1, array_position(ARRAY['trace', 'debug', 'info', 'warn', 'error', 'fatal'], severity)
        """)
    by_service = sql(f"""
        SELECT service_name AS service,
               count(*) AS "log records",
               count(*) FILTER (WHERE severity IN ('warn')) AS warn,
               count(*) FILTER (WHERE severity IN ('error', 'fatal')) AS "error+fatal",
               max(timestamp) AS "last seen"
        FROM system_events
        WHERE $__timeFilter(timestamp) AND {_LOGS}
          AND {_SEARCH}
        GROUP BY 1
        ORDER BY 2 DESC
        """)
    recent = sql(f"""
        SELECT timestamp AS "time", service_name AS service, severity,
               coalesce(payload#>>'{{body}}', '') AS body,
               {_HEX_TRACE} AS trace_id, span_id, event_type, payload->'attributes' AS attributes
        FROM system_events
        WHERE $__timeFilter(timestamp) AND {_LOGS}
          AND {_SEARCH}
        ORDER BY timestamp DESC
        LIMIT 500
        """)
    volume_colors = [
        {
            "matcher": {"id": "byName", "options": sev},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
        }
        for sev, color in SEVERITY_COLORS.items()
    ]
    panels = [
        timeseries(
            "Log volume by severity",
            volume,
            bars=True,
            stack=True,
            w=16,
            overrides=volume_colors,
            description="Log records per interval, by severity (read from the raw rows at every range: "
            "there is no rollup of log counts).",
        ),
        table("By service", by_service, w=8, h=8),
        table(
            "Recent log lines",
            recent,
            h=16,
            overrides=[
                link_override("trace_id", "Open the trace", TRACE_LINK),
                color_override("severity", SEVERITY_COLORS),
                {"matcher": {"id": "byName", "options": "body"}, "properties": [{"id": "custom.width", "value": 700}]},
            ],
            description="The latest 500 matching records. Click a trace id to open its trace.",
        ),
    ]
    variables = [
        SERVICE_VAR,
        custom_var("severity", "Severity", SEVERITIES, multi=True, include_all=True),
        query_var(
            "event_type",
            "Event type",
            "SELECT DISTINCT event_type FROM otelpg_event_types "
            "WHERE event_type NOT IN ('span', 'span_event') ORDER BY 1",
            current="log",
        ),
        textbox_var("search", "Body contains"),
    ]
    return dashboard(
        "otelpg-logs",
        "otelpg / Logs",
        "Log records by severity and service, with links to their traces.",
        panels,
        variables,
    )


# 4. Metrics explorer -------------------------------------------------------------------------------

_METRIC_RAW = (
    "metric_name = '$metric' AND service_name IN ($service) AND tags @> coalesce(nullif('$tags', ''), '{}')::jsonb"
)
_SERIES = "service_name || ' ' || tags::text"
# The mean: of the point values for gauges and sums; of the observations for histograms and summaries
# (their `value` is the sum of the observations, `count` how many there were).
_MEAN_RAW = "coalesce(sum(sum) / nullif(sum(count), 0), avg(value))"
_MEAN_ROLLUP = "coalesce(sum(sum) / nullif(sum(sample_count), 0), sum(sum) / nullif(sum(count), 0))"


def metrics() -> dict:
    average = tiered(
        f"""
        SELECT $__timeGroupAlias(timestamp, $__interval), {_SERIES} AS metric, {_MEAN_RAW} AS value
        FROM performance_metrics
        WHERE $__timeFilter(timestamp) AND {_METRIC_RAW}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        f"""
        SELECT $__timeGroupAlias(bucket, $__interval), {_SERIES}, {_MEAN_ROLLUP}
        FROM @TABLE@
        WHERE $__timeFilter(bucket) AND {_METRIC_RAW}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        "ORDER BY 1, 2",
    )
    last = tiered(
        f"""
        SELECT $__timeGroupAlias(timestamp, $__interval), {_SERIES} AS metric,
               (array_agg(value ORDER BY timestamp DESC))[1] AS last
        FROM performance_metrics
        WHERE $__timeFilter(timestamp) AND {_METRIC_RAW}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        f"""
        SELECT $__timeGroupAlias(bucket, $__interval), {_SERIES},
               (array_agg(last ORDER BY last_timestamp DESC))[1]
        FROM @TABLE@
        WHERE $__timeFilter(bucket) AND {_METRIC_RAW}
          AND @GUARD@
        GROUP BY 1, 2
        """,
        "ORDER BY 1, 2",
    )
    min_max = tiered(
        f"""
        SELECT $__timeGroupAlias(timestamp, $__interval),
               min(coalesce(min, value)) AS min, {_MEAN_RAW} AS avg, max(coalesce(max, value)) AS max
        FROM performance_metrics
        WHERE $__timeFilter(timestamp) AND {_METRIC_RAW}
          AND @GUARD@
        GROUP BY 1
        """,
        f"""
        SELECT $__timeGroupAlias(bucket, $__interval),
               min(coalesce(sample_min, min)), {_MEAN_ROLLUP}, max(coalesce(sample_max, max))
        FROM @TABLE@
        WHERE $__timeFilter(bucket) AND {_METRIC_RAW}
          AND @GUARD@
        GROUP BY 1
        """,
        "ORDER BY 1",
    )
    quantiles = tiered(
        f"""
        SELECT "time",
               otelpg_histogram_quantile(0.5, bounds, counts) AS p50,
               otelpg_histogram_quantile(0.95, bounds, counts) AS p95,
               otelpg_histogram_quantile(0.99, bounds, counts) AS p99
        FROM (
          SELECT $__timeGroupAlias(timestamp, $__interval),
                 max(bucket_bounds) AS bounds, otelpg_sum_buckets(bucket_counts) AS counts
          FROM performance_metrics
          WHERE $__timeFilter(timestamp) AND {_METRIC_RAW} AND bucket_counts IS NOT NULL
            AND @GUARD@
          GROUP BY 1
        ) s
        """,
        f"""
        SELECT "time",
               otelpg_histogram_quantile(0.5, bounds, counts),
               otelpg_histogram_quantile(0.95, bounds, counts),
               otelpg_histogram_quantile(0.99, bounds, counts)
        FROM (
          SELECT $__timeGroupAlias(bucket, $__interval),
                 max(bucket_bounds) AS bounds, otelpg_sum_buckets(bucket_counts) AS counts
          FROM @TABLE@
          WHERE $__timeFilter(bucket) AND {_METRIC_RAW} AND bucket_counts IS NOT NULL
            AND @GUARD@
          GROUP BY 1
        ) s
        """,
        "ORDER BY 1",
    )
    points = sql(f"""
        SELECT timestamp AS "time", service_name AS service, metric_type AS type, temporality, unit,
               tags, value, count, sum, min, max, bucket_bounds, bucket_counts
        FROM performance_metrics
        WHERE $__timeFilter(timestamp) AND {_METRIC_RAW}
        ORDER BY timestamp DESC
        LIMIT 200
        """)
    catalog = sql("""
        SELECT metric_name AS metric, service_name AS service, metric_type AS type, unit,
               first_seen AS "first seen", last_seen AS "last seen"
        FROM otelpg_metric_names
        ORDER BY metric_name, service_name
        """)
    panels = [
        timeseries(
            "$metric: average by series",
            average,
            description="Per series (service and attribute set): the average point value of a gauge or "
            "sum; the mean observation of a histogram or summary.",
        ),
        timeseries(
            "$metric: last value by series",
            last,
            description="The latest point of each series in each interval: the counter or gauge value as reported.",
        ),
        timeseries(
            "$metric: min / avg / max",
            min_max,
            min_zero=False,
            description="Over every series; for histograms and summaries, of the observations.",
        ),
        timeseries(
            "$metric: p50 / p95 / p99 (histograms)",
            quantiles,
            description="otelpg_histogram_quantile over the bucket counts merged per interval. Exact for "
            "delta histograms; for cumulative ones the buckets hold counts since the start.",
        ),
        table("$metric: latest points", points, h=10),
        table(
            "Metric catalog",
            catalog,
            h=10,
            description="Every metric name otelpg has stored, per service (otelpg_metric_names).",
        ),
    ]
    variables = [
        query_var(
            "metric",
            "Metric",
            "SELECT DISTINCT metric_name FROM otelpg_metric_names ORDER BY 1",
            multi=False,
            include_all=False,
        ),
        query_var(
            "service",
            "Service",
            "SELECT service_name FROM otelpg_metric_names WHERE metric_name = '$metric' ORDER BY 1",
        ),
        textbox_var("tags", "Attributes contain (JSON)", "{}"),
    ]
    return dashboard(
        "otelpg-metrics",
        "otelpg / Metrics explorer",
        "Any metric by name, service and attributes: raw points for short ranges, rollups for long.",
        panels,
        variables,
    )


# 5. Database utilization -------------------------------------------------------------------------

_SIGNAL = "CASE event_type WHEN 'span' THEN 'spans' WHEN 'span_event' THEN 'span events' ELSE 'logs and events' END"


def database() -> dict:
    size = sql('SELECT pg_database_size(current_database()) AS "database size"')
    tables = sql("""
        SELECT c.relname AS "table",
               sum(pg_total_relation_size(t.relid)) AS "total bytes",
               sum(pg_indexes_size(t.relid)) AS "index bytes",
               sum(greatest(p.reltuples, 0))::bigint AS "estimated rows",
               count(*) FILTER (WHERE t.level > 0 AND t.isleaf) AS partitions,
               min(o.range_start) AS "oldest partition",
               max(o.range_end) AS "partitions until",
               sum(pg_total_relation_size(t.relid)) FILTER (WHERE o.is_default) AS "default partition bytes"
        FROM pg_class c
        CROSS JOIN LATERAL pg_partition_tree(c.oid) t
        JOIN pg_class p ON p.oid = t.relid
        LEFT JOIN otelpg_partitions o ON o.relid = t.relid
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        GROUP BY c.relname
        ORDER BY 2 DESC
        """)
    partition_count = sql("""
        SELECT count(*) FILTER (WHERE NOT is_default) AS partitions
        FROM otelpg_partitions
        """)
    per_day = sql("""
        SELECT range_start AS "time", parent AS metric, pg_total_relation_size(relid) AS bytes
        FROM otelpg_partitions
        WHERE NOT is_default AND range_end > $__timeFrom() AND range_start < $__timeTo()
        ORDER BY 1, 2
        """)
    rows = tiered(
        f"""
        SELECT "time", signal AS metric, "rows" FROM (
          SELECT $__timeGroupAlias(timestamp, $__interval), {_SIGNAL} AS signal, count(*) AS "rows"
          FROM system_events
          WHERE $__timeFilter(timestamp) AND @GUARD@
          GROUP BY 1, 2
          UNION ALL
          SELECT $__timeGroupAlias(timestamp, $__interval), 'metric points', count(*)
          FROM performance_metrics
          WHERE $__timeFilter(timestamp) AND @GUARD@
          GROUP BY 1, 2
        ) r
        """,
        f"""
        SELECT "time", signal AS metric, "rows" FROM (
          SELECT $__timeGroupAlias(timestamp, $__interval), {_SIGNAL} AS signal, count(*) AS "rows"
          FROM system_events
          WHERE $__timeFilter(timestamp) AND @GUARD@
          GROUP BY 1, 2
          UNION ALL
          SELECT $__timeGroupAlias(bucket, $__interval), 'metric points', sum(count)
          FROM @TABLE@
          WHERE $__timeFilter(bucket) AND @GUARD@
          GROUP BY 1, 2
        ) r
        """,
        "ORDER BY 1, 2",
    )
    ingest = tiered(
        """
        SELECT sum(n) / extract(epoch from @RANGE@) AS "rows/s" FROM (
          SELECT count(*) AS n FROM system_events WHERE $__timeFilter(timestamp) AND @GUARD@
          UNION ALL
          SELECT count(*) FROM performance_metrics WHERE $__timeFilter(timestamp) AND @GUARD@
        ) r
        HAVING @GUARD@
        """,
        """
        SELECT sum(n) / extract(epoch from @RANGE@) FROM (
          SELECT count(*) AS n FROM system_events WHERE $__timeFilter(timestamp) AND @GUARD@
          UNION ALL
          SELECT sum(count) FROM @TABLE@ WHERE $__timeFilter(bucket) AND @GUARD@
        ) r
        HAVING @GUARD@
        """,
    ).replace("@RANGE@", RANGE)
    panels = [
        stat("Database size", size, unit="bytes"),
        stat(
            "Partitions",
            partition_count,
            description="Daily partitions of the partitioned tables (default partitions not counted).",
        ),
        stat(
            "Average ingest rate",
            ingest,
            unit="rowsps",
            decimals=1,
            description="Rows per second over the time range, by the telemetry's own timestamps.",
        ),
        prom_stat(
            "Spool",
            "sum(otelpg_spool_bytes)",
            unit="bytes",
            description="Bytes waiting in the sidecars' durable spools (Prometheus: otelpg_spool_bytes).",
        ),
        table(
            "Tables",
            tables,
            h=9,
            overrides=[unit_override("bytes$", "bytes")],
            description="Size, estimated rows and partitions of every otelpg table (all partitions summed).",
        ),
        timeseries(
            "Bytes per day (daily partitions)",
            per_day,
            unit="bytes",
            bars=True,
            stack=True,
            description="Size of each day's partition: how fast the database grows, and what retention frees.",
        ),
        timeseries(
            "Rows per signal",
            rows,
            bars=True,
            stack=True,
            description="Rows written per interval by signal, by the telemetry's own timestamps. "
            "Metric points come from the rollups for long ranges; spans and logs are "
            "counted from the raw rows at every range.",
        ),
        prom_timeseries(
            "Spool size (Prometheus)",
            [prom_target("sum by (instance) (otelpg_spool_bytes)", "{{instance}}")],
            unit="bytes",
            description="Acknowledged data on local disk waiting for PostgreSQL.",
        ),
        prom_timeseries(
            "Ingest and refused (Prometheus)",
            [
                prom_target("sum by (table) (rate(otelpg_exporter_sent_rows_total[5m]))", "written {{table}}", "A"),
                prom_target(
                    "sum by (item, reason) (otelpg:receiver_refused_items:rate5m)", "refused {{item}} ({{reason}})", "B"
                ),
            ],
            unit="rowsps",
            description="Rows committed per second by table, and items refused by reason.",
        ),
    ]
    variables = [datasource_var("prometheus", "Prometheus", "prometheus")]
    return dashboard(
        "otelpg-database",
        "otelpg / Database utilization",
        "What otelpg stores: table sizes and growth, rows per signal, partitions, ingest, spool.",
        panels,
        variables,
        time_from="now-7d",
    )


DASHBOARDS = {
    "services-overview.json": services_overview,
    "traces-and-events.json": traces,
    "logs.json": logs,
    "metrics-explorer.json": metrics,
    "database-utilization.json": database,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
