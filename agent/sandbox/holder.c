/* jnb-holder: a plain job's holder from its init's spawn to its end, in the place of holder.py.
 *
 * The Python holder (holder.py) takes the job, prepares its root, spawns jnb-init and announces
 * itself (holder.json, the listening control socket); for a job whose output translator is the
 * text one it then execs this program (holderplan.py), handing over its descriptors (the locked
 * event log: flock locks live on the open file description, so the lock survives the exec) and a
 * sealed memfd plan of tagged records (u32 tag, u32 length, value; strings end with a NUL) whose
 * descriptor is argv[1]. A held job's steady state is then this process alone: its resident
 * memory is a few pages of a static binary, where a fork of the Python launcher kept megabytes.
 *
 * It does what holder.py does, with the same formats on disk and on the wire: output read by
 * read into `stdout`/`stderr` events (UTF-8 decoded with replacement exactly as Python's
 * incremental decoder does, escaped as orjson escapes), the output cap and its note, the status
 * pipe, the timeout, stop with grace then SIGKILL, go/abort, signals, input, the control protocol
 * of control.py (JSON lines, hello with the pidfd, seq/running/ended), and the end: usage and OOM
 * from the cgroup, /work copied out (by sandbox/workcopy.py in a short-lived child, only when the
 * job left something there), outcome.json as outcome.py writes it, and `ended`.
 *
 * `jnb-holder --relay-test CAP` reads (kind byte, u32 length, bytes) records on stdin and writes
 * the event lines their output makes (from seq 1) on stdout: tests/test_holder_c.py compares
 * them with Python's. Built by scripts/install.sh (gcc, static) into the venv's libexec.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* holder.py's and control.py's numbers */
#define READ_SIZE (512 << 10)
#define SMALL_READ (READ_SIZE >> 2)
#define BUSY_PAUSE_S 0.002
#define BUSY_STREAK 8
#define MAX_CONNECTIONS 16
#define MAX_PENDING_INPUT ((size_t)64 << 20)
#define MAX_LINE ((size_t)64 << 20)
#define CHANNEL_READ (256 << 10)
#define MAX_FDS 4
#define PROTOCOL 1
#define MAX_PLAN (1 << 20)
#define MAX_DEPTH 512

/* the plan's records (holderplan.py has the same numbers) */
enum {
    H_JOB_ID = 1, H_TOKEN, H_BOOT_ID, H_STATE, H_UID, H_TIMEOUT, H_GRACE, H_CAP, H_SEQ, H_MARK, H_FD,
    H_INIT_PID, H_GO_DEADLINE, H_WORK_DIR, H_WORK_ARGS, H_PYTHON,
};
/* H_FD roles */
enum {
    F_LOG = 1, F_DIR, F_FIRST, F_LISTEN, F_OUT, F_ERR, F_STATUS, F_GO, F_STDIN, F_INIT,
    F_CG_CPU_STAT, F_CG_CPU_NS, F_CG_PEAK, F_CG_EVENTS, F_CG_FAILCNT, F_CG_LIMIT, F_ROLES,
};

/* ---- small buffers --------------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

__attribute__((noreturn)) static void out_of_memory(void);

static void reserve(struct buf *b, size_t more) {
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

static void add(struct buf *b, const void *data, size_t n) {
    reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void adds(struct buf *b, const char *s) { add(b, s, strlen(s)); }

static void addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(struct buf *b, const char *fmt, ...) {
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

static void release(struct buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- clocks ----------------------------------------------------------------------------------- */

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double monotonic(void) { return clock_s(CLOCK_MONOTONIC); }

static double min_d(double a, double b) { return a < b ? a : b; }

static double max_d(double a, double b) { return a > b ? a : b; }

/* ---- JSON out: Python's json.dumps (ensure_ascii, repr of floats) -------------------------- */

/* repr(v) as Python writes it: the shortest digits that read back as v, fixed notation for
 * decimal exponents -4..15, scientific otherwise (1e+16, 1.5e-05) */
static void add_float(struct buf *b, double v) {
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
static void add_pystr(struct buf *b, const char *s, size_t n) {
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

static void add_pystr_or_null(struct buf *b, const char *s) {
    if (s)
        add_pystr(b, s, strlen(s));
    else
        adds(b, "null");
}

/* ---- UTF-8 in: Python's decode("utf-8", "replace"), incremental ----------------------------- */

/* the valid sequence's length at s, 0 if s ends inside a sequence valid so far, or -k: the k
 * bytes (the maximal subpart) that one U+FFFD replaces */
static int utf8_sequence(const unsigned char *s, size_t n) {
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

struct decoder {
    unsigned char pend[4];
    size_t npend;
};

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

/* `data` decoded (after what the last call held back) and escaped into b; a sequence cut by the
 * end of `data` is held back unless `final` */
static void decode_into(struct buf *b, struct decoder *d, const unsigned char *data, size_t n, int final) {
    size_t i = 0;
    while (d->npend && i < n) {  /* the held bytes take the next ones, one at a time */
        d->pend[d->npend++] = data[i++];
        drain_pending(b, d, i < n, 0);
    }
    reserve(b, (n - i) * 6 + 16);
    while (i < n) {
        unsigned char c = data[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            size_t j = i + 1;
            while (j < n && data[j] >= 0x20 && data[j] < 0x80 && data[j] != '"' && data[j] != '\\')
                j++;
            memcpy(b->p + b->len, data + i, j - i);
            b->len += j - i;
            i = j;
            continue;
        }
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
    }
    if (final)
        drain_pending(b, d, 0, 1);
}

/* ---- JSON in: a strict parser for the control lines and the status lines ------------------- */
/* As json.loads: RFC 8259 values, NaN/Infinity, no control characters in strings, duplicate
 * keys (the last wins). Only the top level object's scalar members are kept; nested values are
 * checked and skipped. Lone surrogates are kept as 3-byte sequences and flagged. */

enum jtype { J_NONE, J_NULL, J_BOOL, J_NUM, J_STR, J_OTHER };

struct jval {
    enum jtype type;
    double num;
    int is_int, big;
    long long ival;
    int truth;
    char *s;
    size_t slen;
    int surrogate;
};

struct jfield {
    const char *name;
    struct jval v;
};

struct jcur {
    const unsigned char *p, *end;
    int depth;
};

static void ws(struct jcur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(const unsigned char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char x = p[i];
        v <<= 4;
        if (x >= '0' && x <= '9')
            v |= x - '0';
        else if (x >= 'a' && x <= 'f')
            v |= x - 'a' + 10u;
        else if (x >= 'A' && x <= 'F')
            v |= x - 'A' + 10u;
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(struct buf *b, uint32_t cp) {
    unsigned char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp; n = 1;
    } else if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 63)); n = 2;
    } else if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12)); o[1] = (unsigned char)(0x80 | ((cp >> 6) & 63));
        o[2] = (unsigned char)(0x80 | (cp & 63)); n = 3;
    } else {
        o[0] = (unsigned char)(0xf0 | (cp >> 18)); o[1] = (unsigned char)(0x80 | ((cp >> 12) & 63));
        o[2] = (unsigned char)(0x80 | ((cp >> 6) & 63)); o[3] = (unsigned char)(0x80 | (cp & 63)); n = 4;
    }
    add(b, o, n);
}

