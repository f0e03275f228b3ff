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

# A zstd block decodes to at most 128 KiB and takes at least 4 input bytes (RLE block), so one
# input byte yields at most 32 KiB: feeding `budget // 32 KiB` bytes can't overshoot the budget
# by more than one block. The floor keeps the call count sane near the limit.
_ZSTD_BYTES_PER_INPUT_BYTE = 32 * 1024
_ZSTD_MIN_STEP = 64
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
    data = body
    while data:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        total = _inflate(inflater, data, limit, total, out, "gzip")
        data = inflater.unused_data  # the next member, or garbage that fails as "invalid header"
    return b"".join(out)


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
    _inflate(zlib.decompressobj(wbits), body, limit, 0, out, name)
    return b"".join(out)


def _inflate(
    inflater: zlib._Decompress, data: bytes, limit: int, total: int, out: list[bytes], name: str
) -> int:
    """Run one stream to its end, appending output to `out`; returns the new running total."""
    while True:
        try:
            chunk = inflater.decompress(data, limit - total + 1)
        except zlib.error as exc:
            raise DecodeError(f"{name}: {_zlib_reason(exc)}") from None
        if chunk:
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            out.append(chunk)
        if inflater.eof:
            return total
        tail = inflater.unconsumed_tail
        if not chunk and len(tail) == len(data):
            # No output and no input consumed: the stream needs bytes we don't have.
            raise DecodeError(f"{name}: unexpected EOF")
        data = tail


def _zlib_reason(exc: zlib.error) -> str:
    # "Error -3 while decompressing data: incorrect header check" -> "invalid header"
    reason = str(exc).rsplit(": ", 1)[-1]
    return _ZLIB_REASONS.get(reason, reason)


def _unzstd(body: bytes, limit: int) -> bytes:
    """zstd, including concatenated and skippable frames; truncation is an error."""
    dctx = zstandard.ZstdDecompressor(max_window_size=_zstd_window(limit))
    view = memoryview(body)
    out: list[bytes] = []
    total = 0
    pos = 0
    try:
        while pos < len(view):  # one iteration per frame
            frame = dctx.decompressobj()
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
            pos -= len(frame.unused_data)  # input fed past this frame's end belongs to the next
    except zstandard.ZstdError as exc:
        raise DecodeError(f"zstd: {_zstd_reason(exc)}") from None
    finally:
        view.release()
    return b"".join(out)


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
