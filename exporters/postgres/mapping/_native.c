/* exporters.postgres.mapping._native: one pass from a serialized ExportTraceServiceRequest to
 * PostgreSQL binary COPY data for otel_spans and otel_span_events, plus the per-request
 * aggregates the after-commit observers need (span RED tallies, per-resource counts and recent
 * errors). No Python object is made per span, span event or attribute.
 *
 * The rows must equal what mapping/traces.py makes from the same request once stored (the
 * parity tests compare the rows fetched back from PostgreSQL, and the tallies). Python keeps
 * the work that is per resource or per scope (their ids and the service name, memoised): it is
 * handed the serialized Resource / InstrumentationScope through two callbacks.
 *
 * Where the Python path would do something this file does not (protobuf's merge rules for a
 * singular message field sent twice, a known field with another wire type, invalid UTF-8 which
 * protobuf refuses, kinds/status codes/flags beyond their columns, spans naming a user, which
 * feed user_analytics), the function returns None and the caller maps the request in Python.
 *
 * Safety: the input is untrusted. Every read is bounds-checked (_wire.h); attribute nesting is
 * capped at MAX_DEPTH; lengths and counts are checked before arithmetic; output buffers grow
 * with overflow checks; the only Python calls are the two callbacks (per resource / scope), the
 * float formatter and the result's construction, all with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_wire.h"

#define MAX_DEPTH 200
#define MAX_BOUNDS 64
#define KEY_MAX_BYTES 1024 /* common.KEY_MAX_BYTES: indexed keys (user_id) are cut to it */
#define N_USER_KEYS 6
/* microseconds from 1970-01-01 to PostgreSQL's epoch 2000-01-01 */
#define PG_EPOCH_US 946684800000000LL
#define SMALLINT_MAX 32767
#define INT_MAX_ 2147483647LL
#define BIGINT_MAX_ 9223372036854775807ULL

/* ------------------------------------------------------------------ output buffer */

typedef struct {
    char *p;
    size_t len;
    size_t cap;
    int oom;
} Out;

static int out_grow(Out *o, size_t n) {
    if (o->oom)
        return -1;
    if (n > SIZE_MAX / 2 - o->len) {
        o->oom = 1;
        return -1;
    }
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + n)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (p == NULL) {
        o->oom = 1;
        return -1;
    }
    o->p = p;
    o->cap = cap;
    return 0;
}

static inline int out_put(Out *o, const void *s, size_t n) {
    if (o->cap - o->len < n && out_grow(o, n) < 0)
        return -1;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return 0;
}

/* A string literal, its length counted by the compiler. */
#define PUT_LIT(o, lit) out_put((o), (lit), sizeof(lit) - 1)

static inline int out_byte(Out *o, char c) {
    if (o->cap == o->len && out_grow(o, 1) < 0)
        return -1;
    o->p[o->len++] = c;
    return 0;
}

static inline void be16(uint8_t *d, uint16_t v) {
    d[0] = (uint8_t)(v >> 8);
    d[1] = (uint8_t)v;
}

static inline void be32(uint8_t *d, uint32_t v) {
    d[0] = (uint8_t)(v >> 24);
    d[1] = (uint8_t)(v >> 16);
    d[2] = (uint8_t)(v >> 8);
    d[3] = (uint8_t)v;
}

static inline void be64(uint8_t *d, uint64_t v) {
    be32(d, (uint32_t)(v >> 32));
    be32(d + 4, (uint32_t)v);
}

/* ------------------------------------------------------------------ binary COPY fields */

static inline int copy_null(Out *o) {
    uint8_t d[4];
    be32(d, 0xffffffffu);
    return out_put(o, d, 4);
}

static inline int copy_i16(Out *o, int16_t v) {
    uint8_t d[6];
    be32(d, 2);
    be16(d + 4, (uint16_t)v);
    return out_put(o, d, 6);
}

static inline int copy_i32(Out *o, int32_t v) {
    uint8_t d[8];
    be32(d, 4);
    be32(d + 4, (uint32_t)v);
    return out_put(o, d, 8);
}

static inline int copy_i64(Out *o, int64_t v) {
    uint8_t d[12];
    be32(d, 8);
    be64(d + 4, (uint64_t)v);
    return out_put(o, d, 12);
}

static inline int copy_bytes(Out *o, const void *s, size_t n) {
    uint8_t d[4];
    if (n > 0x7fffffff) {
        o->oom = 1;
        return -1;
    }
    be32(d, (uint32_t)n);
    if (out_put(o, d, 4) < 0)
        return -1;
    return out_put(o, s, n);
}

/* TIMESTAMPTZ from nanoseconds since 1970 (>= 0): microseconds since 2000, truncated. */
static inline int copy_ts(Out *o, uint64_t ns) {
    return copy_i64(o, (int64_t)(ns / 1000) - PG_EPOCH_US);
}

/* A field whose length is written once its content is: returns the length's offset. */
static inline size_t copy_open(Out *o) {
    size_t at = o->len;
    uint8_t d[4] = {0, 0, 0, 0};
    out_put(o, d, 4);
    return at;
}

static inline int copy_close(Out *o, size_t at) {
    if (o->oom)
        return -1;
    size_t n = o->len - at - 4;
    if (n > 0x7fffffff) {
        o->oom = 1;
        return -1;
    }
    be32((uint8_t *)o->p + at, (uint32_t)n);
    return 0;
}

/* ------------------------------------------------------------------ state of one call */

typedef struct {
    const uint8_t *name;
    size_t name_len;
    uint32_t resource;
    int32_t kind;
    int32_t code;
    int used;
    int64_t calls;
    double sum;
    uint64_t counts[MAX_BOUNDS + 1];
} Tally;

typedef struct {
    uint64_t start;
    Buf name, message, trace_id; /* a log record's: severity text, body (an AnyValue), trace id */
    int32_t number;              /* a log record's severity number */
} RecentError;

typedef struct {
    int64_t spans; /* in the request */
    int64_t rows;  /* stored (not rejected) */
    int64_t event_rows;
    int64_t errors;
    Buf task;
    int has_task;
    RecentError *recent; /* a ring of the newest `max_recent` errors */
    int64_t nrecent;     /* errors seen */
} Agent;

typedef struct {
    Py_ssize_t max_attrs;
    Py_ssize_t max_len;
    Py_ssize_t trunc_attrs;
    Py_ssize_t trunc_values;
    int counting; /* 0 while only validating (what the Python path doesn't convert) */
    int bail;
    uint8_t id_head[12];
    uint64_t id_counter;
    uint64_t received_ns;
    double bounds[MAX_BOUNDS];
    int nbounds;
    Tally *tally;
    size_t tally_cap;
    size_t tally_used;
    Agent *agents;
    size_t nagents;
    size_t agents_cap;
    Out spans, events, users, scratch;
    int64_t nspans, nevents, nusers, items, rejected;
    Py_ssize_t max_recent; /* span errors per resource handed to agent_states (its error_log_size) */
    int user_mode;       /* 0: no user_analytics rows; 1: user rows; 2: user ids hashed (the Python path) */
    int logs;            /* encoding logs (else traces) */
    Py_ssize_t trunc_keys; /* user ids cut to KEY_MAX_BYTES */
    Buf user_vals[N_USER_KEYS];
    int user_has[N_USER_KEYS];
} Ctx;

static int bail(Ctx *c) {
    c->bail = 1;
    return -1;
}

/* ------------------------------------------------------------------ UTF-8 and JSON */

/* Valid UTF-8 as Python's decoder defines it (no overlongs, surrogates or values past
 * U+10FFFF)? Also counts code points in *chars. */
static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static int utf8_valid(const uint8_t *s, size_t n, size_t *chars) {
    size_t i = 0, k = 0;
    while (i + 8 <= n && !(load64(s + i) & HIGHS)) /* ASCII, 8 bytes at a time */
        i += 8;
    k = i;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
        } else if (b >= 0xc2 && b <= 0xdf) {
            if (i + 1 >= n || (s[i + 1] & 0xc0) != 0x80)
                return 0;
            i += 2;
        } else if (b >= 0xe0 && b <= 0xef) {
            if (i + 2 >= n || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80)
                return 0;
            if (b == 0xe0 && s[i + 1] < 0xa0)
                return 0;
            if (b == 0xed && s[i + 1] >= 0xa0)
                return 0;
            i += 3;
        } else if (b >= 0xf0 && b <= 0xf4) {
            if (i + 3 >= n || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 || (s[i + 3] & 0xc0) != 0x80)
                return 0;
            if (b == 0xf0 && s[i + 1] < 0x90)
                return 0;
            if (b == 0xf4 && s[i + 1] >= 0x90)
                return 0;
            i += 4;
        } else {
            return 0;
        }
        k++;
    }
    *chars = k;
    return 1;
}

