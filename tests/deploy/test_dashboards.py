"""Every Grafana panel's SQL, expanded the way Grafana's PostgreSQL data source expands it, runs
against PostgreSQL and returns what its panel type needs; time-series SQL prunes partitions and
reads the table of the tier its time range selects (raw rows, 1-minute or 1-hour rollups)."""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

from tests.deploy.conftest import DashboardDB
from tests.deploy.grafana_sql import TimeRange, Variable, interpolate

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA / "provisioning" / "dashboards" / "otelpg"
PG_UID = "otelpg-postgres"
DATA_TABLES = (
    "system_events",
    "otel_spans",
    "performance_metrics",
    "performance_metrics_1m",
    "performance_metrics_1h",
    "user_analytics",
)
# The tables behind the system_events view (migrations/0003_lean_rows.sql).
VIEW_OF = {t: "system_events" for t in ("otel_spans", "otel_span_events", "otel_logs", "otelpg_events")}
TIME_COLUMNS = {"timestamp", "bucket"}  # the partition keys of DATA_TABLES
NUMERIC = (int, float, decimal.Decimal)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otelpg_dashboards", GRAFANA / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def _panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


@dataclass(frozen=True)
class SqlPanel:
    dashboard: dict
    title: str
    type: str
    format: str
    sql: str

    @property
    def id(self) -> str:
        return f"{self.dashboard['uid']}:{self.title}"

    @property
    def tiered(self) -> bool:
        return GEN.TIER_GUARD["raw"] in self.sql


def _sql_panels() -> list[SqlPanel]:
    out = []
    for dashboard in _dashboards().values():
        for panel in _panels(dashboard):
            for t in panel.get("targets", []):
                if t.get("datasource", {}).get("uid") == PG_UID:
                    out.append(SqlPanel(dashboard, panel["title"], panel["type"], t["format"], t["rawSql"]))
    return out


PANELS = _sql_panels()
TIME_SERIES = [p for p in PANELS if p.format == "time_series"]


# --- the JSON files -------------------------------------------------------------------------------------


def test_dashboard_json_is_generated_from_dashboards_py():
    rendered = GEN.render()
    on_disk = {p.name: p.read_text() for p in DASHBOARD_DIR.glob("*.json")}
    assert on_disk == rendered, "run: python deploy/grafana/dashboards.py"


def test_the_five_dashboards_and_their_links():
    dashboards = _dashboards()
    titles = {d["title"] for d in dashboards.values()}
    assert titles == {
        "otelpg / Services overview",
        "otelpg / Traces and events",
        "otelpg / Logs",
        "otelpg / Metrics explorer",
        "otelpg / Database utilization",
    }
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for d in dashboards.values():
        ids = [p["id"] for p in _panels(d)]
        assert len(set(ids)) == len(ids), d["uid"]
        for p in _panels(d):
            pos = p["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (d["uid"], p["title"])
            if p["type"] != "row":
                assert p["datasource"]["uid"] in (PG_UID, "${prometheus}"), (d["uid"], p["title"])
            for t in p.get("targets", []):
                if t["datasource"]["uid"] == PG_UID:
                    assert t["rawQuery"] and t["format"] in ("time_series", "table"), (d["uid"], p["title"])
        # data links point at dashboards that exist
        for link in re.findall(r'"/d/([\w-]+)', json.dumps(d)):
            assert link in uids, (d["uid"], link)
    services = next(d for d in dashboards.values() if d["uid"] == "otelpg-services")
    assert "service" in {v["name"] for v in services["templating"]["list"]}


def test_provisioned_datasource_uid_is_the_one_dashboards_use():
    import yaml

    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "postgres.yaml").read_text())["datasources"]
    assert [d["uid"] for d in ds] == [PG_UID]
    assert ds[0]["type"] == "postgres"
    assert ds[0]["secureJsonData"]["password"].startswith("$"), "the password must come from the environment"


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p.id)
def test_panel_sql_filters_data_tables_on_their_partition_key(panel: SqlPanel):
    """Each read of a telemetry table comes with $__timeFilter on its bare partition key."""
    reads = len(re.findall(r"\b(?:FROM|JOIN)\s+(?:" + "|".join(DATA_TABLES) + r")\b", panel.sql))
    filters = re.findall(r"\$__timeFilter\(\s*([^)]*?)\s*\)", panel.sql)
    assert all(col in TIME_COLUMNS for col in filters), filters
    assert len(filters) >= reads, f"{reads} reads of telemetry tables, {len(filters)} $__timeFilter"


