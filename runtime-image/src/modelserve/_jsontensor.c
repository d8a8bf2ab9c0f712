/* modelserve._jsontensor: the number arrays of an Open Inference Protocol v2 JSON body, parsed straight into
 * float64 and float32 buffers, without a Python float per number.
 *
 * split(body) scans the JSON text for arrays at $.inputs[*].data. Each one that is a flat array of JSON numbers
 * (finite as a double; integers up to 2**53 in magnitude, the ones every conversion agrees on) is parsed
 * into buffers and replaced in a copy of the body (the "skeleton") by the string "\u0000<k>", k its index.
 * orjson then parses the small skeleton. Anything else (nested arrays, strings, literals, larger integers,
 * malformed text) is left in the skeleton as it is, for orjson and the existing code to handle and word the
 * error; split() returns None where it finds nothing to replace or anything it does not expect. The conversion
 * is correctly rounded (Clinger's exact fast path, then Eisel-Lemire with the table in _pow10.h, then Python's
 * own dtoa for the rest), so the result equals orjson's float per number, then numpy's (or
 * struct's) conversion to float32: tests/runtime/test_jsontensor.py and test_protocol_v2.py check this
 * against orjson and numpy with generated inputs.
 *
 * non_finite(array) is the request path's check that an input holds no NaN or infinity, by exponent bits: one C
 * loop where numpy takes two calls and a temporary boolean array.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_pow10.h"

#define MAX_DEPTH 64
#define MAX_DIGITS 19
#define TWO_POW_53 9007199254740992ULL

typedef const unsigned char *cursor;

static inline cursor skip_ws(cursor p, cursor end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* ---- numbers ---- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MS_SWAR 1
#define MS_LITTLE_ENDIAN 1
static inline uint64_t load8(cursor p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline int all_eight_digits(uint64_t v)
{
    return (((v & 0xF0F0F0F0F0F0F0F0ULL) | (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) ==
            0x3333333333333333ULL);
}

static inline uint64_t eight_digits(uint64_t v)
{
    const uint64_t mask = 0x000000FF000000FFULL;
    const uint64_t mul1 = 0x000F424000000064ULL; /* 100 + (1000000 << 32) */
    const uint64_t mul2 = 0x0000271000000001ULL; /* 1 + (10000 << 32) */
    v -= 0x3030303030303030ULL;
    v = (v * 10) + (v >> 8);
    v = (((v & mask) * mul1) + (((v >> 16) & mask) * mul2)) >> 32;
    return v;
}
#endif

static inline cursor read_digits(cursor p, cursor end, uint64_t *acc)
{
    uint64_t m = *acc;
#ifdef MS_SWAR
    while (end - p >= 8) {
        uint64_t v = load8(p);
        if (!all_eight_digits(v))
            break;
        m = m * 100000000ULL + eight_digits(v); /* may wrap: the digit count decides whether m is used */
        p += 8;
    }
#endif
    while (p < end && (unsigned)(*p - '0') < 10) {
        m = m * 10 + (uint64_t)(*p - '0');
        p++;
    }
    *acc = m;
    return p;
}

/* Eisel-Lemire (Lemire, "Number Parsing at a Gigabyte per Second", 2021), as in Go's strconv: man * 10**exp10
 * correctly rounded to a double, or 0 when it cannot decide (the caller then takes slow_path). man > 0. */