static int valid_str(Buf s) {
    size_t chars;
    return utf8_valid(s.p, (size_t)(s.end - s.p), &chars);
}

/* Byte length of the first `chars` code points of valid UTF-8. */
static size_t utf8_prefix(const uint8_t *s, size_t n, size_t chars) {
    size_t i = 0;
    while (i < n && chars) {
        uint8_t b = s[i];
        i += b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
        chars--;
    }
    return i;
}

static const char HEX[] = "0123456789abcdef";

/* Valid UTF-8 as a TEXT value: NUL (which PostgreSQL refuses) becomes U+FFFD. */
static int put_text(Out *o, const uint8_t *s, size_t n) {
    const uint8_t *nul = memchr(s, 0, n);
    if (nul == NULL)
        return out_put(o, s, n);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0) {
            if (PUT_LIT(o, "\xef\xbf\xbd") < 0)
                return -1;
        } else if (out_byte(o, (char)s[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A TEXT field (length, then the text) from valid UTF-8. */
static int copy_text(Out *o, const uint8_t *s, size_t n) {
    size_t at = copy_open(o);
    put_text(o, s, n);
    return copy_close(o, at);
}

/* Whether any of 8 bytes is a control character, '"' or '\\' (SWAR: no false negatives; a
 * byte >= 0x80 may set a false positive, which the byte loop then checks). */
static inline int needs_escape8(uint64_t v) {
    uint64_t quote = v ^ (ONES * '"'), backslash = v ^ (ONES * '\\');
    return (((v - ONES * 0x20) | (quote - ONES) | (backslash - ONES)) & ~v & HIGHS) != 0;
}

/* A JSON string from valid UTF-8: quotes, escapes, NUL as U+FFFD (as common.json_dumps). */
static int json_chars(Out *o, const uint8_t *s, size_t n) {
    if (out_byte(o, '"') < 0)
        return -1;
    size_t run = 0, i = 0;
    while (i + 8 <= n && !needs_escape8(load64(s + i)))
        i += 8;
    for (; i < n; i++) {
        uint8_t b = s[i];
        if (b >= 0x20 && b != '"' && b != '\\')
            continue;
        if (out_put(o, s + run, i - run) < 0)
            return -1;
        run = i + 1;
        if (b == 0) {
            if (PUT_LIT(o, "\xef\xbf\xbd") < 0)
                return -1;
        } else if (b == '"' || b == '\\') {
            char e[2] = {'\\', (char)b};
            if (out_put(o, e, 2) < 0)
                return -1;
        } else {
            char e[6] = {'\\', 'u', '0', '0', HEX[b >> 4], HEX[b & 15]};
            if (out_put(o, e, 6) < 0)
                return -1;
        }
    }
    if (out_put(o, s + run, n - run) < 0)
        return -1;
    return out_byte(o, '"');
}

/* A client string as a JSON string: validated, cut to max_len code points when `cut`. */
static int json_str(Ctx *c, Out *o, Buf s, int cut) {
    size_t n = (size_t)(s.end - s.p), chars;
    if (!utf8_valid(s.p, n, &chars)) /* (counting code points costs nothing more) */
        return bail(c);
    if (cut && chars > (size_t)c->max_len) {
        if (c->counting)
            c->trunc_values++;
        n = utf8_prefix(s.p, n, (size_t)c->max_len);
    }
    return json_chars(o, s.p, n);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int json_base64(Out *o, const uint8_t *p, size_t n) {
    if (out_byte(o, '"') < 0)
        return -1;
    size_t i = 0;
    char q[4];
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        q[0] = B64[v >> 18];
        q[1] = B64[(v >> 12) & 63];
        q[2] = B64[(v >> 6) & 63];
        q[3] = B64[v & 63];
        if (out_put(o, q, 4) < 0)
            return -1;
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        q[0] = B64[v >> 18];
        q[1] = B64[(v >> 12) & 63];
        q[2] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        q[3] = '=';
        if (out_put(o, q, 4) < 0)
            return -1;
    }
    return out_byte(o, '"');
}

static int json_hex(Out *o, Buf b) {
    if (out_byte(o, '"') < 0)
        return -1;
    for (const uint8_t *p = b.p; p < b.end; p++) {
        char h[2] = {HEX[*p >> 4], HEX[*p & 15]};
        if (out_put(o, h, 2) < 0)
            return -1;
    }
    return out_byte(o, '"');
}

static int json_u64(Out *o, uint64_t v) {
    char d[24];
    char *p = d + sizeof d;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return out_put(o, p, (size_t)(d + sizeof d - p));
}

static int json_i64(Out *o, int64_t v) {
    if (v >= 0)
        return json_u64(o, (uint64_t)v);
    if (out_byte(o, '-') < 0)
        return -1;
    return json_u64(o, 0 - (uint64_t)v); /* INT64_MIN too */
}

/* A double as Python's repr writes it (the shortest text that reads back the same: the same
 * JSONB number orjson's text gives); non-finite values as strings, as common.json_float. */
static int json_double(Out *o, double x) {
    if (!isfinite(x)) {
        const char *s = isnan(x) ? "\"NaN\"" : x > 0 ? "\"Infinity\"" : "\"-Infinity\"";
        return out_put(o, s, strlen(s));
    }
    char *s = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (s == NULL) {
        PyErr_Clear();
        o->oom = 1;
        return -1;
    }
    int rc = out_put(o, s, strlen(s));
    PyMem_Free(s);
    return rc;
}

static int json_any(Ctx *c, Out *o, Buf b, int depth);

/* The attributes user_analytics reads (mapping/user_analytics.py), and a log record's event.name. */
static const char *const USER_KEYS[N_USER_KEYS] = {"enduser.id", "user.id",    "url.path",
                                                   "http.route", "session.id", "event.name"};
static const size_t USER_KEY_LEN[N_USER_KEYS] = {10, 7, 8, 10, 10, 10};
enum { U_ENDUSER, U_USER, U_PATH, U_ROUTE, U_SESSION, U_EVENT };

/* Remember the value of a top-level span attribute user_analytics reads (a repeated key: the
 * last one, as in the Python path's dict). An absent value is kept as {NULL, NULL}. */
static void user_key(Ctx *c, Buf key, Buf val) {
    size_t n = (size_t)(key.end - key.p);
    if (n != 7 && n != 8 && n != 10) /* the lengths of USER_KEYS: most keys are rejected here */
        return;
    for (int i = 0; i < N_USER_KEYS; i++) {
        if (USER_KEY_LEN[i] == n && memcmp(key.p, USER_KEYS[i], n) == 0) {
            c->user_vals[i] = val;
            c->user_has[i] = 1;
            return;
        }
    }
}

/* A repeated KeyValue (`field` of b) as a JSON object, capped at max_attrs. A repeated key is
 * written twice: JSONB keeps the last value, as the Python path's dict does. `user`: bail on
 * the keys that make user_analytics rows. */
static int json_kvs(Ctx *c, Out *o, Buf b, uint32_t field, int depth, int user) {
    if (depth > MAX_DEPTH)
        return bail(c);
    if (out_byte(o, '{') < 0)
        return -1;
    Py_ssize_t n = 0;
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field != field)
            continue;
        if (f.wt != 2)
            return bail(c);
        if (n++ >= c->max_attrs) {
            if (c->counting)
                c->trunc_attrs++;
            continue;
        }
        Buf key = {(const uint8_t *)"", (const uint8_t *)""}, val = {NULL, NULL};
        int nval = 0;
        Field g;
        Buf kv = f.sub;
        int r2;
        while ((r2 = next_field(&kv, &g)) > 0) {
            if (g.field == 1) {
                if (g.wt != 2)
                    return bail(c);
                key = g.sub;
                if (!valid_str(key)) /* protobuf checks every occurrence, not only the last */
                    return bail(c);
            } else if (g.field == 2) {
                if (g.wt != 2)
                    return bail(c);
                val = g.sub;
                nval++;
            }
        }
        if (r2 < 0 || nval > 1)
            return bail(c);
        if (user)
            user_key(c, key, nval ? val : (Buf){NULL, NULL});
        if (n > 1 && out_byte(o, ',') < 0)
            return -1;
        if (json_chars(o, key.p, (size_t)(key.end - key.p)) < 0 || out_byte(o, ':') < 0) /* validated above */
            return -1;
        if (nval) {
            if (json_any(c, o, val, depth + 1) < 0)
                return -1;
        } else if (PUT_LIT(o, "null") < 0) {
            return -1;
        }
    }
    if (r < 0)
        return bail(c);
    return out_byte(o, '}');
}

static int json_array(Ctx *c, Out *o, Buf b, int depth) {
    if (depth > MAX_DEPTH)
        return bail(c);
    if (out_byte(o, '[') < 0)
        return -1;
    Py_ssize_t n = 0;
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field != 1)
            continue;
        if (f.wt != 2)
            return bail(c);
        if (n++ >= c->max_attrs) {
            if (c->counting)
                c->trunc_attrs++;
            continue;
        }
        if (n > 1 && out_byte(o, ',') < 0)
            return -1;
        if (json_any(c, o, f.sub, depth + 1) < 0)
            return -1;
    }
    if (r < 0)
        return bail(c);
    return out_byte(o, ']');
}

