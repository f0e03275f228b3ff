"""Pure functions from OTLP export requests to row tuples in `exporters.postgres.schema` order.

No I/O and no module-level state: the limits, their counters and a small bounded memo of
resource rows are a `Mapper` the caller owns and passes in. docs/mapping.md documents
every OTLP field and where it lands.
"""

from exporters.postgres.mapping.common import Mapped, Mapper
from exporters.postgres.mapping.logs import map_logs
from exporters.postgres.mapping.metrics import map_metrics
from exporters.postgres.mapping.traces import map_traces

__all__ = ["Mapped", "Mapper", "map_logs", "map_metrics", "map_traces"]
