"""Narrowing a permanent write failure down to what caused it, so nothing else pays for it.

Many clients' requests are merged into one transaction (group commit, spool replay). When
PostgreSQL refuses that transaction for good (a value it can't store, a constraint), retrying it
can't succeed, and failing it would fail every client in it. `isolate` bisects instead: each
half is written in a transaction of its own, a half that commits is done, a half that fails is
halved again, down to single units (requests, then rows of one request). With k bad units among
n, that is about 2·k·log2(n) transactions, and only on the rare path.

A transient failure on the way (PostgreSQL went away) stops the narrowing: what was committed
stays committed (row ids are reproducible and later writes skip rows already there), the rest
is reported as not written so the caller can spool or retry it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sidecar.pipeline.errors import OtelpgError, PermanentError

U = TypeVar("U")


@dataclass(slots=True)
class Isolated(Generic[U]):
    """The outcome for units that failed together."""

    written: list[U] = field(default_factory=list)  # committed, in groups that succeeded
    failed: list[tuple[U, PermanentError]] = field(default_factory=list)  # refused alone (or given up on)
    unwritten: list[U] = field(default_factory=list)  # not tried: a transient error stopped the narrowing
    error: OtelpgError | None = None  # that transient error


async def isolate(
    units: Sequence[U],
    write: Callable[[list[U]], Awaitable[OtelpgError | None]],
    first_error: PermanentError,
    *,
    max_writes: int = 1 << 30,
    on_written: Callable[[list[U]], None] | None = None,
) -> Isolated[U]:
    """Bisect `units`, which failed together with `first_error`. `write(group)` commits a group in
    one transaction and returns None, or the (classified) error. After `max_writes` transactions
    the groups not yet narrowed down are given up on, as failed with their last error."""
    out: Isolated[U] = Isolated()
    todo: list[tuple[list[U], PermanentError]] = [(list(units), first_error)]  # a stack: order is kept
    writes = 0
    while todo:
        group, error = todo.pop()
        if len(group) == 1 or writes >= max_writes:
            out.failed.extend((u, error) for u in group)
            continue
        mid = len(group) // 2
        halves = (group[:mid], group[mid:])
        failing: list[tuple[list[U], PermanentError]] = []
        for i, half in enumerate(halves):
            writes += 1
            result = await write(half)
            if result is None:
                out.written.extend(half)
                if on_written is not None:
                    on_written(half)
            elif isinstance(result, PermanentError):
                failing.append((half, result))
            else:  # transient: stop here, report everything not committed
                out.error = result
                for rest in (*halves[i:], *(g for g, _ in failing), *(g for g, _ in reversed(todo))):
                    out.unwritten.extend(rest)
                return out
        todo.extend(reversed(failing))
    return out


Row = tuple[str, tuple]  # (table, row)


async def refused_rows(
    tables: dict[str, list[tuple]],
    write: Callable[[dict[str, list[tuple]]], Awaitable[OtelpgError | None]],
    first_error: PermanentError,
    *,
    max_writes: int,
) -> Isolated[Row]:
    """`isolate` over the rows of one request, which failed together: each group is written as
    its own rows by table, in their order."""

    async def write_group(group: list[Row]) -> OtelpgError | None:
        part: dict[str, list[tuple]] = {}
        for table, row in group:
            part.setdefault(table, []).append(row)
        return await write(part)

    rows = [(table, row) for table, table_rows in tables.items() for row in table_rows]
    return await isolate(rows, write_group, first_error, max_writes=max_writes)
