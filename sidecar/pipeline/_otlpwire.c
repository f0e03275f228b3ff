/* sidecar.pipeline._otlpwire: the C implementation of sidecar.pipeline.otlpwire.split().
 *
 * What it does, its limits and why are documented in sidecar/pipeline/otlpwire.py, which also holds the
 * pure-Python reference implementation of the same algorithm: the two must return identical
 * results and raise identical errors (tests/unit/test_otlpwire.py checks it on generated and
 * random input). Keep them in step: the functions doing the work have same-named twins there;
 * what is only here is speed (tables, fast paths for one-byte tags and lengths, loops instead
 * of recursion in scan_msg and scan_trunc, an item scanned with max_list only when it has more
 * than max_list + 1 messages: scan_item) and memory management.
 *
 * Safety: every read is bounds-checked against the end of the enclosing message; nesting is
 * bounded by SCAN_LIMIT (upb's own depth limit) for items and list elements cut from headers, and
 * by max_depth (<= SCAN_LIMIT) for the rest of headers, so the stacks of scan_msg and scan_trunc
 * and scan_group's recursion cannot overflow; container() recursion is at most LEVELS deep; a
 * rewritten message is never longer than the original, whose size is reserved before writing it;
 * all memory is malloc'd and freed here; no Python API is used while the GIL is released (the
 * bytes object is immutable and the caller keeps it alive).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* upb parses at most 100 levels below the top-level message: depth 101 when the request is 1. */
#define SCAN_LIMIT 101
/* Levels of containers: 0 request, 1 resource, 2 scope, 3 metric, 4 metric data. */
#define LEVELS 5
/* Below this many bytes the scan takes a few microseconds: keep the GIL rather than risk waiting
 * a switch interval to get it back. */
#define GIL_THRESHOLD 65536
#define MAX_BUDGET ((long long)1 << 40)

#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

/* Message types. */
enum {
    T_NONE,
    T_REQ_TRACES, T_RS, T_SS, T_REQ_LOGS, T_RL, T_SL, T_REQ_METRICS, T_RM, T_SM, T_METRIC,
    T_GAUGE, T_SUM, T_HIST, T_EHIST, T_SUMMARY,
    T_RESOURCE, T_ENTITYREF, T_SCOPE, T_KV, T_ANY, T_ARRAY, T_KVLIST,
    T_SPAN, T_EVENT, T_LINK, T_STATUS, T_LOG,
    T_NDP, T_HDP, T_EHDP, T_BUCKETS, T_SDP, T_VAQ, T_EXEMPLAR,
};

enum { PK_NONE, PK_FIXED64, PK_VARINT };
enum { K_NONE, K_DEPTH, K_SIZE };
enum { ENT_NODE, ENT_ITEM, ENT_AITEM }; /* a header, item bytes in buf, a rewritten item in the arena */

enum {
    E_OK, E_NOMEM, E_TRUNC_TAG, E_BAD_TAG, E_WIRETYPE, E_END_GROUP, E_MISMATCH_GROUP, E_FIELD0,
    E_TRUNC_VARINT, E_LONG_VARINT, E_TRUNC_FIXED64, E_TRUNC_FIXED32, E_TRUNC_LEN,
    E_UNTERMINATED_GROUP, E_PACKED, E_BAD_LEN, E_HDR_DEPTH, E_HDR_SIZE, E_AMPLIFY,
};

/* The sub-message type of field `fn` (length-delimited) in a message of type `t`, or T_NONE. */
static int sub_type(int t, uint32_t fn) {
    switch (t) {
    case T_REQ_TRACES: return fn == 1 ? T_RS : T_NONE;
    case T_RS: return fn == 1 ? T_RESOURCE : fn == 2 ? T_SS : T_NONE;
    case T_SS: return fn == 1 ? T_SCOPE : fn == 2 ? T_SPAN : T_NONE;
    case T_REQ_LOGS: return fn == 1 ? T_RL : T_NONE;
    case T_RL: return fn == 1 ? T_RESOURCE : fn == 2 ? T_SL : T_NONE;
    case T_SL: return fn == 1 ? T_SCOPE : fn == 2 ? T_LOG : T_NONE;
    case T_REQ_METRICS: return fn == 1 ? T_RM : T_NONE;
    case T_RM: return fn == 1 ? T_RESOURCE : fn == 2 ? T_SM : T_NONE;
    case T_SM: return fn == 1 ? T_SCOPE : fn == 2 ? T_METRIC : T_NONE;
    case T_METRIC:
        switch (fn) {
        case 5: return T_GAUGE;
        case 7: return T_SUM;
        case 9: return T_HIST;
        case 10: return T_EHIST;
        case 11: return T_SUMMARY;
        case 12: return T_KV;
        default: return T_NONE;
        }
    case T_GAUGE: case T_SUM: return fn == 1 ? T_NDP : T_NONE;
    case T_HIST: return fn == 1 ? T_HDP : T_NONE;
    case T_EHIST: return fn == 1 ? T_EHDP : T_NONE;
    case T_SUMMARY: return fn == 1 ? T_SDP : T_NONE;
    case T_RESOURCE: return fn == 1 ? T_KV : fn == 3 ? T_ENTITYREF : T_NONE;
    case T_SCOPE: return fn == 3 ? T_KV : T_NONE;
    case T_KV: return fn == 2 ? T_ANY : T_NONE;
    case T_ANY: return fn == 5 ? T_ARRAY : fn == 6 ? T_KVLIST : T_NONE;
    case T_ARRAY: return fn == 1 ? T_ANY : T_NONE;
    case T_KVLIST: return fn == 1 ? T_KV : T_NONE;
    case T_SPAN:
        switch (fn) {
        case 9: return T_KV;
        case 11: return T_EVENT;
        case 13: return T_LINK;
        case 15: return T_STATUS;
        default: return T_NONE;
        }
    case T_EVENT: return fn == 3 ? T_KV : T_NONE;
    case T_LINK: return fn == 4 ? T_KV : T_NONE;
    case T_LOG: return fn == 5 ? T_ANY : fn == 6 ? T_KV : T_NONE;
    case T_NDP: return fn == 5 ? T_EXEMPLAR : fn == 7 ? T_KV : T_NONE;
    case T_HDP: return fn == 8 ? T_EXEMPLAR : fn == 9 ? T_KV : T_NONE;
    case T_EHDP:
        switch (fn) {
        case 1: return T_KV;
        case 8: case 9: return T_BUCKETS;
        case 11: return T_EXEMPLAR;
        default: return T_NONE;
        }
    case T_SDP: return fn == 6 ? T_VAQ : fn == 7 ? T_KV : T_NONE;
    case T_EXEMPLAR: return fn == 7 ? T_KV : T_NONE;
    default: return T_NONE; /* ENTITYREF, STATUS, BUCKETS, VAQ: no sub-messages */
    }
}

