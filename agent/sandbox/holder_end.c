/* The job's end: usage and OOM from its cgroup, /work copied out, outcome.json as outcome.py
 * writes it, and `ended`; and the holder's own failure, which ends the job with its reason kept. */
#include "holder.h"

static char *dup_text(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p)
        out_of_memory();
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void mark(const char *name) {
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

/* outcome.json written whole, then renamed into place; fsync'd if `durable` (else by sync_outcome).
 * The temporary file is a spare job folder's, made empty ahead (jobs/spare.py): written in place,
 * not truncated first (ext4 flushes a file truncated to empty at its close), cut after if longer. */
static int write_outcome(int durable) {
    struct buf b = {0};
    outcome_json(&b);
    int fd = openat(H.fd[F_DIR], "outcome.json.tmp", O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
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
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > (off_t)at)
        (void)!ftruncate(fd, (off_t)at);
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

void set_text(char **field, const char *value) {
    free(*field);
    *field = value ? dup_text(value, strlen(value)) : NULL;
}

/* holder.py's crashed(): a failure of the holder itself ends the job with the reason kept */
void crashed(const char *what, int err) {
    char message[512];
    snprintf(message, sizeof message, "the job's holder failed: OSError: [Errno %d] %s: %s", err, strerror(err), what);
    set_text(&H.end, "setup_error");
    set_text(&H.message, message);
    send_signal(SIGKILL);
    write_outcome(1);
    _exit(0);
}

void out_of_memory(void) { crashed("out of memory", ENOMEM); }

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

void finish(void) {
    H.state = "ending";
    take_usage();
    mark("usage");
    if (!H.end || strcmp(H.end, "setup_error") != 0)
        if (H.work_dir && H.work_to)
            copy_work(H.work_dir, H.work_to, H.work_bytes, H.work_entries);
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
