"""Every index earns its place: the example queries of docs/queries.md use the index they name, and
every index of otelpg's tables is used by one of those queries, a dashboard panel or one of
otelpg's own writes (each index costs ingest time and bytes on every row).

Plans are taken with sequential scans disabled: the question is whether the planner *can* serve
the query from the index (on the small test data it would rightly prefer scanning a few pages)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import asyncpg
import pytest

from exporters.postgres.schema import COPY_TABLES
from tests.deploy.conftest import DashboardDB
from tests.deploy.grafana_sql import TimeRange, interpolate
from tests.deploy.test_dashboards import PANELS, RANGES, _time_range, _variables

ROOT = Path(__file__).resolve().parents[2]
QUERIES_DOC = ROOT / "docs" / "queries.md"

# Sample values for the parameters of the documented queries, by the column they are compared with.
SAMPLES = {
    "trace_id": "'5b8efff7-9803-8103-d269-b633813fc60c'::uuid",
    "service_name": "'checkout'",
    "metric_name": "'http.server.request.duration'",
    "user_id": "'u1'",
    "event_type": "'checkout.done'",
}

# The primary keys of the tables otelpg COPies into: what spool replay's `INSERT ... ON CONFLICT DO
# NOTHING` (exporters/postgres/writer.py) needs to add a replayed row once. (EXPLAIN doesn't name
# the arbiter index of a partitioned table, so these are listed, and checked to exist.)
REPLAY_KEYS = {f"{t}_pkey" for t in COPY_TABLES}

# otelpg's own statements that need an index: the upserts of rollups, lookups, resources and scopes.
WRITES = [
    "INSERT INTO performance_metrics_1m SELECT * FROM performance_metrics_1m WHERE false "
    "ON CONFLICT (metric_name, service_name, series_hash, bucket) DO UPDATE SET count = EXCLUDED.count",
    "INSERT INTO performance_metrics_1h SELECT * FROM performance_metrics_1h WHERE false "
    "ON CONFLICT (metric_name, service_name, series_hash, bucket) DO UPDATE SET count = EXCLUDED.count",
    "INSERT INTO otel_resources (resource_id, service_name) VALUES (1, 's') "
    "ON CONFLICT (resource_id) DO UPDATE SET last_seen = now()",
    "INSERT INTO otel_scopes (scope_id, metadata) VALUES (1, '{}') "
    "ON CONFLICT (scope_id) DO UPDATE SET last_seen = now()",
    "INSERT INTO otelpg_metric_names (metric_name, service_name) VALUES ('m', 's') "
    "ON CONFLICT (metric_name, service_name) DO UPDATE SET last_seen = now()",
    "INSERT INTO otelpg_event_types (event_type, service_name) VALUES ('e', 's') "
    "ON CONFLICT (event_type, service_name) DO UPDATE SET last_seen = now()",
    "INSERT INTO agent_states (agent_key, service_name) VALUES ('k', 's') "
    "ON CONFLICT (agent_key) DO UPDATE SET last_active = now()",
    "INSERT INTO system_config (key, value) VALUES ('k', '1') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    "INSERT INTO schema_migrations SELECT * FROM schema_migrations WHERE false ON CONFLICT DO NOTHING",
]


def documented_queries() -> list[tuple[str, set[str], str]]:
    """(the SQL, the indexes its paragraph names, the paragraph) of each ```sql block."""
    text = QUERIES_DOC.read_text()
    out = []
    for m in re.finditer(r"((?:[^\n]+\n)+)\n```sql\n(.*?)```", text, re.DOTALL):
        paragraph, sql = m[1], m[2].strip().rstrip(";")
        named = set(re.findall(r"`([a-z0-9_]+_(?:idx|brin))`", paragraph))
        if "primary key" in paragraph:
            table = re.search(r"\bFROM\s+([a-z0-9_]+)", sql)
            assert table is not None
            named.add(f"{table[1]}_pkey")
        out.append((sql, named, paragraph.strip()))
    return out


def with_samples(sql: str, now: str) -> str:
    """The documented SQL with its $n parameters replaced by sample values."""

    def value(m: re.Match) -> str:
        column, op = m[1], m[2]
        if column in ("timestamp", "bucket"):
            return f"{column} {op} {now}" + (" - interval '1 hour'" if op.startswith(">") else "")
        return f"{column} {op} {SAMPLES[column]}"

    out = re.sub(r"\b([a-z_]+)\s*(>=|<=|=|<|>)\s*\$\d+", value, sql)
    assert "$" not in out, out
    return out


def _indexes_in(plan: dict) -> set[str]:
    found = set()
    if "Index Name" in plan:
        found.add(plan["Index Name"])
    found.update(plan.get("Conflict Arbiter Indexes", []))
    for child in plan.get("Plans", []):
        found |= _indexes_in(child)
    return found


async def _roots(conn: asyncpg.Connection) -> dict[str, str]:
    """Every index of the schema (partitions' included) → the index of its top-level table."""
    rows = await conn.fetch(
        "SELECT c.relname AS name, pg_partition_root(c.oid)::regclass::text AS root FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = current_schema()::regnamespace"
    )
    return {r["name"]: r["root"] for r in rows}


async def _used(conn: asyncpg.Connection, sql: str, roots: dict[str, str]) -> set[str]:
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}"))[0]["Plan"]
    return {roots.get(name, name) for name in _indexes_in(plan)}


@pytest.mark.parametrize("query", documented_queries(), ids=lambda q: q[2].splitlines()[0][:60])
async def test_each_documented_query_uses_the_index_it_names(history_db: DashboardDB, query):
    sql, named, paragraph = query
    assert named, f"no index named for:\n{paragraph}"
    conn = await asyncpg.connect(history_db.dsn)
    try:
        used = await _used(conn, with_samples(sql, "now()"), await _roots(conn))
    finally:
        await conn.close()
    assert named <= used, f"{paragraph}\nuses {sorted(used)}, not {sorted(named - used)}"


async def test_every_index_is_used_by_a_query_a_panel_or_a_write(history_db: DashboardDB):
    conn = await asyncpg.connect(history_db.dsn)
    try:
        roots = await _roots(conn)
        used: set[str] = set()
        for sql, _, _ in documented_queries():
            used |= await _used(conn, with_samples(sql, "now()"), roots)
        for sql in WRITES:
            used |= await _used(conn, sql, roots)
        assert set(roots.values()) >= REPLAY_KEYS
        used |= REPLAY_KEYS
        for panel in PANELS:
            for tier in RANGES:
                start, end = _time_range(history_db, tier, filled=False)
                tr = TimeRange(start, end)
                tr.variables = await _variables(conn, panel.dashboard, tr, history_db)
                used |= await _used(conn, interpolate(panel.sql, tr), roots)
        for var in {v["query"] for p in PANELS for v in p.dashboard["templating"]["list"] if v["type"] == "query"}:
            tr = TimeRange(*_time_range(history_db, "raw", filled=False))
            used |= await _used(conn, interpolate(var, tr), roots)
        every = {root for name, root in roots.items() if name == root}  # top-level indexes
        unused = sorted(every - used)
    finally:
        await conn.close()
    assert not unused, f"indexes no documented query, dashboard panel or write uses: {unused}"