#define T_COUNT (T_EXEMPLAR + 1)

/* The list max_list truncates in a message of type t: its repeated KeyValue field (ArrayValue: its
 * values), or 0. No message type has two. */
static uint32_t list_field(int t) {
    switch (t) {
    case T_RESOURCE: case T_KVLIST: case T_ARRAY: case T_EHDP: return 1;
    case T_SCOPE: case T_EVENT: return 3;
    case T_LINK: return 4;
    case T_LOG: return 6;
    case T_NDP: case T_SDP: case T_EXEMPLAR: return 7;
    case T_SPAN: case T_HDP: return 9;
    case T_METRIC: return 12;
    default: return 0;
    }
}

/* Singular message fields leading to lists: protobuf merges a repeat into the first occurrence, so
 * the lists of both form one list and their elements are counted together. */
static int chained(int t, uint32_t fn) {
    switch (t) {
    case T_RS: case T_RL: case T_RM: case T_SS: case T_SL: case T_SM: return fn == 1;
    case T_KV: return fn == 2;
    case T_LOG: return fn == 5;
    case T_ANY: return fn == 5 || fn == 6;
    default: return 0;
    }
}

/* AnyValue's `value` oneof: 1 + the wire type of each member, 0 for other fields. A member other than
 * the last one seen replaces it: the array or kvlist seen before is gone, a new one counts from 0. */
static const uint8_t ONEOF_WT[16] = {0, 1 + 2, 1 + 0, 1 + 0, 1 + 1, 1 + 2, 1 + 2, 1 + 2, 1 + 0};

/* The longest chain of merged messages: KeyValue or LogRecord -> AnyValue -> ArrayValue or
 * KeyValueList (chained() above). */
#define CHAIN 3

INLINE int is_data(int t) { return t >= T_GAUGE && t <= T_SUMMARY; }

/* Is field `fn` of container `t` the field holding its children (containers or items)? */
static int structural(int t, uint32_t fn) {
    switch (t) {
    case T_REQ_TRACES: case T_REQ_LOGS: case T_REQ_METRICS: return fn == 1;
    case T_RS: case T_SS: case T_RL: case T_SL: case T_RM: case T_SM: return fn == 2;
    case T_METRIC: return fn == 5 || fn == 7 || fn == 9 || fn == 10 || fn == 11;
    default: return is_data(t) && fn == 1;
    }
}

/* The one-byte tag of the children of container t (0 for Metric: five possible fields). */
INLINE uint8_t struct_tag(int t) {
    switch (t) {
    case T_REQ_TRACES: case T_REQ_LOGS: case T_REQ_METRICS: return 0x0a;
    case T_RS: case T_SS: case T_RL: case T_SL: case T_RM: case T_SM: return 0x12;
    default: return is_data(t) ? 0x0a : 0;
    }
}

/* A child field with that tag and a one-byte length that fits: what read_field() would accept. */
#define FAST_CHILD(b, p, end, stag) \
    ((stag) && (b)[p] == (stag) && (end) - (p) >= 2 && (b)[(p) + 1] < 0x80 && (b)[(p) + 1] <= (end) - (p) - 2)

/* Packed repeated scalars upb checks: fixed64/double arrays need a multiple of 8 bytes, uint64
 * arrays a run of complete varints. */
static int packed_kind(int t, uint32_t fn) {
    if (t == T_HDP && (fn == 6 || fn == 7)) return PK_FIXED64;
    if (t == T_BUCKETS && fn == 2) return PK_VARINT;
    return PK_NONE;
}

/* sub_type(), structural() and chained() as tables, filled once at import: every field they know
 * is < 16. */
static uint8_t SUB[T_COUNT][16], STRUCT[T_COUNT][16], CHAINED[T_COUNT][16];
static uint32_t LIST[T_COUNT];
#define CHAINED_OF(t, fn) ((fn) < 16 ? CHAINED[t][fn] : 0)
#define SUB_OF(t, fn) ((fn) < 16 ? SUB[t][fn] : T_NONE)
#define IS_STRUCT(t, fn) ((fn) < 16 ? STRUCT[t][fn] : 0)