/* An AnyValue as common.Mapper.any_value's JSON. */
static int json_any(Ctx *c, Out *o, Buf b, int depth) {
    if (depth > MAX_DEPTH)
        return bail(c);
    Field last = {0};
    int n = any_member(b, &last);
    if (n < 0)
        return bail(c);
    if (n == 0)
        return PUT_LIT(o, "null");
    switch (last.field) {
    case 1:
        return json_str(c, o, last.sub, 1);
    case 2:
        return last.v ? PUT_LIT(o, "true") : PUT_LIT(o, "false");
    case 3:
        return json_i64(o, (int64_t)last.v);
    case 4: {
        double x;
        memcpy(&x, &last.v, sizeof x);
        return json_double(o, x);
    }
    case 5:
        return json_array(c, o, last.sub, depth);
    case 6:
        return json_kvs(c, o, last.sub, 1, depth, 0);
    case 7: {
        size_t len = (size_t)(last.sub.end - last.sub.p);
        if (len > (size_t)c->max_len) {
            if (c->counting)
                c->trunc_values++;
            len = (size_t)c->max_len;
        }
        return json_base64(o, last.sub.p, len);
    }
    default: /* string_value_strindex: nothing to resolve it to */
        return PUT_LIT(o, "null");
    }
}

/* A JSONB field: version byte 1, then JSON text written by the caller between open and close. */
static inline size_t jsonb_open(Out *o) {
    size_t at = copy_open(o);
    out_byte(o, 1);
    return at;
}

/* ------------------------------------------------------------------ span parts */

typedef struct {
    Buf trace_id, span_id, parent, trace_state, name, status, attrs_holder;
    uint64_t start, end;
    uint32_t flags, dropped_attrs, dropped_events, dropped_links;
    int32_t kind;
    int nstatus, nlinks, nevents;
} Span;

typedef struct {
    Buf message;
    int32_t code;
} Status;

/* The wire type of each Span field (index: field number), -1 for none. */
static const int SPAN_WT[17] = {-1, 2, 2, 2, 2, 2, 0, 1, 1, 2, 0, 2, 0, 2, 0, 2, 5};

static int read_span(Ctx *c, Buf b, Span *s, Status *st) {
    static const uint8_t empty[1] = {0};
    memset(s, 0, sizeof *s);
    memset(st, 0, sizeof *st);
    s->trace_id = s->span_id = s->parent = s->trace_state = s->name = (Buf){empty, empty};
    st->message = (Buf){empty, empty};
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field < 1 || f.field > 16)
            continue;
        if (f.wt != SPAN_WT[f.field])
            return bail(c);
        switch (f.field) {
        case 1: s->trace_id = f.sub; break;
        case 2: s->span_id = f.sub; break;
        case 3: s->trace_state = f.sub; if (!valid_str(f.sub)) return bail(c); break;
        case 4: s->parent = f.sub; break;
        case 5: s->name = f.sub; if (!valid_str(f.sub)) return bail(c); break;
        case 6: s->kind = (int32_t)(uint32_t)f.v; break;
        case 7: s->start = f.v; break;
        case 8: s->end = f.v; break;
        case 10: s->dropped_attrs = (uint32_t)f.v; break;
        case 11: s->nevents++; break;
        case 12: s->dropped_events = (uint32_t)f.v; break;
        case 13: s->nlinks++; break;
        case 14: s->dropped_links = (uint32_t)f.v; break;
        case 15: s->status = f.sub; s->nstatus++; break;
        case 16: s->flags = (uint32_t)f.v; break;
        default: break;
        }
    }
    if (r < 0 || s->nstatus > 1)
        return bail(c);
    if (s->nstatus) {
        Buf sb = s->status;
        while ((r = next_field(&sb, &f)) > 0) {
            if (f.field == 2) {
                if (f.wt != 2)
                    return bail(c);
                st->message = f.sub;
                if (!valid_str(f.sub))
                    return bail(c);
            } else if (f.field == 3) {
                if (f.wt != 0)
                    return bail(c);
                st->code = (int32_t)(uint32_t)f.v;
            }
        }
        if (r < 0)
            return bail(c);
    }
    size_t chars;
    if (!utf8_valid(s->name.p, (size_t)(s->name.end - s->name.p), &chars) ||
        !utf8_valid(s->trace_state.p, (size_t)(s->trace_state.end - s->trace_state.p), &chars) ||
        !utf8_valid(st->message.p, (size_t)(st->message.end - st->message.p), &chars))
        return bail(c);
    return 0;
}

/* A Link as traces._link's JSON. */
static int json_link(Ctx *c, Out *o, Buf b) {
    static const uint8_t empty[1] = {0};
    Buf tid = {empty, empty}, sid = {empty, empty}, state = {empty, empty}, link = b;
    uint32_t flags = 0, dropped = 0;
    Field f;
    int r;
    static const int LINK_WT[7] = {-1, 2, 2, 2, 2, 0, 5};
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field < 1 || f.field > 6)
            continue;
        if (f.wt != LINK_WT[f.field])
            return bail(c);
        switch (f.field) {
        case 1: tid = f.sub; break;
        case 2: sid = f.sub; break;
        case 3:
            state = f.sub;
            if (!valid_str(state))
                return bail(c);
            break;
        case 5: dropped = (uint32_t)f.v; break;
        case 6: flags = (uint32_t)f.v; break;
        default: break;
        }
    }
    if (r < 0)
        return bail(c);
    if (PUT_LIT(o, "{\"trace_id\":") < 0 || json_hex(o, tid) < 0 || PUT_LIT(o, ",\"span_id\":") < 0 ||
        json_hex(o, sid) < 0 || PUT_LIT(o, ",\"attributes\":") < 0 || json_kvs(c, o, link, 4, 0, 0) < 0)
        return -1;
    if (state.p != state.end) {
        if (PUT_LIT(o, ",\"trace_state\":") < 0 || json_str(c, o, state, 0) < 0)
            return -1;
    }
    if (flags && (PUT_LIT(o, ",\"flags\":") < 0 || json_u64(o, flags) < 0))
        return -1;
    if (dropped && (PUT_LIT(o, ",\"dropped_attributes_count\":") < 0 || json_u64(o, dropped) < 0))
        return -1;
    return out_byte(o, '}');
}

/* The `extra` JSON of a span (traces._extra), or a NULL field when it has nothing. */
static int copy_span_extra(Ctx *c, Out *o, const Span *s, Buf span, int has_duration) {
    if (!(s->nlinks || s->trace_state.p != s->trace_state.end || !has_duration || s->dropped_attrs ||
          s->dropped_events || s->dropped_links))
        return copy_null(o);
    size_t at = jsonb_open(o);
    int first = 1;
#define SEP() (first ? (first = 0, out_byte(o, '{')) : out_byte(o, ','))
    if (s->nlinks) {
        SEP();
        PUT_LIT(o, "\"links\":[");
        Field f;
        int r, n = 0;
        Buf b = span;
        while ((r = next_field(&b, &f)) > 0) {
            if (f.field != 13)
                continue;
            if (n++ && out_byte(o, ',') < 0)
                return -1;
            if (json_link(c, o, f.sub) < 0)
                return -1;
        }
        out_byte(o, ']');
    }
    if (s->trace_state.p != s->trace_state.end) {
        SEP();
        PUT_LIT(o, "\"trace_state\":");
        if (json_str(c, o, s->trace_state, 0) < 0)
            return -1;
    }
    if (s->dropped_attrs) {
        SEP();
        PUT_LIT(o, "\"dropped_attributes_count\":");
        json_u64(o, s->dropped_attrs);
    }
    if (s->dropped_events) {
        SEP();
        PUT_LIT(o, "\"dropped_events_count\":");
        json_u64(o, s->dropped_events);
    }
    if (s->dropped_links) {
        SEP();
        PUT_LIT(o, "\"dropped_links_count\":");
        json_u64(o, s->dropped_links);
    }
    if (!s->start) {
        SEP();
        PUT_LIT(o, "\"start_time_unix_nano\":0,\"end_time_unix_nano\":");
        json_u64(o, s->end);
    } else if (!has_duration) {
        SEP();
        PUT_LIT(o, "\"end_time_unix_nano\":");
        json_u64(o, s->end);
    }
#undef SEP
    out_byte(o, '}');
    return copy_close(o, at);
}

