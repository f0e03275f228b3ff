/* Reading the protobuf wire format: shared by the C extensions of exporters.postgres.mapping.
 *
 * Every read is bounds-checked against the end of the enclosing message (`Buf.end`); a varint
 * longer than 64 bits, a tag beyond 32 bits or with field number 0, a length past the end or a
 * group (unused by OTLP) is malformed, as protobuf's parser has it. */
#ifndef OTELPG_WIRE_H
#define OTELPG_WIRE_H

#include <stdint.h>

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Buf;

typedef struct {
    uint32_t field;
    int wt;
    uint64_t v;
    Buf sub;
} Field;

/* 0 ok, -1 truncated or longer than 64 bits. */
static inline int read_varint(Buf *b, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        if (b->p >= b->end)
            return -1;
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* 1: a field, 0: end of buffer, -1: malformed. */
static inline int next_field(Buf *b, Field *f) {
    if (b->p >= b->end)
        return 0;
    uint64_t tag;
    if (*b->p < 0x80) { /* one-byte tags: fields 1-15, nearly every tag OTLP sends */
        tag = *b->p++;
        if (tag < 8)
            return -1;
    } else if (read_varint(b, &tag) < 0 || tag > 0xffffffffu) { /* a 32-bit tag, field number >= 1 */
        return -1;
    }
    f->field = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    f->v = 0;
    switch (f->wt) {
    case 0:
    case 2: {
        uint64_t v;
        if (b->p < b->end && *b->p < 0x80)
            v = *b->p++;
        else if (read_varint(b, &v) < 0)
            return -1;
        if (f->wt == 0) {
            f->v = v;
        } else {
            if (v > (uint64_t)(b->end - b->p))
                return -1;
            f->sub.p = b->p;
            f->sub.end = b->p + v;
            b->p += v;
        }
        return 1;
    }
    case 1:
        if (b->end - b->p < 8)
            return -1;
        for (int i = 7; i >= 0; i--) /* little-endian, whatever the host */
            f->v = (f->v << 8) | b->p[i];
        b->p += 8;
        return 1;
    case 5:
        if (b->end - b->p < 4)
            return -1;
        f->v = (uint64_t)b->p[0] | (uint64_t)b->p[1] << 8 | (uint64_t)b->p[2] << 16 | (uint64_t)b->p[3] << 24;
        b->p += 4;
        return 1;
    default: /* groups: not used by OTLP */
        return -1;
    }
}

/* The wire type each AnyValue member must have (index: field number 1-8). */
static const int ANY_VALUE_WT[9] = {-1, 2, 0, 0, 1, 2, 2, 2, 0};

/* The member of an AnyValue: 1 with it in *member, 0 for an empty AnyValue, -1 when only
 * protobuf's rules can say what it holds (malformed, a member with another wire type, or several
 * members: a oneof merged on the wire). */
static inline int any_member(Buf b, Field *member) {
    Field f;
    int n = 0, r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field < 1 || f.field > 8)
            continue;
        if (f.wt != ANY_VALUE_WT[f.field])
            return -1;
        *member = f;
        n++;
    }
    return r < 0 || n > 1 ? -1 : n;
}

#endif
