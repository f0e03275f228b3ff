"""Row ids that a request can reproduce: the same (received time, seed) gives the same ids.

Every request gets a random 48-bit seed; its rows' ids are UUIDv7-shaped — the receive time in
milliseconds first (time-ordered), then the seed, then the row's index. The seed travels with a
spooled request, so when a write whose COMMIT answer was lost is spooled and replayed, its
rows get the same ids and `ON CONFLICT DO NOTHING` skips those that did commit.
"""

from __future__ import annotations

import os
from typing import Any

try:  # asyncpg's UUID: a uuid.UUID subclass that is cheap to build and asyncpg's fastest encode path
    from asyncpg.pgproto.pgproto import UUID as _UUID
except ImportError:  # pragma: no cover
    from uuid import UUID as _StdUUID

    def _UUID(b: bytes) -> Any:
        return _StdUUID(bytes=b)


def new_seed() -> int:
    return int.from_bytes(os.urandom(6), "big")


class RequestIds:
    """The id factory for one request's rows: call it for the next id. `head` (12 bytes) and
    `counter` (ids made so far) let the native encoder continue the same sequence."""

    __slots__ = ("counter", "head")

    def __init__(self, head: bytes, counter: int = 0) -> None:
        self.head = head
        self.counter = counter

    def __call__(self) -> Any:
        self.counter += 1
        return _UUID(self.head + self.counter.to_bytes(4, "big"))


def request_ids(received_ns: int, seed: int) -> RequestIds:
    """The id factory for one request's rows."""
    prefix = bytearray((received_ns // 1_000_000 % (1 << 48)).to_bytes(6, "big") + seed.to_bytes(6, "big"))
    prefix[6] = (prefix[6] & 0x0F) | 0x70  # version 7
    prefix[8] = (prefix[8] & 0x3F) | 0x80  # RFC 9562 variant
    return RequestIds(bytes(prefix))
