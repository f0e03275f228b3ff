"""Decoding and mapping off the event loop: one dedicated thread, one chunk of a request at a time.

Under the GIL this adds no parallel CPU, but it stops mapping from monopolising the event loop:
mapping a 500-span request takes 10-15 ms of pure Python, and run on the loop it held back every
other callback for that long. asyncpg's COPY, which streams a batch in chunks and waits for the
socket to drain between them, then sat idle while PostgreSQL waited for data (ClientRead), so
mapping and writing alternated instead of overlapping. In a thread, the interpreter hands the
GIL to the loop at every switch interval, so COPY chunks, body reads and acks keep flowing while
requests are mapped (measured: +20% spans/s, docs/performance.md).

A job is one chunk (sidecar.pipeline.otlpwire: at most a few thousand protobuf messages), never a whole
request: protobuf's decoder holds the GIL for a whole call, so a large request decoded at once
would stall the loop; and jobs of concurrent requests interleave in the thread's queue, so one
client's large request doesn't hold back everyone else's small ones.

One thread, not a pool: mapping is CPU-bound Python, so more threads would only contend for the
GIL, and a single thread keeps the Mapper's counters and memo single-writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from exporters.postgres.ids import RequestIds
from exporters.postgres.mapping import Mapped, Mapper, map_logs, map_metrics, map_traces
from exporters.postgres.mapping.native import map_logs_native, map_traces_native
from sidecar.pipeline.component import HEALTHY, Health
from sidecar.pipeline.errors import DecodeError
from sidecar.pipeline.signals import LOGS, METRICS, TRACES, Signal

INLINE_BYTES = 256 * 1024  # chunks the native encoder encodes on the loop (~0.5 ms)
_MAPPERS: dict[Signal, Callable[..., Mapped]] = {TRACES: map_traces, METRICS: map_metrics, LOGS: map_logs}
_NATIVE: dict[Signal, Callable[[bytes, int, RequestIds, Mapper], Mapped | None]] = {
    TRACES: map_traces_native,
    LOGS: map_logs_native,
}


def map_chunk(
    signal: Signal,
    chunk: bytes,
    received_ns: int,
    new_id: Callable[[], Any],
    truncated: int = 0,
    mapper: Mapper | None = None,
    native: bool = True,
) -> Mapped:
    """Decode one chunk and map it to rows with `mapper` (None: a new one, default limits; the
    decoded message is kept in `Mapped.decoded`). `truncated`: list elements the splitter already
    cut, counted here with the mapping's own cuts (one thread updates the counters).

    Traces and logs go through the native encoder when the mapper has it, `native` allows it and
    `new_id` is a RequestIds it can continue: rows come back encoded (CopyRows) and `decoded` is a
    TraceSummary / LogSummary. Otherwise, and for requests the encoder leaves to Python (metrics
    always), the Python path."""
    if mapper is None:
        mapper = Mapper()
    if truncated:
        mapper.count_truncated(truncated, 0)
    encode = _NATIVE.get(signal)
    if native and encode is not None and mapper.native and isinstance(new_id, RequestIds):
        mapped = encode(chunk, received_ns, new_id, mapper)
        if mapped is not None:
            return mapped
    try:
        message = signal.decode(chunk)
    except (ProtobufDecodeError, RecursionError) as e:
        raise DecodeError(f"invalid protobuf {signal.request_type.DESCRIPTOR.name}: {e}") from None
    mapped = _MAPPERS[signal](message, received_ns, new_id=new_id, raw=chunk, mapper=mapper)
    mapped.decoded = message
    return mapped


class MappingThread:
    """The thread that maps, and the Mapper it maps with (limits, counters, memo): `mapper`.
    `loop_mapper`: the event loop's own Mapper (a Mapper is single-threaded), with which small
    traces and logs chunks are encoded natively on the loop; None: everything is mapped in the thread."""

    def __init__(self, mapper: Mapper | None = None, loop_mapper: Mapper | None = None) -> None:
        self.mapper = Mapper() if mapper is None else mapper
        self.loop_mapper = loop_mapper
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelpg-map")

    async def map(
        self,
        signal: Signal,
        chunk: bytes,
        received_ns: int,
        new_id: Callable[[], Any],
        truncated: int = 0,
        *,
        native: bool = True,
    ) -> Mapped:
        """Map one chunk in the thread; `new_id` continues the request's id sequence. `native`:
        False for callers that need row tuples (spool replay).

        A traces or logs chunk of at most INLINE_BYTES is encoded natively right here on the loop: the
        encoder holds the GIL either way (about 2 ms per MiB), and handing it to the thread and
        back cost more than that. What the encoder leaves to Python is mapped in the thread."""
        inline = self.loop_mapper
        encode = _NATIVE.get(signal)
        if (
            inline is not None
            and native
            and encode is not None
            and len(chunk) <= INLINE_BYTES
            and inline.native
            and isinstance(new_id, RequestIds)
        ):
            mapped = encode(chunk, received_ns, new_id, inline)  # ids advance only if mapped
            if mapped is not None:
                inline.count_truncated(truncated, 0)
                return mapped
            native = False  # it stepped aside: the thread maps in Python, without asking again
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, map_chunk, signal, chunk, received_ns, new_id, truncated, self.mapper, native
        )

    name = "mapping thread"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    def health(self) -> Health:
        return HEALTHY

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