/* ------------------------------------------------------------------ tallies */

static uint64_t hash_bytes(const uint8_t *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static Tally *tally_slot(Ctx *c, uint32_t resource, Buf name, int32_t kind, int32_t code) {
    size_t n = (size_t)(name.end - name.p);
    if (c->tally_used * 2 >= c->tally_cap) {
        size_t cap = c->tally_cap ? c->tally_cap * 2 : 64;
        Tally *t = calloc(cap, sizeof *t);
        if (t == NULL)
            return NULL;
        for (size_t i = 0; i < c->tally_cap; i++) {
            Tally *e = &c->tally[i];
            if (!e->used)
                continue;
            uint64_t h = hash_bytes(e->name, e->name_len, 0xcbf29ce484222325ULL ^ e->resource ^ ((uint64_t)(uint32_t)e->kind << 32) ^ ((uint64_t)(uint32_t)e->code << 48));
            size_t j = (size_t)h & (cap - 1);
            while (t[j].used)
                j = (j + 1) & (cap - 1);
            t[j] = *e;
        }
        free(c->tally);
        c->tally = t;
        c->tally_cap = cap;
    }
    uint64_t h = hash_bytes(name.p, n, 0xcbf29ce484222325ULL ^ resource ^ ((uint64_t)(uint32_t)kind << 32) ^ ((uint64_t)(uint32_t)code << 48));
    size_t j = (size_t)h & (c->tally_cap - 1);
    for (;;) {
        Tally *e = &c->tally[j];
        if (!e->used) {
            e->used = 1;
            e->name = name.p;
            e->name_len = n;
            e->resource = resource;
            e->kind = kind;
            e->code = code;
            c->tally_used++;
            return e;
        }
        if (e->resource == resource && e->kind == kind && e->code == code && e->name_len == n && memcmp(e->name, name.p, n) == 0)
            return e;
        j = (j + 1) & (c->tally_cap - 1);
    }
}

/* As SpanMetrics.observe: calls, bisect_left over the bounds (le is inclusive), sum of seconds. */
static int tally_span(Ctx *c, uint32_t resource, const Span *s, int32_t code) {
    Tally *t = tally_slot(c, resource, s->name, s->kind, code);
    if (t == NULL)
        return -1;
    double seconds = s->end > s->start ? (double)(s->end - s->start) / 1e9 : 0.0;
    int i = 0;
    while (i < c->nbounds && c->bounds[i] < seconds)
        i++;
    t->calls++;
    t->counts[i]++;
    t->sum += seconds;
    return 0;
}

/* ------------------------------------------------------------------ rows */

static void new_id(Ctx *c, uint8_t id[16]) {
    c->id_counter++;
    memcpy(id, c->id_head, 12);
    be32(id + 12, (uint32_t)c->id_counter);
}

typedef struct {
    int64_t resource_id;
    const char *service;
    Py_ssize_t service_len;
    int64_t scope_id;
    int has_scope;
} Where;

static void put_where_head(Out *o, const uint8_t *id, uint64_t ts_ns, int16_t nanos, const Where *w) {
    copy_bytes(o, id, 16);
    copy_ts(o, ts_ns);
    copy_i16(o, nanos);
    copy_bytes(o, w->service, (size_t)w->service_len);
    copy_i64(o, w->resource_id);
    if (w->has_scope)
        copy_i64(o, w->scope_id);
    else
        copy_null(o);
}

static int span_events(Ctx *c, Buf span, const Span *s, const Where *w, uint64_t span_ts, int16_t span_nanos) {
    Field f;
    int r;
    Buf b = span;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field != 11)
            continue;
        static const uint8_t empty[1] = {0};
        Buf name = {empty, empty};
        uint64_t t = 0;
        uint32_t dropped = 0;
        Field g;
        Buf ev = f.sub;
        int r2;
        while ((r2 = next_field(&ev, &g)) > 0) {
            if (g.field == 1) {
                if (g.wt != 1)
                    return bail(c);
                t = g.v;
            } else if (g.field == 2) {
                if (g.wt != 2)
                    return bail(c);
                name = g.sub;
                if (!valid_str(name))
                    return bail(c);
            } else if (g.field == 3) {
                if (g.wt != 2)
                    return bail(c);
            } else if (g.field == 4) {
                if (g.wt != 0)
                    return bail(c);
                dropped = (uint32_t)g.v;
            }
        }
        if (r2 < 0)
            return bail(c);
        size_t chars;
        if (!utf8_valid(name.p, (size_t)(name.end - name.p), &chars))
            return bail(c);
        Out *o = &c->events;
        uint8_t id[16], hdr[2];
        new_id(c, id);
        be16(hdr, 12);
        out_put(o, hdr, 2);
        put_where_head(o, id, t ? t : span_ts, t ? (int16_t)(t % 1000) : span_nanos, w);
        copy_bytes(o, s->trace_id.p, 16);
        copy_bytes(o, s->span_id.p, 8);
        copy_text(o, name.p, (size_t)(name.end - name.p));
        copy_text(o, s->name.p, (size_t)(s->name.end - s->name.p));
        size_t at = jsonb_open(o);
        if (json_kvs(c, o, f.sub, 3, 0, 0) < 0)
            return -1;
        copy_close(o, at);
        if (dropped || !t) {
            at = jsonb_open(o);
            out_byte(o, '{');
            if (dropped) {
                PUT_LIT(o, "\"dropped_attributes_count\":");
                json_u64(o, dropped);
            }
            if (!t)
                out_put(o, dropped ? ",\"time_unix_nano\":0" : "\"time_unix_nano\":0", dropped ? 19 : 18);
            out_byte(o, '}');
            copy_close(o, at);
        } else {
            copy_null(o);
        }
        c->nevents++;
        if (o->oom)
            return -1;
    }
    return r < 0 ? bail(c) : 0;
}

static int is_zero(Buf b) {
    for (const uint8_t *p = b.p; p < b.end; p++)
        if (*p)
            return 0;
    return 1;
}

/* What of a rejected span the Python path still reads: its attributes and its events' (the C
 * attribute converter converts and counts them), and every string protobuf would validate. */
static int validate_rejected(Ctx *c, Buf span) {
    Out *o = &c->scratch;
    o->len = 0;
    if (json_kvs(c, o, span, 9, 0, 0) < 0)
        return -1;
    Field f;
    int r;
    Buf b = span;
    while ((r = next_field(&b, &f)) > 0) {
        o->len = 0;
        if (f.field == 11) {
            Buf ev = f.sub;
            Field g;
            int r2;
            while ((r2 = next_field(&ev, &g)) > 0) {
                if (g.field == 2) {
                    size_t chars;
                    if (g.wt != 2 || !utf8_valid(g.sub.p, (size_t)(g.sub.end - g.sub.p), &chars))
                        return bail(c);
                }
            }
            if (r2 < 0 || json_kvs(c, o, f.sub, 3, 0, 0) < 0)
                return bail(c);
        } else if (f.field == 13) {
            int counting = c->counting;
            c->counting = 0;
            int rc = json_link(c, o, f.sub);
            c->counting = counting;
            if (rc < 0)
                return -1;
        }
    }
    return r < 0 ? bail(c) : 0;
}

static Agent *agent_of(Ctx *c, size_t resource) {
    while (c->nagents <= resource) {
        if (c->nagents == c->agents_cap) {
            size_t cap = c->agents_cap ? c->agents_cap * 2 : 4;
            Agent *a = realloc(c->agents, cap * sizeof *a);
            if (a == NULL)
                return NULL;
            c->agents = a;
            c->agents_cap = cap;
        }
        Agent *a = &c->agents[c->nagents];
        memset(a, 0, sizeof(Agent));
        a->recent = calloc(c->max_recent ? (size_t)c->max_recent : 1, sizeof(RecentError));
        if (a->recent == NULL)
            return NULL;
        c->nagents++;
    }
    return &c->agents[resource];
}

/* user_analytics._text of an attribute value into o (after what o holds): its length, or -1 for
 * None (absent, empty, an array, a map). Strings as the attribute JSON holds them (cut). */
