/* /work copied out at the job's end, in this process: what fs.copy_tree and workcopy.copy_work do
 * in Python, with the same tree, counts and notes (tests/test_holder_copy.py compares them).
 *
 * The job wrote the tree, so nothing in it is trusted: every entry is reached from its folder's
 * descriptor (openat, fstatat with AT_SYMLINK_NOFOLLOW), a file is opened with O_NOFOLLOW and
 * O_NONBLOCK (a fifo put in a file's place cannot block the open) and copied only if the opened
 * descriptor is a regular file; links, devices, fifos and sockets are left out; setuid and setgid
 * bits never survive (mode & 0755). The copy is bounded as the job's disk was: `limit_bytes` in
 * all (a file is measured by its size, so a sparse one that does not fit is skipped, and one that
 * grows is cut at what was left), 64 folders deep (no recursion: a stack of open folders), and
 * `limit_entries` files and folders. Entries go in the order Python sorts their names (code
 * points, undecodable bytes as surrogateescape's U+DC80..DCFF), so a bound cuts the same tree. */
#include "holder.h"
#include <sys/sendfile.h>

#define COPY_DEPTH 64          /* fs.MAX_DEPTH */
#define COPY_CHUNK (1 << 20)   /* fs._copy_fd's chunk */
#define SHOWN_SKIPS 3          /* workcopy.copy_work names this many, and counts the rest */

struct frame {
    int src, dst, depth;
    char *path;    /* below /work, as the notes name it */
    char **names;  /* in Python's order */
    size_t n, next;
};

struct copy {
    long long limit_bytes, limit_entries;  /* limit_entries < 0: none */
    long long copied, files, dirs, skipped;
    char *shown[SHOWN_SKIPS];
    char error[1024];  /* the OSError's text, as Python's str(exc) */
    int full, cfr_off, sendfile_off;
};

/* ---- names as Python's str sees them (UTF-8, surrogateescape) ---------------------------------- */

/* the code point at s[*i], moving *i past it; a byte of no valid sequence is 0xDC00 + the byte */
static uint32_t next_cp(const unsigned char *s, size_t n, size_t *i) {
    int r = utf8_sequence(s + *i, n - *i);
    uint32_t c = s[*i];
    if (r <= 0) {
        *i += 1;
        return c < 0x80 ? c : 0xdc00 + c;
    }
    if (r > 1)
        c &= 0x7f >> r;
    for (int k = 1; k < r; k++)
        c = (c << 6) | (s[*i + (size_t)k] & 0x3f);
    *i += (size_t)r;
    return c;
}

static int python_order(const void *a, const void *b) {
    const unsigned char *x = *(unsigned char *const *)a, *y = *(unsigned char *const *)b;
    size_t nx = strlen((const char *)x), ny = strlen((const char *)y), i = 0, j = 0;
    while (i < nx && j < ny) {
        uint32_t cx = next_cp(x, nx, &i), cy = next_cp(y, ny, &j);
        if (cx != cy)
            return cx < cy ? -1 : 1;
    }
    return (i < nx) - (j < ny);
}

/* str.isprintable, near enough: C0/C1 controls, DEL, format, separators other than space,
 * surrogates and private use are not (repr escapes them) */
static int printable(uint32_t c) {
    if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad || (c >= 0xd800 && c <= 0xf8ff) || c == 0x1680 ||
        (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x2064) ||
        c == 0x3000 || c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb) || c >= 0xf0000)
        return 0;
    return 1;
}

/* repr(name): what an OSError's text shows of its file name */
static void add_repr(struct buf *b, const char *name) {
    const unsigned char *s = (const unsigned char *)name;
    size_t n = strlen(name), i = 0;
    char quote = strchr(name, '\'') && !strchr(name, '"') ? '"' : '\'';
    add(b, &quote, 1);
    while (i < n) {
        size_t at = i;
        uint32_t c = next_cp(s, n, &i);
        if (c == (uint32_t)quote || c == '\\')
            addf(b, "\\%c", (char)c);
        else if (c == '\t' || c == '\n' || c == '\r')
            adds(b, c == '\t' ? "\\t" : c == '\n' ? "\\n" : "\\r");
        else if (printable(c))
            add(b, s + at, i - at);
        else if (c < 0x100)
            addf(b, "\\x%02x", c);
        else if (c < 0x10000)
            addf(b, "\\u%04x", c);
        else
            addf(b, "\\U%08x", c);
    }
    add(b, &quote, 1);
}

