"""What /health and /api/health/ready report: the database's state, and each component's problems
and figures.

/health answers 200 while PostgreSQL answers, 503 while it doesn't. Its `status` says more:
- `ok`: nothing needs attention (`ok: true`);
- `degraded`: otelpg keeps every acknowledged item, but something needs attention — PostgreSQL
  is unreachable and the spool takes the data, data was refused for good and kept as dead
  letters, derived rows or spool writes failed lately, spool replay keeps failing (`problems`
  lists them);
- `unhealthy`: PostgreSQL is unreachable and otelpg can't keep what it receives (no spool, or
  the spool is full or failing): clients get 503 / UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporters.postgres.database import Database
from sidecar import __version__
from sidecar.pipeline.component import Component


@dataclass
class HealthState:
    """`components`: each adds its problems (degraded while any) and figures to /health."""

    database: Database
    embedded_database: bool
    high_water_mark: float
    queue_fill: Callable[[], float] = lambda: 0.0  # fraction of the queue in use
    spooling: Callable[[], bool] = lambda: False  # the spool takes data while the database is away
    components: Sequence[Component] = ()
    draining: bool = False
    started_at: float = field(default_factory=time.monotonic)

    @property
    def database_ok(self) -> bool:
        return self.database.ok

    @property
    def migrated(self) -> bool:
        return self.database.schema_ready.is_set()

    def problems(self) -> list[str]:
        found = [] if self.database_ok else ["PostgreSQL unavailable" + (": spooling" if self.spooling() else "")]
        for component in self.components:
            found.extend(component.health().problems)
        return found

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for component in self.components:
            out.update(component.health().figures)
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        problems = self.problems()
        if not problems:
            status = "ok"
        elif self.database_ok or self.spooling():
            status = "degraded"
        else:
            status = "unhealthy"
        body: dict[str, Any] = {
            "ok": not problems,
            "status": status,
            "database": "healthy" if self.database_ok else "unhealthy",
            "embedded_database": self.embedded_database,
            "migrations": "applied" if self.migrated else "pending",
            "queue_fill": round(self.queue_fill(), 4),
            "draining": self.draining,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
            **self.figures(),
        }
        if problems:
            body["problems"] = problems
        if self.database.error and not self.database_ok:
            body["database_error"] = self.database.error
        return (200 if self.database_ok else 503), body

    def ready(self) -> tuple[int, dict[str, Any]]:
        reasons = []
        if not self.migrated:
            reasons.append("migrations not applied")
        if not self.database_ok:
            reasons.append("database unavailable")
        if self.queue_fill() >= self.high_water_mark:
            reasons.append("queue above high-water mark")
        if self.draining:
            reasons.append("shutting down")
        if reasons:
            return 503, {"ready": False, "reasons": reasons}
        return 200, {"ready": True}