static Py_ssize_t user_text(Ctx *c, Out *o, int i) {
    if (!c->user_has[i] || c->user_vals[i].p == NULL)
        return -1;
    Field last = {0};
    if (any_member(c->user_vals[i], &last) != 1) /* (malformed ones bailed in the attribute JSON) */
        return -1;
    size_t start = o->len;
    switch (last.field) {
    case 1: {
        size_t len = (size_t)(last.sub.end - last.sub.p), chars;
        if (!utf8_valid(last.sub.p, len, &chars))
            return -1;
        if (chars > (size_t)c->max_len)
            len = utf8_prefix(last.sub.p, len, (size_t)c->max_len);
        put_text(o, last.sub.p, len);
        break;
    }
    case 2:
        out_put(o, last.v ? "true" : "false", last.v ? 4 : 5);
        break;
    case 3:
        json_i64(o, (int64_t)last.v);
        break;
    case 4: {
        double x;
        memcpy(&x, &last.v, sizeof x);
        if (isnan(x))
            PUT_LIT(o, "NaN");
        else if (isinf(x))
            out_put(o, x > 0 ? "Infinity" : "-Infinity", x > 0 ? 8 : 9);
        else
            json_double(o, x);
        break;
    }
    case 7: {
        size_t len = (size_t)(last.sub.end - last.sub.p);
        json_base64(o, last.sub.p, len > (size_t)c->max_len ? (size_t)c->max_len : len);
        /* without the quotes json_base64 wrote */
        memmove(o->p + start, o->p + start + 1, o->len - start - 2);
        o->len -= 2;
        break;
    }
    default:
        return -1;
    }
    if (o->oom || o->len == start)
        return -1;
    return (Py_ssize_t)(o->len - start);
}

/* A TEXT field of user_text(i), NULL for None; returns 1 if a value was written. */
static int copy_user_text(Ctx *c, Out *o, int i) {
    size_t at = copy_open(o);
    if (user_text(c, o, i) < 0) {
        o->len = at;
        copy_null(o);
        return 0;
    }
    copy_close(o, at);
    return 1;
}

/* The user_analytics row of a stored span naming a user (user_analytics.user_analytics_rows). */
/* A user_analytics row's `action` and ids: the span's name (else "span") and ids; a log record's
 * event type and ids (each only when there is one). */
typedef struct {
    const uint8_t *action;
    size_t action_len;
    Buf trace_id, span_id; /* empty: none */
    int is_span;
} UserSource;

static int user_row(Ctx *c, const uint8_t *id, uint64_t ts, const UserSource *u, const Where *w) {
    if (c->user_mode == 2)
        return bail(c); /* user ids hashed: HMAC in the Python path */
    Out *o = &c->users;
    size_t row = o->len;
    uint8_t hdr[2];
    be16(hdr, 8);
    out_put(o, hdr, 2);
    copy_bytes(o, id, 16);
    size_t at = copy_open(o);
    Py_ssize_t n = user_text(c, o, U_ENDUSER);
    if (n < 0)
        n = user_text(c, o, U_USER);
    if (n < 0) { /* the key was there but names nobody: no row */
        o->len = row;
        return 0;
    }
    if (n > KEY_MAX_BYTES) { /* key_text: cut at a character boundary, counted */
        size_t cut = KEY_MAX_BYTES;
        const uint8_t *p = (const uint8_t *)o->p + at + 4;
        while (cut > 0 && (p[cut] & 0xc0) == 0x80)
            cut--;
        o->len = at + 4 + cut;
        c->trunc_keys++;
    }
    copy_close(o, at);
    copy_text(o, u->action, u->action_len);
    if (!copy_user_text(c, o, U_PATH)) { /* url.path names nothing: http.route instead */
        o->len -= 4;                        /* the NULL just written */
        copy_user_text(c, o, U_ROUTE);
    }
    copy_user_text(c, o, U_SESSION);
    copy_ts(o, ts);
    at = jsonb_open(o);
    if (u->is_span)
        PUT_LIT(o, "{\"signal\":\"span\",\"service\":");
    else
        PUT_LIT(o, "{\"signal\":\"log\",\"service\":");
    json_chars(o, (const uint8_t *)w->service, (size_t)w->service_len);
    if (u->trace_id.p != u->trace_id.end) {
        PUT_LIT(o, ",\"trace_id\":");
        json_hex(o, u->trace_id);
    }
    if (u->span_id.p != u->span_id.end) {
        PUT_LIT(o, ",\"span_id\":");
        json_hex(o, u->span_id);
    }
    out_byte(o, '}');
    copy_close(o, at);
    copy_bytes(o, w->service, (size_t)w->service_len);
    c->nusers++;
    return o->oom ? -1 : 0;
}

static int one_span(Ctx *c, Buf span, const Where *w, uint32_t resource, Agent *agent) {
    Span s;
    Status st;
    if (read_span(c, span, &s, &st) < 0)
        return -1;
    c->items++;
    if (tally_span(c, resource, &s, st.code) < 0)
        return -1;
    agent->spans++;
    if (st.code == 2) {
        agent->errors++;
        if (c->max_recent) {
            RecentError *e = &agent->recent[agent->nrecent++ % c->max_recent];
            e->start = s.start;
            e->name = s.name;
            e->message = st.message;
            e->trace_id = s.trace_id;
        }
    }
    size_t tl = (size_t)(s.trace_id.end - s.trace_id.p), sl = (size_t)(s.span_id.end - s.span_id.p);
    size_t pl = (size_t)(s.parent.end - s.parent.p);
    if (tl != 16 || sl != 8 || is_zero(s.trace_id) || is_zero(s.span_id) || (pl && pl != 8)) {
        c->rejected++;
        return validate_rejected(c, span);
    }
    if (s.kind < 0 || s.kind > SMALLINT_MAX || st.code < 0 || st.code > SMALLINT_MAX || s.flags > INT_MAX_)
        return bail(c); /* kept exactly in `extra` by the Python path */
    uint64_t ts = s.start ? s.start : c->received_ns;
    int16_t nanos = s.start ? (int16_t)(s.start % 1000) : 0;
    int has_duration = s.start && s.end >= s.start && s.end - s.start <= BIGINT_MAX_;
    Out *o = &c->spans;
    uint8_t id[16], hdr[2];
    new_id(c, id);
    be16(hdr, 17);
    out_put(o, hdr, 2);
    put_where_head(o, id, ts, nanos, w);
    copy_bytes(o, s.trace_id.p, 16);
    copy_bytes(o, s.span_id.p, 8);
    if (pl && !is_zero(s.parent))
        copy_bytes(o, s.parent.p, 8);
    else
        copy_null(o);
    copy_text(o, s.name.p, (size_t)(s.name.end - s.name.p));
    copy_i16(o, (int16_t)s.kind);
    copy_i16(o, (int16_t)st.code);
    if (st.message.p != st.message.end)
        copy_text(o, st.message.p, (size_t)(st.message.end - st.message.p));
    else
        copy_null(o);
    if (has_duration)
        copy_i64(o, (int64_t)(s.end - s.start));
    else
        copy_null(o);
    if (s.flags)
        copy_i32(o, (int32_t)s.flags);
    else
        copy_null(o);
    memset(c->user_has, 0, sizeof c->user_has);
    size_t at = jsonb_open(o);
    if (json_kvs(c, o, span, 9, 0, c->user_mode) < 0)
        return -1;
    copy_close(o, at);
    if (copy_span_extra(c, o, &s, span, has_duration) < 0)
        return -1;
    if (c->user_mode && (c->user_has[U_ENDUSER] || c->user_has[U_USER])) {
        UserSource u = {s.name.p, (size_t)(s.name.end - s.name.p), s.trace_id, s.span_id, 1};
        if (u.action_len == 0) {
            u.action = (const uint8_t *)"span";
            u.action_len = 4;
        }
        if (user_row(c, id, ts, &u, w) < 0)
            return -1;
    }
    c->nspans++;
    agent->rows++;
    if (o->oom)
        return -1;
    if (!s.nevents)
        return 0;
    int64_t before = c->nevents;
    int rc = span_events(c, span, &s, w, ts, nanos);
    agent->event_rows += c->nevents - before;
    return rc;
}

/* ------------------------------------------------------------------ log records */

/* logs.SEVERITY_BY_TEXT: a severity text (lower case, trailing digits removed) -> letter. */
static const struct {
    const char *text;
    char letter;
} SEVERITY_TEXTS[] = {
    {"trace", 't'}, {"finest", 't'}, {"finer", 't'}, {"verbose", 't'}, {"trc", 't'},
    {"debug", 'd'}, {"dbg", 'd'}, {"fine", 'd'}, {"config", 'd'},
    {"info", 'i'}, {"information", 'i'}, {"informational", 'i'}, {"notice", 'i'}, {"inf", 'i'},
    {"warn", 'w'}, {"warning", 'w'}, {"wrn", 'w'},
    {"error", 'e'}, {"err", 'e'}, {"eror", 'e'}, {"severe", 'e'}, {"alert", 'e'},
    {"fatal", 'f'}, {"critical", 'f'}, {"crit", 'f'}, {"emerg", 'f'}, {"emergency", 'f'}, {"panic", 'f'},
    {"ftl", 'f'},
};
static const char SEVERITY_BY_NUMBER[6] = {'t', 'd', 'i', 'w', 'e', 'f'};