/* a string at c->p (its opening quote); its text into `out` if given */
static int jstring(struct jcur *c, struct buf *out, int *surrogate) {
    if (c->p >= c->end || *c->p != '"')
        return -1;
    c->p++;
    while (c->p < c->end) {
        unsigned char x = *c->p;
        if (x == '"') {
            c->p++;
            return 0;
        }
        if (x < 0x20)
            return -1;
        if (x == '\\') {
            if (c->end - c->p < 2)
                return -1;
            unsigned char e = c->p[1];
            c->p += 2;
            char ch;
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                uint32_t cp, low;
                if (c->end - c->p < 4 || hex4(c->p, &cp) < 0)
                    return -1;
                c->p += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u' &&
                    hex4(c->p + 2, &low) == 0 && low >= 0xdc00 && low < 0xe000) {
                    c->p += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                } else if (cp >= 0xd800 && cp < 0xe000)
                    *surrogate = 1;
                if (out)
                    put_utf8(out, cp);
                continue;
            }
            default:
                return -1;
            }
            if (out)
                add(out, &ch, 1);
            continue;
        }
        if (x < 0x80) {
            if (out)
                add(out, &x, 1);
            c->p++;
            continue;
        }
        int r = utf8_sequence(c->p, (size_t)(c->end - c->p));
        if (r <= 0)
            return -1;
        if (out)
            add(out, c->p, (size_t)r);
        c->p += r;
    }
    return -1;
}

static int digits(struct jcur *c) {
    const unsigned char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > start ? 0 : -1;
}

static int lit(struct jcur *c, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return -1;
    c->p += n;
    return 0;
}

static int jvalue(struct jcur *c, struct jval *v);

/* a number, or NaN / Infinity / -Infinity */
static int jnumber(struct jcur *c, struct jval *v) {
    const unsigned char *start = c->p;
    int frac = 0;
    if (lit(c, "NaN") == 0) {
        v->num = NAN;
    } else if (lit(c, "Infinity") == 0) {
        v->num = INFINITY;
    } else if (lit(c, "-Infinity") == 0) {
        v->num = -INFINITY;
    } else {
        if (c->p < c->end && *c->p == '-')
            c->p++;
        if (c->p < c->end && *c->p == '0')
            c->p++;
        else if (digits(c) < 0)
            return -1;
        if (c->p < c->end && *c->p == '.') {
            c->p++;
            frac = 1;
            if (digits(c) < 0)
                return -1;
        }
        if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
            c->p++;
            frac = 1;
            if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
                c->p++;
            if (digits(c) < 0)
                return -1;
        }
        char tmp[64];
        size_t n = (size_t)(c->p - start);
        if (n >= sizeof tmp) {
            v->num = 0;
            v->big = 1;  /* too long to matter here: never a signal, a grace or an exit code */
        } else {
            memcpy(tmp, start, n);
            tmp[n] = 0;
            v->num = strtod(tmp, NULL);
            if (!frac) {
                errno = 0;
                v->ival = strtoll(tmp, NULL, 10);
                v->big = errno == ERANGE;
                v->is_int = 1;
            }
        }
    }
    v->type = J_NUM;
    return 0;
}

static int jcontainer(struct jcur *c, unsigned char close) {
    if (++c->depth > MAX_DEPTH)
        return -1;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        c->depth--;
        return 0;
    }
    for (;;) {
        struct jval skip = {0};
        if (close == '}') {
            int sur = 0;
            if (jstring(c, NULL, &sur) < 0)
                return -1;
            ws(c);
            if (c->p >= c->end || *c->p != ':')
                return -1;
            c->p++;
        }
        ws(c);
        if (jvalue(c, &skip) < 0)
            return -1;
        free(skip.s);
        ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            ws(c);
            continue;
        }
        if (c->p < c->end && *c->p == close) {
            c->p++;
            c->depth--;
            return 0;
        }
        return -1;
    }
}

static int jvalue(struct jcur *c, struct jval *v) {
    if (c->p >= c->end)
        return -1;
    switch (*c->p) {
    case '"': {
        struct buf s = {0};
        if (jstring(c, &s, &v->surrogate) < 0) {
            release(&s);
            return -1;
        }
        add(&s, "", 1);
        v->type = J_STR;
        v->s = s.p;
        v->slen = s.len - 1;
        return 0;
    }
    case '{': v->type = J_OTHER; v->truth = 1; return jcontainer(c, '}');
    case '[': v->type = J_OTHER; v->truth = 1; return jcontainer(c, ']');
    case 't': v->type = J_BOOL; v->truth = 1; return lit(c, "true");
    case 'f': v->type = J_BOOL; v->truth = 0; return lit(c, "false");
    case 'n': v->type = J_NULL; return lit(c, "null");
    default: return jnumber(c, v);
    }
}

static void jfree(struct jfield *fields, int n) {
    for (int i = 0; i < n; i++) {
        free(fields[i].v.s);
        memset(&fields[i].v, 0, sizeof fields[i].v);
    }
}

/* `line`, which must be one JSON object: its members named in `fields` (the others checked and
 * skipped); -1 for anything else (the fields are freed then) */