static int eisel_lemire(uint64_t man, int exp10, int neg, double *out)
{
#ifdef __SIZEOF_INT128__
    if (exp10 < MS_POW10_MIN || exp10 > MS_POW10_MAX)
        return 0;
    int clz = __builtin_clzll(man);
    man <<= clz;
    uint64_t ret_exp2 = (uint64_t)(((217706 * exp10) >> 16) + 64 + 1023) - (uint64_t)clz;
    const uint64_t *pow10 = MS_POW10[exp10 - MS_POW10_MIN];
    unsigned __int128 x = (unsigned __int128)man * pow10[1];
    uint64_t x_hi = (uint64_t)(x >> 64), x_lo = (uint64_t)x;
    if ((x_hi & 0x1FF) == 0x1FF && x_lo + man < man) {
        unsigned __int128 y = (unsigned __int128)man * pow10[0];
        uint64_t y_hi = (uint64_t)(y >> 64), y_lo = (uint64_t)y;
        uint64_t merged_hi = x_hi, merged_lo = x_lo + y_hi;
        if (merged_lo < x_lo)
            merged_hi++;
        if ((merged_hi & 0x1FF) == 0x1FF && merged_lo + 1 == 0 && y_lo + man < man)
            return 0;
        x_hi = merged_hi;
        x_lo = merged_lo;
    }
    uint64_t msb = x_hi >> 63;
    uint64_t ret_man = x_hi >> (msb + 9);
    ret_exp2 -= 1 ^ msb;
    if (x_lo == 0 && (x_hi & 0x1FF) == 0 && (ret_man & 3) == 1)
        return 0; /* halfway between two doubles: needs the exact decimal */
    ret_man += ret_man & 1;
    ret_man >>= 1;
    if (ret_man >> 53 > 0) {
        ret_man >>= 1;
        ret_exp2 += 1;
    }
    if (ret_exp2 - 1 >= 0x7FF - 1)
        return 0; /* subnormal, zero, infinite: left to orjson */
    uint64_t bits = ret_exp2 << 52 | (ret_man & 0x000FFFFFFFFFFFFFULL);
    if (neg)
        bits |= 0x8000000000000000ULL;
    memcpy(out, &bits, sizeof bits);
    return 1;
#else
    (void)man, (void)exp10, (void)neg, (void)out;
    return 0;
#endif
}

static const double EXACT_POW10[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* The numbers Eisel-Lemire cannot decide (about one in 250 of float32 values printed as doubles: exact binary
 * fractions such as 0.13965606689453125) and those with more than 19 significant digits: Python's own correctly
 * rounded conversion (dtoa), as float() does, on the token already checked against the JSON grammar. Infinite
 * results are refused, as orjson refuses them. */
static int slow_path(cursor start, cursor stop, double *out)
{
    char text[64];
    size_t len = (size_t)(stop - start);
    if (len >= sizeof text)
        return 0;
    memcpy(text, start, len);
    text[len] = '\0';
    char *rest;
    double v = PyOS_string_to_double(text, &rest, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (rest != text + len || isinf(v))
        return 0;
    *out = v;
    return 1;
}

/* One JSON number (RFC 8259 grammar) at p; returns the cursor after it, or NULL when it is not a number this
 * parser converts exactly (the array is then left to orjson). */
static cursor parse_number(cursor p, cursor end, double *out)
{
    cursor start = p;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end)
        return NULL;
    cursor digits = p;
    uint64_t man = 0;
    if (*p == '0') {
        p++;
        if (p < end && (unsigned)(*p - '0') < 10)
            return NULL; /* leading zero */
    } else if ((unsigned)(*p - '1') < 9) {
        p = read_digits(p, end, &man);
    } else {
        return NULL;
    }
    Py_ssize_t ndigits = p - digits;
    int is_int = 1;
    int64_t exp10 = 0;
    if (p < end && *p == '.') {
        is_int = 0;
        cursor frac = ++p;
        p = read_digits(p, end, &man);
        if (p == frac)
            return NULL;
        ndigits += p - frac;
        exp10 = -(int64_t)(p - frac);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || (unsigned)(*p - '0') >= 10)
            return NULL;
        int64_t e = 0;
        while (p < end && (unsigned)(*p - '0') < 10) {
            if (e < 100000)
                e = e * 10 + (*p - '0');
            p++;
        }
        exp10 += eneg ? -e : e;
    }
    int exact = 1; /* man holds all the significant digits */
    if (ndigits > MAX_DIGITS) {
        /* leading zeros (as in 0.000123) are not significant */
        for (cursor q = digits; q < p && (*q == '0' || *q == '.'); q++)
            if (*q == '0')
                ndigits--;
        exact = ndigits <= MAX_DIGITS;
    }
    double v;
    if (!exact) {
        if (is_int || !slow_path(start, p, &v))
            return NULL;
    } else if (is_int) {
        if (man > TWO_POW_53)
            return NULL; /* orjson keeps an exact int; numpy and struct round it their own ways */
        v = man == 0 ? 0.0 : (neg ? -(double)man : (double)man); /* "-0" is the integer 0 */
    } else if (man == 0) {
        v = neg ? -0.0 : 0.0;
    } else if (man <= TWO_POW_53 && exp10 >= -22 && exp10 <= 22) {
        /* Clinger: both operands exact, so one IEEE operation rounds correctly */
        v = exp10 < 0 ? (double)man / EXACT_POW10[-exp10] : (double)man * EXACT_POW10[exp10];
        if (neg)
            v = -v;
    } else if (!eisel_lemire(man, (int)exp10, neg, &v) && !slow_path(start, p, &v)) {
        return NULL;
    }
    *out = v;
    return p;
}