static int py_space(uint8_t b) { /* str.isspace() of an ASCII character */
    return b == ' ' || (b >= 0x09 && b <= 0x0d) || (b >= 0x1c && b <= 0x1f);
}

/* logs.severity(number, text) as its letter; 0 when only the Python path can say (non-ASCII text,
 * where str.strip() and str.lower() follow Unicode). */
static char severity_letter(int32_t number, Buf text) {
    if (number > 0 && number < 25)
        return SEVERITY_BY_NUMBER[(number - 1) / 4];
    size_t n = (size_t)(text.end - text.p);
    if (n == 0)
        return 'i';
    for (size_t i = 0; i < n; i++)
        if (text.p[i] >= 0x80)
            return 0;
    const uint8_t *a = text.p, *z = text.end;
    while (a < z && py_space(*a))
        a++;
    while (z > a && py_space(z[-1]))
        z--;
    while (z > a && z[-1] >= '0' && z[-1] <= '9')
        z--;
    size_t len = (size_t)(z - a);
    char low[16];
    if (len == 0 || len >= sizeof low)
        return 'i';
    for (size_t i = 0; i < len; i++)
        low[i] = (char)(a[i] >= 'A' && a[i] <= 'Z' ? a[i] + 32 : a[i]);
    for (size_t i = 0; i < sizeof SEVERITY_TEXTS / sizeof SEVERITY_TEXTS[0]; i++)
        if (strlen(SEVERITY_TEXTS[i].text) == len && memcmp(SEVERITY_TEXTS[i].text, low, len) == 0)
            return SEVERITY_TEXTS[i].letter;
    return 'i';
}

typedef struct {
    uint64_t time, observed;
    int32_t number;
    uint32_t dropped, flags;
    Buf text, body, trace_id, span_id, event_name;
    int nbody;
} LogRecord;

/* The wire type of each LogRecord field (index: field number), -1 for none. */
static const int LOG_WT[13] = {-1, 1, 0, 2, -1, 2, 2, 0, 5, 2, 2, 1, 2};

static int read_log(Ctx *c, Buf b, LogRecord *l) {
    static const uint8_t empty[1] = {0};
    memset(l, 0, sizeof *l);
    l->text = l->body = l->trace_id = l->span_id = l->event_name = (Buf){empty, empty};
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field < 1 || f.field > 12 || LOG_WT[f.field] < 0)
            continue;
        if (f.wt != LOG_WT[f.field])
            return bail(c);
        switch (f.field) {
        case 1: l->time = f.v; break;
        case 2: l->number = (int32_t)(uint32_t)f.v; break;
        case 3: l->text = f.sub; if (!valid_str(f.sub)) return bail(c); break;
        case 5: l->body = f.sub; l->nbody++; break;
        case 7: l->dropped = (uint32_t)f.v; break;
        case 8: l->flags = (uint32_t)f.v; break;
        case 9: l->trace_id = f.sub; break;
        case 10: l->span_id = f.sub; break;
        case 11: l->observed = f.v; break;
        case 12: l->event_name = f.sub; if (!valid_str(f.sub)) return bail(c); break;
        default: break;
        }
    }
    return r < 0 || l->nbody > 1 ? bail(c) : 0; /* a body sent twice is merged by protobuf */
}

/* A body's columns: `body` TEXT for what Mapper.any_value makes a string (a string, base64 bytes,
 * a non-finite double), `body_value` JSONB for anything else, both NULL for none. */
static int copy_body(Ctx *c, Out *o, const LogRecord *l) {
    Field last = {0};
    int n = any_member(l->body, &last);
    if (n < 0)
        return bail(c);
    int text = 0;
    if (n == 1) {
        if (last.field == 1 || last.field == 7) {
            text = 1;
        } else if (last.field == 4) {
            double x;
            memcpy(&x, &last.v, sizeof x);
            text = !isfinite(x);
        }
    }
    if (n == 0 || last.field == 8) { /* none, or a strindex: nothing */
        copy_null(o);
        return copy_null(o);
    }
    if (text) {
        size_t at = copy_open(o);
        if (last.field == 1) {
            size_t len = (size_t)(last.sub.end - last.sub.p), chars;
            if (!utf8_valid(last.sub.p, len, &chars))
                return bail(c);
            if (chars > (size_t)c->max_len) {
                if (c->counting)
                    c->trunc_values++;
                len = utf8_prefix(last.sub.p, len, (size_t)c->max_len);
            }
            put_text(o, last.sub.p, len);
        } else { /* base64 bytes or "NaN"/"Infinity": json_any's string without its quotes */
            size_t start = o->len;
            if (json_any(c, o, l->body, 0) < 0)
                return -1;
            memmove(o->p + start, o->p + start + 1, o->len - start - 2);
            o->len -= 2;
        }
        copy_close(o, at);
        return copy_null(o);
    }
    copy_null(o);
    size_t at = jsonb_open(o);
    if (json_any(c, o, l->body, 0) < 0)
        return -1;
    return copy_close(o, at);
}

/* A TEXT value as common.key_text makes it (NUL as U+FFFD, then cut to KEY_MAX_BYTES at a
 * character boundary, counted) into o; its length. */
static size_t key_text(Ctx *c, Out *o, Buf s) {
    size_t start = o->len;
    put_text(o, s.p, (size_t)(s.end - s.p));
    size_t n = o->len - start;
    if (n > KEY_MAX_BYTES && !o->oom) {
        size_t cut = KEY_MAX_BYTES;
        const uint8_t *p = (const uint8_t *)o->p + start;
        while (cut > 0 && (p[cut] & 0xc0) == 0x80)
            cut--;
        o->len = start + cut;
        n = cut;
        if (c->counting)
            c->trunc_keys++;
    }
    return n;
}

/* The log record's event name, from the attribute event.name (a non-empty string) or the field. */
static int event_of(Ctx *c, const LogRecord *l, Buf *name, int *from_field) {
    *from_field = 1;
    *name = l->event_name;
    Field last = {0};
    if (c->user_has[U_EVENT] && c->user_vals[U_EVENT].p != NULL) {
        int n = any_member(c->user_vals[U_EVENT], &last);
        if (n == 1 && last.field == 4) { /* a non-finite double is the string "NaN"... for the Python path */
            double x;
            memcpy(&x, &last.v, sizeof x);
            if (!isfinite(x))
                return bail(c);
        }
        if (n == 1 && last.field == 7 && last.sub.p != last.sub.end)
            return bail(c); /* bytes are their base64 string there: an event name it makes */
        if (n == 1 && last.field == 1 && last.sub.p != last.sub.end) {
            size_t len = (size_t)(last.sub.end - last.sub.p), chars;
            if (!utf8_valid(last.sub.p, len, &chars))
                return bail(c);
            if (chars > (size_t)c->max_len) /* as the attribute holds it (counted there) */
                len = utf8_prefix(last.sub.p, len, (size_t)c->max_len);
            *name = (Buf){last.sub.p, last.sub.p + len};
            *from_field = 0;
        }
    }
    return 0;
}

/* What of a rejected log record the Python path still reads: its attributes and body (the C
 * converter converts and counts them). */
static int validate_rejected_log(Ctx *c, Buf rec, const LogRecord *l) {
    Out *o = &c->scratch;
    o->len = 0;
    if (json_kvs(c, o, rec, 6, 0, 0) < 0)
        return -1;
    o->len = 0;
    if (l->nbody && copy_body(c, o, l) < 0)
        return -1;
    return 0;
}