static int jparse_object(const char *line, size_t n, struct jfield *fields, int nfields) {
    struct jcur c = {(const unsigned char *)line, (const unsigned char *)line + n, 1};
    ws(&c);
    if (c.p >= c.end || *c.p != '{')
        return -1;
    c.p++;
    ws(&c);
    if (c.p < c.end && *c.p == '}') {
        c.p++;
        goto end;
    }
    for (;;) {
        struct buf key = {0};
        int sur = 0;
        if (jstring(&c, &key, &sur) < 0) {
            release(&key);
            goto bad;
        }
        ws(&c);
        if (c.p >= c.end || *c.p != ':') {
            release(&key);
            goto bad;
        }
        c.p++;
        ws(&c);
        struct jval v = {0};
        if (jvalue(&c, &v) < 0) {
            free(v.s);
            release(&key);
            goto bad;
        }
        int kept = 0;
        for (int i = 0; i < nfields && !kept; i++) {
            if (strlen(fields[i].name) == key.len && memcmp(fields[i].name, key.p, key.len) == 0) {
                free(fields[i].v.s);
                fields[i].v = v;
                kept = 1;
            }
        }
        if (!kept)
            free(v.s);
        release(&key);
        ws(&c);
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            ws(&c);
            continue;
        }
        if (c.p < c.end && *c.p == '}') {
            c.p++;
            break;
        }
        goto bad;
    }
end:
    ws(&c);
    if (c.p == c.end)
        return 0;
bad:
    jfree(fields, nfields);
    return -1;
}

/* Python's truth of a value */
static int truthy(const struct jval *v) {
    switch (v->type) {
    case J_BOOL: case J_OTHER: return v->truth;
    case J_NUM: return v->num != 0 || isnan(v->num);
    case J_STR: return v->slen > 0;
    default: return 0;
    }
}

/* ---- the holder's state ----------------------------------------------------------------------- */

struct channel {
    int fd, greeted, closed;
    struct buf in, out;
    size_t scanned;
};

struct mark {
    char name[32];
    double at;
};

static struct {
    /* from the plan */
    const char *job_id, *token, *boot_id, *work_dir, *work_args, *python;
    uint32_t uid;
    double timeout_s, grace_s;
    uint64_t cap;
    int fd[F_ROLES];
    pid_t init_pid;
    double go_deadline;
    /* the job's life */
    const char *state;
    uint64_t seq, told_seq, pending_events;
    struct buf pending;
    struct decoder decoders[2];
    uint64_t out_bytes;
    int cut;
    int open_streams;
    double last_read[2], resume_at[2];
    int streak[2];
    struct buf status_in;
    struct buf input;
    double timeout_at, kill_at;
    int own_pidfd;
    struct channel *channels[MAX_CONNECTIONS];
    /* the outcome */
    char *end, *message, *stop_reason, *agent_error;
    int has_exit_code, has_signal;
    long long exit_code, signal;
    int oom, has_usage;
    double cpu_s, started_at, ended_at;
    long long memory_peak;
    long long kept_files, kept_bytes;
    struct mark marks[32];
    int nmarks;
} H;

static char *dup_text(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p)
        out_of_memory();
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static void mark(const char *name) {
    double now = monotonic();
    for (int i = 0; i < H.nmarks; i++)
        if (strcmp(H.marks[i].name, name) == 0) {
            H.marks[i].at = now;
            return;
        }
    if (H.nmarks < 32) {
        snprintf(H.marks[H.nmarks].name, sizeof H.marks[0].name, "%s", name);
        H.marks[H.nmarks++].at = now;
    }
}

/* ---- the outcome (outcome.py's outcome.json) ------------------------------------------------ */

static void outcome_json(struct buf *b) {
    adds(b, "{\"end\": ");
    add_pystr_or_null(b, H.end);
    adds(b, ", \"message\": ");
    add_pystr_or_null(b, H.message);
    if (H.has_exit_code)
        addf(b, ", \"exit_code\": %lld", H.exit_code);
    else
        adds(b, ", \"exit_code\": null");
    if (H.has_signal)
        addf(b, ", \"signal\": %lld", H.signal);
    else
        adds(b, ", \"signal\": null");
    adds(b, ", \"stop_reason\": ");
    add_pystr_or_null(b, H.stop_reason);
    adds(b, ", \"agent_error\": ");
    add_pystr_or_null(b, H.agent_error);
    adds(b, H.oom ? ", \"oom\": true" : ", \"oom\": false");
    adds(b, ", \"cpu_s\": ");
    if (H.has_usage)
        add_float(b, H.cpu_s);
    else
        adds(b, "null");
    if (H.has_usage)
        addf(b, ", \"memory_peak_bytes\": %lld", H.memory_peak);
    else
        adds(b, ", \"memory_peak_bytes\": null");
    addf(b, ", \"kept_files\": %lld, \"kept_bytes\": %lld, \"started_at\": ", H.kept_files, H.kept_bytes);
    if (H.started_at > 0)
        add_float(b, H.started_at);
    else
        adds(b, "null");
    adds(b, ", \"ended_at\": ");
    if (H.ended_at > 0)
        add_float(b, H.ended_at);
    else
        adds(b, "null");
    adds(b, ", \"marks\": {");
    for (int i = 0; i < H.nmarks; i++) {
        if (i)
            adds(b, ", ");
        add_pystr(b, H.marks[i].name, strlen(H.marks[i].name));
        adds(b, ": ");
        add_float(b, H.marks[i].at);
    }
    adds(b, "}}");
}

/* outcome.json written whole, then renamed into place; fsync'd if `durable` (else by sync_outcome) */
static int write_outcome(int durable) {
    struct buf b = {0};
    outcome_json(&b);
    int fd = openat(H.fd[F_DIR], "outcome.json.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        release(&b);
        return -1;
    }
    size_t at = 0;
    while (at < b.len) {
        ssize_t n = write(fd, b.p + at, b.len - at);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        at += (size_t)n;
    }
    if (durable)
        fsync(fd);
    close(fd);
    release(&b);
    return renameat(H.fd[F_DIR], "outcome.json.tmp", H.fd[F_DIR], "outcome.json");
}

