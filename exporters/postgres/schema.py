"""Table names and column orders: the one source the mapping, the writer and the tests share.

Tests diff these tuples against the tables that `migrations/` creates.
"""

from __future__ import annotations

SYSTEM_EVENTS = "system_events"  # a view over the four tables below (schema 3), with schema 2's columns
OTEL_SPANS = "otel_spans"
OTEL_SPAN_EVENTS = "otel_span_events"
OTEL_LOGS = "otel_logs"
OTELPG_EVENTS = "otelpg_events"  # otelpg's own events, rows stored before schema 3, rows INSERTed into the view
OTEL_SCOPES = "otel_scopes"
PERFORMANCE_METRICS = "performance_metrics"
OTEL_RESOURCES = "otel_resources"
AGENT_STATES = "agent_states"
USER_ANALYTICS = "user_analytics"
SYSTEM_CONFIG = "system_config"
PERFORMANCE_METRICS_1M = "performance_metrics_1m"  # rollups (migrations/0002_lifecycle.sql)
PERFORMANCE_METRICS_1H = "performance_metrics_1h"
METRIC_NAMES = "otelpg_metric_names"  # lookup tables for Grafana variables
EVENT_TYPES = "otelpg_event_types"

# Column order of the row tuples produced by exporters.postgres.mapping (migrations/0003_lean_rows.sql
# says what each column holds).
OTEL_SPANS_COLUMNS: tuple[str, ...] = (
    "id",
    "timestamp",  # start, truncated to the microsecond
    "nanos",  # the start's nanoseconds past that microsecond
    "service_name",
    "resource_id",
    "scope_id",  # int64 | None
    "trace_id",  # uuid.UUID
    "span_id",  # 8 bytes
    "parent_span_id",  # 8 bytes | None
    "name",
    "kind",  # int
    "status_code",  # int
    "status_message",  # str | None
    "duration_ns",  # int | None
    "flags",  # int | None
    "attributes",  # JSON text
    "extra",  # JSON text | None
)

OTEL_SPAN_EVENTS_COLUMNS: tuple[str, ...] = (
    "id",
    "timestamp",
    "nanos",
    "service_name",
    "resource_id",
    "scope_id",
    "trace_id",
    "span_id",
    "name",
    "span_name",
    "attributes",
    "extra",
)

OTEL_LOGS_COLUMNS: tuple[str, ...] = (
    "id",
    "timestamp",
    "nanos",
    "service_name",
    "resource_id",
    "scope_id",
    "trace_id",  # uuid.UUID | None
    "span_id",  # 8 bytes | None
    "event_type",  # the event name, else 'log'
    "severity",  # one letter as bytes: t d i w e f
    "severity_number",
    "severity_text",  # str | None
    "observed_time_unix_nano",  # int | None
    "flags",  # int | None
    "body",  # str | None: a string body
    "body_value",  # JSON text | None: any other body
    "attributes",  # JSON text
    "extra",  # JSON text | None
)

OTEL_SCOPES_COLUMNS: tuple[str, ...] = ("scope_id", "name", "version", "metadata")

# otelpg_events (schema 2's system_events table); also the columns of the system_events view.
SYSTEM_EVENTS_COLUMNS: tuple[str, ...] = (
    "id",  # UUID (time-ordered v7)
    "event_type",  # 'span' | 'span_event' | 'log' | <event.name> | otelpg's own event types
    "source",  # service.name, 'unknown_service' when absent; 'otelpg' for own events
    "severity",  # trace|debug|info|warn|error|fatal
    "payload",  # JSON text
    "timestamp",  # datetime (UTC)
    "metadata",  # JSON text: scope name/version/attributes
    "service_name",
    "resource_id",  # int64 | None
    "trace_id",  # uuid.UUID | None
    "span_id",  # lowercase hex | None
    "parent_span_id",  # lowercase hex | None
    "name",  # span name, span event name, log event name | None
    "duration_ms",  # float | None
)

PERFORMANCE_METRICS_COLUMNS: tuple[str, ...] = (
    "id",
    "metric_name",
    "value",  # float: the point's value, or the sum for distributions
    "unit",
    "tags",  # JSON text: the data point's attributes, typed
    "timestamp",
    "service_name",
    "resource_id",
    "metric_type",  # gauge|sum|histogram|exponential_histogram|summary
    "temporality",  # delta|cumulative|None
    "is_monotonic",  # bool | None
    "start_timestamp",  # datetime | None
    "count",  # int | None
    "sum",  # float | None
    "min",
    "max",
    "bucket_bounds",  # list[float] | None
    "bucket_counts",  # list[int] | None
    "exemplars",  # JSON text | None
    "details",  # JSON text | None
)