/* an OSError stops the copy, as it does copy_tree's: its text is the note */
static int fail(struct copy *c, int err, const char *name) {
    struct buf b = {0};
    addf(&b, "[Errno %d] %s", err, strerror(err));
    if (name) {
        adds(&b, ": ");
        add_repr(&b, name);
    }
    add(&b, "", 1);
    snprintf(c->error, sizeof c->error, "%s", b.p);
    release(&b);
    return -1;
}

static char *text_copy(const char *s) {
    char *p = strdup(s);
    if (!p)
        out_of_memory();
    return p;
}

/* ---- the walk ------------------------------------------------------------------------------ */

/* the entry names of an open folder, sorted; -1 on an error */
static int list_names(struct copy *c, int fd, struct frame *f) {
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    DIR *dir = dup_fd < 0 ? NULL : fdopendir(dup_fd);
    if (!dir) {
        if (dup_fd >= 0)
            close(dup_fd);
        return fail(c, errno, NULL);
    }
    size_t cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (f->n == cap) {
            cap = cap ? cap * 2 : 16;
            char **more = realloc(f->names, cap * sizeof *more);
            if (!more)
                out_of_memory();
            f->names = more;
        }
        f->names[f->n++] = text_copy(e->d_name);
        errno = 0;
    }
    int err = errno;
    closedir(dir);
    if (err)
        return fail(c, err, NULL);
    qsort(f->names, f->n, sizeof *f->names, python_order);
    return 0;
}

static void close_frame(struct frame *f) {
    if (f->src >= 0)
        close(f->src);
    if (f->dst >= 0)
        close(f->dst);
    for (size_t i = 0; i < f->n; i++)
        free(f->names[i]);
    free(f->names);
    free(f->path);
}

static void skip(struct copy *c, const char *fmt, const char *path, long long n) {
    if (c->skipped < SHOWN_SKIPS) {
        struct buf b = {0};
        addf(&b, fmt, path, n);
        add(&b, "", 1);
        c->shown[c->skipped] = b.p;
    }
    c->skipped++;
}