static void sync_outcome(void) {
    int fd = openat(H.fd[F_DIR], "outcome.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static void set_text(char **field, const char *value) {
    free(*field);
    *field = value ? dup_text(value, strlen(value)) : NULL;
}

static void send_signal(int sig) {
    if (H.fd[F_INIT] >= 0)
        syscall(SYS_pidfd_send_signal, H.fd[F_INIT], sig, NULL, 0);
}

/* holder.py's crashed(): a failure of the holder itself ends the job with the reason kept */
__attribute__((noreturn)) static void crashed(const char *what, int err) {
    char message[512];
    snprintf(message, sizeof message, "the job's holder failed: OSError: [Errno %d] %s: %s", err, strerror(err), what);
    set_text(&H.end, "setup_error");
    set_text(&H.message, message);
    send_signal(SIGKILL);
    write_outcome(1);
    _exit(0);
}

static void out_of_memory(void) { crashed("out of memory", ENOMEM); }

/* ---- the event log (eventfile.py) ---------------------------------------------------------- */

/* an event's line starts: {"seq":N, then its fields; ended by end_event */
static void begin_event(void) { addf(&H.pending, "{\"seq\":%llu,", (unsigned long long)(H.seq + H.pending_events + 1)); }

static void end_event(void) {
    adds(&H.pending, "}\n");
    H.pending_events++;
}

static void text_event(const char *kind, const char *text) {
    begin_event();
    addf(&H.pending, "\"type\":\"%s\",\"data\":\"", kind);
    decode_into(&H.pending, &(struct decoder){{0}, 0}, (const unsigned char *)text, strlen(text), 1);
    adds(&H.pending, "\"");
    end_event();
}

/* output.py TextOutput.output: one event per read, the cap cut at its byte and noted once */
static void text_output(int kind, const unsigned char *data, size_t n) {
    if (H.cut)
        return;
    int over = H.cap && H.out_bytes + n > H.cap;
    if (over)
        n = (size_t)(H.cap - H.out_bytes);
    H.out_bytes += n;
    size_t start = H.pending.len;
    begin_event();
    addf(&H.pending, "\"type\":\"%s\",\"data\":\"", kind ? "stderr" : "stdout");
    size_t text_at = H.pending.len;
    decode_into(&H.pending, &H.decoders[kind], data, n, over || n == 0);
    if (H.pending.len == text_at)
        H.pending.len = start;  /* no text: no event */
    else {
        adds(&H.pending, "\"");
        end_event();
    }
    if (over) {
        H.cut = 1;
        char note[96];
        snprintf(note, sizeof note, "[joblet] output beyond %llu MB is not kept\n", (unsigned long long)(H.cap >> 20));
        text_event("stderr", note);
    }
}

static void write_pending(void) {
    if (!H.pending_events)
        return;
    size_t at = 0;
    while (at < H.pending.len) {
        ssize_t n = write(H.fd[F_LOG], H.pending.p + at, H.pending.len - at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            crashed("writing the event log", n < 0 ? errno : EIO);
        at += (size_t)n;
    }
    H.seq += H.pending_events;
    H.pending_events = 0;
    H.pending.len = 0;
    if (H.pending.cap > (4u << 20))
        release(&H.pending);  /* a burst's buffer goes back: the steady state stays small */
}

/* ---- the control channels (control.py) ---------------------------------------------------- */

static void close_channel(int i) {
    struct channel *ch = H.channels[i];
    close(ch->fd);
    release(&ch->in);
    release(&ch->out);
    free(ch);
    H.channels[i] = NULL;
}

static void flush_channel(int i) {
    struct channel *ch = H.channels[i];
    while (ch->out.len) {
        ssize_t n = send(ch->fd, ch->out.p, ch->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            ch->closed = 1;
            return;
        }
        memmove(ch->out.p, ch->out.p + n, ch->out.len - (size_t)n);
        ch->out.len -= (size_t)n;
    }
}

/* a message line to one channel; with `pass_pidfd`, the holder's pidfd rides on its first byte
 * (nothing may be queued before it: otherwise the channel is closed, as control.py does) */
static void send_line(int i, struct buf *line, int pass_pidfd) {
    struct channel *ch = H.channels[i];
    if (!ch || ch->closed)
        return;
    size_t sent = 0;
    if (pass_pidfd) {
        if (ch->out.len) {
            ch->closed = 1;
            return;
        }
        char control[CMSG_SPACE(sizeof(int))];
        memset(control, 0, sizeof control);
        struct iovec iov = {line->p, line->len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &H.own_pidfd, sizeof(int));
        ssize_t n = sendmsg(ch->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            ch->closed = 1;
            return;
        }
        sent = (size_t)n;
    }
    add(&ch->out, line->p + sent, line->len - sent);
    flush_channel(i);
}

/* a message to every channel that said hello */
static void tell(struct buf *line) {
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (H.channels[i] && H.channels[i]->greeted)
            send_line(i, line, 0);
    line->len = 0;
}

static void tell_seq(void) {
    if (H.seq == H.told_seq)
        return;
    H.told_seq = H.seq;
    struct buf line = {0};
    addf(&line, "{\"ev\":\"seq\",\"seq\":%llu}\n", (unsigned long long)H.seq);
    tell(&line);
    release(&line);
}

static void flush_events(void) {
    write_pending();
    tell_seq();
}

static void hello_line(struct buf *b) {
    addf(b, "{\"ev\":\"hello\",\"protocol\":%d,\"job_id\":", PROTOCOL);
    add_pystr_or_null(b, H.job_id);
    adds(b, ",\"token\":");
    add_pystr_or_null(b, H.token);
    addf(b, ",\"pid\":%d,\"uid\":%u,\"state\":", (int)getpid(), H.uid);
    add_pystr_or_null(b, H.state);
    addf(b, ",\"seq\":%llu,\"started_at\":", (unsigned long long)H.seq);
    if (H.started_at > 0)
        add_float(b, H.started_at);
    else
        adds(b, "null");
    adds(b, ",\"stop_reason\":");
    add_pystr_or_null(b, H.stop_reason);
    adds(b, ",\"boot_id\":");
    add_pystr_or_null(b, H.boot_id);
    adds(b, ",\"translator\":{}}\n");
}

/* ---- what the agent asks ------------------------------------------------------------------- */

static void close_go(void) {
    if (H.fd[F_GO] >= 0) {
        close(H.fd[F_GO]);
        H.fd[F_GO] = -1;
    }
}

static void job_abort(const char *message) {
    if (H.fd[F_GO] < 0)
        return;
    if (message && !H.agent_error)
        set_text(&H.agent_error, message);
    close_go();
}

static void job_stop(const char *reason, double grace) {
    if (!H.stop_reason)
        set_text(&H.stop_reason, reason);
    if (H.fd[F_INIT] < 0)
        return;
    if (H.fd[F_GO] >= 0)
        job_abort(NULL);
    send_signal(grace > 0 ? SIGTERM : SIGKILL);
    if (grace > 0 && H.kill_at == 0)
        H.kill_at = monotonic() + grace;
}

static void job_go(void) {
    if (H.fd[F_GO] >= 0) {
        if (write(H.fd[F_GO], "g", 1) < 0) {
            /* the init is gone: its end is seen on its pidfd */
        }
        close_go();
        H.state = "starting";
    }
}

static void close_input(void) {
    if (H.fd[F_STDIN] >= 0) {
        close(H.fd[F_STDIN]);
        H.fd[F_STDIN] = -1;
        release(&H.input);
    }
}

static void flush_input(void) {
    if (H.fd[F_STDIN] < 0)
        return;
    size_t at = 0;
    while (at < H.input.len) {
        ssize_t n = write(H.fd[F_STDIN], H.input.p + at, H.input.len - at);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            close_input();
            return;
        }
        at += (size_t)n;
    }
    memmove(H.input.p, H.input.p + at, H.input.len - at);
    H.input.len -= at;
    if (!H.input.len)
        release(&H.input);
}

static void write_input(const char *data, size_t n) {
    if (H.fd[F_STDIN] < 0)
        return;
    add(&H.input, data, n);
    if (H.input.len > MAX_PENDING_INPUT) {
        release(&H.input);
        job_stop("stopped", 0);  /* a sandbox that does not read its input */
        return;
    }
    flush_input();
}

/* a number as Python's float()/int() takes it from a JSON value (-1: not one) */
static int as_number(const struct jval *v, double *out) {
    if (v->type == J_NUM) {
        *out = v->num;
        return 0;
    }
    if (v->type == J_BOOL) {
        *out = v->truth;
        return 0;
    }
    return -1;
}

static void on_message(int i, const char *line, size_t n) {
    enum { OP, REASON, GRACE, MESSAGE, SIGNAL, DATA, NF };
    struct jfield f[NF] = {{"op", {0}}, {"reason", {0}}, {"grace", {0}}, {"message", {0}}, {"signal", {0}}, {"data", {0}}};
    if (jparse_object(line, n, f, NF) < 0)
        return;  /* not an object: ignored */
    const char *op = f[OP].v.type == J_STR ? f[OP].v.s : "";
    if (strcmp(op, "hello") == 0) {
        struct buf b = {0};
        hello_line(&b);
        send_line(i, &b, 1);
        release(&b);
        if (H.channels[i] && !H.channels[i]->closed)
            H.channels[i]->greeted = 1;
    } else if (strcmp(op, "stop") == 0) {
        double grace = H.grace_s;
        if (f[GRACE].v.type == J_NONE || as_number(&f[GRACE].v, &grace) == 0) {
            const char *reason = truthy(&f[REASON].v) && f[REASON].v.type == J_STR ? f[REASON].v.s : "stopped";
            job_stop(reason, grace);
        }
    } else if (strcmp(op, "go") == 0) {
        job_go();
    } else if (strcmp(op, "abort") == 0) {
        const char *message = truthy(&f[MESSAGE].v) && f[MESSAGE].v.type == J_STR ? f[MESSAGE].v.s
                                                                                   : "the agent aborted the job";
        job_abort(message);
    } else if (strcmp(op, "signal") == 0) {
        double sig;
        if (as_number(&f[SIGNAL].v, &sig) == 0 && sig >= 1 && sig < 65)
            send_signal((int)sig);
    } else if (strcmp(op, "input") == 0 && H.fd[F_STDIN] >= 0) {
        if (f[DATA].v.type == J_STR && !f[DATA].v.surrogate)
            write_input(f[DATA].v.s, f[DATA].v.slen);
        else if (f[DATA].v.type == J_NONE)
            write_input("", 0);
    }
    jfree(f, NF);
}

static void channel_readable(int i) {
    struct channel *ch = H.channels[i];
    reserve(&ch->in, CHANNEL_READ);
    char control[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct iovec iov = {ch->in.p + ch->in.len, CHANNEL_READ};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(ch->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            ch->closed = 1;
        return;
    }
    /* the holder takes no descriptors from anyone */
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t k = 0; k < count; k++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof fd);
                close(fd);
            }
        }
    }
    if (n == 0) {
        ch->closed = 1;
        return;
    }
    ch->in.len += (size_t)n;
    size_t start = 0;
    while (!ch->closed) {
        char *nl = memchr(ch->in.p + ch->scanned, '\n', ch->in.len - ch->scanned);
        if (!nl) {
            ch->scanned = ch->in.len;
            break;
        }
        size_t end = (size_t)(nl - ch->in.p);
        on_message(i, ch->in.p + start, end - start);
        ch = H.channels[i];
        start = ch->scanned = end + 1;
    }
    if (ch->closed)
        return;
    memmove(ch->in.p, ch->in.p + start, ch->in.len - start);
    ch->in.len -= start;
    ch->scanned -= start;
    if (ch->in.len > MAX_LINE)
        ch->closed = 1;
    else if (!ch->in.len && ch->in.cap > (64u << 10))
        release(&ch->in);
}

