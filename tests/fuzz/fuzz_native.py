"""Coverage-guided fuzzing (atheris, libFuzzer) of the C extensions' Python entry points.

Usage:
    python tests/fuzz/fuzz_native.py ENTRY_POINT [libFuzzer flags] [corpus dirs or files]
    python tests/fuzz/fuzz_native.py --list

Corpus directories are read (the first one also receives the new inputs found); files are run
once each (reproducing a crash). .ci/fuzz runs this under the sanitized build; see README.md.
Exit status: libFuzzer's (0: no finding), or 100 when the entry point does not exist (yet).

Every input is a serialized Export*ServiceRequest (the seeds are real ones) passed unchanged to
the entry point, once with the production limits and once with small limits derived from a
hash of the input, so that mutations explore both and the cut, split and reject paths run.
A finding is a sanitizer report (ASan, UBSan, LSan), a crash, a timeout, or an exception or a
result the entry point's contract excludes (the assertions below).
"""

from __future__ import annotations

import importlib
import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import atheris
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# The production limits: config/otelpg.yaml limits.max_attributes and max_attribute_value_length,
# sidecar.pipeline.otlpwire.split's defaults for the rest.
MAX_ATTRIBUTES = 1024
MAX_VALUE_LENGTH = 64 * 1024
CHUNK_MESSAGES, ITEM_MESSAGES, MAX_DEPTH = 16384, 65536, 64
SCAN_LIMIT = 101  # the deepest max_depth split accepts
SIGNALS = (0, 1, 2)  # traces, metrics, logs (sidecar.pipeline.signals: Signal.code)
REQUESTS = (ExportTraceServiceRequest, ExportMetricsServiceRequest, ExportLogsServiceRequest)

# encode_* arguments.
RECEIVED_NS = 1_700_000_000_123_456_789
ID_HEAD = bytes(range(0xA0, 0xAC))  # 12 bytes
BOUNDS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15)


def resolve_resource(resource: bytes, schema_url: bytes) -> tuple[int, str] | None:
    """(resource_id, service_name); None (it can't be decoded: the Python path says why) now and then."""
    if len(resource) % 16 == 15:
        return None
    return len(resource), ("svc", "sérvice ☃")[len(schema_url) % 2]


def resolve_scope(scope: bytes, schema_url: bytes) -> int | bool | None:
    """scope_id, None (no scope), or False (it can't be decoded) now and then."""
    if len(scope) % 16 == 15:
        return False
    return len(scope) or None


def pick(options: tuple[int, ...], h: int, shift: int) -> int:
    return options[(h >> shift) % len(options)]


# ------------------------------------------------------------------------------------ targets


@atheris.instrument_func
def fuzz_split(split: Callable[..., Any], data: bytes) -> None:
    """sidecar.pipeline._otlpwire.split(signal, data, chunk_messages, item_messages, max_depth, max_list),
    called as otlpwire.split calls it (max_list 0: None), for every signal."""
    h = zlib.crc32(data)
    small = (
        pick((1, 2, 3, 5, 8, 16, 100), h, 0),
        pick((1, 2, 3, 4, 6, 10, 40, 1000), h, 3),
        pick((1, 2, 3, 4, 5, 6, 8, 12, 20, 101), h, 6),
        pick((0, 1, 2, 3, 5, 1024), h, 10),
    )
    for signal in SIGNALS:
        parses: bool | None = None  # does protobuf parse data as this signal's request? (asked once, if needed)
        for limits in ((CHUNK_MESSAGES, ITEM_MESSAGES, MAX_DEPTH, MAX_ATTRIBUTES), small):
            try:
                result = split(signal, data, *limits)
            except ValueError as e:  # the request is refused: its framing is invalid, or a header is over the limits
                if str(e).startswith("invalid protobuf"):
                    # otlpwire's contract: invalid exactly when protobuf's parse fails (but for UTF-8).
                    parses = parse(signal, data) if parses is None else parses
                    assert not parses, f"split refused a request protobuf parses: {e}"
                continue
            chunks, items, rejected, kind, count, messages, truncated = result
            assert type(chunks) is list and all(type(c) is bytes for c in chunks), result
            assert 0 <= rejected <= items and 0 <= count <= rejected and kind in (0, 1, 2), result
            assert (kind == 0) == (rejected == 0) and messages >= 0 and truncated >= 0, result
            assert not chunks or items > rejected, result
            # Chunks total at most twice the body (plus the repeated containers' tags and lengths).
            assert sum(map(len, chunks)) <= 2 * len(data) + 48 * len(chunks), (len(data), list(map(len, chunks)))
            if chunks != [data]:  # rewritten: each chunk is a complete request, its framing valid
                for i, chunk in enumerate(chunks):
                    try:
                        split(signal, chunk, ITEM_MESSAGES, ITEM_MESSAGES, SCAN_LIMIT, 0)
                    except ValueError as e:
                        assert not str(e).startswith("invalid protobuf"), f"chunk {i} of {len(chunks)}: {e}"


