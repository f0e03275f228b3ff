"""
## Splitting OTLP requests before parsing them (`sidecar.pipeline.otlpwire`)

Parsing a whole OTLP export request with protobuf holds the GIL for as long as it takes: upb
spends 65-160 ns per (sub-)message, so an 18 KB gzip body that inflates to 18 MiB of empty
`ResourceSpans` (9.4 million valid messages) stalls the whole server for seconds.
`split(signal, body)` is a pre-pass over the raw bytes, in C with the GIL released (about 50 ms
for that body; about 120 us, a quarter of the parse, for a 231 KiB request of 500 spans), that:

1. **validates the framing** of the whole request as upb does (tags, wire types, varints,
   lengths, unknown groups, packed arrays, sub-messages at every depth) and raises
   `ValueError("invalid protobuf: ... at byte N")` exactly when `FromString` would fail, except
   for invalid UTF-8 in strings, which the later parse reports;
2. **counts** the items (spans, metric data points, log records) and all sub-messages;
3. **rejects pathological items one by one** instead of the whole request: an item with more
   than `item_messages` (65536) messages in its subtree, itself included, or nested deeper than
   `max_depth` (64 levels, the request being level 1) is left out and reported in `rejected` and
   `reason` ("2 spans rejected: more than 65536 nested values");
4. **splits** the rest into *chunks*: complete requests of about `chunk_messages` (16384, 1-3 ms
   of parsing) messages each, parsed one at a time. Each chunk repeats, byte for byte, the other
   fields of the containers its items belong to (resource, scope, schema_url, metric name, unit
   and metadata, temporality, unknown fields: the *headers*); items keep their order. Parsing
   `b"".join(chunks)` gives the request minus rejected items and empty containers (a container
   cut across chunks appears once per chunk). A request that needs no split and loses nothing
   comes back as `[body]`: the same object, no copy.
5. with `max_list=N` (the mapping's `limits.max_attributes`), **cuts long lists** before any of
   that counts: every attribute list (repeated KeyValue: resource, scope, span, event, link, log
   record, data point, exemplar attributes, metric metadata, kvlist values) and every array keeps
   its first N elements, as the mapping would keep them, so an item or header with 100,000
   attributes is stored cut rather than rejected, and decoding it stays bounded. The elements cut
   are checked as upb would (invalid bytes there still make the request invalid) but count for
   nothing (`item_messages`, `max_depth`, `messages`), and are counted in `truncated`. Elements
   count in wire order across the fields in between, and across repeats that protobuf merges (a
   `resource`, a `KeyValue.value`, a log `body` or an `array_value` sent twice form one message);
   a different member of AnyValue's `value` oneof replaces an array or kvlist, which then counts
   from 0 again. The messages around a cut list get new (minimal) lengths; everything else is
   copied byte for byte, and a request with no list over N gives exactly the result without
   `max_list`.

Limits, and why:

- Headers cannot be dropped alone (their items need them): a header nested deeper than
  `max_depth` or holding more than `item_messages` messages makes the request invalid,
  `ValueError("request rejected: ...")`.
- A chunk is cut once it holds more than max(`chunk_messages`, 2 x its items' header messages)
  messages, headers included: big headers are repeated at most once per as many item messages,
  so parsing work at most doubles. A chunk is also only cut where its items have at least as many
  bytes as the headers the next chunk repeats, so the chunks never total more than twice the
  body; headers so big in bytes that a chunk would first grow past 4 times its budget (a 1 MiB
  schema_url over tiny spans) make the request invalid rather than amplified.
- A metric whose data field is set more than once (`gauge` then `sum`, or `gauge` twice:
  protobuf's merge rules apply) is kept as one indivisible unit with its bytes unchanged; all
  its points count as items and the item limits apply to the metric as a whole.
- Unknown fields, and known fields sent with another wire type, are what upb makes of them:
  opaque bytes, framing checked, no messages counted.
- `max_depth` may not exceed 101: upb refuses anything deeper. An item deeper than that is
  rejected like any other.
- Only messages are counted: an item or header made of millions of scalar or unknown fields
  (~10 ns each to parse) is bounded by the body-size limit, not by these limits.
- An element cut from a list but nested deeper than upb accepts (101 levels) still gets its item
  rejected, or its header's request refused: upb could not parse the request.
- `truncated` counts the elements cut from what the chunks hold (kept items, and the headers of
  containers holding one, once each), not those in rejected items or dropped containers. In the C
  code an item with at most N + 1 messages cannot hold a list over N and is scanned as without
  `max_list`; a bigger one is scanned again, cutting (at most twice the work for it).
- Without the C extension (no compiler at install) the same results come from the pure-Python
  reference implementation below, about 400 times slower (~3 us per message): a fallback for
  correctness, not a defence against hostile bodies.
- Below 64 KiB the C code keeps the GIL: the scan takes microseconds, and getting the GIL back
  could wait a whole switch interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

try:
    from sidecar.pipeline import _otlpwire  # type: ignore[attr-defined]  # the C extension: no stub
except ImportError:  # no C compiler at install time: same results, ~400x slower
    _otlpwire = None

TRACES, METRICS, LOGS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Split:
    """The result of `split`: the chunks to parse one by one, and what the pre-pass saw."""

    chunks: list[bytes]  # each a complete serialized Export{Trace,Metrics,Logs}ServiceRequest
    items: int  # spans | metric data points | log records in the request, rejected ones included
    rejected: int  # items left out of the chunks by the limits
    reason: str  # "" or a sentence about the first kind of rejection, for the client
    messages: int  # protobuf sub-messages in the whole request, all depths (list elements cut: not counted)
    truncated: int = 0  # list elements max_list left out of the chunks' items and headers, all levels


# upb parses at most 100 levels below the top-level message: depth 101 when the request is 1.
SCAN_LIMIT = 101
_MAX_BUDGET = 1 << 40
_LEVELS = 5  # containers: 0 request, 1 resource, 2 scope, 3 metric, 4 metric data
_MASK64 = (1 << 64) - 1

# Message types (same numbers as in _otlpwire.c).
(
    _REQ_TRACES, _RS, _SS, _REQ_LOGS, _RL, _SL, _REQ_METRICS, _RM, _SM, _METRIC,
    _GAUGE, _SUM, _HIST, _EHIST, _SUMMARY,
    _RESOURCE, _ENTITYREF, _SCOPE, _KV, _ANY, _ARRAY, _KVLIST,
    _SPAN, _EVENT, _LINK, _STATUS, _LOG,
    _NDP, _HDP, _EHDP, _BUCKETS, _SDP, _VAQ, _EXEMPLAR,
) = range(1, 35)  # fmt: skip

# Message type -> {field number: sub-message type}; every other field is a scalar or unknown.
_SUB: dict[int, dict[int, int]] = {
    _REQ_TRACES: {1: _RS},
    _RS: {1: _RESOURCE, 2: _SS},
    _SS: {1: _SCOPE, 2: _SPAN},
    _REQ_LOGS: {1: _RL},
    _RL: {1: _RESOURCE, 2: _SL},
    _SL: {1: _SCOPE, 2: _LOG},
    _REQ_METRICS: {1: _RM},
    _RM: {1: _RESOURCE, 2: _SM},
    _SM: {1: _SCOPE, 2: _METRIC},
    _METRIC: {5: _GAUGE, 7: _SUM, 9: _HIST, 10: _EHIST, 11: _SUMMARY, 12: _KV},
    _GAUGE: {1: _NDP},
    _SUM: {1: _NDP},
    _HIST: {1: _HDP},
    _EHIST: {1: _EHDP},
    _SUMMARY: {1: _SDP},
    _RESOURCE: {1: _KV, 3: _ENTITYREF},
    _ENTITYREF: {},
    _SCOPE: {3: _KV},
    _KV: {2: _ANY},
    _ANY: {5: _ARRAY, 6: _KVLIST},
    _ARRAY: {1: _ANY},
    _KVLIST: {1: _KV},
    _SPAN: {9: _KV, 11: _EVENT, 13: _LINK, 15: _STATUS},
    _EVENT: {3: _KV},
    _LINK: {4: _KV},
    _STATUS: {},
    _LOG: {5: _ANY, 6: _KV},
    _NDP: {5: _EXEMPLAR, 7: _KV},
    _HDP: {8: _EXEMPLAR, 9: _KV},
    _EHDP: {1: _KV, 8: _BUCKETS, 9: _BUCKETS, 11: _EXEMPLAR},
    _BUCKETS: {},
    _SDP: {6: _VAQ, 7: _KV},
    _VAQ: {},
    _EXEMPLAR: {7: _KV},
}
_DATA = frozenset({_GAUGE, _SUM, _HIST, _EHIST, _SUMMARY})
# Container type -> the field numbers holding its children (containers or items).
_STRUCTURAL: dict[int, frozenset[int]] = {
    **dict.fromkeys((_REQ_TRACES, _REQ_LOGS, _REQ_METRICS), frozenset({1})),
    **dict.fromkeys((_RS, _SS, _RL, _SL, _RM, _SM), frozenset({2})),
    _METRIC: frozenset({5, 7, 9, 10, 11}),
    **dict.fromkeys(_DATA, frozenset({1})),
}
# Message type -> the list `max_list` truncates: its repeated KeyValue field (ArrayValue: its values).
_LIST = {
    _RESOURCE: 1, _SCOPE: 3, _METRIC: 12, _KVLIST: 1, _ARRAY: 1, _SPAN: 9, _EVENT: 3, _LINK: 4, _LOG: 6,
    _NDP: 7, _HDP: 9, _EHDP: 1, _SDP: 7, _EXEMPLAR: 7,
}  # fmt: skip
# Singular message fields leading to lists: protobuf merges a repeat into the first occurrence, so the
# lists of both form one list and their elements are counted together.
_CHAINED = frozenset(
    {(_RS, 1), (_RL, 1), (_RM, 1), (_SS, 1), (_SL, 1), (_SM, 1), (_KV, 2), (_LOG, 5), (_ANY, 5), (_ANY, 6)}
)
# AnyValue's `value` oneof: member field number -> wire type. A member other than the last one seen
# replaces it: the array or kvlist seen before is gone and a new one counts from 0.
_ONEOF = {1: 2, 2: 0, 3: 0, 4: 1, 5: 2, 6: 2, 7: 2, 8: 0}
# The longest chain of merged messages: KeyValue or LogRecord -> AnyValue -> ArrayValue or KeyValueList.
_CHAIN = 3

# Packed repeated scalars upb checks: fixed64/double need a multiple of 8 bytes, uint64 varints.
_PK_FIXED64, _PK_VARINT = 1, 2
_PACKED = {(_HDP, 6): _PK_FIXED64, (_HDP, 7): _PK_FIXED64, (_BUCKETS, 2): _PK_VARINT}

# (signal, data, chunk_messages, item_messages, max_depth, max_list or 0) ->
# (chunks, items, rejected, first rejection kind, items rejected for it, messages, truncated)
_Scanner = Callable[[int, bytes, int, int, int, int], tuple[list[bytes], int, int, int, int, int, int]]

_K_DEPTH, _K_SIZE = 1, 2
_NODE, _ITEM, _AITEM = 0, 1, 2  # chunk entries: a header, item bytes in the body, a rewritten item
_NOUNS = {
    TRACES: ("span", "spans"),
    METRICS: ("metric data point", "metric data points"),
    LOGS: ("log record", "log records"),
}


def split(
    signal: int,
    data: bytes,
    *,
    chunk_messages: int = 16384,
    item_messages: int = 65536,
    max_depth: int = 64,
    max_list: int | None = None,
) -> Split:
    """Validate, count and split an OTLP export request (see the module docstring).

    max_list: keep only the first max_list elements of every attribute list and array (None: all).
    Raises ValueError when the framing is invalid, or when a resource, scope or metric header is over
    the limits (it would be copied into every chunk of its items). Bytes-like data is copied to bytes.
    """
    return _split(_scan, signal, data, chunk_messages, item_messages, max_depth, max_list)


def _split(
    scan: _Scanner,
    signal: int,
    data: bytes,
    chunk_messages: int,
    item_messages: int,
    max_depth: int,
    max_list: int | None = None,
) -> Split:
    if signal not in _NOUNS:
        raise ValueError(f"unknown signal {signal}")
    if not (1 <= chunk_messages <= _MAX_BUDGET and 1 <= item_messages <= _MAX_BUDGET):
        raise ValueError("chunk_messages and item_messages must be between 1 and 2**40")
    if not 1 <= max_depth <= SCAN_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {SCAN_LIMIT}")
    if max_list is not None and not 1 <= max_list <= _MAX_BUDGET:
        raise ValueError("max_list must be None or between 1 and 2**40")
    if not isinstance(data, bytes):
        data = bytes(data)
    chunks, items, rejected, kind, count, messages, truncated = scan(
        signal, data, chunk_messages, item_messages, max_depth, max_list or 0
    )
    reason = ""
    if kind:
        what = (
            f"nested more than {max_depth} levels" if kind == _K_DEPTH else f"more than {item_messages} nested values"
        )
        reason = f"{count} {_NOUNS[signal][count != 1]} rejected: {what}"
    return Split(chunks, items, rejected, reason, messages, truncated)


# ------------------------------------------------------------------------ reference implementation


class _Abort(Exception):
    """An item nests deeper than upb accepts: stop scanning it (it is rejected)."""


def _varint(b: bytes, p: int, end: int) -> tuple[int, int, int]:
    """(status, value, position after it); status 1: the buffer ends first, 2: over 10 bytes."""
    v = 0
    for i in range(10):
        if p >= end:
            return 1, 0, p
        x = b[p]
        p += 1
        v |= (x & 0x7F) << (7 * i)
        if x < 0x80:
            return 0, v & _MASK64, p
    return 2, 0, p


def _invalid(what: str, pos: int) -> ValueError:
    return ValueError(f"invalid protobuf: {what} at byte {pos}")


class _Scan:
    """One split() call: the twin of the C `Ctx` and the functions working on it."""

    def __init__(
        self, signal: int, data: bytes, chunk_messages: int, item_messages: int, max_depth: int, max_list: int
    ) -> None:
        self.buf = data
        self.n = len(data)
        self.signal = signal
        self.chunk_messages = chunk_messages
        self.item_messages = item_messages
        self.max_depth = max_depth
        self.max_list = max_list  # 0: no truncation
        self.items = self.rejected = self.messages = self.kept = self.truncated = 0
        self.first_kind = self.first_count = 0
        self.dropped = self.identity = False
        # the container open at each level: header bytes, header messages, id, field number
        self.hdr = [bytearray() for _ in range(_LEVELS)]
        self.hm = [0] * _LEVELS
        self.id = [0] * _LEVELS
        self.node_fn = [0] * _LEVELS
        self.serial = 0
        # the chunk being planned: [kind, level, fn, off, len] entries, node headers in arena
        self.ent: list[list[int]] = []
        self.arena = bytearray()
        self.w = self.nitems = self.ibytes = 0
        self.open_id = [0] * _LEVELS
        self.chunks: list[bytes] = []
        # the message being rewritten by scan_trunc: output, input copied to it up to `copied`,
        # open messages [output position of the length, its bytes, input end, changed], cuts made
        self.out = bytearray()
        self.copied = 0
        self.frames: list[list] = []
        self.pending = 0

    # -------------------------------------------------------------------------------- framing

    def read_field(self, p: int, end: int, in_group: bool, gfn: int) -> tuple[int, int, int, int, int, int, int]:
        """(status, start, body, cstart, end, fn, wt): status 0 a field, 2 the group's end tag."""
        b = self.buf
        start = p
        st, tag, p = _varint(b, p, end)
        if st == 1:
            raise _invalid("truncated tag", start)
        if st == 2 or p - start > 5 or tag > 0xFFFFFFFF:
            raise _invalid("invalid tag", start)
        fn = tag >> 3
        wt = tag & 7
        body = cstart = p
        if wt > 5:
            raise _invalid(f"wire type {wt}", start)
        if wt == 4:
            if not in_group:
                raise _invalid("unexpected end-group tag", start)
            if fn != gfn:
                raise _invalid("mismatched end-group tag", start)
            return 2, start, body, cstart, p, fn, wt
        if not in_group and fn == 0:
            raise _invalid("field number 0", start)
        if wt == 0:
            st, _, p = _varint(b, p, end)
            if st:
                raise _invalid("truncated varint" if st == 1 else "varint longer than 10 bytes", start)
        elif wt == 1:
            if end - p < 8:
                raise _invalid("truncated fixed64 field", start)
            p += 8
        elif wt == 5:
            if end - p < 4:
                raise _invalid("truncated fixed32 field", start)
            p += 4
        elif wt == 2:  # upb reads lengths, like tags, in at most 5 bytes
            st, ln, p = _varint(b, p, end)
            if st == 1:
                raise _invalid("truncated length-delimited field", start)
            if st == 2 or p - body > 5:
                raise _invalid("invalid length", start)
            if ln > end - p or ln >= 0x7FFFFFFF:
                raise _invalid("truncated length-delimited field", start)
            cstart = p
            p += ln
        return 0, start, body, cstart, p, fn, wt

    def enter(self, st: list[int], nd: int) -> None:
        """Going one level deeper, to depth nd. st = [msgs, points, maxd, header]."""
        if nd > st[2]:
            st[2] = nd
        if st[3]:
            if nd > self.max_depth:
                raise ValueError(
                    f"request rejected: resource, scope or metric nested more than {self.max_depth} levels"
                )
        elif nd > SCAN_LIMIT:
            raise _Abort

    def scan_group(self, p: int, end: int, gfn: int, tagpos: int, depth: int, st: list[int]) -> int:
        """An unknown group's content from p to its end tag; returns the position after it."""
        while p < end:
            status, start, body, _, fend, fn, wt = self.read_field(p, end, True, gfn)
            if status == 2:
                return fend
            if wt == 3:
                self.enter(st, depth + 1)
                p = self.scan_group(body, end, fn, start, depth + 1, st)
            else:
                p = fend
        raise _invalid("unterminated group", tagpos)

    def packed_ok(self, p: int, end: int, kind: int) -> bool:
        if kind == _PK_FIXED64:
            return (end - p) % 8 == 0
        while p < end:
            status, _, p = _varint(self.buf, p, end)
            if status:
                return False
        return True

    def field_deep(self, t: int, depth: int, f: tuple, end: int, st: list[int]) -> int:
        """Validates and counts one field of a message of type t; returns the position after it."""
        _, start, body, cstart, fend, fn, wt = f
        if wt == 2:
            sub = _SUB[t].get(fn)
            if sub:
                if t in _DATA:
                    st[1] += 1
                self.enter(st, depth + 1)
                st[0] += 1
                self.scan_msg(cstart, fend, sub, depth + 1, st)
            else:
                pk = _PACKED.get((t, fn))
                if pk and not self.packed_ok(cstart, fend, pk):
                    raise _invalid("malformed packed repeated field", start)
            return fend
        if wt == 3:
            self.enter(st, depth + 1)
            return self.scan_group(body, end, fn, start, depth + 1, st)
        return fend

    def scan_msg(self, p: int, end: int, t: int, depth: int, st: list[int]) -> None:
        """All fields of a message of type t (depth `depth`) occupying exactly [p, end)."""
        while p < end:
            p = self.field_deep(t, depth, self.read_field(p, end, False, 0), end, st)

    # ----------------------------------------------------------------------------- truncation

    def scan_trunc(self, p: int, end: int, t: int, depth: int, st: list[int], ls: list[list[int]], si: int) -> None:
        """scan_msg with max_list: list elements past it are checked, not counted, and cut out.

        ls[si] = [elements of this message's list so far, AnyValue: its oneof case]; ls[si + 1:]: the
        same for the messages merged into it (_CHAINED). Its field is open in self.frames."""
        lf = _LIST.get(t, 0)
        while p < end:
            f = self.read_field(p, end, False, 0)
            _, start, body, cstart, fend, fn, wt = f
            if t == _ANY and _ONEOF.get(fn) == wt and ls[si][1] != fn:
                ls[si][1] = fn  # another member of the oneof replaces the array or kvlist
                for k in range(si + 1, _CHAIN):
                    ls[k] = [0, 0]
            if wt == 2:
                sub = _SUB[t].get(fn)
                if sub:
                    if t in _DATA:
                        st[1] += 1
                    cls, csi = None, 0
                    if fn == lf:
                        ls[si][0] += 1
                        if ls[si][0] > self.max_list:
                            self.drop(f, sub, depth, st)
                            self.out += self.buf[self.copied : start]
                            self.copied = fend
                            self.frames[-1][3] = True
                            self.pending += 1
                            p = fend
                            continue
                    elif (t, fn) in _CHAINED and si + 1 < _CHAIN:
                        cls, csi = ls, si + 1
                    if cls is None:
                        cls = [[0, 0] for _ in range(_CHAIN)]
                    self.enter(st, depth + 1)
                    st[0] += 1
                    self.open_frame(f)
                    self.scan_trunc(cstart, fend, sub, depth + 1, st, cls, csi)
                    self.close_frame()
                else:
                    pk = _PACKED.get((t, fn))
                    if pk and not self.packed_ok(cstart, fend, pk):
                        raise _invalid("malformed packed repeated field", start)
                p = fend
            elif wt == 3:
                self.enter(st, depth + 1)
                p = self.scan_group(body, end, fn, start, depth + 1, st)
            else:
                p = fend

    def drop(self, f: tuple, sub: int, depth: int, st: list[int]) -> None:
        """Checks the framing of a list element to be cut (as upb would), counting nothing: deeper
        than upb accepts, an item is aborted and a header invalid (max_depth does not apply)."""
        skip = [0, 0, depth + 1, 0]
        try:
            self.enter(skip, depth + 1)
            self.scan_msg(f[3], f[4], sub, depth + 1, skip)
        except _Abort:
            if st[3]:
                raise ValueError(
                    f"request rejected: resource, scope or metric nested more than {self.max_depth} levels"
                ) from None
            raise

    def open_frame(self, f: tuple) -> None:
        self.frames.append([len(self.out) + f[2] - self.copied, f[3] - f[2], f[4], False])

    def close_frame(self) -> bool:
        """Closes the innermost open message: if something in it was cut, writes it out with its new
        length (minimal varint). Whether it changed."""
        lpos, lbytes, end, changed = self.frames.pop()
        if changed:
            self.out += self.buf[self.copied : end]
            self.copied = end
            self.out[lpos : lpos + lbytes] = _encode_varint(len(self.out) - lpos - lbytes)
            if self.frames:
                self.frames[-1][3] = True
        return changed

    def trunc_field(
        self, f: tuple, sub: int, depth: int, st: list[int], ls: list[list[int]], si: int, out: bytearray
    ) -> bool:
        """scan_trunc of the sub-message in field f; if something was cut, appends the field rewritten
        to `out` and returns True (self.pending: how many elements), else leaves `out` alone."""
        self.out = out
        self.copied = f[1]
        self.frames = []
        self.pending = 0
        self.open_frame(f)
        self.scan_trunc(f[3], f[4], sub, depth, st, ls, si)
        return self.close_frame()

    # --------------------------------------------------------------------------------- chunks

    def finish_chunk(self) -> None:
        """Writes the planned chunk (re-computing container lengths) and starts a new one."""
        ent = self.ent
        sizes = [0] * len(ent)
        total = len(self.hdr[0]) if not self.chunks else 0  # the request's own fields: first chunk
        stack: list[int] = []
        for i in range(len(ent) + 1):
            level = ent[i][1] if i < len(ent) else 0
            while stack and ent[stack[-1]][1] >= level:
                j = stack.pop()
                fs = 1 + len(_encode_varint(sizes[j])) + sizes[j]
                if stack:
                    sizes[stack[-1]] += fs
                else:
                    total += fs
            if i == len(ent):
                break
            kind, _, _, _, ln = ent[i]
            if kind == _NODE:
                sizes[i] = ln
                stack.append(i)
            elif stack:
                sizes[stack[-1]] += ln
            else:
                total += ln
        out = bytearray(self.hdr[0]) if not self.chunks else bytearray()
        for i, (kind, _, fn, off, ln) in enumerate(ent):
            if kind == _NODE:
                out.append((fn << 3) | 2)
                out += _encode_varint(sizes[i])
                out += self.arena[off : off + ln]
            elif kind == _AITEM:
                out += self.arena[off : off + ln]
            else:
                out += self.buf[off : off + ln]
        assert len(out) == total
        self.chunks.append(bytes(out))
        self.ent = []
        self.arena = bytearray()
        self.w = self.nitems = self.ibytes = 0
        self.open_id = [0] * _LEVELS

    def plan(self, L: int, s: int, e: int, cost: int, rew: bytearray | None = None) -> None:
        """Puts a kept item buf[s:e] (under the containers open at levels 1..L) into a chunk; rew:
        the item rewritten without the list elements cut, if any.

        A new chunk starts past max(chunk_messages, 2 * header messages), but only once the chunk's
        items have as many bytes as the headers the new chunk copies again (see _otlpwire.c plan()).
        """
        k = 1
        while k <= L and self.open_id[k] == self.id[k]:
            k += 1
        H = sum(self.hm[1 : L + 1])
        add = sum(self.hm[k : L + 1])
        again = sum(len(self.hdr[lv]) for lv in range(1, k))
        lim = max(self.chunk_messages, 2 * H)
        if self.nitems > 0 and self.w + add + cost > lim:
            if self.ibytes >= again:
                self.finish_chunk()
                k = 1
                add = H
            elif self.w + add + cost > 4 * lim:
                raise ValueError("request rejected: resource, scope or metric headers too large to split")
        for lv in range(k, L + 1):
            self.ent.append([_NODE, lv, self.node_fn[lv], len(self.arena), len(self.hdr[lv])])
            self.arena += self.hdr[lv]
            self.open_id[lv] = self.id[lv]
        for lv in range(L + 1, _LEVELS):
            self.open_id[lv] = 0
        last = self.ent[-1] if self.ent else None
        if rew is not None:
            self.ent.append([_AITEM, L + 1, 0, len(self.arena), len(rew)])
            self.arena += rew
        elif last and last[0] == _ITEM and last[1] == L + 1 and last[3] + last[4] == s:
            last[4] += e - s
        else:
            self.ent.append([_ITEM, L + 1, 0, s, e - s])
        self.w += add + cost
        self.ibytes += e - s if rew is None else len(rew)
        self.nitems += 1
        self.kept += 1

    # ----------------------------------------------------------------------------- containers

    def reject(self, kind: int, n: int) -> None:
        self.rejected += n
        if not self.first_kind:
            self.first_kind = kind
        if kind == self.first_kind:
            self.first_count += n

    def item_kind(self, aborted: bool, st: list[int]) -> int:
        if aborted or st[2] > self.max_depth:
            return _K_DEPTH
        if st[0] > self.item_messages:
            return _K_SIZE
        return 0

    def scan_item(self, t: int, f: tuple, depth: int) -> tuple[bool, list[int], bytearray | None]:
        """(aborted, stats, the item rewritten if list elements were cut: self.pending of them)."""
        st = [1, 0, depth, 0]
        rew = None
        try:
            if self.max_list:
                out = bytearray()
                if self.trunc_field(f, t, depth, st, [[0, 0] for _ in range(_CHAIN)], 0, out):
                    rew = out
            else:
                self.scan_msg(f[3], f[4], t, depth, st)
        except _Abort:
            return True, st, None
        return False, st, rew

    def item(self, t: int, f: tuple, depth: int, L: int) -> None:
        aborted, st, rew = self.scan_item(t, f, depth)
        self.messages += st[0]
        self.items += 1
        kind = self.item_kind(aborted, st)
        if kind:
            self.reject(kind, 1)
        else:
            self.plan(L, f[1], f[4], st[0], rew)
            if rew is not None:
                self.truncated += self.pending

    def unit(self, f: tuple, depth: int) -> None:
        """A Metric whose data oneof is set more than once: one indivisible item, bytes unchanged
        (but for the list elements over max_list)."""
        aborted, st, rew = self.scan_item(_METRIC, f, depth)
        self.messages += st[0]
        self.items += st[1]
        if st[1] == 0:
            self.dropped = True
            return
        kind = self.item_kind(aborted, st)
        if kind:
            self.reject(kind, st[1])
        else:
            self.plan(2, f[1], f[4], st[0], rew)
            if rew is not None:
                self.truncated += self.pending

    def metric(self, mf: tuple, depth: int) -> None:
        skip = [0, 0, depth, 0]
        q, end = mf[3], mf[4]
        occ = 0
        while q < end and occ < 2:
            _, start, body, _, fend, fn, wt = self.read_field(q, end, False, 0)
            if wt == 3:
                try:
                    q = self.scan_group(body, end, fn, start, depth + 1, skip)
                except _Abort:
                    occ = 2  # nested too deep to find its end: let unit() reject it
                continue
            if wt == 2 and fn in _STRUCTURAL[_METRIC]:
                occ += 1
            q = fend
        if occ >= 2:
            self.unit(mf, depth)
        else:
            self.container(3, _METRIC, mf[3], end, depth, 2)

    def children(self, level: int, t: int, p: int, end: int, depth: int) -> None:
        """Pass 2 over a container: its children, in order. Header fields were checked by pass 1."""
        skip = [0, 0, depth, 1]
        structural = _STRUCTURAL[t]
        while p < end:
            f = self.read_field(p, end, False, 0)
            _, start, body, cstart, fend, fn, wt = f
            if wt == 3:
                p = self.scan_group(body, end, fn, start, depth + 1, skip)
                continue
            p = fend
            if wt != 2 or fn not in structural:
                continue
            sub = _SUB[t][fn]
            if t in (_SS, _SL) or t in _DATA:
                self.item(sub, f, depth + 1, level)
            elif t == _SM:
                self.metric(f, depth + 1)
            else:
                self.container(level + 1, sub, cstart, fend, depth + 1, fn)

    def header(self, level: int, t: int, p: int, end: int, depth: int, st: list[int]) -> int:
        """Pass 1 over a container: check and count its header fields, copy them to hdr[level]
        (with max_list: without the list elements over it). Returns how many elements were cut."""
        h = self.hdr[level] = bytearray()
        structural = _STRUCTURAL[t]
        ls = [[0, 0] for _ in range(_CHAIN)]  # the container's lists (Metric.metadata) and merged ones
        lf = _LIST.get(t, 0)
        cut = 0
        while p < end:
            f = self.read_field(p, end, False, 0)
            if f[6] == 2 and f[5] in structural:
                p = f[4]
                continue
            sub = _SUB[t].get(f[5]) if self.max_list and f[6] == 2 else None
            if sub:
                cls, csi = None, 0
                if f[5] == lf:
                    ls[0][0] += 1
                    if ls[0][0] > self.max_list:
                        self.drop(f, sub, depth, st)
                        cut += 1
                        p = f[4]
                        continue
                elif (t, f[5]) in _CHAINED:
                    cls, csi = ls, 1
                if cls is None:
                    cls = [[0, 0] for _ in range(_CHAIN)]
                self.enter(st, depth + 1)
                st[0] += 1
                if self.trunc_field(f, sub, depth + 1, st, cls, csi, h):
                    cut += self.pending
                else:
                    h += self.buf[f[1] : f[4]]
                p = f[4]
                continue
            fe = self.field_deep(t, depth, f, end, st)
            h += self.buf[f[1] : fe]
            p = fe
        return cut

    def container(self, level: int, t: int, p: int, end: int, depth: int, fn: int) -> None:
        st = [0, 0, depth, 1]
        kept = self.kept
        if depth > self.max_depth:
            raise ValueError(f"request rejected: resource, scope or metric nested more than {self.max_depth} levels")
        self.messages += 1
        if p == end:
            self.dropped = True
            return
        cut = self.header(level, t, p, end, depth, st)
        self.messages += st[0]
        if 1 + st[0] > self.item_messages:
            raise ValueError(
                f"request rejected: resource, scope or metric with more than {self.item_messages} nested values"
            )
        self.hm[level] = 1 + st[0]
        self.serial += 1
        self.id[level] = self.serial
        self.node_fn[level] = fn
        self.children(level, t, p, end, depth)
        if self.kept == kept:
            self.dropped = True
        else:
            self.truncated += cut

    def run(self) -> tuple[list[bytes], int, int, int, int, int, int]:
        t = (_REQ_TRACES, _REQ_METRICS, _REQ_LOGS)[self.signal]
        st = [0, 0, 1, 1]
        self.header(0, t, 0, self.n, 1, st)
        self.messages += st[0]
        self.children(0, t, 0, self.n, 1)
        if self.nitems > 0:
            if not self.chunks and not self.rejected and not self.dropped and not self.truncated:
                self.chunks = [self.buf]
            else:
                self.finish_chunk()
        return (
            self.chunks,
            self.items,
            self.rejected,
            self.first_kind,
            self.first_count,
            self.messages,
            self.truncated,
        )


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _scan_python(
    signal: int, data: bytes, chunk_messages: int, item_messages: int, max_depth: int, max_list: int = 0
) -> tuple[list[bytes], int, int, int, int, int, int]:
    """The reference implementation: same tuple as `_otlpwire.split`."""
    return _Scan(signal, data, chunk_messages, item_messages, max_depth, max_list).run()


_scan_c: _Scanner | None = _otlpwire.split if _otlpwire is not None else None
_scan: _Scanner = _scan_c or _scan_python
IMPLEMENTATION = "c" if _otlpwire is not None else "python"