static int one_log(Ctx *c, Buf rec, const Where *w, uint32_t resource, Agent *agent) {
    LogRecord l;
    if (read_log(c, rec, &l) < 0)
        return -1;
    c->items++;
    /* log_counts: by severity number bucket, else by severity text */
    int bucket = l.number >= 1 && l.number <= 24 ? (l.number - 1) / 4 + 1 : 0;
    static const uint8_t empty[1] = {0};
    Tally *t = tally_slot(c, resource, bucket ? (Buf){empty, empty} : l.text, bucket, 0);
    if (t == NULL)
        return -1;
    t->calls++;
    char letter = severity_letter(l.number, l.text);
    if (!letter)
        return bail(c); /* a non-ASCII severity text: Unicode rules, in Python */
    agent->spans++;
    if (l.number >= 17 || (l.number == 0 && l.text.p != l.text.end && (letter == 'e' || letter == 'f'))) {
        agent->errors++;
        if (c->max_recent) {
            RecentError *e = &agent->recent[agent->nrecent++ % c->max_recent];
            e->start = l.time ? l.time : l.observed;
            e->name = l.text;
            e->message = l.body;
            e->trace_id = l.trace_id;
            e->number = l.number;
        }
    }
    size_t tl = (size_t)(l.trace_id.end - l.trace_id.p), sl = (size_t)(l.span_id.end - l.span_id.p);
    if ((tl && tl != 16) || (sl && sl != 8)) {
        c->rejected++;
        return validate_rejected_log(c, rec, &l);
    }
    Buf trace = tl && !is_zero(l.trace_id) ? l.trace_id : (Buf){empty, empty};
    Buf span = sl && !is_zero(l.span_id) ? l.span_id : (Buf){empty, empty};
    uint64_t ts = l.time ? l.time : l.observed ? l.observed : c->received_ns;
    int16_t nanos = l.time ? (int16_t)(l.time % 1000) : l.observed ? (int16_t)(l.observed % 1000) : 0;
    Out *o = &c->spans;
    uint8_t id[16], hdr[2];
    new_id(c, id);
    be16(hdr, 18);
    out_put(o, hdr, 2);
    put_where_head(o, id, ts, nanos, w);
    if (trace.p != trace.end)
        copy_bytes(o, trace.p, 16);
    else
        copy_null(o);
    if (span.p != span.end)
        copy_bytes(o, span.p, 8);
    else
        copy_null(o);
    /* event_type: the attributes are read first (event.name), so write them aside */
    Out *attrs = &c->scratch;
    attrs->len = 0;
    memset(c->user_has, 0, sizeof c->user_has);
    if (json_kvs(c, attrs, rec, 6, 0, 1) < 0)
        return -1;
    Buf event;
    int from_field;
    if (event_of(c, &l, &event, &from_field) < 0)
        return -1;
    size_t at = copy_open(o), event_at = at + 4, event_len;
    if (event.p != event.end) {
        event_len = key_text(c, o, event);
    } else {
        PUT_LIT(o, "log");
        event_len = 3;
    }
    copy_close(o, at);
    /* the field's name cut in event_type is kept whole in extra */
    size_t field_chars = 0, kept_chars = 0;
    if (from_field && event.p != event.end) {
        utf8_valid(event.p, (size_t)(event.end - event.p), &field_chars);
        utf8_valid((const uint8_t *)o->p + event_at, event_len, &kept_chars);
    }
    int keep_name = from_field && event.p != event.end && kept_chars != field_chars;
    uint8_t letter_byte = (uint8_t)letter;
    copy_bytes(o, &letter_byte, 1);
    int number_fits = l.number >= -SMALLINT_MAX && l.number <= SMALLINT_MAX;
    copy_i16(o, number_fits ? (int16_t)l.number : 0);
    if (l.text.p != l.text.end)
        copy_text(o, l.text.p, (size_t)(l.text.end - l.text.p));
    else
        copy_null(o);
    int observed_fits = l.observed <= BIGINT_MAX_;
    if (l.observed && observed_fits)
        copy_i64(o, (int64_t)l.observed);
    else
        copy_null(o);
    int flags_fit = l.flags <= INT_MAX_;
    if (l.flags && flags_fit)
        copy_i32(o, (int32_t)l.flags);
    else
        copy_null(o);
    if (copy_body(c, o, &l) < 0)
        return -1;
    at = jsonb_open(o);
    out_put(o, attrs->p, attrs->len);
    copy_close(o, at);
    if (!(keep_name || l.dropped || !l.time || !observed_fits || !flags_fit || !number_fits)) {
        copy_null(o);
    } else {
        at = jsonb_open(o);
        int first = 1;
#define SEP() (first ? (first = 0, out_byte(o, '{')) : out_byte(o, ','))
        if (keep_name) {
            SEP();
            PUT_LIT(o, "\"event_name\":");
            json_chars(o, l.event_name.p, (size_t)(l.event_name.end - l.event_name.p));
        }
        if (l.dropped) {
            SEP();
            PUT_LIT(o, "\"dropped_attributes_count\":");
            json_u64(o, l.dropped);
        }
        if (!l.time) {
            SEP();
            PUT_LIT(o, "\"time_unix_nano\":0");
        }
        if (!observed_fits) {
            SEP();
            PUT_LIT(o, "\"observed_time_unix_nano\":");
            json_u64(o, l.observed);
        }
        if (!flags_fit) {
            SEP();
            PUT_LIT(o, "\"flags\":");
            json_u64(o, l.flags);
        }
        if (!number_fits) {
            SEP();
            PUT_LIT(o, "\"severity_number\":");
            json_i64(o, l.number);
        }
#undef SEP
        out_byte(o, '}');
        copy_close(o, at);
    }
    c->nspans++;
    agent->rows++;
    /* the event types stored, for the lookup table: tallied as kind -1 by their name before
     * key_text (a prefix of the request's bytes, so the key stays valid) */
    if (tally_slot(c, resource, event, -1, 0) == NULL)
        return -1;
    if (c->user_mode && (c->user_has[U_ENDUSER] || c->user_has[U_USER])) {
        UserSource u = {(const uint8_t *)o->p + event_at, event_len, trace, span, 0};
        /* (o may move while the user row is written elsewhere: copy the action first) */
        char action[KEY_MAX_BYTES];
        memcpy(action, o->p + event_at, event_len);
        u.action = (const uint8_t *)action;
        if (user_row(c, id, ts, &u, w) < 0)
            return -1;
    }
    return o->oom ? -1 : 0;
}

/* ------------------------------------------------------------------ resources and scopes */

/* The single message field `field` of b and the string field `url_field` (last one wins). */
static int header(Ctx *c, Buf b, uint32_t field, uint32_t url_field, Buf *msg, Buf *url) {
    static const uint8_t empty[1] = {0};
    *msg = *url = (Buf){empty, empty};
    int n = 0;
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field == field || f.field == url_field) {
            if (f.wt != 2)
                return bail(c);
            if (f.field == field) {
                *msg = f.sub;
                n++;
            } else {
                *url = f.sub;
                if (!valid_str(f.sub))
                    return bail(c);
            }
        } else if (f.field == 2 && f.wt != 2) {
            return bail(c);
        }
    }
    return r < 0 || n > 1 ? bail(c) : 0;
}

static PyObject *call_resolver(PyObject *fn, Buf msg, Buf url) {
    return PyObject_CallFunction(fn, "y#y#", (const char *)msg.p, (Py_ssize_t)(msg.end - msg.p), (const char *)url.p,
                                 (Py_ssize_t)(url.end - url.p));
}

