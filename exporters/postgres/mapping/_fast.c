/* Attribute conversion straight from the OTLP wire format: the hot step of mapping, in C.
 *
 * common.attributes() reads every KeyValue and AnyValue through the protobuf API, which builds
 * two Python wrapper objects per attribute; for spans and log records that was about a third of
 * otelpg's CPU. These functions walk the serialized request instead and build the same dicts
 * directly: resource -> scope -> item, in wire order, which is the order the protobuf API
 * iterates. The Python mapping keeps everything else and takes the n-th dict for its n-th item.
 *
 * The result must equal common.attributes() / common.any_value() exactly (tests/unit/mapping/
 * test_fast_parity.py checks it). Where the wire data would need protobuf's merge rules (a
 * singular message field sent twice, several members of a oneof, a known field with another
 * wire type) or is not well-formed, the function returns None and the caller uses the Python
 * path: rare and only in unusual or hostile input, so it is kept out of this file entirely.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 200

#include "_wire.h"

typedef struct {
    Py_ssize_t max_attrs;
    Py_ssize_t max_len;
    Py_ssize_t trunc_attrs;
    Py_ssize_t trunc_values;
    int bail;
} Ctx;

static PyObject *bail(Ctx *c) {
    c->bail = 1;
    return NULL;
}

static PyObject *utf8(Ctx *c, Buf s) {
    PyObject *o = PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, NULL);
    if (o == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear(); /* protobuf validated it; if not, let the Python path decide */
        return bail(c);
    }
    return o;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static PyObject *base64(const uint8_t *p, Py_ssize_t n) {
    Py_ssize_t out_len = 4 * ((n + 2) / 3);
    PyObject *s = PyUnicode_New(out_len, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    return s;
}

static PyObject *any_value(Ctx *c, Buf b, int depth);

/* One KeyValue into d (a repeated key: the last value wins, as in a dict). 0 ok, -1 NULL-return. */
static int put_kv(Ctx *c, PyObject *d, Buf b, int depth) {
    Buf key = {NULL, NULL}, val = {NULL, NULL};
    int nval = 0;
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field == 1) {
            if (f.wt != 2)
                return bail(c), -1;
            key = f.sub;
        } else if (f.field == 2) {
            if (f.wt != 2)
                return bail(c), -1;
            val = f.sub;
            nval++;
        }
    }
    if (r < 0 || nval > 1)
        return bail(c), -1;
    PyObject *k = key.p ? utf8(c, key) : PyUnicode_New(0, 0);
    if (k == NULL)
        return -1;
    PyObject *v;
    if (nval) {
        v = any_value(c, val, depth + 1);
    } else {
        v = Py_None;
        Py_INCREF(v);
    }
    if (v == NULL) {
        Py_DECREF(k);
        return -1;
    }
    int rc = PyDict_SetItem(d, k, v);
    Py_DECREF(k);
    Py_DECREF(v);
    return rc;
}

/* A repeated KeyValue field (`field` inside b, interleaved with others) -> dict, capped. */
static PyObject *kv_dict(Ctx *c, Buf b, uint32_t field, int depth) {
    if (depth > MAX_DEPTH)
        return bail(c);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    Py_ssize_t n = 0;
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field != field)
            continue;
        if (f.wt != 2)
            goto fail_bail;
        if (n++ >= c->max_attrs) {
            c->trunc_attrs++;
            continue;
        }
        if (put_kv(c, d, f.sub, depth) < 0)
            goto fail;
    }
    if (r < 0)
        goto fail_bail;
    return d;
fail_bail:
    c->bail = 1;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *array(Ctx *c, Buf b, int depth) {
    if (depth > MAX_DEPTH)
        return bail(c);
    PyObject *l = PyList_New(0);
    if (l == NULL)
        return NULL;
    Py_ssize_t n = 0;
    Field f;
    int r;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field != 1)
            continue;
        if (f.wt != 2)
            goto fail_bail;
        if (n++ >= c->max_attrs) {
            c->trunc_attrs++;
            continue;
        }
        PyObject *v = any_value(c, f.sub, depth + 1);
        if (v == NULL)
            goto fail;
        int rc = PyList_Append(l, v);
        Py_DECREF(v);
        if (rc < 0)
            goto fail;
    }
    if (r < 0)
        goto fail_bail;
    return l;
fail_bail:
    c->bail = 1;
fail:
    Py_DECREF(l);
    return NULL;
}

