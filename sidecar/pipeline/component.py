"""The lifecycle every long-lived part of otelpg shares.

The app holds its components in one list: it starts them in that order, stops them in reverse
(so a component may rely on those before it for as long as it runs), and asks each one what
/health should show. A component that runs in the background keeps its tasks in a `Tasks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Health:
    """What a component adds to /health: problems (degraded while any) and figures."""

    problems: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)


HEALTHY = Health()


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> Health: ...


def recent(since: float | None, window: float = 300.0) -> bool:
    """Whether a time.monotonic() stamp is within the last `window` seconds (a problem /health
    still reports)."""
    return since is not None and time.monotonic() - since < window


class Tasks:
    """A component's background tasks, cancelled and awaited together at stop."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
