"""Content-Encoding decoding: every coding, the post-decompression size limit, bombs, bad streams."""

from __future__ import annotations

import gzip
import os
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
import zstandard

from sidecar.pipeline.errors import BackpressureError, DecodeError, PayloadTooLargeError
from sidecar.receivers.compression import decompress

MiB = 1 << 20
GiB = 1 << 30
PAYLOAD = os.urandom(3000) * 40  # compressible, but not trivially
LIMIT = 10 * MiB


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def zstd_streamed(data: bytes) -> bytes:
    """A frame without a content size in its header, as streaming encoders (the Collector) write."""
    compressor = zstandard.ZstdCompressor().compressobj()
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # zlib-wrapped, as the Python SDK sends it
    "zlib": zlib.compress,
    "zstd": zstd,
}


# --- identity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "", "identity", "none", "IDENTITY", " identity "])
def test_identity_returns_the_body_itself(encoding: str | None) -> None:
    body = b"payload"
    assert decompress(body, encoding, LIMIT) is body


def test_identity_body_over_the_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLargeError, match="100 bytes"):
        decompress(bytes(101), None, 100)


def test_identity_body_exactly_at_the_limit_is_accepted() -> None:
    assert len(decompress(bytes(100), None, 100)) == 100


# --- each coding -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_round_trip(encoding: str) -> None:
    assert decompress(ENCODERS[encoding](PAYLOAD), encoding, LIMIT) == PAYLOAD


@pytest.mark.parametrize("encoding", ["GZIP", "Gzip", " gzip "])
def test_coding_names_are_case_insensitive(encoding: str) -> None:
    assert decompress(gzip.compress(PAYLOAD), encoding, LIMIT) == PAYLOAD


@pytest.mark.parametrize("encoding", ["deflate", "zlib"])
def test_raw_deflate_is_accepted_as_a_fallback(encoding: str) -> None:
    assert decompress(raw_deflate(PAYLOAD), encoding, LIMIT) == PAYLOAD


def test_python_sdk_deflate_body() -> None:
    # opentelemetry-exporter-otlp-proto-http compresses "deflate" with zlib.compress().
    assert decompress(zlib.compress(PAYLOAD), "deflate", LIMIT) == PAYLOAD


def test_concatenated_gzip_members() -> None:
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decompress(body, "gzip", LIMIT) == b"first second"


@pytest.mark.parametrize(("encoding", "encode"), [("gzip", gzip.compress), ("zstd", zstd)])
def test_concatenation_is_bounded(encoding: str, encode: Callable[[bytes], bytes]) -> None:
    # Senders write one member; a body of a million empty ones must not cost seconds of CPU.
    member = encode(b"x")
    assert decompress(member * 1000, encoding, LIMIT) == b"x" * 1000
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="more than 1000 concatenated"):
        decompress(encode(b"") * 1_000_000, encoding, 64 * MiB)
    assert time.perf_counter() - started < 1.0


def test_zstd_streamed_frame_without_content_size() -> None:
    assert decompress(zstd_streamed(PAYLOAD), "zstd", LIMIT) == PAYLOAD


def test_concatenated_zstd_frames() -> None:
    body = zstd(b"first ") + zstd_streamed(b"second")
    assert decompress(body, "zstd", LIMIT) == b"first second"


def test_zstd_skippable_frame_is_ignored() -> None:
    skippable = struct.pack("<II", 0x184D2A50, 4) + b"meta"
    assert decompress(skippable + zstd(PAYLOAD), "zstd", LIMIT) == PAYLOAD


def test_multiple_codings_are_undone_last_first() -> None:
    # "gzip, zstd": gzip was applied first, then zstd.
    body = zstd(gzip.compress(PAYLOAD))
    assert decompress(body, "gzip, zstd", LIMIT) == PAYLOAD
    assert decompress(zlib.compress(body), "gzip,zstd,deflate", LIMIT) == PAYLOAD


def test_identity_mixed_with_a_coding() -> None:
    assert decompress(gzip.compress(PAYLOAD), "identity, gzip", LIMIT) == PAYLOAD


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_empty_body_stays_empty(encoding: str) -> None:
    assert decompress(b"", encoding, LIMIT) == b""


def test_empty_payload_compressed() -> None:
    for encoding, encode in ENCODERS.items():
        assert decompress(encode(b""), encoding, LIMIT) == b""


