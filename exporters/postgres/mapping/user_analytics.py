"""system_events rows of spans and logs → user_analytics rows, for those that name a user.

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
attributes means parsing the row's payload JSON, so rows are first screened with a substring
test on the JSON text: the common row without a user id costs one `in`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import orjson

from exporters.postgres.mapping.common import json_dumps, key_text
from exporters.postgres.schema import SE

__all__ = ["hash_user_id", "user_analytics_rows"]

_SCREEN = 'user.id"'  # matches the keys "enduser.id" and "user.id" in the payload JSON
_SKIPPED_TYPES = frozenset({"span_event"})
_OWN_SOURCE = "otelpg"


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
    events: list[tuple], hash_id: Callable[[str], str] | None = None, truncated: dict[str, int] | None = None
) -> list[tuple]:
    """user_analytics rows (schema.USER_ANALYTICS_COLUMNS order) for the system_events rows
    (schema.SYSTEM_EVENTS_COLUMNS order) of spans and logs that carry a user id."""
    out: list[tuple] = []
    screen = _SCREEN
    loads = orjson.loads
    for r in events:
        payload = r[SE.PAYLOAD]
        if screen not in payload:
            continue
        event_type = r[SE.EVENT_TYPE]
        if event_type in _SKIPPED_TYPES or (r[SE.SOURCE] == _OWN_SOURCE and r[SE.RESOURCE_ID] is None):
            continue
        try:
            attrs = loads(payload).get("attributes")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(attrs, dict):
            continue
        user = _text(attrs.get("enduser.id")) or _text(attrs.get("user.id"))
        if user is None:
            continue  # the screen matched something else, e.g. inside a value
        user = hash_id(user) if hash_id is not None else key_text(user, truncated)  # user_id is indexed
        is_span = event_type == "span"
        service = r[SE.SERVICE_NAME]
        meta: dict[str, Any] = {"signal": "span" if is_span else "log", "service": service}
        trace_id = r[SE.TRACE_ID]
        if trace_id is not None:
            meta["trace_id"] = trace_id.hex
        span_id = r[SE.SPAN_ID]
        if span_id is not None:
            meta["span_id"] = span_id
        out.append((
            r[SE.ID], user, (r[SE.NAME] or event_type) if is_span else event_type,
            _text(attrs.get("url.path")) or _text(attrs.get("http.route")),
            _text(attrs.get("session.id")), r[SE.TIMESTAMP], json_dumps(meta), service,
        ))  # fmt: skip
    return out
