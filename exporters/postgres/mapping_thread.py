"""Mapping off the event loop: one dedicated thread runs map_traces / map_metrics / map_logs.

Under the GIL this adds no parallel CPU, but it stops mapping from monopolising the event loop:
mapping a 500-span request takes 10-15 ms of pure Python, and run on the loop it held back every
other callback for that long. asyncpg's COPY, which streams a batch in chunks and waits for the
socket to drain between them, then sat idle while PostgreSQL waited for data (ClientRead), so
mapping and writing alternated instead of overlapping. In a thread, the interpreter hands the
GIL to the loop at every switch interval, so COPY chunks, body reads and acks keep flowing while
requests are mapped (measured: +20% spans/s, docs/performance.md).

One thread, not a pool: mapping is CPU-bound Python, so more threads would only contend for the
GIL, and a single thread keeps the mapping module's counters and memo single-writer.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from exporters.postgres.ids import request_ids
from exporters.postgres.mapping import Mapped, map_logs, map_metrics, map_traces


class MappingThread:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelpg-map")

    async def map(self, signal: str, request: object, received_ns: int, seed: int, raw: bytes | None = None) -> Mapped:
        """Map one request (rows get ids reproducible from `received_ns` and `seed`); `raw`: its
        protobuf bytes if known, for the C attribute converter (traces and logs)."""
        new_id = request_ids(received_ns, seed)
        if signal == "metrics":  # points have no converter: their attributes are few
            job = partial(map_metrics, request, received_ns, new_id=new_id)
        else:
            mapper = map_traces if signal == "traces" else map_logs
            job = partial(mapper, request, received_ns, new_id=new_id, raw=raw)
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