static void init_tables(void) {
    for (int t = 0; t < T_COUNT; t++) {
        for (uint32_t fn = 0; fn < 16; fn++) {
            SUB[t][fn] = (uint8_t)sub_type(t, fn);
            STRUCT[t][fn] = (uint8_t)structural(t, fn);
            CHAINED[t][fn] = (uint8_t)chained(t, fn);
        }
        LIST[t] = list_field(t);
    }
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Blob;

typedef struct {
    size_t start;  /* first byte of the tag */
    size_t body;   /* first byte after the tag (wire type 3: the group's content) */
    size_t cstart; /* wire type 2: first byte of the content */
    size_t end;    /* first byte after the field (wire type 3: == body, the group is scanned apart) */
    uint32_t fn;
    int wt;
} Field;

typedef struct {
    uint64_t msgs, points;
    int maxd;
    int header; /* 1: deeper than max_depth raises; 0 (item): deeper than SCAN_LIMIT aborts */
} Stats;

/* A message's list as max_list counts it: elements so far, and (AnyValue) the oneof member last seen. */
typedef struct {
    uint64_t n;
    uint32_t oneof;
} LState;

typedef struct {
    int kind, level;
    uint32_t fn;
    size_t off, len, size; /* node: header at arena[off:off+len]; item: buf[off:off+len] */
} Entry;

typedef struct {
    const uint8_t *buf;
    size_t n;
    uint64_t chunk_messages, item_messages;
    uint64_t max_list; /* 0: no truncation */
    int max_depth;
    int err, err_wt;
    size_t err_pos;
    uint64_t items, rejected, messages, kept, first_count, truncated;
    int first_kind, dropped, identity;
    /* the container open at each level: header bytes, header messages, id, field number */
    Blob hdr[LEVELS];
    uint64_t hm[LEVELS], id[LEVELS], serial;
    uint32_t node_fn[LEVELS];
    /* the chunk being planned */
    Entry *ent;
    size_t nent, capent;
    Blob arena;
    uint64_t w, nitems, open_id[LEVELS];
    size_t ibytes;    /* bytes of the items in the chunk */
    uint64_t lim;     /* the chunk's budget as plan() last computed it, for items at level lim_L + 1 */
    int lim_L;
    /* the message scan_trunc rewrites: output, input copied to it up to `copied`, elements cut */
    Blob *wout;
    size_t copied;
    uint64_t pending;
    Blob tmp; /* an item rewritten, until plan() puts it in the arena */
    /* finished chunks: out[offs[k]:offs[k+1]] */
    Blob out;
    size_t *offs;
    size_t nchunks, capoffs;
} Ctx;

static int fail(Ctx *c, int err, size_t pos) {
    c->err = err;
    c->err_pos = pos;
    return -1;
}

static int blob_append(Blob *b, const uint8_t *src, size_t len) {
    if (len > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < len) {
            if (cap > SIZE_MAX / 2) return -1;
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->len, src, len);
    b->len += len;
    return 0;
}

/* 0: ok, 1: the buffer ends first, 2: more than 10 bytes. The value wraps modulo 2**64 as upb's. */
static int read_varint(const uint8_t *b, size_t *p, size_t end, uint64_t *out) {
    uint64_t v = 0;
    size_t q = *p;
    for (int i = 0; i < 10; i++) {
        if (q >= end) return 1;
        uint8_t x = b[q++];
        v |= (uint64_t)(x & 0x7f) << (7 * i);
        if (!(x & 0x80)) {
            *p = q;
            *out = v;
            return 0;
        }
    }
    return 2;
}

/* read_varint with the one-byte case inline. */
INLINE int get_varint(const uint8_t *b, size_t *p, size_t end, uint64_t *out) {
    size_t q = *p;
    if (q < end && b[q] < 0x80) {
        *out = b[q];
        *p = q + 1;
        return 0;
    }
    return read_varint(b, p, end, out);
}

/* One field at p, within [p, end), at message level or inside a group numbered gfn.
 * 0: a field (wire type 3: only its tag is consumed), 2: the group's end tag, -1: error. */
INLINE int read_field(Ctx *c, size_t p, size_t end, int in_group, uint32_t gfn, Field *f) {
    uint64_t tag, v;
    int r;
    f->start = p;
    r = get_varint(c->buf, &p, end, &tag);
    if (r == 1) return fail(c, E_TRUNC_TAG, f->start);
    if (r == 2 || p - f->start > 5 || tag > 0xFFFFFFFFu) return fail(c, E_BAD_TAG, f->start);
    f->fn = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    f->body = f->cstart = f->end = p;
    if (f->wt > 5) {
        c->err_wt = f->wt;
        return fail(c, E_WIRETYPE, f->start);
    }
    if (f->wt == 4) {
        if (!in_group) return fail(c, E_END_GROUP, f->start);
        if (f->fn != gfn) return fail(c, E_MISMATCH_GROUP, f->start);
        return 2;
    }
    if (!in_group && f->fn == 0) return fail(c, E_FIELD0, f->start);
    switch (f->wt) {
    case 0:
        r = get_varint(c->buf, &p, end, &v);
        if (r) return fail(c, r == 1 ? E_TRUNC_VARINT : E_LONG_VARINT, f->start);
        break;
    case 1:
        if (end - p < 8) return fail(c, E_TRUNC_FIXED64, f->start);
        p += 8;
        break;
    case 5:
        if (end - p < 4) return fail(c, E_TRUNC_FIXED32, f->start);
        p += 4;
        break;
    case 2: /* upb reads lengths, like tags, in at most 5 bytes */
        r = get_varint(c->buf, &p, end, &v);
        if (r == 1) return fail(c, E_TRUNC_LEN, f->start);
        if (r == 2 || p - f->body > 5) return fail(c, E_BAD_LEN, f->start);
        if (v > (uint64_t)(end - p) || v >= 0x7fffffffu) return fail(c, E_TRUNC_LEN, f->start);
        f->cstart = p;
        p += (size_t)v;
        break;
    default: /* 3 */
        break;
    }
    f->end = p;
    return 0;
}

/* Going one level deeper, to depth nd: 0 ok, 1 abort (item deeper than upb accepts), -1 error. */
INLINE int enter(Ctx *c, Stats *st, int nd) {
    if (nd > st->maxd) st->maxd = nd;
    if (st->header) return nd > c->max_depth ? fail(c, E_HDR_DEPTH, 0) : 0;
    return nd > SCAN_LIMIT ? 1 : 0;
}

/* Positions are < n; these two values report what went wrong instead. */
#define BAD ((size_t)-1)   /* invalid: c->err is set */
#define ABORT ((size_t)-2) /* an item nests deeper than upb accepts */

/* An unknown group's content from p (its start tag is at tagpos) to its end tag: the position
 * after that tag, BAD or ABORT. */
static size_t scan_group(Ctx *c, size_t p, size_t end, uint32_t gfn, size_t tagpos, int depth, Stats *st) {
    Field f;
    while (p < end) {
        int r = read_field(c, p, end, 1, gfn, &f);
        if (r < 0) return BAD;
        if (r == 2) return f.end;
        if (f.wt == 3) {
            r = enter(c, st, depth + 1);
            if (r) return r < 0 ? BAD : ABORT;
            p = scan_group(c, f.body, end, f.fn, f.start, depth + 1, st);
            if (p >= ABORT) return p;
        } else {
            p = f.end;
        }
    }
    fail(c, E_UNTERMINATED_GROUP, tagpos);
    return BAD;
}

INLINE int packed_ok(const uint8_t *b, size_t p, size_t end, int kind) {
    uint64_t v;
    if (kind == PK_FIXED64) return (end - p) % 8 == 0;
    while (p < end)
        if (read_varint(b, &p, end, &v)) return 0;
    return 1;
}

/* All fields of a message of type t (depth `depth`) occupying exactly [p, end), and of its
 * sub-messages: 0, -1 (error) or 1 (abort). A loop with its own stack rather than recursion (it is
 * the hot path); enter() keeps depth <= SCAN_LIMIT, so the stack cannot overflow. */
static int scan_msg(Ctx *c, size_t p, size_t end, int t, int depth, Stats *st) {
    struct {
        size_t end;
        int t;
    } stack[SCAN_LIMIT + 1];
    int sp = 0, r;
    Field f;
    for (;;) {
        if (p >= end) { /* this message is done: back to its parent, just after it */
            if (sp == 0) return 0;
            sp--;
            end = stack[sp].end;
            t = stack[sp].t;
            depth--;
            continue;
        }
        if (read_field(c, p, end, 0, 0, &f) < 0) return -1;
        if (f.wt == 2) {
            int sub = SUB_OF(t, f.fn);
            if (sub) {
                if (is_data(t)) st->points++;
                r = enter(c, st, depth + 1);
                if (r) return r;
                if (sp >= SCAN_LIMIT + 1) return 1; /* unreachable: enter() bounds depth */
                st->msgs++;
                stack[sp].end = end;
                stack[sp].t = t;
                sp++;
                end = f.end;
                t = sub;
                depth++;
                p = f.cstart;
                continue;
            }
            if (t == T_HDP || t == T_BUCKETS) {
                int pk = packed_kind(t, f.fn);
                if (pk && !packed_ok(c->buf, f.cstart, f.end, pk)) return fail(c, E_PACKED, f.start);
            }
            p = f.end;
        } else if (f.wt == 3) {
            r = enter(c, st, depth + 1);
            if (r) return r;
            p = scan_group(c, f.body, end, f.fn, f.start, depth + 1, st);
            if (p >= ABORT) return p == BAD ? -1 : 1;
        } else {
            p = f.end;
        }
    }
}

/* One field of a message of type t at depth `depth` (a container's header field): validated and
 * counted, sub-messages included. The position after it, BAD or ABORT. */
static size_t field_deep(Ctx *c, int t, int depth, const Field *f, size_t end, Stats *st) {
    int r;
    if (f->wt == 2) {
        int sub = SUB_OF(t, f->fn);
        if (sub) {
            if (is_data(t)) st->points++;
            r = enter(c, st, depth + 1);
            if (!r) {
                st->msgs++;
                r = scan_msg(c, f->cstart, f->end, sub, depth + 1, st);
            }
            if (r) return r < 0 ? BAD : ABORT;
        } else if (t == T_HDP || t == T_BUCKETS) {
            int pk = packed_kind(t, f->fn);
            if (pk && !packed_ok(c->buf, f->cstart, f->end, pk)) {
                fail(c, E_PACKED, f->start);
                return BAD;
            }
        }
        return f->end;
    }
    if (f->wt == 3) {
        r = enter(c, st, depth + 1);
        if (r) return r < 0 ? BAD : ABORT;
        return scan_group(c, f->body, end, f->fn, f->start, depth + 1, st);
    }
    return f->end;
}

/* -------------------------------------------------------------------------------- truncation */

static size_t varint_len(size_t v);

/* Room for `len` more bytes in b. */
static int blob_reserve(Blob *b, size_t len) {
    if (len <= b->cap - b->len) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < len) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Checks the framing of a list element of type `sub` to be cut (as upb would), counting nothing:
 * 0, -1 (error) or, deeper than upb accepts, 1 (abort) in an item and -1 (E_HDR_DEPTH) in a header:
 * max_depth does not apply to what is cut. */
static int drop_check(Ctx *c, const Field *f, int sub, int depth, const Stats *st) {
    Stats skip = {0, 0, depth + 1, 0};
    int r = enter(c, &skip, depth + 1);
    if (!r) r = scan_msg(c, f->cstart, f->end, sub, depth + 1, &skip);
    return r == 1 && st->header ? fail(c, E_HDR_DEPTH, 0) : r;
}

/* Copies buf[copied:upto] to the output: always fits, scan_trunc reserved the original's size. */
INLINE void flush(Ctx *c, size_t upto) {
    Blob *o = c->wout;
    memcpy(o->p + o->len, c->buf + c->copied, upto - c->copied);
    o->len += upto - c->copied;
    c->copied = upto;
}

/* A message open in scan_trunc: where its content ends, where its length is in the output. */
typedef struct {
    size_t end, olpos;
    LState *s; /* its list state, s[1], s[2]...: those of the messages merged into it (CHAIN) */
    int t, si; /* its type, the index of s in its block of CHAIN states */
    uint8_t lbytes, changed;
} TFrame;

/* scan_msg with max_list, for the sub-message of type t (depth `depth`) in field *of: list elements
 * over max_list are checked by drop_check, not counted, and left out; when one is, the field is
 * written to `out` (appended) with the new lengths of the messages holding it, and *changed is set
 * (c->pending: elements cut); otherwise `out` is left alone. ls[si]: the message's list state,
 * ls[si + 1 .. CHAIN - 1] those of the messages merged into it, which persist across occurrences.
 * 0, -1 (error) or 1 (abort), like scan_msg; a loop with its own stack too. */
static int scan_trunc(Ctx *c, const Field *of, int t, int depth, Stats *st, LState *ls, int si, Blob *out,
                      int *changed) {
    TFrame fr[SCAN_LIMIT + 1];
    LState own[SCAN_LIMIT + 1][CHAIN];
    int sp = 0, r;
    size_t p = of->cstart;
    Field f;
    *changed = 0;
    c->wout = out;
    c->copied = of->start;
    c->pending = 0;
    if (blob_reserve(out, of->end - of->start)) return fail(c, E_NOMEM, 0);
    fr[0].end = of->end;
    fr[0].olpos = out->len + (of->body - of->start);
    fr[0].lbytes = (uint8_t)(of->cstart - of->body);
    fr[0].changed = 0;
    fr[0].s = ls + si;
    fr[0].t = t;
    fr[0].si = si;
    for (;;) {
        TFrame *cur = &fr[sp];
        if (p >= cur->end) { /* this message is done: rewrite its length if something in it was cut */
            if (cur->changed) {
                Blob *o = c->wout;
                size_t nl, vl, v;
                flush(c, cur->end);
                nl = o->len - cur->olpos - cur->lbytes;
                vl = varint_len(nl);
                if (vl < cur->lbytes) {
                    memmove(o->p + cur->olpos + vl, o->p + cur->olpos + cur->lbytes, nl);
                    o->len -= cur->lbytes - vl;
                }
                uint8_t *w = o->p + cur->olpos;
                for (v = nl; v >= 0x80; v >>= 7) *w++ = (uint8_t)(v | 0x80);
                *w = (uint8_t)v;
                if (sp) fr[sp - 1].changed = 1;
            }
            if (sp == 0) {
                *changed = cur->changed;
                return 0;
            }
            sp--;
            depth--;
            continue;
        }
        if (read_field(c, p, cur->end, 0, 0, &f) < 0) return -1;
        t = cur->t;
        if (t == T_ANY && f.fn < 16 && ONEOF_WT[f.fn] == f.wt + 1 && cur->s[0].oneof != f.fn) {
            /* another member of the oneof replaces the array or kvlist */
            cur->s[0].oneof = f.fn;
            for (int k = 1; cur->si + k < CHAIN; k++) cur->s[k].n = cur->s[k].oneof = 0;
        }
        if (f.wt == 2) {
            int sub = SUB_OF(t, f.fn);
            if (sub) {
                LState *cs = NULL;
                int csi = 0;
                if (is_data(t)) st->points++;
                if (f.fn == LIST[t]) {
                    if (++cur->s[0].n > c->max_list) {
                        r = drop_check(c, &f, sub, depth, st);
                        if (r) return r;
                        flush(c, f.start);
                        c->copied = f.end;
                        cur->changed = 1;
                        c->pending++;
                        p = f.end;
                        continue;
                    }
                } else if (CHAINED_OF(t, f.fn) && cur->si + 1 < CHAIN) {
                    cs = cur->s + 1;
                    csi = cur->si + 1;
                }
                r = enter(c, st, depth + 1);
                if (r) return r;
                if (sp + 1 >= SCAN_LIMIT + 1) return 1; /* unreachable: enter() bounds depth */
                st->msgs++;
                sp++;
                if (!cs) {
                    memset(own[sp], 0, sizeof(own[sp]));
                    cs = own[sp];
                }
                fr[sp].end = f.end;
                fr[sp].olpos = c->wout->len + (f.body - c->copied);
                fr[sp].lbytes = (uint8_t)(f.cstart - f.body);
                fr[sp].changed = 0;
                fr[sp].s = cs;
                fr[sp].t = sub;
                fr[sp].si = csi;
                depth++;
                p = f.cstart;
                continue;
            }
            if (t == T_HDP || t == T_BUCKETS) {
                int pk = packed_kind(t, f.fn);
                if (pk && !packed_ok(c->buf, f.cstart, f.end, pk)) return fail(c, E_PACKED, f.start);
            }
            p = f.end;
        } else if (f.wt == 3) {
            r = enter(c, st, depth + 1);
            if (r) return r;
            p = scan_group(c, f.body, cur->end, f.fn, f.start, depth + 1, st);
            if (p >= ABORT) return p == BAD ? -1 : 1;
        } else {
            p = f.end;
        }
    }
}

/* ------------------------------------------------------------------------------------ chunks */

static Entry *new_entry(Ctx *c) {
    if (c->nent == c->capent) {
        size_t cap = c->capent ? c->capent * 2 : 64;
        if (cap > SIZE_MAX / sizeof(Entry)) return NULL;
        Entry *e = realloc(c->ent, cap * sizeof(Entry));
        if (!e) return NULL;
        c->ent = e;
        c->capent = cap;
    }
    return &c->ent[c->nent++];
}

static size_t varint_len(size_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes the planned chunk to c->out (re-computing container lengths) and starts a new one. */
static int finish_chunk(Ctx *c) {
    size_t stack[LEVELS], sp = 0, total = 0, i;
    Entry *e = c->ent;
    if (c->nchunks == 0) total = c->hdr[0].len; /* the request's own fields go in the first chunk */
    for (i = 0; i <= c->nent; i++) {
        int level = i < c->nent ? e[i].level : 0;
        while (sp && e[stack[sp - 1]].level >= level) {
            Entry *node = &e[stack[--sp]];
            size_t fs = 1 + varint_len(node->size) + node->size;
            if (sp) e[stack[sp - 1]].size += fs;
            else total += fs;
        }
        if (i == c->nent) break;
        if (e[i].kind == ENT_NODE) {
            e[i].size = e[i].len;
            stack[sp++] = i;
        } else if (sp) {
            e[stack[sp - 1]].size += e[i].len;
        } else {
            total += e[i].len;
        }
    }
    if (c->nchunks + 2 > c->capoffs) {
        size_t cap = c->capoffs ? c->capoffs * 2 : 16;
        size_t *o = realloc(c->offs, cap * sizeof(size_t));
        if (!o) return fail(c, E_NOMEM, 0);
        c->offs = o;
        c->capoffs = cap;
    }
    if (c->nchunks == 0) c->offs[0] = 0;
    {   /* reserve, then write in place */
        size_t need = c->out.len + total;
        if (need > c->out.cap) {
            size_t cap = c->out.cap ? c->out.cap : 4096;
            while (cap < need) {
                if (cap > SIZE_MAX / 2) return fail(c, E_NOMEM, 0);
                cap *= 2;
            }
            uint8_t *p = realloc(c->out.p, cap);
            if (!p) return fail(c, E_NOMEM, 0);
            c->out.p = p;
            c->out.cap = cap;
        }
    }
    uint8_t *w = c->out.p + c->out.len;
    if (c->nchunks == 0 && c->hdr[0].len) {
        memcpy(w, c->hdr[0].p, c->hdr[0].len);
        w += c->hdr[0].len;
    }
    for (i = 0; i < c->nent; i++) {
        if (e[i].kind == ENT_NODE) {
            size_t v = e[i].size;
            *w++ = (uint8_t)((e[i].fn << 3) | 2);
            while (v >= 0x80) {
                *w++ = (uint8_t)(v | 0x80);
                v >>= 7;
            }
            *w++ = (uint8_t)v;
            if (e[i].len) memcpy(w, c->arena.p + e[i].off, e[i].len);
        } else if (e[i].kind == ENT_AITEM) {
            memcpy(w, c->arena.p + e[i].off, e[i].len);
        } else {
            memcpy(w, c->buf + e[i].off, e[i].len);
        }
        w += e[i].len;
    }
    c->out.len += total;
    c->offs[++c->nchunks] = c->out.len;
    c->nent = 0;
    c->arena.len = 0;
    c->w = c->nitems = 0;
    c->ibytes = 0;
    memset(c->open_id, 0, sizeof(c->open_id));
    return 0;
}

/* Puts a kept item (or indivisible metric) buf[s:e] (rew: rewritten in c->tmp instead), under the
 * containers open at levels 1..L and costing `cost` messages, into the current chunk, or into a new
 * one if it would get too big:
 * more than max(chunk_messages, 2 * messages of the item's headers). A new chunk copies the
 * headers of the containers it continues again, so it is started only once the chunk's items
 * have as many bytes as those headers (copies never exceed the request's size); a chunk that
 * cannot be cut so before 4 times its budget means headers far bigger than their items. */
static int plan(Ctx *c, int L, size_t s, size_t e, uint64_t cost, int rew) {
    int k = 1, l;
    uint64_t H = 0, add = 0, lim;
    size_t again = 0, size = rew ? c->tmp.len : e - s;
    if (!rew && c->nitems && c->lim_L == L && c->open_id[L] == c->id[L] && c->w + cost <= c->lim) {
        /* the common case, in short: same containers as the item before, room left, and (checked
         * below) the bytes follow the previous item's */
        Entry *last = &c->ent[c->nent - 1];
        if (last->kind == ENT_ITEM && last->level == L + 1 && last->off + last->len == s) {
            last->len += e - s;
            c->w += cost;
            c->ibytes += e - s;
            c->nitems++;
            c->kept++;
            return 0;
        }
    }
    while (k <= L && c->open_id[k] == c->id[k]) k++;
    for (l = 1; l <= L; l++) {
        H += c->hm[l];
        if (l >= k) add += c->hm[l];
        else again += c->hdr[l].len;
    }
    lim = c->chunk_messages > 2 * H ? c->chunk_messages : 2 * H;
    c->lim = lim;
    c->lim_L = L;
    if (c->nitems > 0 && c->w + add + cost > lim) {
        if (c->ibytes >= again) {
            if (finish_chunk(c)) return -1;
            k = 1;
            add = H;
        } else if (c->w + add + cost > 4 * lim) {
            return fail(c, E_AMPLIFY, 0);
        }
    }
    for (l = k; l <= L; l++) {
        Entry *en = new_entry(c);
        if (!en) return fail(c, E_NOMEM, 0);
        en->kind = ENT_NODE;
        en->level = l;
        en->fn = c->node_fn[l];
        en->off = c->arena.len;
        en->len = c->hdr[l].len;
        en->size = 0;
        if (blob_append(&c->arena, c->hdr[l].p, c->hdr[l].len)) return fail(c, E_NOMEM, 0);
        c->open_id[l] = c->id[l];
    }
    for (l = L + 1; l < LEVELS; l++) c->open_id[l] = 0;
    if (rew) {
        Entry *en = new_entry(c);
        if (!en) return fail(c, E_NOMEM, 0);
        en->kind = ENT_AITEM;
        en->level = L + 1;
        en->fn = 0;
        en->off = c->arena.len;
        en->len = size;
        en->size = 0;
        if (blob_append(&c->arena, c->tmp.p, size)) return fail(c, E_NOMEM, 0);
    } else if (c->nent && c->ent[c->nent - 1].kind == ENT_ITEM && c->ent[c->nent - 1].level == L + 1 &&
               c->ent[c->nent - 1].off + c->ent[c->nent - 1].len == s) {
        c->ent[c->nent - 1].len += e - s;
    } else {
        Entry *en = new_entry(c);
        if (!en) return fail(c, E_NOMEM, 0);
        en->kind = ENT_ITEM;
        en->level = L + 1;
        en->fn = 0;
        en->off = s;
        en->len = e - s;
        en->size = 0;
    }
    c->w += add + cost;
    c->ibytes += size;
    c->nitems++;
    c->kept++;
    return 0;
}

/* ------------------------------------------------------------------------------- containers */

static void reject(Ctx *c, int kind, uint64_t n) {
    c->rejected += n;
    if (!c->first_kind) c->first_kind = kind;
    if (kind == c->first_kind) c->first_count += n;
}

static int item_kind(Ctx *c, int r, const Stats *st) {
    if (r == 1 || st->maxd > c->max_depth) return K_DEPTH;
    if (st->msgs > c->item_messages) return K_SIZE;
    return K_NONE;
}

/* scan_msg of an item of type t in field *f, then, if max_list is set and the item has more than
 * max_list + 1 messages (else none of its lists can be longer), scan_trunc: the same checks in the
 * same order (the same error or abort), with the elements over max_list left out. *rew: the item
 * was rewritten, in c->tmp. */
INLINE int scan_item(Ctx *c, int t, const Field *f, int depth, Stats *st, int *rew) {
    int r = scan_msg(c, f->cstart, f->end, t, depth, st);
    *rew = 0;
    if (r || !c->max_list || st->msgs <= c->max_list + 1) return r;
    LState ls[CHAIN];
    memset(ls, 0, sizeof(ls));
    *st = (Stats){1, 0, depth, 0};
    c->tmp.len = 0;
    return scan_trunc(c, f, t, depth, st, ls, 0, &c->tmp, rew);
}

static int item(Ctx *c, int t, const Field *f, int depth, int L) {
    Stats st = {1, 0, depth, 0};
    int rew, r = scan_item(c, t, f, depth, &st, &rew);
    if (r < 0) return -1;
    c->messages += st.msgs;
    c->items++;
    int kind = item_kind(c, r, &st);
    if (kind) {
        reject(c, kind, 1);
        return 0;
    }
    if (plan(c, L, f->start, f->end, st.msgs, rew)) return -1;
    if (rew) c->truncated += c->pending;
    return 0;
}

/* A Metric whose data oneof is set more than once: one indivisible item, bytes unchanged (but for
 * the list elements over max_list). */
static int unit(Ctx *c, const Field *f, int depth) {
    Stats st = {1, 0, depth, 0};
    int rew, r = scan_item(c, T_METRIC, f, depth, &st, &rew);
    if (r < 0) return -1;
    c->messages += st.msgs;
    c->items += st.points;
    if (st.points == 0) {
        c->dropped = 1;
        return 0;
    }
    int kind = item_kind(c, r, &st);
    if (kind) {
        reject(c, kind, st.points);
        return 0;
    }
    if (plan(c, 2, f->start, f->end, st.msgs, rew)) return -1;
    if (rew) c->truncated += c->pending;
    return 0;
}

static int container(Ctx *c, int level, int t, size_t p, size_t end, int depth, uint32_t fn);

static int metric(Ctx *c, const Field *mf, int depth) {
    Stats skip = {0, 0, depth, 0};
    size_t q = mf->cstart;
    int occ = 0;
    Field f;
    while (q < mf->end && occ < 2) {
        if (read_field(c, q, mf->end, 0, 0, &f) < 0) return -1;
        if (f.wt == 3) {
            size_t g = scan_group(c, f.body, mf->end, f.fn, f.start, depth + 1, &skip);
            if (g == BAD) return -1;
            if (g == ABORT) occ = 2; /* nested too deep to find its end: let unit() reject it */
            q = g;
            continue;
        }
        if (f.wt == 2 && IS_STRUCT(T_METRIC, f.fn)) occ++;
        q = f.end;
    }
    if (occ >= 2) return unit(c, mf, depth);
    return container(c, 3, T_METRIC, mf->cstart, mf->end, depth, 2);
}

/* Pass 2 over a container: its children, in order. Header fields were checked by pass 1. */
static int children(Ctx *c, int level, int t, size_t p, size_t end, int depth) {
    Stats skip = {0, 0, depth, 1};
    Field f;
    int r;
    const uint8_t *b = c->buf, stag = struct_tag(t);
    const int items = t == T_SS || t == T_SL || is_data(t);
    while (p < end) {
        if (FAST_CHILD(b, p, end, stag)) {
            f.start = p;
            f.body = p + 1;
            f.cstart = p + 2;
            f.end = p + 2 + b[p + 1];
            f.fn = (uint32_t)stag >> 3;
            f.wt = 2;
        } else {
            if (read_field(c, p, end, 0, 0, &f) < 0) return -1;
            if (f.wt == 3) {
                p = scan_group(c, f.body, end, f.fn, f.start, depth + 1, &skip);
                if (p >= ABORT) return -1;
                continue;
            }
        }
        p = f.end;
        if (f.wt != 2 || !IS_STRUCT(t, f.fn)) continue;
        int sub = SUB_OF(t, f.fn);
        if (f.cstart == f.end && !items && t != T_SM) {
            /* an empty container (the 9.4-million-empty-ResourceSpans case): what container() does */
            if (depth + 1 > c->max_depth) return fail(c, E_HDR_DEPTH, 0);
            c->messages++;
            c->dropped = 1;
            continue;
        }
        if (items) r = item(c, sub, &f, depth + 1, level);
        else if (t == T_SM) r = metric(c, &f, depth + 1);
        else r = container(c, level + 1, sub, f.cstart, f.end, depth + 1, f.fn);
        if (r) return r;
    }
    return 0;
}

/* A header field *f of container type t holding a sub-message of type `sub`, with max_list set:
 * checked and counted, appended to h without the list elements over max_list (*cut of them). ls:
 * the container's list state (Metric.metadata) and those of the messages merged into it. */
static int header_sub(Ctx *c, const Field *f, int t, int sub, int depth, Stats *st, LState *ls, Blob *h,
                      uint64_t *cut) {
    LState fresh[CHAIN], *cs = fresh;
    int csi = 0, changed, r;
    memset(fresh, 0, sizeof(fresh));
    if (f->fn == LIST[t]) {
        if (++ls[0].n > c->max_list) {
            if (drop_check(c, f, sub, depth, st)) return -1; /* header mode: never 1 */
            (*cut)++;
            return 0;
        }
    } else if (CHAINED_OF(t, f->fn)) {
        cs = ls;
        csi = 1;
    }
    if (enter(c, st, depth + 1)) return -1; /* header mode: never 1 */
    st->msgs++;
    r = scan_trunc(c, f, sub, depth + 1, st, cs, csi, h, &changed);
    if (r) return r < 0 ? -1 : fail(c, E_HDR_DEPTH, 0); /* never 1 */
    if (changed) *cut += c->pending;
    else if (blob_append(h, c->buf + f->start, f->end - f->start)) return fail(c, E_NOMEM, 0);
    return 0;
}

/* Pass 1 over a container: check and count its header fields, copy them to hdr[level] (with
 * max_list: without the list elements over it, *cut of them). */
static int header(Ctx *c, int level, int t, size_t p, size_t end, int depth, Stats *st, uint64_t *cut) {
    Blob *h = &c->hdr[level];
    Field f;
    size_t fe;
    const uint8_t *b = c->buf, stag = struct_tag(t);
    LState ls[CHAIN]; /* the container's list (Metric.metadata) and those merged into it */
    int sub;
    memset(ls, 0, sizeof(ls));
    h->len = 0;
    *cut = 0;
    while (p < end) {
        if (FAST_CHILD(b, p, end, stag)) {
            p += 2 + (size_t)b[p + 1];
            continue;
        }
        if (read_field(c, p, end, 0, 0, &f) < 0) return -1;
        if (f.wt == 2 && IS_STRUCT(t, f.fn)) {
            p = f.end;
            continue;
        }
        if (c->max_list && f.wt == 2 && (sub = SUB_OF(t, f.fn))) {
            if (header_sub(c, &f, t, sub, depth, st, ls, h, cut)) return -1;
            p = f.end;
            continue;
        }
        fe = field_deep(c, t, depth, &f, end, st);
        if (fe >= ABORT) return -1; /* header mode: never ABORT */
        if (blob_append(h, c->buf + f.start, fe - f.start)) return fail(c, E_NOMEM, 0);
        p = fe;
    }
    return 0;
}

static int container(Ctx *c, int level, int t, size_t p, size_t end, int depth, uint32_t fn) {
    Stats st = {0, 0, depth, 1};
    uint64_t kept = c->kept, cut;
    if (depth > c->max_depth) return fail(c, E_HDR_DEPTH, 0);
    c->messages++;
    if (p == end) {
        c->dropped = 1;
        return 0;
    }
    if (header(c, level, t, p, end, depth, &st, &cut)) return -1;
    c->messages += st.msgs;
    if (1 + st.msgs > c->item_messages) return fail(c, E_HDR_SIZE, 0);
    c->hm[level] = 1 + st.msgs;
    c->id[level] = ++c->serial;
    c->node_fn[level] = fn;
    if (children(c, level, t, p, end, depth)) return -1;
    if (c->kept == kept) c->dropped = 1;
    else c->truncated += cut;
    return 0;
}

static int run(Ctx *c, int signal) {
    int t = signal == 0 ? T_REQ_TRACES : signal == 1 ? T_REQ_METRICS : T_REQ_LOGS;
    Stats st = {0, 0, 1, 1};
    uint64_t cut;
    if (header(c, 0, t, 0, c->n, 1, &st, &cut)) return -1;
    c->messages += st.msgs;
    if (children(c, 0, t, 0, c->n, 1)) return -1;
    if (c->nitems > 0) {
        if (c->nchunks == 0 && c->rejected == 0 && !c->dropped && !c->truncated) c->identity = 1;
        else if (finish_chunk(c)) return -1;
    }
    return 0;
}

static void ctx_free(Ctx *c) {
    for (int l = 0; l < LEVELS; l++) free(c->hdr[l].p);
    free(c->ent);
    free(c->arena.p);
    free(c->tmp.p);
    free(c->out.p);
    free(c->offs);
}

static void raise_error(Ctx *c) {
    size_t pos = c->err_pos;
    switch (c->err) {
    case E_NOMEM: PyErr_NoMemory(); return;
    case E_TRUNC_TAG: PyErr_Format(PyExc_ValueError, "invalid protobuf: truncated tag at byte %zu", pos); return;
    case E_BAD_TAG: PyErr_Format(PyExc_ValueError, "invalid protobuf: invalid tag at byte %zu", pos); return;
    case E_WIRETYPE:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: wire type %d at byte %zu", c->err_wt, pos);
        return;
    case E_END_GROUP:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: unexpected end-group tag at byte %zu", pos);
        return;
    case E_MISMATCH_GROUP:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: mismatched end-group tag at byte %zu", pos);
        return;
    case E_FIELD0: PyErr_Format(PyExc_ValueError, "invalid protobuf: field number 0 at byte %zu", pos); return;
    case E_TRUNC_VARINT:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: truncated varint at byte %zu", pos);
        return;
    case E_LONG_VARINT:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: varint longer than 10 bytes at byte %zu", pos);
        return;
    case E_TRUNC_FIXED64:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: truncated fixed64 field at byte %zu", pos);
        return;
    case E_TRUNC_FIXED32:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: truncated fixed32 field at byte %zu", pos);
        return;
    case E_TRUNC_LEN:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: truncated length-delimited field at byte %zu", pos);
        return;
    case E_UNTERMINATED_GROUP:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: unterminated group at byte %zu", pos);
        return;
    case E_BAD_LEN: PyErr_Format(PyExc_ValueError, "invalid protobuf: invalid length at byte %zu", pos); return;
    case E_PACKED:
        PyErr_Format(PyExc_ValueError, "invalid protobuf: malformed packed repeated field at byte %zu", pos);
        return;
    case E_HDR_DEPTH:
        PyErr_Format(PyExc_ValueError, "request rejected: resource, scope or metric nested more than %d levels",
                     c->max_depth);
        return;
    case E_HDR_SIZE:
        PyErr_Format(PyExc_ValueError, "request rejected: resource, scope or metric with more than %llu nested values",
                     (unsigned long long)c->item_messages);
        return;
    default:
        PyErr_SetString(PyExc_ValueError, "request rejected: resource, scope or metric headers too large to split");
        return;
    }
}

static PyObject *py_split(PyObject *self, PyObject *args) {
    int signal, max_depth, rc;
    long long cm, im, ml = 0;
    PyObject *data, *list = NULL, *result;
    Ctx c;
    (void)self;
    if (!PyArg_ParseTuple(args, "iO!LLi|L:split", &signal, &PyBytes_Type, &data, &cm, &im, &max_depth, &ml))
        return NULL;
    if (signal < 0 || signal > 2) return PyErr_Format(PyExc_ValueError, "unknown signal %d", signal);
    if (cm < 1 || cm > MAX_BUDGET || im < 1 || im > MAX_BUDGET)
        return PyErr_Format(PyExc_ValueError, "chunk_messages and item_messages must be between 1 and 2**40");
    if (max_depth < 1 || max_depth > SCAN_LIMIT)
        return PyErr_Format(PyExc_ValueError, "max_depth must be between 1 and %d", SCAN_LIMIT);
    if (ml < 0 || ml > MAX_BUDGET)
        return PyErr_Format(PyExc_ValueError, "max_list must be None or between 1 and 2**40");

    memset(&c, 0, sizeof(c));
    c.buf = (const uint8_t *)PyBytes_AS_STRING(data);
    c.n = (size_t)PyBytes_GET_SIZE(data);
    c.chunk_messages = (uint64_t)cm;
    c.item_messages = (uint64_t)im;
    c.max_depth = max_depth;
    c.max_list = (uint64_t)ml;
    if (c.n >= GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        rc = run(&c, signal);
        Py_END_ALLOW_THREADS
    } else {
        rc = run(&c, signal);
    }
    if (rc) {
        raise_error(&c);
        ctx_free(&c);
        return NULL;
    }

    if (c.identity) {
        list = PyList_New(1);
        if (!list) goto error;
        Py_INCREF(data);
        PyList_SET_ITEM(list, 0, data);
    } else {
        char **dst = NULL;
        list = PyList_New((Py_ssize_t)c.nchunks);
        if (!list) goto error;
        if (c.nchunks) {
            dst = malloc(c.nchunks * sizeof(char *));
            if (!dst) {
                PyErr_NoMemory();
                goto error;
            }
        }
        for (size_t k = 0; k < c.nchunks; k++) {
            PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(c.offs[k + 1] - c.offs[k]));
            if (!b) {
                free(dst);
                goto error;
            }
            dst[k] = PyBytes_AS_STRING(b);
            PyList_SET_ITEM(list, (Py_ssize_t)k, b);
        }
        /* Nobody else can see the new bytes objects yet: fill them without the GIL. */
        if (c.out.len >= GIL_THRESHOLD) {
            Py_BEGIN_ALLOW_THREADS
            for (size_t k = 0; k < c.nchunks; k++) memcpy(dst[k], c.out.p + c.offs[k], c.offs[k + 1] - c.offs[k]);
            Py_END_ALLOW_THREADS
        } else {
            for (size_t k = 0; k < c.nchunks; k++) memcpy(dst[k], c.out.p + c.offs[k], c.offs[k + 1] - c.offs[k]);
        }
        free(dst);
    }
    result = Py_BuildValue("(NKKiKKK)", list, (unsigned long long)c.items, (unsigned long long)c.rejected,
                           c.first_kind, (unsigned long long)c.first_count, (unsigned long long)c.messages,
                           (unsigned long long)c.truncated);
    ctx_free(&c);
    return result;

error:
    Py_XDECREF(list);
    ctx_free(&c);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split", py_split, METH_VARARGS,
     "split(signal, data, chunk_messages, item_messages, max_depth, max_list=0) -> "
     "(chunks, items, rejected, first_kind, first_count, messages, truncated); see sidecar.pipeline.otlpwire.split."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sidecar.pipeline._otlpwire", "C implementation of sidecar.pipeline.otlpwire.split().", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlpwire(void) {
    PyObject *m;
    init_tables();
    m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "SCAN_LIMIT", SCAN_LIMIT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