/* ---- arrays ---- */

typedef struct {
    double *values;
    Py_ssize_t len, cap;
} buffer;

static int push(buffer *b, double v)
{
    if (b->len == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 256;
        double *values = PyMem_Realloc(b->values, (size_t)cap * sizeof(double));
        if (values == NULL)
            return -1;
        b->values = values;
        b->cap = cap;
    }
    b->values[b->len++] = v;
    return 0;
}

/* A flat array of numbers at p ('['): on success returns the cursor after ']' and the values in b; NULL when the
 * array is anything else (b is then to be ignored). *error is set on memory exhaustion. */
static cursor parse_array(cursor p, cursor end, buffer *b, int *error)
{
    b->len = 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']')
        return p + 1;
    for (;;) {
        double v;
        p = parse_number(p, end, &v);
        if (p == NULL)
            return NULL;
        if (push(b, v) < 0) {
            *error = 1;
            return NULL;
        }
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == ']')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

/* The parsed arrays as (float64 bytes, float32 bytes or None where a value overflows float32, start, end). */
static PyObject *array_entry(const buffer *b, Py_ssize_t start, Py_ssize_t stop)
{
    PyObject *f64 = PyBytes_FromStringAndSize((const char *)b->values, b->len * (Py_ssize_t)sizeof(double));
    if (f64 == NULL)
        return NULL;
    PyObject *f32 = PyBytes_FromStringAndSize(NULL, b->len * (Py_ssize_t)sizeof(float));
    if (f32 == NULL) {
        Py_DECREF(f64);
        return NULL;
    }
    float *out = (float *)PyBytes_AS_STRING(f32);
    for (Py_ssize_t i = 0; i < b->len; i++) {
        out[i] = (float)b->values[i];
        if (isinf(out[i])) { /* struct refuses these; the caller takes the orjson path */
            Py_DECREF(f32);
            f32 = Py_NewRef(Py_None);
            break;
        }
    }
    return Py_BuildValue("(NNnn)", f64, f32, start, stop);
}

/* ---- the scan ---- */

enum { KEY_OTHER, KEY_INPUTS, KEY_DATA };

static int contains_nul_escape(cursor p, cursor end)
{
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && memcmp(p, "\\u0000", 6) == 0)
            return 1;
        p += 2; /* an escape is at least two bytes; "\\\\" skips both */
        if (p >= end)
            break;
    }
    return 0;
}

