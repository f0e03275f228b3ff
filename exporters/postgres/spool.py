"""Durable spool: acknowledged requests that PostgreSQL can't take right now, on local disk.

Append-only segment files in `<data_dir>/spool/`. A record is
    length:u32 | crc32:u32 | signal:u8 | received_ns:u64 | seed:u64 | payload (the request, protobuf)
(`seed` reproduces the request's row ids: see ids.py)
where length and crc cover everything after the crc. Concurrent appends are written together
and made durable with one fsync (group fsync); each append returns only after that fsync, so
an acknowledged request survives SIGKILL and power loss. A torn record at the end of a segment
(a crash mid-write, never acknowledged) is detected by its length or crc and ignored.

Segments are replayed oldest first and deleted once their rows are committed. Only regular,
readable files named exactly `segment-<12 digits>.spool` are segments: anything else named like
one is left alone (one warning each), never replayed, deleted or appended to.

A write or fsync that fails (full disk, EFBIG, I/O error) refuses the requests with
BackpressureError, is counted (`write_failures`, `last_write_error` for /health) and logged at
most every 10 s while it lasts.
"""

from __future__ import annotations

import asyncio
import builtins  # `bytes` is also a property of Spool
import logging
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sidecar.pipeline.component import Health, recent
from sidecar.pipeline.errors import BackpressureError
from sidecar.pipeline.signals import BY_CODE, Signal

log = logging.getLogger("otelpg.spool")

_HEADER = struct.Struct("<II")  # length, crc32
_META = struct.Struct("<BQQ")  # signal, received_ns, id seed
_PREFIX, _SUFFIX = "segment-", ".spool"
_SEGMENT = re.compile(r"segment-([0-9]{12})\.spool")  # [0-9]: int() would read other scripts' digits too
_WARN_EVERY = 10.0  # seconds between two warnings about failing writes


@dataclass(frozen=True, slots=True)
class Record:
    segment: int  # segment sequence number
    offset: int  # byte offset of the record in its segment: with `segment`, a stable identity
    signal: Signal
    received_ns: int
    seed: int
    payload: bytes


def _segment_name(seq: int) -> str:
    return f"{_PREFIX}{seq:012d}{_SUFFIX}"


