"""Pure functions from OTLP export requests to row tuples in `exporters.postgres.schema` order.

No I/O and no state beyond a small bounded memo of resource hashes. docs/mapping.md documents
every OTLP field and where it lands.
"""

from exporters.postgres.mapping.common import Mapped
from exporters.postgres.mapping.logs import map_logs
from exporters.postgres.mapping.metrics import map_metrics
from exporters.postgres.mapping.traces import map_traces

__all__ = ["Mapped", "map_logs", "map_metrics", "map_traces"]