# --- the size limit ----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_decompressed_size_exactly_at_the_limit_is_accepted(encoding: str) -> None:
    data = os.urandom(64) * 1000
    assert decompress(ENCODERS[encoding](data), encoding, len(data)) == data


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_decompressed_size_one_over_the_limit_is_refused(encoding: str) -> None:
    data = os.urandom(64) * 1000
    with pytest.raises(PayloadTooLargeError, match=f"{len(data) - 1} bytes"):
        decompress(ENCODERS[encoding](data), encoding, len(data) - 1)


def test_raw_deflate_over_the_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLargeError):
        decompress(raw_deflate(bytes(10_000)), "deflate", 9_999)


def test_zstd_streamed_over_the_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLargeError):
        decompress(zstd_streamed(bytes(10_000)), "zstd", 9_999)


def test_limit_applies_to_the_sum_of_gzip_members() -> None:
    body = gzip.compress(bytes(600)) + gzip.compress(bytes(600))
    with pytest.raises(PayloadTooLargeError):
        decompress(body, "gzip", 1000)


def test_limit_applies_to_the_sum_of_zstd_frames() -> None:
    body = zstd(bytes(600)) + zstd(bytes(600))
    with pytest.raises(PayloadTooLargeError):
        decompress(body, "zstd", 1000)


def test_compressed_body_over_the_limit_is_refused_before_decompressing() -> None:
    body = os.urandom(2000)  # not even valid gzip: the size check comes first
    with pytest.raises(PayloadTooLargeError):
        decompress(body, "gzip", 1000)