static int walk(Ctx *c, Buf request, PyObject *resolve_resource, PyObject *resolve_scope, PyObject *services) {
    Field f;
    int r;
    uint32_t resource = 0;
    while ((r = next_field(&request, &f)) > 0) {
        if (f.field != 1)
            continue;
        if (f.wt != 2)
            return bail(c);
        Buf res, url;
        if (header(c, f.sub, 1, 3, &res, &url) < 0)
            return -1;
        PyObject *got = call_resolver(resolve_resource, res, url);
        if (got == NULL)
            return -1;
        Where w = {0};
        int ok = got != Py_None && PyArg_ParseTuple(got, "Ls#", &w.resource_id, &w.service, &w.service_len);
        if (ok && PyList_Append(services, got) < 0) { /* keeps the service's UTF-8 alive */
            Py_DECREF(got);
            return -1;
        }
        Py_DECREF(got);
        if (!ok) {
            if (PyErr_Occurred())
                return -1;
            return bail(c);
        }
        Agent *agent = agent_of(c, resource);
        if (agent == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Buf rs = f.sub;
        Field g;
        int r2;
        while ((r2 = next_field(&rs, &g)) > 0) {
            if (g.field != 2)
                continue;
            Buf scope, surl;
            if (header(c, g.sub, 1, 3, &scope, &surl) < 0)
                return -1;
            PyObject *sid = call_resolver(resolve_scope, scope, surl);
            if (sid == NULL)
                return -1;
            w.has_scope = sid != Py_None && sid != Py_False;
            if (sid == Py_False) { /* the scope can't be decoded: the Python path says why */
                Py_DECREF(sid);
                return bail(c);
            }
            if (w.has_scope) {
                w.scope_id = PyLong_AsLongLong(sid);
                Py_DECREF(sid);
                if (w.scope_id == -1 && PyErr_Occurred())
                    return -1;
            } else {
                Py_DECREF(sid);
            }
            Buf ss = g.sub, last = {NULL, NULL};
            Field h;
            int r3;
            while ((r3 = next_field(&ss, &h)) > 0) {
                if (h.field != 2)
                    continue;
                if ((c->logs ? one_log(c, h.sub, &w, resource, agent) : one_span(c, h.sub, &w, resource, agent)) < 0)
                    return -1;
                last = h.sub;
            }
            if (r3 < 0)
                return bail(c);
            if (last.p != NULL && !c->logs) { /* the scope's last span names the agent's current task */
                Span s;
                Status st;
                read_span(c, last, &s, &st);
                if (s.name.p != s.name.end) {
                    agent->task = s.name;
                    agent->has_task = 1;
                }
            }
        }
        if (r2 < 0)
            return bail(c);
        resource++;
    }
    return r < 0 ? bail(c) : 0;
}

/* ------------------------------------------------------------------ result */

static PyObject *str_of(Buf b) {
    return PyUnicode_DecodeUTF8((const char *)b.p, b.end - b.p, "replace");
}

static PyObject *tallies(Ctx *c) {
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < c->tally_cap; i++) {
        Tally *t = &c->tally[i];
        if (!t->used)
            continue;
        PyObject *counts = PyTuple_New(c->nbounds + 1);
        if (counts == NULL)
            goto fail;
        for (int k = 0; k <= c->nbounds; k++)
            PyTuple_SET_ITEM(counts, k, PyLong_FromUnsignedLongLong(t->counts[k]));
        PyObject *name = str_of((Buf){t->name, t->name + t->name_len});
        PyObject *item = name ? Py_BuildValue("(INiiLNd)", t->resource, name, t->kind, t->code, (long long)t->calls,
                                              counts, t->sum)
                              : NULL;
        if (item == NULL) {
            Py_XDECREF(counts);
            goto fail;
        }
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        if (rc < 0)
            goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *agents(Ctx *c) {
    PyObject *out = PyList_New((Py_ssize_t)c->nagents);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < c->nagents; i++) {
        Agent *a = &c->agents[i];
        int64_t n = a->nrecent < c->max_recent ? a->nrecent : c->max_recent;
        PyObject *recent = PyList_New((Py_ssize_t)n);
        if (recent == NULL)
            goto fail;
        for (int64_t k = 0; k < n; k++) {
            RecentError *e = &a->recent[(a->nrecent - n + k) % c->max_recent];
            PyObject *item =
                c->logs ? Py_BuildValue("(KNy#y#i)", (unsigned long long)e->start, str_of(e->name),
                                        (const char *)e->message.p, (Py_ssize_t)(e->message.end - e->message.p),
                                        (const char *)e->trace_id.p, (Py_ssize_t)(e->trace_id.end - e->trace_id.p),
                                        (int)e->number)
                        : Py_BuildValue("(KNNy#)", (unsigned long long)e->start, str_of(e->name), str_of(e->message),
                                        (const char *)e->trace_id.p, (Py_ssize_t)(e->trace_id.end - e->trace_id.p));
            if (item == NULL) {
                Py_DECREF(recent);
                goto fail;
            }
            PyList_SET_ITEM(recent, (Py_ssize_t)k, item);
        }
        PyObject *task = a->has_task ? str_of(a->task) : (Py_INCREF(Py_None), Py_None);
        PyObject *item = Py_BuildValue("(LLLLNN)", (long long)a->spans, (long long)a->rows, (long long)a->event_rows,
                                       (long long)a->errors, task, recent);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static void ctx_free(Ctx *c) {
    free(c->spans.p);
    free(c->events.p);
    free(c->users.p);
    free(c->scratch.p);
    free(c->tally);
    for (size_t i = 0; i < c->nagents; i++)
        free(c->agents[i].recent);
    free(c->agents);
}

static PyObject *encode(PyObject *args, int logs) {
    Py_buffer data, head;
    unsigned long long counter, received;
    PyObject *bounds, *resolve_resource, *resolve_scope;
    Ctx c;
    memset(&c, 0, sizeof c);
    c.counting = 1;
    c.max_recent = 20;
    c.logs = logs;
    if (!PyArg_ParseTuple(args, "y*Ky*KnnOOO|in", &data, &received, &head, &counter, &c.max_attrs, &c.max_len,
                          &bounds, &resolve_resource, &resolve_scope, &c.user_mode, &c.max_recent))
        return NULL;
    PyObject *result = NULL, *services = NULL, *fast = NULL;
    if (head.len != 12 || c.user_mode < 0 || c.user_mode > 2 || c.max_recent < 0 || c.max_recent > 1000000 || c.max_attrs < 0 || c.max_len < 0 || !PyTuple_Check(bounds) ||
        PyTuple_GET_SIZE(bounds) > MAX_BOUNDS || !PyCallable_Check(resolve_resource) || !PyCallable_Check(resolve_scope)) {
        PyErr_SetString(PyExc_ValueError,
                        "encode: id_head must be 12 bytes, limits >= 0, bounds a tuple of at most 64 floats");
        goto done;
    }
    memcpy(c.id_head, head.buf, 12);
    c.id_counter = counter;
    c.received_ns = received;
    c.nbounds = (int)PyTuple_GET_SIZE(bounds);
    for (int i = 0; i < c.nbounds; i++) {
        c.bounds[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
        if (c.bounds[i] == -1.0 && PyErr_Occurred())
            goto done;
    }
    services = PyList_New(0);
    if (services == NULL)
        goto done;
    Buf buf = {(const uint8_t *)data.buf, (const uint8_t *)data.buf + data.len};
    /* Rows take about 1.2x the request's bytes: reserve that once instead of doubling up to it. */
    if ((size_t)data.len < SIZE_MAX / 4 && out_grow(&c.spans, (size_t)data.len + (size_t)data.len / 4) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (walk(&c, buf, resolve_resource, resolve_scope, services) < 0 || c.spans.oom || c.events.oom || c.users.oom ||
        c.scratch.oom) {
        if (PyErr_Occurred())
            goto done;
        if (c.bail) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        PyErr_NoMemory();
        goto done;
    }
    if (c.id_counter > 0xffffffffULL) {
        PyErr_SetString(PyExc_OverflowError, "encode: row id counter past 2**32");
        goto done;
    }
    result = Py_BuildValue("(y#Ly#Ly#LLLKnnnNN)", c.spans.p ? c.spans.p : "", (Py_ssize_t)c.spans.len,
                           (long long)c.nspans, c.events.p ? c.events.p : "", (Py_ssize_t)c.events.len,
                           (long long)c.nevents, c.users.p ? c.users.p : "", (Py_ssize_t)c.users.len,
                           (long long)c.nusers, (long long)c.items, (long long)c.rejected,
                           (unsigned long long)c.id_counter, c.trunc_attrs, c.trunc_values, c.trunc_keys, tallies(&c),
                           agents(&c));
done:
    (void)fast;
    Py_XDECREF(services);
    ctx_free(&c);
    PyBuffer_Release(&data);
    PyBuffer_Release(&head);
    return result;
}

static PyObject *encode_traces(PyObject *self, PyObject *args) {
    return encode(args, 0);
}

static PyObject *encode_logs(PyObject *self, PyObject *args) {
    return encode(args, 1);
}

static PyMethodDef methods[] = {
    {"encode_traces", encode_traces, METH_VARARGS,
     "encode_traces(request, received_ns, id_head, id_counter, max_attributes, max_value_length, bounds, "
     "resolve_resource, resolve_scope, user_mode=0, recent_errors=20) -> (spans COPY data, spans, span events COPY data, span events, "
     "user_analytics COPY data, user rows, items, rejected, id_counter, attributes cut, values cut, user ids cut, "
     "tallies, agents), or None: use the Python path.\n"
     "user_mode: 0 no user_analytics rows, 1 user rows, 2 user ids are hashed (spans naming a user: None).\n"
     "resolve_resource(resource_bytes, schema_url_bytes) -> (resource_id, service_name) or None (can't decode);\n"
     "resolve_scope(scope_bytes, schema_url_bytes) -> scope_id, None (no scope) or False (can't decode)."},
    {"encode_logs", encode_logs, METH_VARARGS,
     "encode_logs(request, ...) -> as encode_traces, for an ExportLogsServiceRequest: (otel_logs COPY data, log "
     "records, b'', 0, user_analytics COPY data, user rows, items, rejected, id_counter, attributes cut, values cut, "
     "keys cut, tallies by (resource, severity bucket 1-6 or 0, severity text), agents), or None.\n"
     "An agent's recent errors are (time, severity text, body AnyValue bytes, trace id, severity number)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    return PyModule_Create(&module);
}