static PyObject *any_value(Ctx *c, Buf b, int depth) {
    if (depth > MAX_DEPTH)
        return bail(c);
    Field last = {0};
    int n = any_member(b, &last);
    if (n < 0)
        return bail(c);
    if (n == 0)
        Py_RETURN_NONE;
    switch (last.field) {
    case 1: {
        PyObject *s = utf8(c, last.sub);
        if (s != NULL && PyUnicode_GET_LENGTH(s) > c->max_len) {
            c->trunc_values++;
            PyObject *cut = PyUnicode_Substring(s, 0, c->max_len);
            Py_DECREF(s);
            s = cut;
        }
        return s;
    }
    case 2:
        return PyBool_FromLong(last.v != 0);
    case 3:
        return PyLong_FromLongLong((long long)(int64_t)last.v);
    case 4: {
        double x;
        memcpy(&x, &last.v, sizeof x);
        if (isfinite(x))
            return PyFloat_FromDouble(x);
        if (isnan(x))
            return PyUnicode_FromString("NaN");
        return PyUnicode_FromString(x > 0 ? "Infinity" : "-Infinity");
    }
    case 5:
        return array(c, last.sub, depth);
    case 6:
        return kv_dict(c, last.sub, 1, depth);
    case 7: {
        Py_ssize_t len = last.sub.end - last.sub.p;
        if (len > c->max_len) {
            c->trunc_values++;
            len = c->max_len;
        }
        return base64(last.sub.p, len);
    }
    default: /* string_value_strindex: nothing to resolve it to in traces, metrics and logs */
        Py_RETURN_NONE;
    }
}

/* The items of an Export*ServiceRequest: field 1 (Resource*) -> 2 (Scope*) -> 2 (item). */
typedef int (*ItemFn)(Ctx *c, Buf item, PyObject *a, PyObject *b);

static int append_new(PyObject *list, PyObject *v) {
    if (v == NULL)
        return -1;
    int rc = PyList_Append(list, v);
    Py_DECREF(v);
    return rc;
}

static int span_item(Ctx *c, Buf item, PyObject *spans, PyObject *events) {
    PyObject *attrs = kv_dict(c, item, 9, 0);
    if (append_new(spans, attrs) < 0)
        return -1;
    Field f;
    int r;
    while ((r = next_field(&item, &f)) > 0) {
        if (f.field != 11)
            continue;
        if (f.wt != 2)
            return bail(c), -1;
        if (append_new(events, kv_dict(c, f.sub, 3, 0)) < 0)
            return -1;
    }
    return r < 0 ? (bail(c), -1) : 0;
}

static int log_item(Ctx *c, Buf item, PyObject *attrs_list, PyObject *bodies) {
    if (append_new(attrs_list, kv_dict(c, item, 6, 0)) < 0)
        return -1;
    Buf body = {NULL, NULL};
    int nbody = 0;
    Field f;
    int r;
    while ((r = next_field(&item, &f)) > 0) {
        if (f.field != 5)
            continue;
        if (f.wt != 2)
            return bail(c), -1;
        body = f.sub;
        nbody++;
    }
    if (r < 0 || nbody > 1)
        return bail(c), -1;
    PyObject *v;
    if (nbody) {
        v = any_value(c, body, 0);
    } else {
        v = Py_None;
        Py_INCREF(v);
    }
    return append_new(bodies, v);
}

/* Walk resource -> scope -> item; 0 ok, -1 error or bail. */
static int walk(Ctx *c, Buf b, int level, ItemFn fn, PyObject *a, PyObject *bl) {
    Field f;
    int r;
    uint32_t want = level == 0 ? 1 : 2;
    while ((r = next_field(&b, &f)) > 0) {
        if (f.field != want)
            continue;
        if (f.wt != 2)
            return bail(c), -1;
        if ((level < 2 ? walk(c, f.sub, level + 1, fn, a, bl) : fn(c, f.sub, a, bl)) < 0)
            return -1;
    }
    return r < 0 ? (bail(c), -1) : 0;
}

static PyObject *run(PyObject *args, ItemFn fn) {
    Py_buffer data;
    Ctx c = {0};
    if (!PyArg_ParseTuple(args, "y*nn", &data, &c.max_attrs, &c.max_len))
        return NULL;
    PyObject *a = PyList_New(0), *b = PyList_New(0), *out = NULL;
    if (a != NULL && b != NULL) {
        Buf buf = {(const uint8_t *)data.buf, (const uint8_t *)data.buf + data.len};
        if (walk(&c, buf, 0, fn, a, b) == 0) {
            out = Py_BuildValue("(OOnn)", a, b, c.trunc_attrs, c.trunc_values);
        } else if (c.bail && !PyErr_Occurred()) {
            out = Py_None;
            Py_INCREF(out);
        }
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *span_attributes(PyObject *self, PyObject *args) {
    return run(args, span_item);
}

static PyObject *log_attributes(PyObject *self, PyObject *args) {
    return run(args, log_item);
}

static PyMethodDef methods[] = {
    {"span_attributes", span_attributes, METH_VARARGS,
     "span_attributes(request_bytes, max_attributes, max_value_length) -> (span attribute dicts, span "
     "event attribute dicts, attributes cut, values cut) in wire order, or None: use the Python path."},
    {"log_attributes", log_attributes, METH_VARARGS,
     "log_attributes(request_bytes, max_attributes, max_value_length) -> (log record attribute dicts, "
     "bodies, attributes cut, values cut) in wire order, or None: use the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fast(void) {
    return PyModule_Create(&module);
}