static PyObject *build_skeleton(cursor body, Py_ssize_t n, PyObject *entries)
{
    Py_ssize_t count = PyList_GET_SIZE(entries), size = n;
    char marker[32];
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *entry = PyList_GET_ITEM(entries, k);
        Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        Py_ssize_t stop = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
        size += snprintf(marker, sizeof marker, "\"\\u0000%zd\"", k) - (stop - start);
    }
    PyObject *skeleton = PyBytes_FromStringAndSize(NULL, size);
    if (skeleton == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(skeleton);
    Py_ssize_t prev = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *entry = PyList_GET_ITEM(entries, k);
        Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        Py_ssize_t stop = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
        memcpy(out, body + prev, (size_t)(start - prev));
        out += start - prev;
        int len = snprintf(marker, sizeof marker, "\"\\u0000%zd\"", k);
        memcpy(out, marker, (size_t)len);
        out += len;
        prev = stop;
    }
    memcpy(out, body + prev, (size_t)(n - prev));
    return skeleton;
}

static PyObject *scan(cursor body, Py_ssize_t n)
{
    cursor p = body, end = body + n;
    char stack[MAX_DEPTH]; /* 'o' object, 'a' array */
    int depth = 0, expect_key = 0, pending = KEY_OTHER, value_kind = KEY_OTHER, inputs_open = 0, error = 0;
    buffer b = {NULL, 0, 0};
    PyObject *entries = PyList_New(0);
    if (entries == NULL)
        return NULL;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        goto none;
    while (p < end) {
        unsigned char c = *p;
        switch (c) {
        case ' ': case '\n': case '\r': case '\t':
            p++;
            break;
        case '"': {
            cursor start = ++p, q;
            for (;;) {
                q = memchr(p, '"', (size_t)(end - p));
                if (q == NULL)
                    goto none;
                cursor back = q;
                while (back > start && back[-1] == '\\')
                    back--;
                if ((q - back) % 2 == 0)
                    break; /* not escaped */
                p = q + 1;
            }
            if (depth > 0 && stack[depth - 1] == 'o' && expect_key) {
                Py_ssize_t len = q - start;
                if (depth == 1 && len == 6 && memcmp(start, "inputs", 6) == 0)
                    pending = KEY_INPUTS;
                else if (depth == 3 && inputs_open && len == 4 && memcmp(start, "data", 4) == 0)
                    pending = KEY_DATA;
                else
                    pending = KEY_OTHER;
                expect_key = 0;
            } else {
                value_kind = KEY_OTHER;
            }
            p = q + 1;
            break;
        }
        case ':':
            value_kind = pending;
            pending = KEY_OTHER;
            p++;
            break;
        case ',':
            expect_key = depth > 0 && stack[depth - 1] == 'o';
            value_kind = KEY_OTHER;
            p++;
            break;
        case '{':
        case '[':
            if (c == '[' && value_kind == KEY_DATA) {
                cursor after = parse_array(p, end, &b, &error);
                if (error)
                    goto fail;
                if (after != NULL) {
                    PyObject *entry = array_entry(&b, p - body, after - body);
                    if (entry == NULL || PyList_Append(entries, entry) < 0) {
                        Py_XDECREF(entry);
                        goto fail;
                    }
                    Py_DECREF(entry);
                    value_kind = KEY_OTHER;
                    p = after;
                    break;
                }
            }
            if (depth == MAX_DEPTH)
                goto none;
            if (c == '[' && value_kind == KEY_INPUTS && depth == 1)
                inputs_open = 1;
            stack[depth++] = c == '{' ? 'o' : 'a';
            expect_key = c == '{';
            value_kind = KEY_OTHER;
            p++;
            break;
        case '}':
        case ']':
            if (depth == 0 || stack[depth - 1] != (c == '}' ? 'o' : 'a'))
                goto none;
            depth--;
            if (depth == 1 && c == ']')
                inputs_open = 0;
            expect_key = 0;
            value_kind = KEY_OTHER;
            p++;
            if (depth == 0) {
                if (skip_ws(p, end) != end)
                    goto none;
                p = end;
            }
            break;
        default: /* numbers and literals outside the data arrays: orjson checks them */
            value_kind = KEY_OTHER;
            p++;
            break;
        }
    }
    if (depth != 0 || PyList_GET_SIZE(entries) == 0)
        goto none;
    PyMem_Free(b.values);
    PyObject *skeleton = build_skeleton(body, n, entries);
    if (skeleton == NULL) {
        Py_DECREF(entries);
        return NULL;
    }
    return Py_BuildValue("(NN)", skeleton, entries);
none:
    PyMem_Free(b.values);
    Py_DECREF(entries);
    Py_RETURN_NONE;
fail:
    PyMem_Free(b.values);
    Py_DECREF(entries);
    if (!PyErr_Occurred())
        PyErr_NoMemory();
    return NULL;
}

