"""Request-body decompression (Content-Encoding), zip-bomb safe.

The size limit applies to the *decompressed* body and is enforced while inflating: no decoder is
ever asked for more than `limit + 1` bytes (zlib's `max_length`), or fed more input than can expand
past the remaining budget (zstd), so a tiny body that inflates to gigabytes is refused after at
most about `limit` bytes of output.

Memory is also reported as it is taken, through `account(delta)` (the request's admission
reservation, which raises BackpressureError when the budget can't hold more): each piece of
output before it is kept, a zstd frame's window before it is allocated, the joined body before
the join, and what is freed afterwards.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import zstandard

from sidecar.pipeline.errors import DecodeError, PayloadTooLargeError

Account = Callable[[int], None]


def _ignore(delta: int) -> None:
    return None


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
# Output per zlib call: zlib releases the GIL while it inflates, not while Python allocates, grows
# and copies its output buffer, so a 20 MiB inflation in one call held the GIL for tens of ms; in
# 1 MiB steps other threads (the event loop) get it in between, and a request refused by the
# memory budget stops after at most one step more.
_INFLATE_STEP = 1 << 20
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


def decompress(body: bytes, content_encoding: str | None, limit: int, account: Account = _ignore) -> bytes:
    """Undo `Content-Encoding` (comma-separated codings are undone last-first) within `limit` bytes.

    Raises PayloadTooLargeError when the raw or any decoded body exceeds `limit`, and DecodeError
    for an unknown coding or a corrupt/truncated stream. `account(delta)` is told of every byte
    the decoding holds and frees (the input stays the caller's): on return it has been told of
    exactly the result's size, or of nothing if the result is `body` itself.
    """
    if len(body) > limit:
        raise _too_large(limit)
    if not content_encoding:
        return body  # the common case: no copy
    codings = _parse_codings(content_encoding)
    if not body:
        return body  # lenient: an empty body stays empty whatever the (known) coding
    original = body
    for coding in reversed(codings):
        decoded = _DECODERS[coding](body, limit, account)
        if body is not original:
            account(-len(body))  # an intermediate result, dropped now
        body = decoded
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
            raise DecodeError(f'unsupported Content-Encoding "{raw.strip()[:64]}" (supported: {_SUPPORTED})')
        codings.append(name)
    return codings


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes (after decompression)")


def _joined(out: list[bytes], total: int, account: Account) -> bytes:
    """The pieces as one body: accounted before the join, the pieces' bytes given back after."""
    account(total)
    body = b"".join(out)
    out.clear()
    account(-total)
    return body


def _accounted(decode: Callable[[list[bytes], Account], bytes], account: Account) -> bytes:
    """Run `decode(out, account)`; if it fails, give back what its pieces held."""
    out: list[bytes] = []
    try:
        return decode(out, account)
    except BaseException:
        account(-sum(len(piece) for piece in out))
        raise


def _gunzip(body: bytes, limit: int, account: Account) -> bytes:
    """gzip, including concatenated members (RFC 1952 §2.2), like Go's multistream reader."""

    def decode(out: list[bytes], account: Account) -> bytes:
        total = 0
        pos = 0
        with memoryview(body) as view:
            for _ in range(_MAX_MEMBERS):
                # Whatever follows a member must be another member: garbage fails as "invalid header".
                total, pos = _inflate(view, pos, _GZIP_WBITS, limit, total, out, "gzip", account)
                if pos >= len(view):
                    return _joined(out, total, account)
        raise DecodeError(f"gzip: more than {_MAX_MEMBERS} concatenated members")

    return _accounted(decode, account)


def _zlib_or_raw(name: str) -> Callable[[bytes, int, Account], bytes]:
    """`deflate` per RFC 9110 is zlib-wrapped (the Python SDK sends that) but some clients send raw
    deflate: try the wrapper first, fall back to raw."""

    def decode(body: bytes, limit: int, account: Account) -> bytes:
        try:
            return _inflate_one(body, limit, _ZLIB_WBITS, name, account)
        except DecodeError as wrapped_error:
            try:
                return _inflate_one(body, limit, _RAW_WBITS, name, account)
            except DecodeError:
                raise wrapped_error from None  # the zlib error is the one that makes sense to users

    return decode


def _inflate_one(body: bytes, limit: int, wbits: int, name: str, account: Account) -> bytes:
    """One zlib or raw-deflate stream; bytes after its end are ignored, as Go's zlib reader does."""

    def decode(out: list[bytes], account: Account) -> bytes:
        with memoryview(body) as view:
            total, _ = _inflate(view, 0, wbits, limit, 0, out, name, account)
        return _joined(out, total, account)

    return _accounted(decode, account)


def _inflate(
    view: memoryview,
    pos: int,
    wbits: int,
    limit: int,
    total: int,
    out: list[bytes],
    name: str,
    account: Account,
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
            chunk = inflater.decompress(pending, min(limit - total + 1, _INFLATE_STEP))
        except zlib.error as exc:
            raise DecodeError(f"{name}: {_zlib_reason(exc)}") from None
        if chunk:
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            account(len(chunk))
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


def _unzstd(body: bytes, limit: int, account: Account) -> bytes:
    """zstd, including concatenated and skippable frames; truncation is an error."""
    max_window = _zstd_window(limit)
    dctx = zstandard.ZstdDecompressor(max_window_size=max_window)

    def decode(out: list[bytes], account: Account) -> bytes:
        total = 0
        pos = 0
        with memoryview(body) as view:
            try:
                for _ in range(_MAX_MEMBERS):
                    total, pos = _unzstd_frame(dctx, view, pos, limit, total, out, account, max_window)
                    if pos >= len(view):
                        return _joined(out, total, account)
            except zstandard.ZstdError as exc:
                raise DecodeError(f"zstd: {_zstd_reason(exc)}") from None
        raise DecodeError(f"zstd: more than {_MAX_MEMBERS} concatenated frames")

    return _accounted(decode, account)


def _unzstd_frame(
    dctx: zstandard.ZstdDecompressor,
    view: memoryview,
    pos: int,
    limit: int,
    total: int,
    out: list[bytes],
    account: Account,
    max_window: int,
) -> tuple[int, int]:
    """Decode the frame starting at `view[pos]`; returns the running total and the position after it.

    Input goes in slices too small to inflate past the remaining budget by more than one block
    (zstd has no output cap per call). The decoder allocates the window the frame declares (up
    to `max_window`) before its first block: it is accounted for the frame's duration.
    """
    window = _zstd_frame_window(view[pos : pos + 18], max_window)
    account(window)
    try:
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
                account(len(chunk))
                out.append(chunk)
    finally:
        account(-window)
    return total, pos - len(frame.unused_data)  # input fed past the frame's end is the next one's


def _zstd_frame_window(header: memoryview, max_window: int) -> int:
    """The window a frame's header declares (what the decoder will allocate), capped at what the
    decoder accepts; a header it can't read costs nothing here (the decoder rejects it)."""
    try:
        window = zstandard.get_frame_parameters(bytes(header)).window_size
    except zstandard.ZstdError:
        return 0
    return min(window, max_window)


def _zstd_window(limit: int) -> int:
    """Largest window a frame may demand: the decoder allocates it up front, so bound it by the
    limit (a frame never needs a window larger than its content), but never below what ordinary
    encoders use."""
    window = 1 << max(limit - 1, 1).bit_length()
    return min(max(window, _ZSTD_MIN_WINDOW), _ZSTD_MAX_WINDOW)


def _zstd_reason(exc: zstandard.ZstdError) -> str:
    # "zstd decompressor error: Unknown frame descriptor" -> "Unknown frame descriptor"
    return str(exc).rsplit(": ", 1)[-1]


_DECODERS: dict[str, Callable[[bytes, int, Account], bytes]] = {
    "gzip": _gunzip,
    "deflate": _zlib_or_raw("deflate"),
    "zlib": _zlib_or_raw("zlib"),
    "zstd": _unzstd,
}
_ALIASES = {"x-gzip": "gzip"}
_IDENTITY = frozenset({"", "identity", "none"})
_SUPPORTED = "gzip, deflate, zlib, zstd, identity"
