"""The seam between receivers and exporters: one `ExportRequest` in, a `ConsumeResult` out.

A receiver reads, decompresses and (for OTLP/JSON) re-encodes a request as protobuf, splits it
into independently decodable chunks without decoding it (`sidecar.pipeline.otlpwire`), and awaits
`consume(request)`; that returns once the data is durable (committed in PostgreSQL or fsynced to
the spool) or raises a `sidecar.pipeline.errors` error. Exporters decode the chunks one at a time, so no
single step holds the interpreter for long, whatever the request's size or shape.
Receivers never import asyncpg; exporters never import aiohttp or grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sidecar.pipeline.admission import Admission, Reservation
from sidecar.pipeline.signals import Signal

if TYPE_CHECKING:
    from sidecar.pipeline.otlpwire import Split


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    """What became of a request's items: `rejected` of them could not be stored, and why."""

    rejected: int = 0
    message: str = ""


OK = ConsumeResult()


def _unlimited() -> Reservation:
    return Admission(1 << 62).reserve()  # its own: nothing to release


@dataclass(slots=True)
class ExportRequest:
    """One OTLP export request on its way from a receiver to an exporter."""

    signal: Signal
    body: bytes  # the whole request as protobuf: what the spool keeps, and replays through the same path
    chunks: list[bytes]  # `body` split into requests decodable one by one (the body itself when small)
    items: int  # spans / metric points / log records in the request, rejected ones included
    rejected: int = 0  # items refused before decoding (e.g. nested beyond the limits)
    reason: str = ""  # why, for partial_success
    messages: int = 0  # protobuf messages in the request (all depths): what decoding it will cost
    reservation: Reservation = field(default_factory=_unlimited)  # the memory it may hold (admission)
    truncated: int = 0  # list elements (attributes, array values...) cut from the chunks by the limits

    @classmethod
    def from_split(
        cls, signal: Signal, body: bytes, split: Split, reservation: Reservation | None = None
    ) -> ExportRequest:
        """The request `otlpwire.split` cut `body` into."""
        return cls(
            signal,
            body,
            split.chunks,
            split.items,
            split.rejected,
            split.reason,
            split.messages,
            reservation if reservation is not None else _unlimited(),
            split.truncated,
        )


class Consumer(Protocol):
    async def consume(self, request: ExportRequest) -> ConsumeResult: ...
