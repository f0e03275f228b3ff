"""Summarise a py-spy `--format raw` profile of otelpg into where-the-time-goes categories.

Each sample is attributed to the innermost frame that matches a category (so json_dumps called
from map_traces counts as JSON encoding, not mapping). Idle samples are not recorded by py-spy
unless --idle, so percentages are of otelpg's busy time.

    /work/venv/bin/python tests/bench/_profile.py profile.txt
"""

from __future__ import annotations

import sys
from collections import Counter

# (label, substrings of a frame "function (file:line)"), in priority order for one frame.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON encoding (json_dumps, orjson)", ("json_dumps", "orjson", "json_float")),
    ("mapping: attributes/AnyValue -> dict", ("attributes (exporters/", "any_value (exporters/", "_link (exporters/")),
    ("mapping: ids (uuid7, UUID, hex)", ("uuid7", "trace_uuid", "uuid_utils")),
    ("mapping: timestamps (to_datetime)", ("to_datetime",)),
    ("mapping: resources/scopes", ("resource_row", "scope_row", "scope_info", "json_dumps_sorted")),
    ("mapping: row building (map_* body)", ("exporters/postgres/mapping/",)),
    ("protobuf decode (ParseFromString)", ("_decode_protobuf", "decode_request", "ParseFromString")),
    ("receiver: item count, response encode", ("receivers/signals.py", "encode_message", "SerializeToString")),
    ("Prometheus aggregation (observe_*)", ("exporters/prometheus/",)),
    ("self-telemetry (prometheus_client)", ("prometheus_client/",)),
    ("COPY: record encoding + send (asyncpg copy_in)", ("copy_records_to_table", "_copy_in", "copy_in")),
    (
        "writer/batcher (merge, resources, bookkeeping)",
        ("exporters/postgres/writer.py", "exporters/postgres/batcher.py", "exporters/postgres/exporter.py"),
    ),
    ("asyncpg other (pool, protocol, transactions)", ("asyncpg/",)),
    ("HTTP body read (aiohttp StreamReader)", ("_read_body", "_read_limited", "iter_chunked", "streams.py")),
    ("aiohttp server (parse, dispatch, respond)", ("aiohttp/",)),
    ("OTLP receivers (otlp_http/otlp_grpc glue)", ("sidecar/receivers/",)),
    ("gRPC server (grpc.aio)", ("grpc/", "grpc._cython", "_cython/")),
    ("asyncio event loop (scheduling, callbacks, selector)", ("asyncio/", "selectors.py")),
    ("threads, GC, other", ("",)),
)


def parse(text: str) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        frames, _, count = line.rpartition(" ")
        try:
            stacks[tuple(frames.split(";"))] += int(count)
        except ValueError:
            continue
    return stacks


# Whole-stack rules, checked first: work done on behalf of a caller that the leaf-first rules
# would file elsewhere (the /metrics exposition runs prometheus_client code in a worker thread).
STACK_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("admin /metrics rendering (scrapes)", ("exporters/prometheus/exposition.py", "generate_latest")),
)


def categorize(stack: tuple[str, ...]) -> str:
    for label, needles in STACK_RULES:
        if any(n in frame for frame in stack for n in needles):
            return label
    for frame in reversed(stack):
        for label, needles in CATEGORIES:
            if label == CATEGORIES[-1][0]:
                continue
            if any(n in frame for n in needles):
                return label
    return CATEGORIES[-1][0]


def breakdown(stacks: Counter[tuple[str, ...]]) -> tuple[int, Counter[str]]:
    total = sum(stacks.values())
    by: Counter[str] = Counter()
    for stack, n in stacks.items():
        by[categorize(stack)] += n
    return total, by


def inclusive(stacks: Counter[tuple[str, ...]], needle: str) -> int:
    return sum(n for stack, n in stacks.items() if any(needle in f for f in stack))


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for prefix in ("site-packages/",):
        if prefix in where:
            where = where.split(prefix, 1)[1]
    return f"{name} ({where})"


def summarize(text: str, top: int = 12) -> str:
    stacks = parse(text)
    total, by = breakdown(stacks)
    if not total:
        return "no samples"
    lines = [f"{total} samples (busy time only)"]
    for label, n in by.most_common():
        lines.append(f"{100 * n / total:5.1f}%  {label}")
    lines.append("inclusive (callees included):")
    for label, needle in (("decode_request", "decode_request"), ("map_* (all mapping)", "exporters/postgres/mapping/"),
                          ("Writer.write (COPY + commit, on the loop)", "Writer.write"),
                          ("observe_* (Prometheus aggregation)", "exporters/prometheus/"),
                          ("aiohttp request handling", "aiohttp/web_protocol.py"),
                          ("asyncpg", "asyncpg/")):  # fmt: skip
        n = inclusive(stacks, needle)
        if n:
            lines.append(f"{100 * n / total:5.1f}%  {label}")
    leaves: Counter[str] = Counter()
    for stack, n in stacks.items():
        leaves[_short(stack[-1])] += n
    lines.append(f"top {top} leaf frames (self time):")
    for frame, n in leaves.most_common(top):
        lines.append(f"{100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(f"== {path}")
        with open(path) as f:
            print(summarize(f.read()))