# --- running the SQL ----------------------------------------------------------------------------------

PREFERRED = {"metric": "http.server.request.duration"}


async def _variables(conn: asyncpg.Connection, dashboard: dict, tr: TimeRange, db: DashboardDB) -> dict:
    """Representative values: what Grafana would select by default, 'All' meaning every value."""
    values: dict[str, Variable] = {}
    text_values = {"trace_id": db.error_trace_id, "min_duration_ms": "100"}
    for var in dashboard["templating"]["list"]:
        name, kind = var["name"], var["type"]
        many = bool(var.get("multi") or var.get("includeAll"))
        current = var.get("current", {}).get("value")
        current_list = current if isinstance(current, list) else [current] if current else []
        if kind == "datasource":
            continue
        if kind == "textbox":
            values[name] = Variable(text_values.get(name, var.get("query", "")))
            continue
        if kind == "custom":
            options = [o["value"] for o in var["options"]]
        else:
            query = interpolate(var["query"], TimeRange(tr.start, tr.end, tr.interval, values))
            options = [str(r[0]) for r in await conn.fetch(query)]
            assert options, f"variable {name} has no values: {query}"
        if name in text_values:
            chosen = [text_values[name]]
        elif "$__all" in current_list or not current_list:
            chosen = options if many else [PREFERRED.get(name, options[0])]
        else:
            chosen = current_list
        if not many and PREFERRED.get(name) in options:
            chosen = [PREFERRED[name]]
        values[name] = Variable(chosen if many else chosen[0], multi=many)
    return values


RANGES = {"raw": dt.timedelta(hours=1), "1m": dt.timedelta(days=1), "1h": dt.timedelta(days=7)}


def _time_range(db: DashboardDB, tier: str, filled: bool) -> tuple[dt.datetime, dt.datetime]:
    # filled: the telemetry was sent during the last hour; history: a range ending in the middle of
    # the days that have partitions
    end = db.now + dt.timedelta(minutes=1) if filled else db.now - dt.timedelta(days=2, hours=11, minutes=30)
    return end - RANGES[tier], end


async def _run(db: DashboardDB, panel: SqlPanel, tier: str, filled: bool) -> tuple[str, list[asyncpg.Record]]:
    start, end = _time_range(db, tier, filled)
    conn = await asyncpg.connect(db.dsn)
    try:
        tr = TimeRange(start, end)
        tr.variables = await _variables(conn, panel.dashboard, tr, db)
        query = interpolate(panel.sql, tr)
        assert not re.search(r"\$\{?\w|\[\[", query), f"unexpanded variable or macro:\n{query}"
        try:
            return query, await conn.fetch(query)
        except asyncpg.PostgresError as e:
            pytest.fail(f"{panel.id} failed: {e}\n{query}")
    finally:
        await conn.close()


def _check_shape(panel: SqlPanel, rows: list[asyncpg.Record]) -> None:
    if not rows:
        return
    columns = list(rows[0].keys())
    if panel.format == "time_series":
        assert columns[0] == "time", f"time series SQL must return `time` first, got {columns}"
        times = [r["time"] for r in rows]
        assert all(isinstance(t, (dt.datetime, *NUMERIC)) for t in times), times[:3]
        assert times == sorted(times), "time series rows must be sorted by time"
        kinds = {c: {type(r[c]) for r in rows if r[c] is not None} for c in columns[1:]}
        numeric = [c for c, types in kinds.items() if types and all(issubclass(t, NUMERIC) for t in types)]
        assert numeric, f"no numeric value column in {columns}"
        others = [c for c, types in kinds.items() if c not in numeric and types]
        assert all(kinds[c] == {str} for c in others), f"columns must be numbers or string labels: {kinds}"
        if len(columns) == 3 and others:  # Grafana names the series by a string column called `metric`
            assert others == ["metric"], f"name the series column `metric`: {columns}"
    elif panel.type == "stat":
        assert len(rows) == 1, f"a stat panel's SQL returns one row, got {len(rows)}"
        assert any(isinstance(v, NUMERIC) for v in rows[0].values()), dict(rows[0])
    else:
        assert columns