static int write_all_fd(struct copy *c, int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fail(c, w < 0 ? errno : EIO, NULL);
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* one chunk by read and write; the bytes moved (0: the end), or -1 */
static ssize_t read_write(struct copy *c, int s, int d, size_t size) {
    static char *chunk;
    if (!chunk && !(chunk = malloc(COPY_CHUNK)))
        out_of_memory();
    ssize_t n;
    while ((n = read(s, chunk, size)) < 0 && errno == EINTR) {
    }
    if (n < 0)
        return fail(c, errno, NULL);
    return write_all_fd(c, d, chunk, (size_t)n) < 0 ? -1 : n;
}

/* until the end of `s` or `left` bytes (a file can grow while it is copied): copy_file_range,
 * sendfile where the two filesystems do not share it, read and write where neither works */
static long long copy_fd(struct copy *c, int s, int d, long long left) {
    long long total = 0;
    while (total < left) {
        size_t size = left - total < COPY_CHUNK ? (size_t)(left - total) : COPY_CHUNK;
        ssize_t n = -1;
        if (!c->cfr_off) {
            n = copy_file_range(s, NULL, d, NULL, size, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                c->cfr_off = 1;
        }
        if (n < 0 && !c->sendfile_off) {
            n = sendfile(d, s, NULL, size);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EINVAL && errno != ENOSYS)
                return fail(c, errno, NULL);
            if (n < 0)
                c->sendfile_off = 1;
        }
        if (n < 0 && (n = read_write(c, s, d, size)) < 0)
            return -1;
        if (n == 0)
            break;
        total += n;
    }
    return total;
}

/* a regular file: 1 copied, 0 no longer a regular file when opened, -1 an error */
static int copy_file(struct copy *c, struct frame *f, const char *name, mode_t mode, long long left) {
    int s = openat(f->src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (s < 0)
        return fail(c, errno, name);
    struct stat st;
    int r = 0;
    if (fstat(s, &st) < 0)
        r = fail(c, errno, NULL);
    else if (S_ISREG(st.st_mode)) {
        int d = openat(f->dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (d < 0)
            r = fail(c, errno, name);
        else {
            long long n = copy_fd(c, s, d, left);
            if (n < 0)
                r = -1;
            else {
                c->copied += n;
                r = fchmod(d, mode & 0755) < 0 ? fail(c, errno, NULL) : 1;
            }
            close(d);
        }
    }
    close(s);
    return r;
}

/* fs._copy_one: one entry of the top frame; a folder is pushed onto the stack (its new top) */
static int copy_one(struct copy *c, struct frame *stack, int *depth_of_stack) {
    struct frame *f = &stack[*depth_of_stack - 1];
    const char *name = f->names[f->next++];
    if (c->limit_entries >= 0 && c->files + c->dirs >= c->limit_entries) {
        c->full = 1;
        return 0;
    }
    struct buf path = {0};
    if (*f->path)
        addf(&path, "%s/", f->path);
    adds(&path, name);
    add(&path, "", 1);
    struct stat st;
    int r = 0;
    if (fstatat(f->src, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        r = fail(c, errno, name);
    else if (S_ISDIR(st.st_mode) && f->depth + 1 > COPY_DEPTH)
        skip(c, "%s/: deeper than %lld folders", path.p, (long long)COPY_DEPTH);
    else if (S_ISDIR(st.st_mode)) {
        if (mkdirat(f->dst, name, 0700) < 0)
            r = fail(c, errno, name);
        else {
            c->dirs++;
            struct frame *next = &stack[(*depth_of_stack)++];
            *next = (struct frame){.src = -1, .dst = -1, .depth = f->depth + 1, .path = path.p};
            path.p = NULL;
            next->src = openat(f->src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (next->src < 0)
                r = fail(c, errno, name);
            else if ((next->dst = openat(f->dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
                r = fail(c, errno, name);
            else
                r = list_names(c, next->src, next);
        }
    } else if (S_ISREG(st.st_mode)) {
        long long left = c->limit_bytes - c->copied;
        if ((long long)st.st_size > left)
            skip(c, "%s: %lld bytes, over the job's disk limit", path.p, (long long)st.st_size);
        else if ((r = copy_file(c, f, name, st.st_mode, left)) > 0) {
            c->files++;
            r = 0;
        }
    } /* else: a link, device, fifo or socket, left out without a note */
    release(&path);
    return r;
}

/* mkdir -p as os.makedirs(path, 0o700, exist_ok=True): folders on the way 0777 & ~umask */
static int make_dirs(struct copy *c, const char *path) {
    char *p = text_copy(path);
    int r = 0;
    for (char *slash = strchr(p + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash)
            *slash = 0;
        struct stat st;
        int err = 0;
        if (!*p)
            ;
        else if (stat(p, &st) == 0)
            err = slash || S_ISDIR(st.st_mode) ? 0 : EEXIST;
        else if (mkdir(p, slash ? 0777 : 0700) < 0)
            err = errno == EEXIST && !stat(p, &st) && S_ISDIR(st.st_mode) ? 0 : errno;
        if (err) {
            r = fail(c, err, p);
            break;
        }
        if (!slash)
            break;
        *slash = '/';
        if (!slash[1])
            break;
    }
    free(p);
    return r;
}

/* fs.copy_tree(src, dst, limit_bytes, 64, limit_entries) */
static int copy_tree(struct copy *c, const char *src, const char *dst) {
    struct frame stack[COPY_DEPTH + 1];
    int depth = 1, r = 0;
    stack[0] = (struct frame){.src = -1, .dst = -1, .path = text_copy("")};
    stack[0].src = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (stack[0].src < 0)
        r = fail(c, errno, src);
    else if ((r = list_names(c, stack[0].src, &stack[0])) == 0 && stack[0].n) {
        if ((r = make_dirs(c, dst)) == 0 && (stack[0].dst = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
            r = fail(c, errno, dst);
    }
    while (r == 0 && stack[0].dst >= 0 && depth && !c->full) {
        struct frame *top = &stack[depth - 1];
        if (top->next < top->n)
            r = copy_one(c, stack, &depth);
        else if (fchmod(top->dst, 0700) < 0)
            r = fail(c, errno, NULL);
        else
            close_frame(&stack[--depth]);
    }
    if (c->full)
        skip(c, "the rest: over %s%lld files and folders", "", c->limit_entries);
    while (depth)
        close_frame(&stack[--depth]);
    return r;
}

/* ---- the notes (workcopy.note_event, as eventfile.encode writes it) ------------------------- */

/* json.dumps' ensure_ascii text: what eventfile.encode writes for a note orjson refuses (one
 * with a lone surrogate: a name whose bytes are not UTF-8) */
static void add_ascii_json(struct buf *b, const char *text) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text), i = 0;
    while (i < n) {
        uint32_t c = next_cp(s, n, &i);
        if (c == '"' || c == '\\')
            addf(b, "\\%c", (char)c);
        else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f')
            adds(b, c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b" : "\\f");
        else if (c >= 0x20 && c < 0x7f)
            addf(b, "%c", (char)c);
        else if (c < 0x10000)
            addf(b, "\\u%04x", c);
        else
            addf(b, "\\u%04x\\u%04x", 0xd800 + ((c - 0x10000) >> 10), 0xdc00 + ((c - 0x10000) & 0x3ff));
    }
}

static void note_event(const char *note) {
    struct buf text = {0};
    addf(&text, "[joblet] /work files: %s\n", note);
    add(&text, "", 1);
    int utf8 = 1;
    for (size_t i = 0; i + 1 < text.len && utf8;) {
        int r = utf8_sequence((const unsigned char *)text.p + i, text.len - 1 - i);
        utf8 = r > 0;
        i += r > 0 ? (size_t)r : 1;
    }
    if (utf8)
        text_event("stderr", text.p);
    else {
        begin_event();
        adds(&H.pending, "\"type\":\"stderr\",\"data\":\"");
        add_ascii_json(&H.pending, text.p);
        adds(&H.pending, "\"");
        end_event();
    }
    release(&text);
}

/* workcopy.copy_work: /work into `dst` within the limits; the files and folders and the bytes
 * kept into H.kept_files and H.kept_bytes, and a note event on what was not */
void copy_work(const char *src, const char *dst, long long limit_bytes, long long limit_entries) {
    struct copy c = {.limit_bytes = limit_bytes, .limit_entries = limit_entries};
    struct buf note = {0};
    if (copy_tree(&c, src, dst) < 0) {
        H.kept_files = H.kept_bytes = 0;
        addf(&note, "copying /work out: %s", c.error);
    } else {
        H.kept_files = c.files + c.dirs;
        H.kept_bytes = c.copied;
        if (c.skipped) {
            adds(&note, "not kept: ");
            for (long long i = 0; i < c.skipped && i < SHOWN_SKIPS; i++)
                addf(&note, "%s%s", i ? "; " : "", c.shown[i]);
            if (c.skipped > SHOWN_SKIPS)
                addf(&note, " (and %lld more)", c.skipped - SHOWN_SKIPS);
        }
    }
    if (note.len) {
        add(&note, "", 1);
        note_event(note.p);
    }
    for (int i = 0; i < SHOWN_SKIPS; i++)
        free(c.shown[i]);
    release(&note);
}