def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes as one gzip member, built from repeated fully-flushed 8 MiB blocks (a
    full flush resets the dictionary, so every block compresses to the same bytes)."""
    chunk = bytes(8 * MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * (size // len(chunk)) + end + struct.pack("<II", crc, size & 0xFFFFFFFF)


def zstd_bomb(size: int) -> bytes:
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = bytes(8 * MiB)
    return b"".join(compressor.compress(chunk) for _ in range(size // len(chunk))) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "bomb"),
    [("gzip", gzip_bomb), ("zstd", zstd_bomb)],
)
def test_bomb_is_refused_quickly_without_inflating(encoding: str, bomb: Callable[[int], bytes]) -> None:
    body = bomb(GiB)
    assert len(body) < MiB  # so it's the decompressed size that trips the limit
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PayloadTooLargeError, match=f"{MiB} bytes"):
            decompress(body, encoding, MiB)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 64 * MiB


def test_gzip_bomb_behind_another_gzip_layer_is_refused() -> None:
    body = gzip.compress(zstd_bomb(GiB))
    with pytest.raises(PayloadTooLargeError):
        decompress(body, "zstd, gzip", MiB)


def test_zstd_frame_demanding_a_huge_window_is_refused() -> None:
    # A frame may declare a window far larger than its content; the decoder would allocate it.
    params = zstandard.ZstdCompressionParameters(window_log=27, enable_ldm=True)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = compressor.compress(b"tiny") + compressor.flush()
    with pytest.raises(DecodeError, match="zstd"):
        decompress(body, "zstd", MiB)


# --- bad streams and codings -------------------------------------------------------------------


def test_gzip_invalid_header() -> None:
    with pytest.raises(DecodeError, match=r"^gzip: invalid header$"):
        decompress(b"this is not gzip", "gzip", LIMIT)


def test_gzip_truncated() -> None:
    body = gzip.compress(PAYLOAD)
    for cut in (5, len(body) // 2, len(body) - 4):
        with pytest.raises(DecodeError, match=r"^gzip: unexpected EOF$"):
            decompress(body[:cut], "gzip", LIMIT)


def test_gzip_bad_checksum() -> None:
    body = bytearray(gzip.compress(PAYLOAD))
    body[-8] ^= 0xFF  # CRC32 in the trailer
    with pytest.raises(DecodeError, match=r"^gzip: invalid checksum$"):
        decompress(bytes(body), "gzip", LIMIT)


def test_gzip_corrupt_data() -> None:
    body = bytearray(gzip.compress(PAYLOAD))
    body[10:20] = b"\xff" * 10
    with pytest.raises(DecodeError, match=r"^gzip: "):
        decompress(bytes(body), "gzip", LIMIT)


def test_gzip_trailing_garbage() -> None:
    with pytest.raises(DecodeError, match=r"^gzip: invalid header$"):
        decompress(gzip.compress(PAYLOAD) + b"garbage!", "gzip", LIMIT)


@pytest.mark.parametrize("encoding", ["deflate", "zlib"])
def test_deflate_garbage(encoding: str) -> None:
    with pytest.raises(DecodeError, match=f"^{encoding}: "):
        decompress(b"\xff\xfe\xfd not deflate at all", encoding, LIMIT)


@pytest.mark.parametrize("encoding", ["deflate", "zlib"])
def test_deflate_truncated(encoding: str) -> None:
    body = zlib.compress(PAYLOAD)
    with pytest.raises(DecodeError, match=f"^{encoding}: "):
        decompress(body[: len(body) // 2], encoding, LIMIT)


def test_zstd_garbage() -> None:
    with pytest.raises(DecodeError, match=r"^zstd: "):
        decompress(b"this is not zstd", "zstd", LIMIT)


@pytest.mark.parametrize("make", [zstd, zstd_streamed])
def test_zstd_truncated(make: Callable[[bytes], bytes]) -> None:
    body = make(PAYLOAD)
    for cut in (3, len(body) // 2, len(body) - 1):
        with pytest.raises(DecodeError, match=r"^zstd: "):
            decompress(body[:cut], "zstd", LIMIT)


def test_zstd_trailing_garbage() -> None:
    with pytest.raises(DecodeError, match=r"^zstd: "):
        decompress(zstd(PAYLOAD) + b"garbage!", "zstd", LIMIT)


@pytest.mark.parametrize("encoding", ["br", "snappy", "lz4", "compress", "gzip, br", "gzip;q=1"])
def test_unknown_coding(encoding: str) -> None:
    with pytest.raises(DecodeError, match="unsupported Content-Encoding") as info:
        decompress(gzip.compress(PAYLOAD), encoding, LIMIT)
    assert "gzip, deflate, zlib, zstd" in str(info.value)


def test_unknown_coding_message_names_it() -> None:
    with pytest.raises(DecodeError, match=r'^unsupported Content-Encoding "br" '):
        decompress(b"x", "br", LIMIT)


def test_unknown_coding_is_refused_even_for_an_empty_body() -> None:
    with pytest.raises(DecodeError):
        decompress(b"", "br", LIMIT)


# --- memory accounting (admission) --------------------------------------------------------------


class Ledger:
    """An `account` callback that keeps the running total and its peak, and refuses past `cap`."""

    def __init__(self, cap: int = 1 << 62) -> None:
        self.held = self.peak = 0
        self.cap = cap

    def __call__(self, delta: int) -> None:
        if delta > 0 and self.held + delta > self.cap:
            raise BackpressureError("over budget")
        self.held += delta
        self.peak = max(self.peak, self.held)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "gzip, zstd"])
def test_accounting_ends_at_the_result_size(encoding: str) -> None:
    body = PAYLOAD
    for coding in encoding.split(", "):
        body = ENCODERS[coding](body)
    ledger = Ledger()
    assert decompress(body, encoding, LIMIT, ledger) == PAYLOAD
    assert ledger.held == len(PAYLOAD)
    # pieces, then the joined copy (and a zstd window): never more than that at once
    assert len(PAYLOAD) < ledger.peak <= 2 * len(PAYLOAD) + 8 * MiB + 64 * 1024


def test_identity_accounts_nothing() -> None:
    ledger = Ledger()
    assert decompress(PAYLOAD, None, LIMIT, ledger) is PAYLOAD
    assert ledger.peak == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
def test_refused_growth_stops_inflating_and_gives_everything_back(encoding: str) -> None:
    ledger = Ledger(cap=MiB)
    with pytest.raises(BackpressureError):
        decompress(ENCODERS[encoding](bytes(4 * MiB)), encoding, LIMIT, ledger)
    assert ledger.held == 0 and ledger.peak <= MiB


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_failures_give_everything_back(encoding: str) -> None:
    ledger = Ledger()
    with pytest.raises(PayloadTooLargeError):
        decompress(ENCODERS[encoding](bytes(2 * MiB)), encoding, MiB, ledger)
    assert ledger.held == 0
    truncated = ENCODERS[encoding](PAYLOAD)[:-20]
    with pytest.raises(DecodeError):
        decompress(truncated, encoding, LIMIT, ledger)
    assert ledger.held == 0


def test_zstd_window_is_accounted_before_it_is_allocated() -> None:
    # A frame declaring a 32 MiB window: the decoder allocates it up front, whatever the output.
    params = zstandard.ZstdCompressionParameters(window_log=25)
    streaming = zstandard.ZstdCompressor(compression_params=params).compressobj()  # no content size
    body = streaming.compress(PAYLOAD) + streaming.flush()
    assert zstandard.get_frame_parameters(body).window_size == 32 * MiB
    ledger = Ledger(cap=16 * MiB)
    with pytest.raises(BackpressureError):
        decompress(body, "zstd", 64 * MiB, ledger)
    assert ledger.held == 0
