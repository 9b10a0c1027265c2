/* jnb-holder's growing buffers, and values written into them as Python's json.dumps writes them
 * (ensure_ascii, repr of floats): outcome.json and the control lines read the same as holder.py's. */
#include "holder.h"

void reserve(struct buf *b, size_t more) {
    if (b->cap - b->len >= more)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        out_of_memory();
    b->p = p;
    b->cap = cap;
}

void add(struct buf *b, const void *data, size_t n) {
    reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void adds(struct buf *b, const char *s) { add(b, s, strlen(s)); }

void addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void addf(struct buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void release(struct buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- JSON out: Python's json.dumps (ensure_ascii, repr of floats) -------------------------- */

/* repr(v) as Python writes it: the shortest digits that read back as v, fixed notation for
 * decimal exponents -4..15, scientific otherwise (1e+16, 1.5e-05) */
void add_float(struct buf *b, double v) {
    char tmp[48];
    if (isnan(v) || isinf(v)) {
        adds(b, isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    char digits[24];
    int nd = 0, neg = tmp[0] == '-';
    const char *c = tmp + neg;
    for (; *c && *c != 'e'; c++)
        if (*c >= '0' && *c <= '9')
            digits[nd++] = *c;
    int exp = atoi(c + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        adds(b, "-");
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                add(b, i < nd ? &digits[i] : "0", 1);
            adds(b, ".");
            if (nd > exp + 1)
                add(b, digits + exp + 1, (size_t)(nd - exp - 1));
            else
                adds(b, "0");
        } else {
            adds(b, "0.");
            for (int i = 0; i < -exp - 1; i++)
                adds(b, "0");
            add(b, digits, (size_t)nd);
        }
    } else {
        add(b, digits, 1);
        if (nd > 1) {
            adds(b, ".");
            add(b, digits + 1, (size_t)(nd - 1));
        }
        addf(b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

/* one code point of (possibly surrogate-carrying) UTF-8 at s; its length in *len */
static uint32_t code_point(const unsigned char *s, size_t n, size_t *len) {
    unsigned char c = s[0];
    int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    if ((size_t)more >= n)
        more = 0;
    uint32_t cp = more == 3 ? c & 7u : more == 2 ? c & 15u : more == 1 ? c & 31u : c;
    for (int i = 1; i <= more; i++)
        cp = (cp << 6) | (s[i] & 63u);
    *len = (size_t)more + 1;
    return cp;
}

/* a string as json.dumps writes it (ensure_ascii): \uXXXX for all but printable ASCII */
void add_pystr(struct buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    adds(b, "\"");
    for (size_t i = 0; i < n;) {
        size_t len;
        uint32_t cp = code_point(u + i, n - i, &len);
        i += len;
        if (cp == '"')
            adds(b, "\\\"");
        else if (cp == '\\')
            adds(b, "\\\\");
        else if (cp == '\n')
            adds(b, "\\n");
        else if (cp == '\r')
            adds(b, "\\r");
        else if (cp == '\t')
            adds(b, "\\t");
        else if (cp == '\b')
            adds(b, "\\b");
        else if (cp == '\f')
            adds(b, "\\f");
        else if (cp >= 0x20 && cp < 0x7f) {
            char ch = (char)cp;
            add(b, &ch, 1);
        } else if (cp >= 0x10000) {
            cp -= 0x10000;
            addf(b, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
        } else
            addf(b, "\\u%04x", cp);
    }
    adds(b, "\"");
}

void add_pystr_or_null(struct buf *b, const char *s) {
    if (s)
        add_pystr(b, s, strlen(s));
    else
        adds(b, "null");
}
