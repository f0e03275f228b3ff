"""Request-body decompression (Content-Encoding), zip-bomb safe.

The size limit applies to the *decompressed* body and is enforced while inflating: no decoder is
ever asked for more than `limit + 1` bytes (zlib's `max_length`), or fed more input than can expand
past the remaining budget (zstd), so a tiny body that inflates to gigabytes is refused after at
most about `limit` bytes of output.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import zstandard

from sidecar.errors import DecodeError, PayloadTooLargeError

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip container only, like Go's compress/gzip
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS

# zlib's terse messages, reworded like Go's readers so clients see familiar errors.
_ZLIB_REASONS = {
    "incorrect header check": "invalid header",
    "incorrect data check": "invalid checksum",
    "incorrect length check": "invalid checksum",
}

# Input handed to zlib per call: it copies any input left over past a stream's end, so feeding
# the whole body would make many small gzip members quadratic.
_ZLIB_FEED = 64 * 1024
# Concatenated gzip members / zstd frames allowed in one body. Senders write one; each costs a new
# decoder, so without a bound a body of empty members costs seconds of CPU.
_MAX_MEMBERS = 1000

# A zstd block decodes to at most 128 KiB and takes at least 4 input bytes (RLE block), so one
# input byte yields at most 32 KiB: feeding `budget // 32 KiB` bytes can't overshoot the budget
# by more than one block. The floor keeps the call count sane near the limit.
_ZSTD_BYTES_PER_INPUT_BYTE = 32 * 1024
_ZSTD_MIN_STEP = 64
_ZSTD_WRITE_SIZE = 64 * 1024  # output buffer per call: the default (128 KiB) hits mmap per call
_ZSTD_MIN_WINDOW = 8 << 20  # level-19 streaming encoders declare 8 MiB windows
_ZSTD_MAX_WINDOW = 1 << 27  # zstd's own default ceiling (128 MiB)


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding` (comma-separated codings are undone last-first) within `limit` bytes.

    Raises PayloadTooLargeError when the raw or any decoded body exceeds `limit`, and DecodeError
    for an unknown coding or a corrupt/truncated stream.
    """
    if len(body) > limit:
        raise _too_large(limit)
    if not content_encoding:
        return body  # the common case: no copy
    codings = _parse_codings(content_encoding)
    if not body:
        return body  # lenient: an empty body stays empty whatever the (known) coding
    for coding in reversed(codings):
        body = _DECODERS[coding](body, limit)
    return body


def _parse_codings(header: str) -> list[str]:
    """Canonical coding names, identity dropped; every name is validated before any work."""
    codings = []
    for raw in header.split(","):
        name = raw.strip().lower()
        if name in _IDENTITY:
            continue
        name = _ALIASES.get(name, name)
        if name not in _DECODERS:
            raise DecodeError(
                f'unsupported Content-Encoding "{raw.strip()[:64]}" (supported: {_SUPPORTED})'
            )
        codings.append(name)
    return codings


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes (after decompression)")


def _gunzip(body: bytes, limit: int) -> bytes:
    """gzip, including concatenated members (RFC 1952 §2.2), like Go's multistream reader."""
    out: list[bytes] = []
    total = 0
    pos = 0
    with memoryview(body) as view:
        for _ in range(_MAX_MEMBERS):
            # Whatever follows a member must be another member: garbage fails as "invalid header".
            total, pos = _inflate(view, pos, _GZIP_WBITS, limit, total, out, "gzip")
            if pos >= len(view):
                return b"".join(out)
    raise DecodeError(f"gzip: more than {_MAX_MEMBERS} concatenated members")


def _zlib_or_raw(name: str) -> Callable[[bytes, int], bytes]:
    """`deflate` per RFC 9110 is zlib-wrapped (the Python SDK sends that) but some clients send raw
    deflate: try the wrapper first, fall back to raw."""

    def decode(body: bytes, limit: int) -> bytes:
        try:
            return _inflate_one(body, limit, _ZLIB_WBITS, name)
        except DecodeError as wrapped_error:
            try:
                return _inflate_one(body, limit, _RAW_WBITS, name)
            except DecodeError:
                raise wrapped_error from None  # the zlib error is the one that makes sense to users

    return decode


