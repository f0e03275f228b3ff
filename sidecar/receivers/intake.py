"""From a received body to an `ExportRequest`: bounded event-loop time, memory reserved first.

- Protobuf is never decoded here: `sidecar.pipeline.otlpwire.split` checks the framing, counts items and
  cuts the request into chunks that exporters decode one at a time (a request of 9 million empty
  containers, 18 MiB inflated from 18 KB, costs a scan without the GIL, not seconds of decoding).
  Bodies above `THREAD_BYTES` are scanned in a worker thread, so the loop keeps serving.
- OTLP/JSON is decoded in a worker thread (pure Python, so the interpreter keeps switching to the
  loop), after checking that its Python objects fit the memory budget, and re-encoded as protobuf:
  from there both encodings take the same path.
- The reservation grows before each step by what the step will hold: what decoding a chunk will
  take (exporters decode, map and commit one chunk at a time; upb holds about 3.5 bytes per
  protobuf byte, plus a few dozen per message).
"""

from __future__ import annotations

import asyncio

from google.protobuf.message import Message

from sidecar.pipeline import otlpwire
from sidecar.pipeline.admission import Reservation
from sidecar.pipeline.consumer import ExportRequest
from sidecar.pipeline.errors import DecodeError, PayloadTooLargeError
from sidecar.pipeline.signals import Signal
from sidecar.receivers.encoding import JSON, decode_request

# Bodies above this are split / decoded in a worker thread. The C splitter scans ~2 GB/s (0.22 µs
# per 470-byte span): 1 MiB holds the loop ~0.5 ms, less than handing the body to a thread costs.
# (The pure-Python splitter, where the C one isn't built, is hundreds of times slower: 64 KiB.)
THREAD_BYTES = 1024 * 1024 if otlpwire.IMPLEMENTATION == "c" else 64 * 1024

# Decoded protobuf (upb), measured: ~3.5 bytes per wire byte, ~64 bytes per (even empty) message.
DECODED_BYTES_PER_BYTE = 4
DECODED_BYTES_PER_MESSAGE = 64
# orjson's objects for OTLP/JSON, measured: 95-115 bytes per value of real requests, at most
# ~60 for pathological ones (3 M one-letter strings); values are counted as `,` `{` `[` bytes.
JSON_BYTES_PER_VALUE = 120
# Past this many times the body limit, a JSON body is pathological, not large: a real one takes
# ~7x its size while decoded (e.g. 20 MiB of OTLP/JSON: about 140 MiB of Python objects).
JSON_MAX_EXPANSION = 10


async def export_request(
    signal: Signal, body: bytes, media: str, reservation: Reservation, *, max_body: int, max_list: int | None = None
) -> ExportRequest:
    """The ExportRequest of a decompressed body; DecodeError if it isn't one, BackpressureError when
    the memory budget can't hold its decoding (the reservation keeps what it held). Lists longer
    than `max_list` (attributes, array values...) are cut before anything decodes them."""
    if media == JSON:
        body = await _json_to_protobuf(signal, body, reservation, max_body)
    split = await _split(signal, body, max_list)
    if split.chunks:
        size = sum(len(c) for c in split.chunks)
        copied = 0 if split.chunks[0] is body else size
        # Chunks are decoded one at a time: the largest one's decoding is what the request holds.
        # (Messages of dropped empty containers cost nothing once split: count a chunk's share.)
        largest = max(len(c) for c in split.chunks)
        messages = split.messages * largest // max(1, len(body))
        reservation.grow(copied + DECODED_BYTES_PER_BYTE * largest + DECODED_BYTES_PER_MESSAGE * messages)
    return ExportRequest.from_split(signal, body, split, reservation)


async def _split(signal: Signal, body: bytes, max_list: int | None) -> otlpwire.Split:
    try:
        if len(body) > THREAD_BYTES:
            return await asyncio.to_thread(otlpwire.split, signal.code, body, max_list=max_list)
        return otlpwire.split(signal.code, body, max_list=max_list)
    except ValueError as e:
        raise DecodeError(f"{e} ({signal.request_type.DESCRIPTOR.name})") from None


async def _json_to_protobuf(signal: Signal, body: bytes, reservation: Reservation, max_body: int) -> bytes:
    values = body.count(b",") + body.count(b"{") + body.count(b"[") + 1
    needed = JSON_BYTES_PER_VALUE * values + len(body)
    if needed > JSON_MAX_EXPANSION * max_body:
        raise PayloadTooLargeError(
            f"OTLP/JSON body of {len(body)} bytes holds about {values} values: decoding it would take "
            f"{needed >> 20} MiB, more than the {JSON_MAX_EXPANSION * max_body >> 20} MiB allowed"
        )
    reservation.grow(needed)
    try:
        data = await asyncio.to_thread(_reencode, signal, body)
    finally:
        reservation.shrink(needed)
    reservation.grow(len(data))
    return data


def _reencode(signal: Signal, body: bytes) -> bytes:
    message: Message = decode_request(signal, body, JSON)
    return message.SerializeToString()