OTEL_RESOURCES_COLUMNS: tuple[str, ...] = ("resource_id", "service_name", "attributes", "schema_url")

USER_ANALYTICS_COLUMNS: tuple[str, ...] = (
    "id",  # the id of the span or log row it comes from
    "user_id",  # enduser.id, else user.id (an HMAC-SHA256 hex digest when hashing is on)
    "action",  # span name, or the log's event name ('log' without one)
    "page",  # url.path, else http.route | None
    "session_id",  # session.id | None
    "timestamp",
    "metadata",  # JSON text: trace_id, span_id, signal
    "service_name",
)


class Positions:
    """Column positions of a table's row tuples, for reading rows back by name: `r[SE.SERVICE_NAME]`.

    A subclass names a column tuple and declares one `int` attribute per column, upper-cased, in
    order (so mypy knows them); the values are generated from the tuple, and a declaration that
    does not match the tuple exactly (a column missing, extra, renamed or moved) fails at import.
    """

    __slots__ = ()
    COLUMNS: tuple[str, ...] = ()

    def __init_subclass__(cls, columns: tuple[str, ...]) -> None:
        declared = tuple(name for name in cls.__annotations__ if name != "COLUMNS")
        expected = tuple(column.upper() for column in columns)
        if declared != expected:
            raise TypeError(f"{cls.__name__} declares {declared}, its columns are {expected}")
        for i, name in enumerate(declared):
            setattr(cls, name, i)
        cls.COLUMNS = columns


class SE(Positions, columns=SYSTEM_EVENTS_COLUMNS):
    """Positions in a system_events row."""

    ID: int
    EVENT_TYPE: int
    SOURCE: int
    SEVERITY: int
    PAYLOAD: int
    TIMESTAMP: int
    METADATA: int
    SERVICE_NAME: int
    RESOURCE_ID: int
    TRACE_ID: int
    SPAN_ID: int
    PARENT_SPAN_ID: int
    NAME: int
    DURATION_MS: int


class SPAN(Positions, columns=OTEL_SPANS_COLUMNS):
    """Positions in an otel_spans row."""

    ID: int
    TIMESTAMP: int
    NANOS: int
    SERVICE_NAME: int
    RESOURCE_ID: int
    SCOPE_ID: int
    TRACE_ID: int
    SPAN_ID: int
    PARENT_SPAN_ID: int
    NAME: int
    KIND: int
    STATUS_CODE: int
    STATUS_MESSAGE: int
    DURATION_NS: int
    FLAGS: int
    ATTRIBUTES: int
    EXTRA: int


class SPAN_EVENT(Positions, columns=OTEL_SPAN_EVENTS_COLUMNS):
    """Positions in an otel_span_events row."""

    ID: int
    TIMESTAMP: int
    NANOS: int
    SERVICE_NAME: int
    RESOURCE_ID: int
    SCOPE_ID: int
    TRACE_ID: int
    SPAN_ID: int
    NAME: int
    SPAN_NAME: int
    ATTRIBUTES: int
    EXTRA: int


# Span and span event rows hold the trace and span ids at the same places (read as one when
# counting the spans of refused rows).
assert (SPAN.TRACE_ID, SPAN.SPAN_ID) == (SPAN_EVENT.TRACE_ID, SPAN_EVENT.SPAN_ID)


class LOG(Positions, columns=OTEL_LOGS_COLUMNS):
    """Positions in an otel_logs row."""

    ID: int
    TIMESTAMP: int
    NANOS: int
    SERVICE_NAME: int
    RESOURCE_ID: int
    SCOPE_ID: int
    TRACE_ID: int
    SPAN_ID: int
    EVENT_TYPE: int
    SEVERITY: int
    SEVERITY_NUMBER: int
    SEVERITY_TEXT: int
    OBSERVED_TIME_UNIX_NANO: int
    FLAGS: int
    BODY: int
    BODY_VALUE: int
    ATTRIBUTES: int
    EXTRA: int


