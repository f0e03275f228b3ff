"""otel_spans and otel_logs rows → user_analytics rows, for those that name a user.

A span or log record whose attributes carry `enduser.id` (else `user.id`) gives one row:

| user_analytics | from |
|---|---|
| `id` | the source row's id (replaying a spooled request gives the same id again) |
| `user_id` | `enduser.id`, else `user.id`, as text; `hash_user_id(...)` of it when hashing is on |
| `action` | the span name; for a log, its event name (`event_type`: `'log'` without one) |
| `page` | `url.path`, else `http.route` |
| `session_id` | `session.id` |
| `timestamp`, `service_name` | the source row's |
| `metadata` | `{"signal": "span"\\|"log", "service", "trace_id", "span_id"}` (ids as lowercase hex, when present) |

Span events and otelpg's own events are not user actions and are skipped. Reading the
attributes means parsing the row's attributes JSON, so rows are first screened with a substring
test on the JSON text: the common row without a user id costs one `in`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import orjson

from exporters.postgres.mapping.common import json_dumps, key_text
from exporters.postgres.schema import LOG, OTEL_LOGS, OTEL_SPANS, SPAN

__all__ = ["hash_user_id", "user_analytics_rows"]

_SCREEN = 'user.id"'  # matches the keys "enduser.id" and "user.id" in the attributes JSON


def hash_user_id(key: bytes) -> Callable[[str], str]:
    """A keyed hash for user ids: HMAC-SHA256 hex. Stable for a key; without the key, a user id
    can't be confirmed by hashing guesses."""

    def digest(user_id: str) -> str:
        return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()

    return digest


def _text(v: Any) -> str | None:
    if v is None or v == "" or isinstance(v, (dict, list)):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def user_analytics_rows(
    events: list[tuple[str, tuple]],
    hash_id: Callable[[str], str] | None = None,
    truncated: dict[str, int] | None = None,
) -> list[tuple]:
    """user_analytics rows (schema.USER_ANALYTICS_COLUMNS order) for the (table, row) pairs of
    otel_spans and otel_logs rows that carry a user id (rows of other tables are skipped)."""
    out: list[tuple] = []
    screen = _SCREEN
    loads = orjson.loads
    for table, r in events:
        at: Any
        if table == OTEL_SPANS:
            at = SPAN
        elif table == OTEL_LOGS:
            at = LOG
        else:
            continue
        attributes = r[at.ATTRIBUTES]
        if screen not in attributes:
            continue
        try:
            attrs = loads(attributes)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(attrs, dict):
            continue
        user = _text(attrs.get("enduser.id")) or _text(attrs.get("user.id"))
        if user is None:
            continue  # the screen matched something else, e.g. inside a value
        user = hash_id(user) if hash_id is not None else key_text(user, truncated)  # user_id is indexed
        is_span = at is SPAN
        service = r[at.SERVICE_NAME]
        meta: dict[str, Any] = {"signal": "span" if is_span else "log", "service": service}
        trace_id = r[at.TRACE_ID]
        if trace_id is not None:
            meta["trace_id"] = trace_id.hex
        span_id = r[at.SPAN_ID]
        if span_id is not None:
            meta["span_id"] = span_id.hex()
        out.append((
            r[at.ID], user, (r[SPAN.NAME] or "span") if is_span else r[LOG.EVENT_TYPE],
            _text(attrs.get("url.path")) or _text(attrs.get("http.route")),
            _text(attrs.get("session.id")), r[at.TIMESTAMP], json_dumps(meta), service,
        ))  # fmt: skip
    return out