static void add_channel(int fd) {
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (!H.channels[i]) {
            struct channel *ch = calloc(1, sizeof *ch);
            if (!ch)
                out_of_memory();
            ch->fd = fd;
            H.channels[i] = ch;
            return;
        }
    close(fd);
}

static void accept_channel(void) {
    int fd = accept4(H.fd[F_LISTEN], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    int count = 0;
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        count += H.channels[i] != NULL;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (count >= MAX_CONNECTIONS || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
        close(fd);
        return;
    }
    add_channel(fd);
}

/* ---- the job's output and status ----------------------------------------------------------- */

static unsigned char *read_buffer;

static void close_stream(int role) {
    close(H.fd[role]);
    H.fd[role] = -1;
    H.open_streams--;
}

static void read_output(int kind) {
    int role = kind ? F_ERR : F_OUT;
    ssize_t n = read(H.fd[role], read_buffer, READ_SIZE);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0)
        n = 0;  /* a pipe that broke: its end */
    text_output(kind, read_buffer, (size_t)n);
    if (n == 0) {
        close_stream(role);
        return;
    }
    double now = monotonic();
    H.streak[kind] = now - H.last_read[kind] < BUSY_PAUSE_S * 2 ? H.streak[kind] + 1 : 0;
    H.last_read[kind] = now;
    if (H.streak[kind] >= BUSY_STREAK && n < SMALL_READ)
        H.resume_at[kind] = now + BUSY_PAUSE_S;  /* left alone until then */
}

