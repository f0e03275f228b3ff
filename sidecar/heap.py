"""The process heap: large buffers go back to the OS as soon as they are freed.

glibc serves allocations above its mmap threshold (128 KiB at first) with their own mappings,
unmapped on free. But each time such a block is freed, glibc raises the threshold to its size
(up to 32 MiB), so after the first 4 MiB request body, bodies, chunks and decompressed buffers
come from the heap arenas of the threads that allocate them (event loop, gRPC, decompression,
mapping), where freed memory stays in the process, fragmented: measured under 13 gRPC clients
sending 4 MiB messages, peak RSS 244 MiB with the dynamic threshold, 187 MiB with it fixed, and
146 MiB vs 103 MiB once they stopped. Fixing the threshold keeps memory what admission counts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("otelpg")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024  # a request's pieces are bigger; Python's small objects are far smaller


def return_large_buffers_to_os() -> bool:
    """Fix glibc's mmap threshold (and trim threshold) for this process; False where there is no
    glibc (musl, macOS): their allocators don't have this behaviour to fix."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the mmap threshold")
    return ok