class PM(Positions, columns=PERFORMANCE_METRICS_COLUMNS):
    """Positions in a performance_metrics row."""

    ID: int
    METRIC_NAME: int
    VALUE: int
    UNIT: int
    TAGS: int
    TIMESTAMP: int
    SERVICE_NAME: int
    RESOURCE_ID: int
    METRIC_TYPE: int
    TEMPORALITY: int
    IS_MONOTONIC: int
    START_TIMESTAMP: int
    COUNT: int
    SUM: int
    MIN: int
    MAX: int
    BUCKET_BOUNDS: int
    BUCKET_COUNTS: int
    EXEMPLARS: int
    DETAILS: int


class RES(Positions, columns=OTEL_RESOURCES_COLUMNS):
    """Positions in an otel_resources row."""

    RESOURCE_ID: int
    SERVICE_NAME: int
    ATTRIBUTES: int
    SCHEMA_URL: int


class UA(Positions, columns=USER_ANALYTICS_COLUMNS):
    """Positions in a user_analytics row."""

    ID: int
    USER_ID: int
    ACTION: int
    PAGE: int
    SESSION_ID: int
    TIMESTAMP: int
    METADATA: int
    SERVICE_NAME: int


COPY_TABLES: dict[str, tuple[str, ...]] = {
    OTEL_SPANS: OTEL_SPANS_COLUMNS,
    OTEL_SPAN_EVENTS: OTEL_SPAN_EVENTS_COLUMNS,
    OTEL_LOGS: OTEL_LOGS_COLUMNS,
    OTELPG_EVENTS: SYSTEM_EVENTS_COLUMNS,
    PERFORMANCE_METRICS: PERFORMANCE_METRICS_COLUMNS,
}
# Every table a mapped request carries rows for: the COPied ones, and otel_scopes, whose rows the
# writer upserts (many requests repeat them).
ROW_TABLES: dict[str, tuple[str, ...]] = {**COPY_TABLES, OTEL_SCOPES: OTEL_SCOPES_COLUMNS}

# The position of service_name and timestamp in the rows of each table that has them.
SERVICE_NAME_AT: dict[str, int] = {t: cols.index("service_name") for t, cols in COPY_TABLES.items()}
TIMESTAMP_AT: dict[str, int] = {t: cols.index("timestamp") for t, cols in COPY_TABLES.items()}

# Positions of the columns whose size the client decides (JSON, bodies), per table: what a row
# holds in memory beyond its fixed part.
LARGE_COLUMNS: dict[str, tuple[int, ...]] = {
    t: tuple(i for i, c in enumerate(cols) if c in ("attributes", "extra", "body", "body_value", "payload",
                                                    "metadata", "tags", "exemplars", "details"))
    for t, cols in ROW_TABLES.items()
}  # fmt: skip


def row_service(table: str, row: tuple) -> str:
    """The service_name of a row of any table a mapped request carries ("" for scopes)."""
    at = SERVICE_NAME_AT.get(table)
    return "" if at is None else row[at]


def row_name(table: str, row: tuple) -> str:
    """What names a row in messages: the span or event name, the log's event type, the metric name."""
    if table == OTEL_SPANS:
        return row[SPAN.NAME] or "span"
    if table == OTEL_SPAN_EVENTS:
        return row[SPAN_EVENT.NAME]
    if table == PERFORMANCE_METRICS:
        return row[PM.METRIC_NAME]
    if table == OTEL_LOGS:
        return row[LOG.EVENT_TYPE]
    if table == OTELPG_EVENTS:
        return row[SE.NAME] or row[SE.EVENT_TYPE]
    return table


# Tables partitioned by day, each with a `<name>_default` partition.
PARTITIONED_TABLES: tuple[str, ...] = (
    OTEL_SPANS,
    OTEL_SPAN_EVENTS,
    OTEL_LOGS,
    OTELPG_EVENTS,
    PERFORMANCE_METRICS,
    USER_ANALYTICS,
    PERFORMANCE_METRICS_1M,
)

# Every partitioned table: (partition key column, partition width 'day' | 'month').
PARTITIONING: dict[str, tuple[str, str]] = {
    OTEL_SPANS: ("timestamp", "day"),
    OTEL_SPAN_EVENTS: ("timestamp", "day"),
    OTEL_LOGS: ("timestamp", "day"),
    OTELPG_EVENTS: ("timestamp", "day"),
    PERFORMANCE_METRICS: ("timestamp", "day"),
    USER_ANALYTICS: ("timestamp", "day"),
    PERFORMANCE_METRICS_1M: ("bucket", "day"),
    PERFORMANCE_METRICS_1H: ("bucket", "month"),
}