def _inflate_one(body: bytes, limit: int, wbits: int, name: str) -> bytes:
    """One zlib or raw-deflate stream; bytes after its end are ignored, as Go's zlib reader does."""
    out: list[bytes] = []
    with memoryview(body) as view:
        _inflate(view, 0, wbits, limit, 0, out, name)
    return b"".join(out)


def _inflate(
    view: memoryview, pos: int, wbits: int, limit: int, total: int, out: list[bytes], name: str
) -> tuple[int, int]:
    """Inflate the stream starting at `view[pos]`, appending output to `out`.

    Returns the new running total and the position just past the stream. Input goes in slices of
    _ZLIB_FEED bytes because zlib copies whatever it was given past the stream's end.
    """
    inflater = zlib.decompressobj(wbits)
    pending: bytes | memoryview = b""
    while True:
        if not pending:
            pending = view[pos : pos + _ZLIB_FEED]
            pos += len(pending)
        try:
            chunk = inflater.decompress(pending, limit - total + 1)
        except zlib.error as exc:
            raise DecodeError(f"{name}: {_zlib_reason(exc)}") from None
        if chunk:
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            out.append(chunk)
        if inflater.eof:
            return total, pos - len(inflater.unused_data)
        pending = inflater.unconsumed_tail  # non-empty only when the output cap was reached
        if not pending and not chunk and pos >= len(view):
            raise DecodeError(f"{name}: unexpected EOF")  # all input used, stream unfinished


def _zlib_reason(exc: zlib.error) -> str:
    # "Error -3 while decompressing data: incorrect header check" -> "invalid header"
    reason = str(exc).rsplit(": ", 1)[-1]
    return _ZLIB_REASONS.get(reason, reason)


def _unzstd(body: bytes, limit: int) -> bytes:
    """zstd, including concatenated and skippable frames; truncation is an error."""
    dctx = zstandard.ZstdDecompressor(max_window_size=_zstd_window(limit))
    out: list[bytes] = []
    total = 0
    pos = 0
    with memoryview(body) as view:
        try:
            for _ in range(_MAX_MEMBERS):
                total, pos = _unzstd_frame(dctx, view, pos, limit, total, out)
                if pos >= len(view):
                    return b"".join(out)
        except zstandard.ZstdError as exc:
            raise DecodeError(f"zstd: {_zstd_reason(exc)}") from None
    raise DecodeError(f"zstd: more than {_MAX_MEMBERS} concatenated frames")


def _unzstd_frame(
    dctx: zstandard.ZstdDecompressor, view: memoryview, pos: int, limit: int, total: int, out: list[bytes]
) -> tuple[int, int]:
    """Decode the frame starting at `view[pos]`; returns the running total and the position after it.

    Input goes in slices too small to inflate past the remaining budget by more than one block
    (zstd has no output cap per call).
    """
    frame = dctx.decompressobj(write_size=_ZSTD_WRITE_SIZE)
    while not frame.eof:
        if pos >= len(view):
            raise DecodeError("zstd: unexpected EOF")
        step = max(_ZSTD_MIN_STEP, (limit - total) // _ZSTD_BYTES_PER_INPUT_BYTE)
        chunk = frame.decompress(view[pos : pos + step])
        pos = min(pos + step, len(view))
        if chunk:
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            out.append(chunk)
    return total, pos - len(frame.unused_data)  # input fed past the frame's end is the next one's


def _zstd_window(limit: int) -> int:
    """Largest window a frame may demand: the decoder allocates it up front, so bound it by the
    limit (a frame never needs a window larger than its content), but never below what ordinary
    encoders use."""
    window = 1 << max(limit - 1, 1).bit_length()
    return min(max(window, _ZSTD_MIN_WINDOW), _ZSTD_MAX_WINDOW)


def _zstd_reason(exc: zstandard.ZstdError) -> str:
    # "zstd decompressor error: Unknown frame descriptor" -> "Unknown frame descriptor"
    return str(exc).rsplit(": ", 1)[-1]


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gunzip,
    "deflate": _zlib_or_raw("deflate"),
    "zlib": _zlib_or_raw("zlib"),
    "zstd": _unzstd,
}
_ALIASES = {"x-gzip": "gzip"}
_IDENTITY = frozenset({"", "identity", "none"})
_SUPPORTED = "gzip, deflate, zlib, zstd, identity"
