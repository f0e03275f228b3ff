"""Table names and column orders: the one source the mapping, the writer and the tests share.

Tests diff these tuples against the tables that `migrations/` creates.
"""

from __future__ import annotations

SYSTEM_EVENTS = "system_events"
PERFORMANCE_METRICS = "performance_metrics"
OTEL_RESOURCES = "otel_resources"
AGENT_STATES = "agent_states"
USER_ANALYTICS = "user_analytics"
SYSTEM_CONFIG = "system_config"
PERFORMANCE_METRICS_1M = "performance_metrics_1m"  # rollups (migrations/0002_lifecycle.sql)
PERFORMANCE_METRICS_1H = "performance_metrics_1h"
METRIC_NAMES = "otelpg_metric_names"  # lookup tables for Grafana variables
EVENT_TYPES = "otelpg_event_types"

# Column order of the row tuples produced by exporters.postgres.mapping.
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

COPY_TABLES: dict[str, tuple[str, ...]] = {
    SYSTEM_EVENTS: SYSTEM_EVENTS_COLUMNS,
    PERFORMANCE_METRICS: PERFORMANCE_METRICS_COLUMNS,
}

# Tables partitioned by day, each with a `<name>_default` partition.
PARTITIONED_TABLES: tuple[str, ...] = (SYSTEM_EVENTS, PERFORMANCE_METRICS, USER_ANALYTICS, PERFORMANCE_METRICS_1M)

# Every partitioned table: (partition key column, partition width 'day' | 'month').
PARTITIONING: dict[str, tuple[str, str]] = {
    SYSTEM_EVENTS: ("timestamp", "day"),
    PERFORMANCE_METRICS: ("timestamp", "day"),
    USER_ANALYTICS: ("timestamp", "day"),
    PERFORMANCE_METRICS_1M: ("bucket", "day"),
    PERFORMANCE_METRICS_1H: ("bucket", "month"),
}