def parse(signal: int, data: bytes) -> bool:
    try:
        REQUESTS[signal].FromString(data)
    except DecodeError:
        return False
    return True


@atheris.instrument_func
def fuzz_attributes(fn: Callable[..., Any], data: bytes) -> None:
    """exporters.postgres.mapping._fast.{span,log}_attributes(raw, max_attributes, max_value_length)."""
    h = zlib.crc32(data)
    small = (pick((0, 1, 2, 3, 5), h, 0), pick((0, 1, 2, 3, 7, 100), h, 4))
    for limits in ((MAX_ATTRIBUTES, MAX_VALUE_LENGTH), small):
        result = fn(data, *limits)
        if result is not None:
            items, other, cut_attributes, cut_values = result
            assert type(items) is list and type(other) is list, result
            assert cut_attributes >= 0 and cut_values >= 0, result


@atheris.instrument_func
def fuzz_encode(encode: Callable[..., Any], data: bytes) -> None:
    """exporters.postgres.mapping._native.encode_traces (and encode_logs, same arguments) -> tuple | None."""
    h = zlib.crc32(data)
    small = (pick((0, 1, 2, 3, 5), h, 0), pick((0, 1, 2, 3, 7, 100), h, 4))
    for counter, (max_attributes, max_value_length) in ((1, (MAX_ATTRIBUTES, MAX_VALUE_LENGTH)), (h & 0xFFFF, small)):
        # user_analytics rows off / on / left to Python; recent span errors kept per resource
        user_mode, recent = pick((0, 1, 2), h, 8), pick((0, 1, 20), h, 12)
        result = encode(
            data, RECEIVED_NS, ID_HEAD, counter, max_attributes, max_value_length, BOUNDS,
            resolve_resource, resolve_scope, user_mode, recent,
        )  # fmt: skip
        assert result is None or type(result) is tuple, type(result)


@dataclass(frozen=True)
class Target:
    modules: tuple[str, ...]  # where the function may be: the first module that has it
    function: str
    fuzz: Callable[[Callable[..., Any], bytes], None]


# Entry point name (= its corpus directory, tests/fuzz/corpus/<name>/) -> what it fuzzes. An entry point
# whose function does not exist yet is skipped (exit status 100). A new one: a line here, its seeds in
# make_corpus.py CORPORA, and .ci/fuzz runs it.
FAST, NATIVE = "exporters.postgres.mapping._fast", "exporters.postgres.mapping._native"
TARGETS: dict[str, Target] = {
    "split": Target(("sidecar.pipeline._otlpwire",), "split", fuzz_split),
    "span_attributes": Target((FAST,), "span_attributes", fuzz_attributes),
    "log_attributes": Target((FAST,), "log_attributes", fuzz_attributes),
    "encode_traces": Target((FAST, NATIVE), "encode_traces", fuzz_encode),
    "encode_logs": Target((FAST, NATIVE), "encode_logs", fuzz_encode),
}
SKIPPED = 100  # not libFuzzer's 77 (a finding)


def load(name: str) -> Callable[..., Any] | None:
    """The entry point's function, from the build .ci/fuzz made when FUZZ_BUILD_ROOT says where it is."""
    target = TARGETS[name]
    root = os.environ.get("FUZZ_BUILD_ROOT")
    for module_name in target.modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if root:
            assert module.__file__ and module.__file__.startswith(root), f"not the sanitized build: {module.__file__}"
        fn = getattr(module, target.function, None)
        if fn is not None:
            print(f"fuzz_native: {name}: {module_name}.{target.function} from {module.__file__}", flush=True)
            return fn
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in (*TARGETS, "--list"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        print(f"entry points: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    if argv[1] == "--list":
        print("\n".join(TARGETS))
        return 0
    name = argv[1]
    fn = load(name)
    if fn is None:
        where = " or ".join(TARGETS[name].modules)
        print(f"fuzz_native: {name}: skipped: no {TARGETS[name].function} in {where} (yet)")
        return SKIPPED
    fuzz = TARGETS[name].fuzz
    try:  # the harness's call must still fit the function (an entry point being written changes)
        fuzz(fn, b"")
    except TypeError as e:
        print(f"fuzz_native: {name}: fix its fuzz function, the call does not fit: {e}", file=sys.stderr)
        return 2

    def test_one_input(data: bytes) -> None:
        fuzz(fn, data)

    atheris.Setup([argv[0], *argv[2:]], test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    status = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # not sys.exit: LeakSanitizer would report what CPython keeps to the end on purpose
