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
 * from the cgroup, /work copied out (holder_copy.c, as fs.copy_tree copies it), outcome.json as
 * outcome.py writes it, and `ended`.
 *
 * `jnb-holder --relay-test CAP` reads (kind byte, u32 length, bytes) records on stdin and writes
 * the event lines their output makes (from seq 1) on stdout: tests/test_holder_c.py compares
 * them with Python's; `jnb-holder --unsent-test` checks the bound on a silent peer's unsent
 * bytes; `jnb-holder --copy-test SRC DST LIMIT_BYTES LIMIT_ENTRIES` copies SRC as /work is copied and
 * prints "files bytes" and the note events (tests/test_holder_copy.py). Built by scripts/install.sh (gcc, static) into the venv's libexec.
 *
 * This file reads the plan and runs the loop; the rest is one job to a file: holder_job.c (the
 * job's pipes, what the agent asks, the loop's turn), holder_control.c (the control channels),
 * holder_events.c (the event log), holder_copy.c (/work copied out), holder_utf8.c (output bytes as text), holder_json.c (the
 * strict parser), holder_buf.c (buffers, json.dumps' output), holder_end.c (the end).
 */
#include "holder.h"

struct holder H;

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
        case H_WORK_TO: H.work_to = plan_text(v, len); break;
        case H_WORK_LIMITS:
            if (len != 16) bad_plan("work limits");
            memcpy(&H.work_bytes, v, 8);
            memcpy(&H.work_entries, v + 8, 8);
            break;
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

/* `jnb-holder --unsent-test`: seq lines told to a greeted peer that never reads, until the
 * holder cuts it off; prints "closed" or "open" and the most bytes it held unsent (the bound's
 * test: a real job would take hours of output to reach it) */
static int unsent_test(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return 1;
    H.own_pidfd = -1;
    add_channel(sv[0]);
    H.channels[0]->greeted = 1;
    size_t most = 0;
    for (H.seq = 1; !H.channels[0]->closed && H.seq < (1u << 23); H.seq++) {
        flush_events();
        if (H.channels[0]->out.len > most)
            most = H.channels[0]->out.len;
    }
    printf("%s %zu\n", H.channels[0]->closed ? "closed" : "open", most);
    return 0;
}

/* `jnb-holder --copy-test SRC DST LIMIT_BYTES LIMIT_ENTRIES`: the copy of /work, on any tree */
static int copy_test(char **argv) {
    copy_work(argv[2], argv[3], strtoll(argv[4], NULL, 10), strtoll(argv[5], NULL, 10));
    printf("%lld %lld\n", H.kept_files, H.kept_bytes);
    fflush(stdout);
    return write(1, H.pending.p, H.pending.len) == (ssize_t)H.pending.len ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "--copy-test") == 0)
        return copy_test(argv);
    if (argc == 3 && strcmp(argv[1], "--relay-test") == 0)
        return relay_test(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--unsent-test") == 0)
        return unsent_test();
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
    prepare_reads();
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