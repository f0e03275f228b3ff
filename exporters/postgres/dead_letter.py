"""Dead letters: data PostgreSQL refused for good, kept on disk with the reason, never retried.

When a write is refused for good, the refusal is narrowed down to the request and then the rows
that caused it (isolation.py); everything else is committed. What is left is stored here rather
than lost or retried forever — a spooled request whose rows PostgreSQL refuses would otherwise
hold back every request spooled after it:

    <data_dir>/dead-letter/dead-letter.jsonl

one JSON object per line: `time`, `signal`, `source` (`live`: the client was told in
partial_success; `spool`: it had been acknowledged), `reason` (as the client saw it) and
`detail` (PostgreSQL's own message), `items` refused, `services`, `received_ns` and `seed` (which
reproduce the rows' ids), and `payload`: the whole OTLP request, protobuf, base64. Rows of it that
were stored are skipped if it is ever replayed, since their ids are the same.

Each line is fsynced before the spool segment it comes from is deleted. The file is bounded
(`dead_letter.max_bytes`): beyond it, entries are counted and logged but not kept. While the
file holds anything, /health reports otelpg as degraded: someone should look, then move or
delete the file.
"""

from __future__ import annotations

import asyncio
import base64
import builtins  # `bytes` is also a property of DeadLetter
import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sidecar.pipeline.component import Health

log = logging.getLogger("otelpg.dead_letter")

FILE_NAME = "dead-letter.jsonl"


@dataclass(frozen=True, slots=True)
class Letter:
    signal: str
    source: str  # live | spool
    reason: str
    detail: str
    items: int
    services: list[str]
    received_ns: int
    seed: int
    payload: bytes


class DeadLetter:
    def __init__(self, directory: str | Path, *, max_bytes: int) -> None:
        self.path = Path(directory) / FILE_NAME
        self.max_bytes = max_bytes
        self.dropped = 0  # letters not kept: the file was full
        self._lock = threading.Lock()
        self._size, self._entries = _count(self.path)

    @property
    def bytes(self) -> int:
        return self._size

    @property
    def entries(self) -> int:
        return self._entries

    name = "dead letters"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        status = self.status()
        problems = (f"data PostgreSQL refused is kept as dead letters in {status['path']}",) if status["bytes"] else ()
        return Health(problems, {"dead_letter": status})

    def status(self) -> dict[str, Any]:
        """What /health shows; re-reads the file's size, so deleting it clears the state."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size == 0:
            self._size = self._entries = 0
        return {"entries": self._entries, "bytes": size, "path": str(self.path)}

    async def add(self, letter: Letter) -> bool:
        """Append and fsync a letter; False when it couldn't be kept (file full, disk error)."""
        line = orjson.dumps({
            "time": dt.datetime.now(dt.UTC).isoformat(), "signal": letter.signal, "source": letter.source,
            "reason": letter.reason, "detail": letter.detail, "items": letter.items, "services": letter.services,
            "received_ns": letter.received_ns, "seed": letter.seed,
            "payload": base64.b64encode(letter.payload).decode("ascii"),
        }) + b"\n"  # fmt: skip
        if self._size + len(line) > self.max_bytes:
            self.dropped += 1
            log.warning(
                "dead-letter file %s is full (%d bytes): %d %s of %s not kept (%s)",
                self.path,
                self._size,
                letter.items,
                letter.signal,
                ", ".join(letter.services[:3]),
                letter.reason,
            )
            return False
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as e:
            self.dropped += 1
            log.warning("dead letter not written to %s: %s", self.path, e)
            return False
        return True

    def _append(self, line: builtins.bytes) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._size += len(line)
            self._entries += 1


def _count(path: Path) -> tuple[int, int]:
    """Size and lines of an existing file (it is small: bounded by dead_letter.max_bytes)."""
    try:
        with path.open("rb") as f:
            return path.stat().st_size, sum(1 for _ in f)
    except FileNotFoundError:
        return 0, 0


def read_letters(path: str | Path) -> list[dict[str, Any]]:
    """Every letter of a dead-letter file, payloads decoded (for `otelpg stats` and tests)."""
    letters = []
    try:
        with Path(path).open("rb") as f:
            for line in f:
                try:
                    letter = orjson.loads(line)
                    letter["payload"] = base64.b64decode(letter["payload"])
                except (orjson.JSONDecodeError, KeyError, ValueError):
                    continue  # a torn last line after a crash
                letters.append(letter)
    except FileNotFoundError:
        pass
    return letters