static void on_status(const char *line, size_t n) {
    enum { EVENT, PID, MESSAGE, EXIT_CODE, SIGNAL, FILES, SIZE, NF };
    struct jfield f[NF] = {{"event", {0}}, {"pid", {0}}, {"message", {0}}, {"exit_code", {0}},
                           {"signal", {0}}, {"files", {0}}, {"size", {0}}};
    if (jparse_object(line, n, f, NF) < 0)
        return;  /* garbage */
    int ok = f[EVENT].v.type == J_STR;
    for (int k = PID; k < NF && ok; k++)
        if (k != MESSAGE && f[k].v.type != J_NONE && f[k].v.type != J_NULL && f[k].v.type != J_NUM)
            ok = 0;
    const char *kind = ok ? f[EVENT].v.s : "";
    if (strcmp(kind, "running") == 0) {
        H.state = "running";
        H.started_at = clock_s(CLOCK_REALTIME);
        mark("running");
        begin_event();
        adds(&H.pending, "\"type\":\"status\",\"status\":\"RUNNING\"");
        end_event();
        flush_events();
        struct buf b = {0};
        adds(&b, "{\"ev\":\"running\",\"at\":");
        add_float(&b, H.started_at);
        adds(&b, "}\n");
        tell(&b);
        release(&b);
        if (H.timeout_s > 0)
            H.timeout_at = monotonic() + H.timeout_s;
    } else if (strcmp(kind, "setup_error") == 0 || strcmp(kind, "exec_error") == 0) {
        set_text(&H.end, kind);
        struct jval *m = &f[MESSAGE].v;
        char number[64];
        const char *text = NULL;
        if (m->type == J_STR)
            text = m->s;
        else if (m->type == J_NUM) {
            snprintf(number, sizeof number, "%lld", m->ival);
            text = number;
        } else if (m->type == J_BOOL)
            text = m->truth ? "True" : "False";
        set_text(&H.message, text);
    } else if (strcmp(kind, "exit") == 0 && (!H.end || strcmp(H.end, "exit") == 0)) {
        set_text(&H.end, "exit");
        H.has_exit_code = f[EXIT_CODE].v.type == J_NUM;
        H.exit_code = f[EXIT_CODE].v.is_int ? f[EXIT_CODE].v.ival : (long long)f[EXIT_CODE].v.num;
        H.has_signal = f[SIGNAL].v.type == J_NUM;
        H.signal = f[SIGNAL].v.is_int ? f[SIGNAL].v.ival : (long long)f[SIGNAL].v.num;
    }
    jfree(f, NF);
}

static void read_status(void) {
    char data[4096];
    ssize_t n = read(H.fd[F_STATUS], data, sizeof data);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        add(&H.status_in, data, (size_t)n);
        size_t start = 0;
        char *nl;
        while ((nl = memchr(H.status_in.p + start, '\n', H.status_in.len - start))) {
            size_t end = (size_t)(nl - H.status_in.p);
            on_status(H.status_in.p + start, end - start);
            start = end + 1;
        }
        memmove(H.status_in.p, H.status_in.p + start, H.status_in.len - start);
        H.status_in.len -= start;
        return;
    }
    close_stream(F_STATUS);
}

static void init_ended(void) {
    waitpid(H.init_pid, NULL, 0);
    mark("init_ended");
    close(H.fd[F_INIT]);
    H.fd[F_INIT] = -1;
    H.init_pid = 0;
    H.state = "ending";
    close_input();
    close_go();
}

/* ---- the loop ------------------------------------------------------------------------------ */

enum { W_OUT, W_ERR, W_STATUS, W_INIT, W_STDIN, W_LISTEN, W_CHANNEL };

static void run_once(void) {
    struct pollfd pfd[8 + MAX_CONNECTIONS];
    int what[8 + MAX_CONNECTIONS], n = 0;
    double now = monotonic(), wake = INFINITY;
#define WATCH(fd_, events_, what_) do { pfd[n].fd = (fd_); pfd[n].events = (events_); pfd[n].revents = 0; what[n++] = (what_); } while (0)
    for (int k = 0; k < 2; k++) {
        int fd = H.fd[k ? F_ERR : F_OUT];
        if (fd < 0)
            continue;
        if (H.resume_at[k] > now) {
            wake = min_d(wake, H.resume_at[k]);
            continue;
        }
        H.resume_at[k] = 0;
        WATCH(fd, POLLIN, k ? W_ERR : W_OUT);
    }
    if (H.fd[F_STATUS] >= 0)
        WATCH(H.fd[F_STATUS], POLLIN, W_STATUS);
    if (H.fd[F_INIT] >= 0)
        WATCH(H.fd[F_INIT], POLLIN, W_INIT);
    if (H.fd[F_STDIN] >= 0 && H.input.len)
        WATCH(H.fd[F_STDIN], POLLOUT, W_STDIN);
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (H.channels[i])
            WATCH(H.channels[i]->fd, POLLIN | (H.channels[i]->out.len ? POLLOUT : 0), W_CHANNEL + i);
    if (H.fd[F_LISTEN] >= 0)
        WATCH(H.fd[F_LISTEN], POLLIN, W_LISTEN);
#undef WATCH
    if (H.go_deadline > 0)
        wake = min_d(wake, H.go_deadline);
    if (H.timeout_at > 0)
        wake = min_d(wake, H.timeout_at);
    if (H.kill_at > 0)
        wake = min_d(wake, H.kill_at);
    struct timespec ts, *tsp = NULL;
    if (wake < INFINITY) {
        double left = max_d(0.0, wake - now);
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
        tsp = &ts;
    }
    if (ppoll(pfd, (nfds_t)n, tsp, NULL) < 0 && errno != EINTR)
        crashed("waiting for the job", errno);
    for (int k = 0; k < n; k++) {
        short ev = pfd[k].revents;
        if (!ev)
            continue;
        switch (what[k]) {
        case W_OUT: case W_ERR: read_output(what[k] == W_ERR); break;
        case W_STATUS: read_status(); break;
        case W_INIT: init_ended(); break;
        case W_STDIN: flush_input(); break;
        case W_LISTEN: accept_channel(); break;
        default: {
            int i = what[k] - W_CHANNEL;
            if (!H.channels[i])
                break;
            if (ev & (POLLIN | POLLHUP | POLLERR))
                channel_readable(i);
            if (H.channels[i] && !H.channels[i]->closed && (ev & POLLOUT))
                flush_channel(i);
        }
        }
    }
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (H.channels[i] && H.channels[i]->closed)
            close_channel(i);
    now = monotonic();
    if (H.go_deadline > 0 && now >= H.go_deadline) {
        H.go_deadline = 0;
        job_abort("no agent finished the job's network set-up");
    }
    if (H.timeout_at > 0 && now >= H.timeout_at) {
        H.timeout_at = 0;
        job_stop("timeout", H.grace_s);
    }
    if (H.kill_at > 0 && now >= H.kill_at) {
        H.kill_at = -1;  /* fired: stop never sets it again */
        send_signal(SIGKILL);
    }
}

