/* The job's output bytes as text: UTF-8 decoded with replacement exactly as Python's incremental
 * decoder does, escaped into a JSON string as orjson escapes it, so that the event lines match
 * holder.py's byte for byte. */
#include "holder.h"

/* ---- UTF-8 in: Python's decode("utf-8", "replace"), incremental ----------------------------- */

/* the valid sequence's length at s, 0 if s ends inside a sequence valid so far, or -k: the k
 * bytes (the maximal subpart) that one U+FFFD replaces */
int utf8_sequence(const unsigned char *s, size_t n) {
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    int need;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n)
            return 0;
        unsigned char x = s[i];
        if (i == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xbf))
            return -i;
    }
    return need + 1;
}

static const char HEX[] = "0123456789abcdef";

/* one valid character into a JSON string as orjson writes it (UTF-8 as is; quote, backslash and
 * controls escaped, the common ones short) */
static void add_char(struct buf *b, const unsigned char *s, size_t len) {
    if (len > 1 || (s[0] >= 0x20 && s[0] != '"' && s[0] != '\\')) {
        add(b, s, len);
        return;
    }
    char e[6] = {'\\', 0, 0, 0, 0, 0};
    switch (s[0]) {
    case '"': e[1] = '"'; add(b, e, 2); return;
    case '\\': e[1] = '\\'; add(b, e, 2); return;
    case '\n': e[1] = 'n'; add(b, e, 2); return;
    case '\r': e[1] = 'r'; add(b, e, 2); return;
    case '\t': e[1] = 't'; add(b, e, 2); return;
    case '\b': e[1] = 'b'; add(b, e, 2); return;
    case '\f': e[1] = 'f'; add(b, e, 2); return;
    default:
        e[1] = 'u'; e[2] = '0'; e[3] = '0'; e[4] = HEX[s[0] >> 4]; e[5] = HEX[s[0] & 15];
        add(b, e, 6);
    }
}

static const unsigned char REPLACEMENT[] = {0xef, 0xbf, 0xbd};

/* CPython's incremental decoder also holds back a truncated surrogate (ED A0..BF) at the end of
 * its input, although no byte can make it valid: it goes as two U+FFFD once more comes */
static int held_back(const unsigned char *s, size_t n, int r) {
    return r == 0 || (r == -1 && n == 2 && s[0] == 0xed && s[1] >= 0xa0 && s[1] <= 0xbf);
}

/* the pending bytes, as a decode that knows whether more follows (`more`) or not (`final`) */
static void drain_pending(struct buf *b, struct decoder *d, int more, int final) {
    while (d->npend) {
        int r = utf8_sequence(d->pend, d->npend);
        if (!final && (r == 0 || (!more && held_back(d->pend, d->npend, r))))
            return;
        size_t used = r > 0 ? (size_t)r : r < 0 ? (size_t)-r : d->npend;
        if (r > 0)
            add_char(b, d->pend, used);
        else
            add(b, REPLACEMENT, 3);
        memmove(d->pend, d->pend + used, d->npend - used);
        d->npend -= used;
    }
}

#if defined(__SSE2__)
#include <emmintrin.h>
#define STEP 16

/* bit k: byte k of the STEP at p is not copied as it is (a control or non-ASCII, both below 0x20
 * as signed bytes; a quote; a backslash); in *newlines, which of those are newlines */
static inline unsigned special_bytes(const unsigned char *p, unsigned *newlines) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i quote = _mm_cmpeq_epi8(v, _mm_set1_epi8('"')), backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i low = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
    *newlines = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(low, _mm_or_si128(quote, backslash)));
}

static inline void copy_step(char *out, const unsigned char *p) {
    _mm_storeu_si128((__m128i *)out, _mm_loadu_si128((const __m128i *)p));
}
#else
#define STEP 8

/* the same, eight bytes in a word: only its lowest flagged byte is exact (a borrow flags only
 * bytes above it), so that one alone is given and no newline */
static inline unsigned special_bytes(const unsigned char *p, unsigned *newlines) {
    const uint64_t ones = 0x0101010101010101ull, high = ones * 0x80;
    uint64_t w;
    memcpy(&w, p, 8);
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    uint64_t m = ((((w - ones * 0x20) & ~w) | ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)) & high) |
                 (w & high);
    *newlines = 0;
    return m ? 1u << (__builtin_ctzll(m) >> 3) : 0;
}

static inline void copy_step(char *out, const unsigned char *p) { memcpy(out, p, 8); }
#endif

/* `data` decoded (after what the last call held back) and escaped into b; a sequence cut by the
 * end of `data` is held back unless `final`. Plain ASCII goes a STEP of bytes at a time, and a
 * step whose only special bytes are newlines (a line of a large output ends in one) has them
 * escaped in place: a job that prints short lines fast costs the holder a pass over its bytes,
 * not calls per line. */
void decode_into(struct buf *b, struct decoder *d, const unsigned char *data, size_t n, int final) {
    size_t i = 0;
    while (d->npend && i < n) {  /* the held bytes take the next ones, one at a time */
        d->pend[d->npend++] = data[i++];
        drain_pending(b, d, i < n, 0);
    }
    reserve(b, (n - i) * 6 + 16);  /* the most any byte becomes (\u00XX), and a step's spill */
    char *out = b->p + b->len;     /* room: at least 6 (n - i) + 16 is left ahead of it */
    while (i < n) {
        if (n - i >= STEP) {
            unsigned newlines, m = special_bytes(data + i, &newlines);
            copy_step(out, data + i);
            if (!m) {
                out += STEP;
                i += STEP;
                continue;
            }
            if (m == newlines) {
                size_t pos = 0;  /* the step's bytes from pos on lie at out */
                for (; m; m &= m - 1) {
                    size_t k = (size_t)__builtin_ctz(m);
                    out += k - pos;
                    out[0] = '\\';
                    out[1] = 'n';
                    out += 2;
                    pos = k + 1;
                    if (pos < STEP && i + pos + STEP <= n)
                        copy_step(out, data + i + pos);
                    else if (pos < STEP)
                        memcpy(out, data + i + pos, STEP - pos);
                }
                out += STEP - pos;
                i += STEP;
                continue;
            }
            size_t k = (size_t)__builtin_ctz(m);
            out += k;
            i += k;
        }
        unsigned char c = data[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *out++ = (char)c;
            i++;
            continue;
        }
        if (c == '\n') {
            *out++ = '\\';
            *out++ = 'n';
            i++;
            continue;
        }
        b->len = (size_t)(out - b->p);
        int r = utf8_sequence(data + i, n - i);
        if (r > 0) {
            add_char(b, data + i, (size_t)r);
            i += (size_t)r;
        } else if (!final && held_back(data + i, n - i, r)) {
            memcpy(d->pend, data + i, n - i);
            d->npend = n - i;
            i = n;
        } else {
            add(b, REPLACEMENT, 3);
            i += r < 0 ? (size_t)-r : n - i;
        }
        out = b->p + b->len;
    }
    b->len = (size_t)(out - b->p);
    if (final)
        drain_pending(b, d, 0, 1);
}
