"""What /health and /api/health/ready report, kept current by the app's database monitor."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar import __version__


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

    def health(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "ok": self.database_ok,
            "database": "healthy" if self.database_ok else "unhealthy",
            "embedded_database": self.embedded_database,
            "migrations": "applied" if self.migrated else "pending",
            "queue_fill": round(self.queue_fill(), 4),
            "draining": self.draining,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
            **self.extra(),
        }
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
