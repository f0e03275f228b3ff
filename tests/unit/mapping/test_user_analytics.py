"""user_analytics rows derived from span and log rows: which rows give one, and how user ids are kept."""

from __future__ import annotations

import datetime as dt
import json

from exporters.postgres.mapping.common import KEY_MAX_BYTES
from exporters.postgres.mapping.user_analytics import hash_user_id, user_analytics_rows
from exporters.postgres.schema import (
    OTEL_LOGS,
    OTEL_LOGS_COLUMNS,
    OTEL_SPAN_EVENTS,
    OTEL_SPANS,
    OTEL_SPANS_COLUMNS,
    USER_ANALYTICS_COLUMNS,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def event(attributes: dict, event_type: str = "span", name: str = "GET /") -> tuple[str, tuple]:
    """A (table, row) pair: a span row, or a log row whose event type is `event_type`."""
    table, columns = (OTEL_SPANS, OTEL_SPANS_COLUMNS) if event_type == "span" else (OTEL_LOGS, OTEL_LOGS_COLUMNS)
    values = {
        "id": 1,
        "event_type": event_type,
        "name": name,
        "service_name": "svc",
        "timestamp": T0,
        "attributes": json.dumps(attributes),
    }
    return table, tuple(values.get(c) for c in columns)


def named(rows: list[tuple]) -> list[dict]:
    return [dict(zip(USER_ANALYTICS_COLUMNS, r, strict=True)) for r in rows]


def test_only_rows_with_a_user_id_give_a_row():
    rows = named(
        user_analytics_rows([
            event({"enduser.id": "u1", "url.path": "/a"}),
            event({"user.id": 7}, event_type="log"),
            event({"other": "user.id\""}),
            event({"http.route": "/b"}),
            (OTEL_SPAN_EVENTS, ()),  # not a user action: skipped unread
        ])
    )  # fmt: skip
    assert [r["user_id"] for r in rows] == ["u1", "7"]
    assert rows[0]["page"] == "/a" and rows[0]["action"] == "GET /"


def test_a_long_user_id_is_cut_and_counted():
    truncated = {"keys": 0}
    rows = named(user_analytics_rows([event({"enduser.id": "u" * 5000})], truncated=truncated))
    assert len(rows[0]["user_id"]) == KEY_MAX_BYTES and truncated == {"keys": 1}


def test_hashed_user_ids_are_never_stored_in_clear():
    rows = named(user_analytics_rows([event({"enduser.id": "alice"})], hash_user_id(b"k" * 32)))
    assert rows[0]["user_id"] != "alice" and "alice" not in json.dumps(rows[0], default=str)