static PyObject *split(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    cursor body = view.buf;
    PyObject *result;
    if (contains_nul_escape(body, body + view.len))
        result = Py_NewRef(Py_None); /* "\u0000" marks the arrays in the skeleton: a body that has it is not split */
    else
        result = scan(body, view.len);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *parse_float(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    cursor p = view.buf, end = p + view.len;
    double v;
    cursor after = parse_number(p, end, &v);
    PyBuffer_Release(&view);
    if (after == NULL || after != end)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(v);
}

/* ---- finiteness ---- */

/* Whether a buffer of IEEE 754 binary16/32/64 values holds a NaN or an infinity: an all-ones exponent. memcpy per
 * element because a tensor inside a request body (binary data at any offset) need not be aligned. */
#define MS_ANY_NON_FINITE(T, MASK)                                                                                 \
    do {                                                                                                           \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                       \
            T v;                                                                                                   \
            memcpy(&v, p + i * (Py_ssize_t)sizeof(T), sizeof(T));                                                 \
            if ((v & (MASK)) == (MASK)) {                                                                          \
                found = 1;                                                                                         \
                break;                                                                                             \
            }                                                                                                      \
        }                                                                                                          \
    } while (0)

static PyObject *non_finite(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear(); /* not a contiguous buffer: numpy decides */
        Py_RETURN_NONE;
    }
    const char *format = view.format != NULL ? view.format : "B";
    if (*format == '@' || *format == '=')
        format++;
#ifdef MS_LITTLE_ENDIAN /* "<" is the native order */
    else if (*format == '<')
        format++;
#endif
    int found = 0, known = format[0] != '\0' && format[1] == '\0';
    const unsigned char *p = view.buf;
    Py_ssize_t n = view.itemsize > 0 ? view.len / view.itemsize : 0;
    if (known && *format == 'e' && view.itemsize == 2)
        MS_ANY_NON_FINITE(uint16_t, 0x7C00U);
    else if (known && *format == 'f' && view.itemsize == 4)
        MS_ANY_NON_FINITE(uint32_t, 0x7F800000UL);
    else if (known && *format == 'd' && view.itemsize == 8)
        MS_ANY_NON_FINITE(uint64_t, 0x7FF0000000000000ULL);
    else
        known = 0;
    PyBuffer_Release(&view);
    if (!known)
        Py_RETURN_NONE; /* another type or byte order: numpy decides */
    return PyBool_FromLong(found);
}

static PyMethodDef methods[] = {
    {"split", split, METH_O,
     "split(body) -> (skeleton, [(float64 bytes, float32 bytes | None, start, end), ...]) | None\n\n"
     "The flat number arrays at $.inputs[*].data of an OIP v2 JSON body, parsed, and the body with each one\n"
     "replaced by the string \"\\u0000<index>\"; None where there is none or the body is not one to split."},
    {"parse_float", parse_float, METH_O,
     "parse_float(text) -> float | None: one JSON number as split() converts it; None where split() would leave\n"
     "it to orjson."},
    {"non_finite", non_finite, METH_O,
     "non_finite(array) -> bool | None: whether a C-contiguous float16, float32 or float64 array (native byte\n"
     "order) holds a NaN or an infinity; None for anything else, which numpy is to check."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "modelserve._jsontensor",
    "The number arrays of an Open Inference Protocol v2 JSON body, parsed straight into float buffers.", 0,
    methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jsontensor(void)
{
    return PyModuleDef_Init(&module_def);
}
