"""The expansion the dashboard tests rely on matches Grafana's PostgreSQL data source
(cases in the shape of pkg/tsdb/grafana-postgresql-datasource/macros_test.go)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.deploy.grafana_sql import (
    TimeRange,
    Variable,
    expand_macros,
    format_interval,
    go_float,
    grafana_interval,
    interpolate,
    replace_variables,
)

FROM = dt.datetime(2018, 4, 12, 18, 0, tzinfo=dt.UTC)
TR = TimeRange(FROM, FROM + dt.timedelta(minutes=5))


@pytest.mark.parametrize(
    ("sql", "expanded"),
    [
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("SELECT $__time(time_column)", 'SELECT time_column AS "time"'),
        ("SELECT $__timeEpoch(time)", 'SELECT extract(epoch from time) as "time"'),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        ("GROUP BY $__timeGroup(time_column,'5m')", "GROUP BY floor(extract(epoch from time_column)/300)*300"),
        ("GROUP BY $__timeGroup(time_column, 1h)", "GROUP BY floor(extract(epoch from time_column)/3600)*3600"),
        # directly followed by ',': the alias form, for pre-5.3 dashboards
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        ),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
        ),
        ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
        ("GROUP BY $__unixEpochGroup(time_column,'5m')", "GROUP BY floor((time_column)/300)*300"),
    ],
)
def test_macros(sql: str, expanded: str):
    assert expand_macros(sql, TR) == expanded


def test_time_literals_keep_fractions_like_rfc3339nano():
    tr = TimeRange(FROM + dt.timedelta(microseconds=120000), FROM + dt.timedelta(minutes=5))
    assert expand_macros("$__timeFrom()", tr) == "'2018-04-12T18:00:00.12Z'"


def test_variables_are_quoted_like_the_sql_data_sources():
    tr = TimeRange(
        FROM,
        FROM + dt.timedelta(hours=1),
        variables={
            "service": Variable(["checkout", "o'hare"], multi=True),
            "one": Variable("it's"),
            "all": Variable(["a"], multi=True),
        },
    )
    assert replace_variables("IN ($service)", tr) == "IN ('checkout','o''hare')"
    assert replace_variables("IN (${service})", tr) == "IN ('checkout','o''hare')"
    assert replace_variables("[[all]]", tr) == "'a'"
    assert replace_variables("'$one'", tr) == "'it''s'"
    assert replace_variables("${service:csv}", tr) == "checkout,o'hare"
    assert replace_variables("${one:sqlstring}", tr) == "'it''s'"
    assert replace_variables("$__interval $__interval_ms $__range_s", tr) == "10s 10000 3600"
    assert replace_variables("$__timeFilter(ts) $unknown", tr) == "$__timeFilter(ts) $unknown"
    assert interpolate("$__timeGroupAlias(ts, $__interval)", tr) == 'floor(extract(epoch from ts)/10)*10 AS "time"'


def test_interval_like_grafana():
    assert grafana_interval(dt.timedelta(hours=1)) == dt.timedelta(seconds=10)  # min interval
    assert format_interval(grafana_interval(dt.timedelta(days=1))) == "1m"
    assert format_interval(grafana_interval(dt.timedelta(days=7))) == "10m"
    assert format_interval(grafana_interval(dt.timedelta(days=30))) == "30m"


@pytest.mark.parametrize(
    ("value", "text"), [(60, "60"), (0.5, "0.5"), (86400, "86400"), (2592000, "2.592e+06"), (1e-05, "1e-05")]
)
def test_go_float_formatting(value: float, text: str):
    assert go_float(value) == text