def _unusable(path: Path) -> str | None:
    """Why a file with a segment's name can't be a segment, or None."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return "not a regular file"
        os.close(os.open(path, os.O_RDONLY))  # replay will have to read it
    except OSError as e:
        return f"can't be read: {e.strerror}"
    return None


def read_segment(path: Path) -> Iterator[Record]:
    """Every intact record of a segment, in order; stops at the first torn or corrupt one."""
    seq = int(path.name[len(_PREFIX) : -len(_SUFFIX)])
    data = path.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if length < _META.size or end > len(data) or zlib.crc32(data[start:end]) != crc:
            log.warning("spool segment %s: torn record at offset %d ignored (never acknowledged)", path.name, pos)
            return
        code, received_ns, seed = _META.unpack_from(data, start)
        if code not in BY_CODE:
            log.warning("spool segment %s: unknown signal %d at offset %d", path.name, code, pos)
            return
        yield Record(seq, pos, BY_CODE[code], received_ns, seed, data[start + _META.size : end])
        pos = end


class Spool:
    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int,
        segment_bytes: int = 64 * 1024 * 1024,
        on_write_error: Callable[[Exception], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sizes, taken = self._scan()
        # Never append to a segment a crash left, nor open a stray file's name.
        self._active_seq = max(taken, default=0) + 1
        self._active: int | None = None  # fd of the active segment, opened lazily
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._pending_bytes = 0
        self._flushing = False
        self._lock = asyncio.Lock()
        self.write_failures = 0  # writes or fsyncs that failed, in total
        self.last_write_error: tuple[float, str] | None = None  # (clock(), message) of the last one
        self._on_write_error = on_write_error
        self._clock = clock
        self._warned_at: float | None = None
        self._unlogged = 0  # failures since the last warning

    def _scan(self) -> tuple[dict[int, int], set[int]]:
        """The segments on disk and their sizes, and every sequence number a file's name takes."""
        sizes: dict[int, int] = {}
        taken: set[int] = set()
        for path in sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}")):
            match = _SEGMENT.fullmatch(path.name)
            if match is not None:
                taken.add(int(match[1]))
            problem = "not a segment's name" if match is None else _unusable(path)
            if problem is None:
                assert match is not None
                sizes[int(match[1])] = path.lstat().st_size
            else:
                log.warning("spool: ignoring %s: %s", path, problem)
        return sizes, taken

    @staticmethod
    def _seq(path: Path) -> int:
        return int(path.name[len(_PREFIX) : -len(_SUFFIX)])

    def _paths(self) -> list[Path]:
        """This spool's segments on disk, oldest first (never a stray file named like one)."""
        paths = (self.directory / _segment_name(seq) for seq in sorted(self._sizes))
        return [p for p in paths if p.exists()]

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values()) + self._pending_bytes

    @property
    def empty(self) -> bool:
        return self.bytes == 0

    def fill(self) -> float:
        return self.bytes / self.max_bytes if self.max_bytes else 1.0

    async def append(self, signal: Signal, received_ns: int, payload: builtins.bytes, seed: int = 0) -> None:
        """Return once the record is on disk and fsynced; BackpressureError when the spool is full."""
        body = _META.pack(signal.code, received_ns, seed) + payload
        record = _HEADER.pack(len(body), zlib.crc32(body)) + body
        if self.bytes + len(record) > self.max_bytes:
            raise BackpressureError(
                "otelpg's database is unavailable and its spool is full, retry later", retry_after=5
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, fut))
        self._pending_bytes += len(record)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(fut)

    async def _flush(self) -> None:
        """Write every pending record with one write + one fsync, then resolve their futures."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                data = b"".join(r for r, _ in batch)
                try:
                    async with self._lock:
                        await asyncio.to_thread(self._write_sync, data)
                except Exception as e:  # OSError (disk full...), or anything else: never leave appends waiting
                    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
                    error = BackpressureError(f"otelpg can't write its spool: {reason}", retry_after=5)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(error)
                            fut.exception()
                    self._write_failed(e)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
                finally:
                    self._pending_bytes -= len(data)
        finally:
            self._flushing = False

    def _write_failed(self, error: Exception) -> None:
        """Count and show a failed write or fsync; warn at most every _WARN_EVERY s while it lasts."""
        now = self._clock()
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or type(error).__name__
        self.write_failures += 1
        self.last_write_error = (now, f"{reason} ({self.directory})")
        if self._warned_at is None or now - self._warned_at >= _WARN_EVERY:
            more = f"; {self._unlogged} more failures suppressed since the last warning" if self._unlogged else ""
            log.warning("spool %s: write failed, requests refused until it works: %s%s", self.directory, reason, more)
            self._warned_at, self._unlogged = now, 0
        else:
            self._unlogged += 1
        if self._on_write_error is not None:
            try:
                self._on_write_error(error)
            except Exception:  # a failing observer must not leave appends waiting
                log.exception("spool: on_write_error callback failed")

    def _write_sync(self, data: builtins.bytes) -> None:
        if self._active is None or self._sizes.get(self._active_seq, 0) >= self.segment_bytes:
            self._rotate_sync()
        fd = self._active
        assert fd is not None
        before = self._sizes.get(self._active_seq, 0)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError:
            # Drop whatever part was written so the segment holds only acknowledged records. If even
            # that fails, leave the segment as it is (replay stops at its torn end) and append to a
            # new one, so records acknowledged later are not hidden behind the torn bytes.
            try:
                os.ftruncate(fd, before)
            except OSError:
                self._sizes[self._active_seq] = os.fstat(fd).st_size
                os.close(fd)
                self._active = None
                self._active_seq += 1
            raise
        self._sizes[self._active_seq] = before + len(data)

    def _rotate_sync(self) -> None:
        if self._active is not None:
            os.close(self._active)
            self._active_seq += 1
        path = self.directory / _segment_name(self._active_seq)
        self._active = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes.setdefault(self._active_seq, 0)
        # The new file's directory entry must be durable too.
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def seal(self) -> list[Path]:
        """Close the active segment so every segment on disk can be replayed; return them, oldest first."""
        async with self._lock:
            if self._active is not None:
                os.close(self._active)
                self._active = None
                self._active_seq += 1
            return [p for p in self._paths() if self._sizes.get(self._seq(p))]

    def remove(self, path: Path) -> None:
        """Delete a replayed segment."""
        path.unlink(missing_ok=True)
        self._sizes.pop(self._seq(path), None)

    def discard_empty(self) -> None:
        for p in self._paths():
            seq = self._seq(p)
            if not self._sizes.get(seq) and seq != self._active_seq:
                self.remove(p)

    name = "spool"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.close()
        if not self.empty:
            log.info("spool keeps %d bytes for the next start", self.bytes)

    def health(self) -> Health:
        error = self.last_write_error
        problems = (f"spool writes failing: {error[1]}",) if error and recent(error[0]) else ()
        return Health(problems, {"spool_bytes": self.bytes})

    def takes_data(self) -> bool:
        """Whether requests the database can't take now are kept (not full, not failing)."""
        error = self.last_write_error
        return self.fill() < 1.0 and not (error and recent(error[0], 10))

    def close(self) -> None:
        if self._active is not None:
            os.close(self._active)
            self._active = None