@pytest.mark.parametrize("tier", list(RANGES))
@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p.id)
async def test_panel_sql_on_sdk_telemetry(filled_db: DashboardDB, panel: SqlPanel, tier: str):
    """Against telemetry sent by the OTel SDK through otelpg: the SQL runs, returns rows (the data
    covers every panel) in the shape the panel type needs."""
    query, rows = await _run(filled_db, panel, tier, filled=True)
    assert rows, f"{panel.id} returned no rows over {RANGES[tier]}:\n{query}"
    _check_shape(panel, rows)


@pytest.mark.parametrize("tier", list(RANGES))
@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p.id)
async def test_panel_sql_on_days_of_history(history_db: DashboardDB, panel: SqlPanel, tier: str):
    query, rows = await _run(history_db, panel, tier, filled=False)
    _check_shape(panel, rows)
    if panel.tiered or panel.format == "time_series":
        assert rows, f"{panel.id} returned no rows over {RANGES[tier]}:\n{query}"


# --- EXPLAIN: partition pruning and the tier switch --------------------------------------------------


def _relations(plan: dict) -> set[str]:
    found = set()
    if "Relation Name" in plan:
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= _relations(child)
    return found


def _branch_tables(panel: SqlPanel, tier: str) -> set[str]:
    """Tables the SQL reads for a tier: the tier's own UNION ALL branch for tiered SQL."""
    sql = panel.sql
    if panel.tiered:
        branches = sql.split("\n)\nUNION ALL\n(\n")
        sql = next(b for b in branches if GEN.TIER_GUARD[tier] in b)
    return set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_0-9]+)", sql))


def _tier_of(span: dt.timedelta) -> str:
    if span <= dt.timedelta(hours=3):
        return "raw"
    return "1m" if span <= dt.timedelta(days=2) else "1h"


@pytest.mark.parametrize("tier", list(RANGES))
@pytest.mark.parametrize("panel", [p for p in PANELS if any(t in p.sql for t in DATA_TABLES)], ids=lambda p: p.id)
async def test_explain_prunes_partitions_and_reads_the_tier_of_the_range(
    history_db: DashboardDB, panel: SqlPanel, tier: str
):
    start, end = _time_range(history_db, tier, filled=False)
    assert _tier_of(end - start) == tier
    conn = await asyncpg.connect(history_db.dsn)
    try:
        tr = TimeRange(start, end)
        tr.variables = await _variables(conn, panel.dashboard, tr, history_db)
        query = interpolate(panel.sql, tr)
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}"))[0]["Plan"]
        partitions = {r["partition"]: r for r in await conn.fetch("SELECT * FROM otelpg_partitions")}
    finally:
        await conn.close()
    scanned = _relations(plan)
    by_parent: dict[str, set[str]] = {}
    for rel in scanned:
        parent = partitions[rel]["parent"] if rel in partitions else rel
        by_parent.setdefault(parent, set()).add(rel)

    allowed = _branch_tables(panel, tier)
    parents = {p for p in by_parent if VIEW_OF.get(p, p) in DATA_TABLES}
    # a table read directly counts as itself; one read through the system_events view, as the view
    telemetry = {p if p in allowed else VIEW_OF.get(p, p) for p in parents}
    assert telemetry <= allowed, f"range of {end - start} reads {telemetry}, its tier reads only {allowed}"
    assert telemetry, f"{panel.id} reads no telemetry table over {end - start}"
    for parent in parents:
        every = {name for name, r in partitions.items() if r["parent"] == parent}
        overlapping = {
            name
            for name, r in partitions.items()
            if r["parent"] == parent and not r["is_default"] and r["range_start"] <= end and r["range_end"] > start
        }
        assert by_parent[parent] <= overlapping, (
            f"{parent}: scans {sorted(by_parent[parent] - overlapping)} outside {start} .. {end}"
        )
        assert len(by_parent[parent]) < len(every), f"{parent}: no partition pruned"