/* ---- the end ------------------------------------------------------------------------------- */

/* a cgroup file's text (read from its start), or -1 */
static int read_file(int fd, char *out, size_t size) {
    if (fd < 0)
        return -1;
    ssize_t n = pread(fd, out, size - 1, 0);
    if (n < 0)
        return -1;
    out[n] = 0;
    return 0;
}

/* int(text) as Python reads a number file: one integer between blanks */
static int int_of(const char *text, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || errno)
        return -1;
    while (*end == ' ' || *end == '\n' || *end == '\t')
        end++;
    if (*end)
        return -1;
    *out = v;
    return 0;
}

/* files.keyvals(text)[key]: 'key value' lines, the last one wins; 0 if found, -1 if not */
static int keyval(const char *text, const char *key, long long *out) {
    int found = -1;
    size_t klen = strlen(key);
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char k[64], v[64], extra[2];
        char copy[256];
        if (len < sizeof copy) {
            memcpy(copy, line, len);
            copy[len] = 0;
            if (sscanf(copy, "%63s %63s %1s", k, v, extra) == 2 && strlen(k) == klen && strcmp(k, key) == 0) {
                const char *d = v[0] == '-' ? v + 1 : v;
                int all = *d != 0;
                for (const char *x = d; *x; x++)
                    all &= *x >= '0' && *x <= '9';
                if (all) {
                    *out = strtoll(v, NULL, 10);
                    found = 0;
                }
            }
        }
        line += len + (eol != NULL);
    }
    return found;
}

/* the cgroup's usage and OOM (cgroups/v1.py, v2.py): best effort, as holder.py's */
static void take_usage(void) {
    char text[8192];
    long long usage, peak;
    double cpu;
    if (H.fd[F_CG_CPU_STAT] >= 0) {
        if (read_file(H.fd[F_CG_CPU_STAT], text, sizeof text) < 0)
            return;
        if (keyval(text, "usage_usec", &usage) < 0)
            usage = 0;
        cpu = (double)usage / 1e6;
    } else {
        if (read_file(H.fd[F_CG_CPU_NS], text, sizeof text) < 0 || int_of(text, &usage) < 0)
            return;
        cpu = (double)usage / 1e9;
    }
    if (read_file(H.fd[F_CG_PEAK], text, sizeof text) < 0 || int_of(text, &peak) < 0)
        return;
    snprintf(text, sizeof text, "%.3f", cpu);
    H.cpu_s = strtod(text, NULL);  /* round(cpu, 3): both round the exact binary value */
    H.memory_peak = peak;
    H.has_usage = 1;
    long long kills, failcnt, limit;
    if (read_file(H.fd[F_CG_EVENTS], text, sizeof text) < 0)
        return;
    if (keyval(text, "oom_kill", &kills) == 0) {
        H.oom = kills > 0;
    } else if (H.fd[F_CG_CPU_NS] >= 0) {  /* v1 before 4.13: a failed charge at the limit */
        if (read_file(H.fd[F_CG_FAILCNT], text, sizeof text) < 0 || int_of(text, &failcnt) < 0 ||
            read_file(H.fd[F_CG_LIMIT], text, sizeof text) < 0 || int_of(text, &limit) < 0 ||
            read_file(H.fd[F_CG_PEAK], text, sizeof text) < 0 || int_of(text, &peak) < 0)
            return;
        H.oom = failcnt > 0 && peak >= limit;
    }
}

/* /work empty (or no copy asked): nothing to keep, and no Python to start */
static int nothing_to_copy(void) {
    if (!H.work_dir || !H.work_args || !H.python)
        return 1;
    int fd = open(H.work_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;  /* the copier reports why */
    DIR *dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return 0;
    }
    int empty = 1;
    struct dirent *e;
    while (empty && (e = readdir(dir)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = 0;
    closedir(dir);
    return empty;
}

/* sequence.collect_work in a short-lived Python child (sandbox/workcopy.py): its first line is
 * "files bytes", each next one a note's event without its seq */
static void copy_work(void) {
    if (nothing_to_copy())
        return;
    int pipefd[2];
    struct buf got = {0};
    int ok = 0;
    /* this process's children go to the job's PID namespace, where no process can start once its
     * PID 1 has ended: the copier starts in the holder's own */
    int own_ns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (own_ns >= 0) {
        setns(own_ns, CLONE_NEWPID);
        close(own_ns);
    }
    if (pipe2(pipefd, O_CLOEXEC) == 0) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, pipefd[1], 1);
        char *argv[] = {(char *)H.python, "-E", "-s", "-m", "joblet_agent.sandbox.workcopy", (char *)H.work_args, NULL};
        char *envp[] = {NULL};
        pid_t pid;
        int err = posix_spawn(&pid, H.python, &actions, NULL, argv, envp);
        posix_spawn_file_actions_destroy(&actions);
        close(pipefd[1]);
        if (err == 0) {
            char chunk[4096];
            ssize_t n;
            while ((n = read(pipefd[0], chunk, sizeof chunk)) != 0) {
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0)
                    break;
                if (got.len < (16u << 20))
                    add(&got, chunk, (size_t)n);
            }
            int status = -1;
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        }
        close(pipefd[0]);
    }
    add(&got, "", 1);
    char *nl = strchr(got.p, '\n');
    if (!ok || !nl || sscanf(got.p, "%lld %lld", &H.kept_files, &H.kept_bytes) != 2) {
        H.kept_files = H.kept_bytes = 0;
        text_event("stderr", "[joblet] /work files: copying /work out: the copier failed\n");
        release(&got);
        return;
    }
    for (char *line = nl + 1; *line;) {
        char *eol = strchr(line, '\n');
        if (!eol)
            break;
        begin_event();
        add(&H.pending, line, (size_t)(eol - line));
        H.pending.len--;  /* its own closing brace comes back with end_event */
        end_event();
        line = eol + 1;
    }
    release(&got);
}

