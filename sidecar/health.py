"""What /health and /api/health/ready report, kept current by the app's database monitor.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar import __version__

Check = Callable[[], list[str]]  # the problems a component sees now ([] when none)


@dataclass
class HealthState:
    embedded_database: bool
    high_water_mark: float
    queue_fill: Callable[[], float] = lambda: 0.0  # fraction of the queue in use
    migrated: bool = False
    database_ok: bool = False
    database_error: str = ""
    draining: bool = False
    started_at: float = field(default_factory=time.monotonic)
    extra: Callable[[], dict[str, Any]] = dict  # components add their figures (spool bytes...)
    checks: list[Check] = field(default_factory=list)  # components' problems: degraded while any
    spooling: Callable[[], bool] = lambda: False  # the spool takes data while the database is away

    def problems(self) -> list[str]:
        found = [] if self.database_ok else ["PostgreSQL unavailable" + (": spooling" if self.spooling() else "")]
        for check in self.checks:
            found.extend(check())
        return found

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
            **self.extra(),
        }
        if problems:
            body["problems"] = problems
        if self.database_error and not self.database_ok:
            body["database_error"] = self.database_error
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


def recent(since: float | None, window: float = 300.0) -> bool:
    """Whether a time.monotonic() stamp is within the last `window` seconds."""
    return since is not None and time.monotonic() - since < window
