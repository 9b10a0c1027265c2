/* A strict JSON parser for the control lines and the status lines.
 * As json.loads: RFC 8259 values, NaN/Infinity, no control characters in strings, duplicate
 * keys (the last wins). Only the top level object's scalar members are kept; nested values are
 * checked and skipped. Lone surrogates are kept as 3-byte sequences and flagged. */
#include "holder.h"

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

void jfree(struct jfield *fields, int n) {
    for (int i = 0; i < n; i++) {
        free(fields[i].v.s);
        memset(&fields[i].v, 0, sizeof fields[i].v);
    }
}

/* `line`, which must be one JSON object: its members named in `fields` (the others checked and
 * skipped); -1 for anything else (the fields are freed then) */
int jparse_object(const char *line, size_t n, struct jfield *fields, int nfields) {
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
int truthy(const struct jval *v) {
    switch (v->type) {
    case J_BOOL: case J_OTHER: return v->truth;
    case J_NUM: return v->num != 0 || isnan(v->num);
    case J_STR: return v->slen > 0;
    default: return 0;
    }
}