static void finish(void) {
    H.state = "ending";
    take_usage();
    mark("usage");
    if (!H.end || strcmp(H.end, "setup_error") != 0)
        copy_work();
    mark("work_copied");
    flush_events();
    mark("logged");
    H.ended_at = clock_s(CLOCK_REALTIME);
    if (write_outcome(0) < 0)
        crashed("writing outcome.json", errno);
    unlinkat(H.fd[F_DIR], "holder.sock", 0);
    unlinkat(H.fd[F_DIR], "holder.json", 0);
    close(H.fd[F_LOG]);  /* the lock goes: the agent writes the log's `exit` now */
    H.fd[F_LOG] = -1;
    struct buf b = {0};
    adds(&b, "{\"ev\":\"ended\"}\n");
    tell(&b);
    release(&b);
    sync_outcome();  /* durable, while nobody waits */
}

/* ---- the plan ------------------------------------------------------------------------------ */

__attribute__((noreturn)) static void bad_plan(const char *why) {
    /* nothing to record by: the Python holder's descriptors are here, but not what they are */
    dprintf(2, "jnb-holder: bad plan: %s\n", why);
    _exit(125);
}

static const char *plan_text(const char *value, uint32_t len) {
    if (len == 0 || value[len - 1] != 0)
        bad_plan("a string without its end");
    return value;
}

static void read_plan(int plan_fd) {
    struct stat st;
    if (fstat(plan_fd, &st) < 0 || st.st_size <= 0 || st.st_size > MAX_PLAN)
        bad_plan("size");
    size_t size = (size_t)st.st_size;
    char *data = malloc(size);
    if (!data || pread(plan_fd, data, size, 0) != (ssize_t)size)
        bad_plan("read");
    close(plan_fd);
    for (int r = 0; r < F_ROLES; r++)
        H.fd[r] = -1;
    for (size_t at = 0; at + 8 <= size;) {
        uint32_t tag, len;
        memcpy(&tag, data + at, 4);
        memcpy(&len, data + at + 4, 4);
        at += 8;
        if (len > size - at)
            bad_plan("a record past the end");
        char *v = data + at;
        at += len;
        double f;
        switch (tag) {
        case H_JOB_ID: H.job_id = plan_text(v, len); break;
        case H_TOKEN: H.token = plan_text(v, len); break;
        case H_BOOT_ID: H.boot_id = plan_text(v, len); break;
        case H_STATE: H.state = plan_text(v, len); break;
        case H_WORK_DIR: H.work_dir = plan_text(v, len); break;
        case H_WORK_ARGS: H.work_args = plan_text(v, len); break;
        case H_PYTHON: H.python = plan_text(v, len); break;
        case H_UID: if (len != 4) bad_plan("uid"); memcpy(&H.uid, v, 4); break;
        case H_TIMEOUT: if (len != 8) bad_plan("timeout"); memcpy(&H.timeout_s, v, 8); break;
        case H_GRACE: if (len != 8) bad_plan("grace"); memcpy(&H.grace_s, v, 8); break;
        case H_GO_DEADLINE: if (len != 8) bad_plan("go"); memcpy(&H.go_deadline, v, 8); break;
        case H_CAP: if (len != 8) bad_plan("cap"); memcpy(&H.cap, v, 8); break;
        case H_SEQ: if (len != 8) bad_plan("seq"); memcpy(&H.seq, v, 8); break;
        case H_INIT_PID: if (len != 4) bad_plan("init pid"); memcpy(&H.init_pid, v, 4); break;
        case H_MARK:
            if (len < 10 || H.nmarks >= 32)
                bad_plan("mark");
            memcpy(&f, v, 8);
            snprintf(H.marks[H.nmarks].name, sizeof H.marks[0].name, "%s", plan_text(v + 8, len - 8));
            H.marks[H.nmarks++].at = f;
            break;
        case H_FD: {
            uint32_t role;
            int32_t fd;
            if (len != 8)
                bad_plan("fd");
            memcpy(&role, v, 4);
            memcpy(&fd, v + 4, 4);
            if (role == 0 || role >= F_ROLES || fd < 0)
                bad_plan("fd role");
            H.fd[role] = fd;
            /* nothing is handed on to a child of this process */
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            break;
        }
        default: bad_plan("unknown record");
        }
    }
    if (!H.job_id || !H.token || !H.state || H.fd[F_LOG] < 0 || H.fd[F_DIR] < 0 || H.fd[F_INIT] < 0 ||
        H.fd[F_OUT] < 0 || H.fd[F_ERR] < 0 || H.fd[F_STATUS] < 0 || H.init_pid <= 0)
        bad_plan("incomplete");
    /* `data` stays: the strings point into it */
}

/* ---- the relay test ------------------------------------------------------------------------ */

static int relay_test(const char *cap) {
    H.cap = strtoull(cap, NULL, 10);
    struct buf in = {0};
    char chunk[65536];
    ssize_t n;
    while ((n = read(0, chunk, sizeof chunk)) > 0)
        add(&in, chunk, (size_t)n);
    for (size_t at = 0; at + 5 <= in.len;) {
        int kind = in.p[at] ? 1 : 0;
        uint32_t len;
        memcpy(&len, in.p + at + 1, 4);
        at += 5;
        if (len > in.len - at)
            return 2;
        text_output(kind, (const unsigned char *)in.p + at, len);
        at += len;
    }
    for (size_t at = 0; at < H.pending.len;) {
        n = write(1, H.pending.p + at, H.pending.len - at);
        if (n <= 0)
            return 1;
        at += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--relay-test") == 0)
        return relay_test(argv[2]);
    if (argc != 2)
        bad_plan("usage: jnb-holder PLAN_FD");
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    read_plan(atoi(argv[1]));
    H.told_seq = H.seq;
    H.open_streams = 3;
    H.own_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (H.own_pidfd >= 0)
        fcntl(H.own_pidfd, F_SETFD, FD_CLOEXEC);
    read_buffer = malloc(READ_SIZE);
    if (!read_buffer)
        out_of_memory();
    if (H.fd[F_GO] < 0)
        H.go_deadline = 0;
    if (H.fd[F_FIRST] >= 0)
        add_channel(H.fd[F_FIRST]);
    while (H.init_pid > 0 || H.open_streams) {
        run_once();
        flush_events();
    }
    mark("drained");
    finish();
    return 0;
}
