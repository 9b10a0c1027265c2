/* jnb-init: PID 1 of a job's namespaces, from the moment its holder spawns it to the job's end.
 *
 * The holder (a Python process) decides everything and builds the job's root in its own mount
 * namespace (binds, /etc, /work, /dev: rootfs.py); it then spawns this program (posix_spawn, with
 * the forwarded signals blocked) with the job's descriptors at 0-4 and a sealed memfd holding the
 * job's plan at 5 (initplan.py writes it; the tags below are its records). This program does, in
 * bubblewrap's order, what needs PID 1 of the new PID namespace or happens after pivot_root:
 * /proc and its masks, hostname, pivot_root, root read-only, lo up, wait for `go`, the cgroup
 * namespace, capabilities narrowed; forks the job's process (session, /work, default signals, no
 * core, uid/gid, no capability, no_new_privs, fds, Landlock, seccomp last, exec), reports on the
 * status descriptor in status.py's format, and reaps until the job's process ends.
 *
 * Every failure before the fork is `setup_error` naming the step; after it, the job's own
 * `exec_error` (exit 127). Built by scripts/install.sh (gcc, static) into the venv's libexec.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

enum { STATUS_FD = 3, GO_FD = 4, PLAN_FD = 5, SETUP_FAILED = 125, EXEC_FAILED = 127, MAX_PLAN = 16 << 20 };

/* the plan's records: u32 tag, u32 length, then the value; strings end with their NUL */
enum {
    T_ROOT = 1, T_HOSTNAME, T_MASK_FILE, T_MASK_DIR, T_READONLY_DIR, T_WAIT_GO, T_IDS, T_CAPS,
    T_ARG, T_ENV, T_LANDLOCK, T_LANDLOCK_RULE, T_SECCOMP,
};

#define MAX_ITEMS 4096
struct plan {
    const char *root, *hostname;
    const char *mask_files[64], *mask_dirs[64], *readonly_dirs[64];
    int n_mask_files, n_mask_dirs, n_readonly_dirs;
    int wait_go;
    uint32_t uid, gid;
    uint64_t fork_caps, reaper_caps;
    char *argv[MAX_ITEMS + 1], *envp[MAX_ITEMS + 1];
    int argc, envc;
    int landlock;                        /* a T_LANDLOCK record came: the kernel has Landlock */
    uint64_t handled_fs, handled_net, scoped, file_rights;
    uint32_t attr_size;
    const char *rule_paths[64];
    uint64_t rule_access[64];
    int n_rules;
    struct sock_fprog seccomp;
};

static struct plan P;

/* ---- the status channel (status.py's lines, one write each) -------------------------------- */

static void send_line(const char *line, size_t n) {
    if (write(STATUS_FD, line, n) < 0)
        return; /* the holder went away; the job ends all the same */
}

/* {"event": EVENT, "message": MESSAGE} with MESSAGE escaped as JSON (bytes above 0x7f as \u00XX:
 * always valid, whatever the path's bytes) and cut as status.py cuts it */
static void send_message(const char *event, const char *message) {
    char line[4096];
    size_t n = (size_t)snprintf(line, sizeof line, "{\"event\": \"%s\", \"message\": \"", event);
    size_t limit = sizeof line - 32, taken = 0;
    for (const unsigned char *c = (const unsigned char *)message; *c && n < limit; c++, taken++) {
        if (taken == 1750) {
            n += (size_t)snprintf(line + n, sizeof line - n, " [cut]");
            break;
        }
        if (*c == '"' || *c == '\\')
            n += (size_t)snprintf(line + n, sizeof line - n, "\\%c", *c);
        else if (*c < 0x20 || *c > 0x7e)
            n += (size_t)snprintf(line + n, sizeof line - n, "\\u%04x", *c);
        else
            line[n++] = (char)*c;
    }
    n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
    send_line(line, n);
}

/* "PREFIX: WHAT: strerror(err)" as EVENT on the status channel, then exit with CODE */
__attribute__((noreturn)) static void report_and_exit(const char *event, int code, int err, const char *prefix,
                                                      const char *what, va_list ap) {
    char detail[768], message[1024];
    vsnprintf(detail, sizeof detail, what, ap);
    snprintf(message, sizeof message, "%s: %s%s%s", prefix, detail, err ? ": " : "", err ? strerror(err) : "");
    send_message(event, message);
    _exit(code);
}

/* the step's failure: "STEP: WHAT: strerror", reported as setup_error; the init exits */
__attribute__((noreturn, format(printf, 2, 3))) static void setup_failed(const char *step, const char *what, ...) {
    int err = errno;
    va_list ap;
    va_start(ap, what);
    report_and_exit("setup_error", SETUP_FAILED, err, step, what, ap);
}

/* ---- reading the plan ---------------------------------------------------------------------- */

static const char *text(const char *value, uint32_t len) {
    if (len == 0 || value[len - 1] != '\0') {
        errno = EINVAL;
        setup_failed("read plan", "a string without its end");
    }
    return value;
}

static uint64_t u64_at(const char *value, size_t offset) {
    uint64_t out;
    memcpy(&out, value + offset, sizeof out);
    return out;
}

static void add(const char **list, int *count, int max, const char *value) {
    if (*count >= max) {
        errno = E2BIG;
        setup_failed("read plan", "too many entries");
    }
    list[(*count)++] = value;
}

static void need(uint32_t len, uint32_t want) {
    if (len != want) {
        errno = EINVAL;
        setup_failed("read plan", "a record of %u bytes where %u belong", len, want);
    }
}

static void take_record(uint32_t tag, char *value, uint32_t len) {
    switch (tag) {
    case T_ROOT: P.root = text(value, len); break;
    case T_HOSTNAME: P.hostname = text(value, len); break;
    case T_MASK_FILE: add(P.mask_files, &P.n_mask_files, 64, text(value, len)); break;
    case T_MASK_DIR: add(P.mask_dirs, &P.n_mask_dirs, 64, text(value, len)); break;
    case T_READONLY_DIR: add(P.readonly_dirs, &P.n_readonly_dirs, 64, text(value, len)); break;
    case T_WAIT_GO: P.wait_go = 1; break;
    case T_IDS: need(len, 8); memcpy(&P.uid, value, 4); memcpy(&P.gid, value + 4, 4); break;
    case T_CAPS: need(len, 16); P.fork_caps = u64_at(value, 0); P.reaper_caps = u64_at(value, 8); break;
    case T_ARG: add((const char **)P.argv, &P.argc, MAX_ITEMS, text(value, len)); break;
    case T_ENV: add((const char **)P.envp, &P.envc, MAX_ITEMS, text(value, len)); break;
    case T_LANDLOCK:
        need(len, 36);
        P.landlock = 1;
        P.handled_fs = u64_at(value, 0);
        P.handled_net = u64_at(value, 8);
        P.scoped = u64_at(value, 16);
        P.file_rights = u64_at(value, 24);
        memcpy(&P.attr_size, value + 32, 4);
        break;
    case T_LANDLOCK_RULE:
        if (len < 9)
            need(len, 9);
        P.rule_access[P.n_rules < 64 ? P.n_rules : 0] = u64_at(value, 0);
        add(P.rule_paths, &P.n_rules, 64, text(value + 8, len - 8));
        break;
    case T_SECCOMP:
        if (len == 0 || len % sizeof(struct sock_filter) || len / sizeof(struct sock_filter) > 4096) {
            errno = EINVAL;
            setup_failed("read plan", "a seccomp program of %u bytes", len);
        }
        P.seccomp.len = (unsigned short)(len / sizeof(struct sock_filter));
        P.seccomp.filter = (struct sock_filter *)value; /* malloc'd: aligned for any type */
        break;
    default:
        errno = EINVAL;
        setup_failed("read plan", "unknown record %u", tag);
    }
}

static void read_plan(void) {
    struct stat st;
    if (fstat(PLAN_FD, &st) < 0)
        setup_failed("read plan", "fstat");
    if (st.st_size <= 0 || st.st_size > MAX_PLAN) {
        errno = EINVAL;
        setup_failed("read plan", "a plan of %lld bytes", (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size, at = 0;
    char *data = malloc(size);
    if (!data)
        setup_failed("read plan", "malloc");
    while (at < size) {
        ssize_t n = pread(PLAN_FD, data + at, size - at, (off_t)at);
        if (n <= 0)
            setup_failed("read plan", "pread");
        at += (size_t)n;
    }
    close(PLAN_FD);
    for (at = 0; at + 8 <= size;) {
        uint32_t tag, len;
        memcpy(&tag, data + at, 4);
        memcpy(&len, data + at + 4, 4);
        at += 8;
        if (len > size - at) {
            errno = EINVAL;
            setup_failed("read plan", "a record past the end");
        }
        /* each value gets its own aligned copy (the seccomp program is read as an array) */
        char *value = malloc(len ? len : 1);
        if (!value)
            setup_failed("read plan", "malloc");
        memcpy(value, data + at, len);
        take_record(tag, value, len);
        at += len;
    }
    free(data);
    if (!P.root || !P.hostname || P.argc == 0 || !P.seccomp.len || !P.uid || !P.gid) {
        errno = EINVAL;
        setup_failed("read plan", "incomplete (root, hostname, argv, seccomp, ids)");
    }
}

/* ---- the init's steps ---------------------------------------------------------------------- */

static void keep_only_its_descriptors(void) {
    /* 0 = input, 1/2 = output, 3 = status, 4 = go (when it waits for go) */
    if (syscall(SYS_close_range, P.wait_go ? 5U : 4U, ~0U, 0) < 0)
        setup_failed("keep only its descriptors", "close_range");
}

static void check_pid_1(void) {
    if (getpid() != 1) {
        errno = 0;
        setup_failed("validate job context", "not PID 1 of a new PID namespace: refusing to build a sandbox");
    }
}

static void prefer_for_oom_kill(void) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "1000", 4) != 4)
        setup_failed("prefer for oom kill", "/proc/self/oom_score_adj");
    close(fd);
}

static void remount(const char *step, const char *target, unsigned long flags) {
    if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
        setup_failed(step, "remount %s", target);
}

static int exists(const char *path, int want_dir) {
    struct stat st;
    return lstat(path, &st) == 0 && (!want_dir || S_ISDIR(st.st_mode));
}

/* DIR/NAME into `out` (PATH_MAX bytes), refused when it would not fit */
static void join(char *out, const char *step, const char *dir, const char *name) {
    int n = snprintf(out, 4096, "%s/%s", dir, name);
    if (n < 0 || n >= 4096) {
        errno = ENAMETOOLONG;
        setup_failed(step, "%s/%s", dir, name);
    }
}

/* a fresh procfs for the new PID namespace (only its PID 1 can mount it), masks as mounts.py says */
static void mount_proc(void) {
    static const char step[] = "mount proc";
    const unsigned long hard = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    char proc[4096], target[4096];
    join(proc, step, P.root, "proc");
    if (mount("proc", proc, "proc", hard, NULL) < 0)
        setup_failed(step, "mount proc on %s", proc);
    for (int i = 0; i < P.n_mask_files; i++) {
        join(target, step, proc, P.mask_files[i]);
        if (!exists(target, 0))
            continue;
        if (mount("/dev/null", target, NULL, MS_BIND, NULL) < 0)
            setup_failed(step, "mask %s", target);
        remount(step, target, MS_RDONLY | hard);
    }
    for (int i = 0; i < P.n_mask_dirs; i++) {
        join(target, step, proc, P.mask_dirs[i]);
        if (exists(target, 1) && mount("tmpfs", target, "tmpfs", MS_RDONLY | hard, "size=0,mode=555") < 0)
            setup_failed(step, "mask %s", target);
    }
    for (int i = 0; i < P.n_readonly_dirs; i++) {
        join(target, step, proc, P.readonly_dirs[i]);
        if (!exists(target, 1))
            continue;
        if (mount(target, target, NULL, MS_BIND, NULL) < 0)
            setup_failed(step, "bind %s", target);
        remount(step, target, MS_RDONLY | hard);
    }
}

static void pivot(void) {
    if (chdir(P.root) < 0)
        setup_failed("pivot root", "chdir %s", P.root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        setup_failed("pivot root", "pivot_root %s", P.root);
    if (umount2(".", MNT_DETACH) < 0)
        setup_failed("pivot root", "detach the old root");
    if (chdir("/") < 0)
        setup_failed("pivot root", "chdir /");
}

static void loopback_up(void) {
    struct ifreq req;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        setup_failed("loopback up", "socket");
    memset(&req, 0, sizeof req);
    strcpy(req.ifr_name, "lo");
    if (ioctl(sock, SIOCGIFFLAGS, &req) < 0)
        setup_failed("loopback up", "SIOCGIFFLAGS lo");
    req.ifr_flags |= IFF_UP;
    if (ioctl(sock, SIOCSIFFLAGS, &req) < 0)
        setup_failed("loopback up", "SIOCSIFFLAGS lo");
    close(sock);
}

static void wait_for_the_agent(void) {
    char go = 0;
    ssize_t n;
    if (!P.wait_go)
        return;
    do
        n = read(GO_FD, &go, 1);
    while (n < 0 && errno == EINTR);
    close(GO_FD);
    if (n != 1 || go != 'g') {
        errno = 0;
        setup_failed("wait for the agent", "the agent aborted the job before it started");
    }
}

struct cap_header { uint32_t version; int pid; };
struct cap_data { uint32_t effective, permitted, inheritable; };

/* the bounding set down to `keep` (needs CAP_SETPCAP, so before the other sets), no ambient */
static int drop_bounding_set(uint64_t keep) {
    for (int cap = 0; cap < 64; cap++) {
        if (keep & (1ULL << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break; /* past the kernel's last capability */
            return -1;
        }
    }
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

static int set_caps(uint64_t keep) {
    struct cap_header header = {0x20080522, 0};
    struct cap_data data[2] = {{(uint32_t)keep, (uint32_t)keep, 0}, {(uint32_t)(keep >> 32), (uint32_t)(keep >> 32), 0}};
    return (int)syscall(SYS_capset, &header, data);
}

static int keep_only_caps(uint64_t keep) {
    return drop_bounding_set(keep) < 0 ? -1 : set_caps(keep);
}

static void narrow_capabilities(void) {
    if (keep_only_caps(P.fork_caps) < 0)
        setup_failed("narrow capabilities", "capabilities");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        setup_failed("narrow capabilities", "prctl");
}

/* ---- the job's process, up to its exec ----------------------------------------------------- */

/* the job's own failure before its exec: "starting ARGV0: WHAT: strerror", as exec_error (exit 127) */
__attribute__((noreturn, format(printf, 1, 2))) static void exec_failed(const char *what, ...) {
    int err = errno;
    char prefix[600];
    snprintf(prefix, sizeof prefix, "starting %s", P.argv[0]);
    va_list ap;
    va_start(ap, what);
    report_and_exit("exec_error", EXEC_FAILED, err, prefix, what, ap);
}

/* raw calls: the C library refuses its own two signals, which posix_spawn left ignored in the init */
static void default_signals(void) {
    uint64_t action[4] = {0, 0, 0, 0}; /* struct kernel_sigaction with SIG_DFL, no flags, empty mask */
    uint64_t none = 0;
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP && syscall(SYS_rt_sigaction, sig, action, NULL, sizeof none) < 0)
            exec_failed("default signal %d", sig);
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none) < 0)
        exec_failed("empty signal mask");
}

static void become_job_user(void) {
    if (drop_bounding_set(0) < 0) /* all of it, while CAP_SETPCAP is still held */
        exec_failed("dropping the bounding set");
    if (setgroups(0, NULL) < 0 || setresgid(P.gid, P.gid, P.gid) < 0 || setresuid(P.uid, P.uid, P.uid) < 0)
        exec_failed("becoming uid %u gid %u", P.uid, P.gid);
    if (set_caps(0) < 0)
        exec_failed("clearing capabilities");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        exec_failed("no_new_privs");
}

static void keep_only_stdio_and_status(void) {
    if (fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC) < 0 || syscall(SYS_close_range, 4U, ~0U, 0) < 0)
        exec_failed("closing descriptors");
}

struct ruleset_attr { uint64_t handled_fs, handled_net, scoped; };
struct __attribute__((packed)) path_beneath { uint64_t allowed; int32_t parent_fd; };

static void restrict_with_landlock(void) {
    if (!P.landlock)
        return; /* the kernel has none (the plan says so): GET /v1/health lists it */
    struct ruleset_attr attr = {P.handled_fs, P.handled_net, P.scoped};
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, (size_t)P.attr_size, 0U);
    if (ruleset < 0)
        exec_failed("landlock_create_ruleset");
    for (int i = 0; i < P.n_rules; i++) {
        struct stat st;
        int fd = open(P.rule_paths[i], O_PATH | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* a path the root does not have: nothing is allowed there */
            exec_failed("landlock %s", P.rule_paths[i]);
        }
        if (fstat(fd, &st) < 0)
            exec_failed("landlock %s", P.rule_paths[i]);
        struct path_beneath rule = {P.rule_access[i] & (S_ISDIR(st.st_mode) ? ~0ULL : P.file_rights), fd};
        if (syscall(SYS_landlock_add_rule, ruleset, 1 /* PATH_BENEATH */, &rule, 0U) < 0)
            exec_failed("landlock_add_rule %s", P.rule_paths[i]);
        close(fd);
    }
    if (syscall(SYS_landlock_restrict_self, ruleset, 0U) < 0)
        exec_failed("landlock_restrict_self");
    close(ruleset);
}

static void load_seccomp(void) {
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
        errno = 0;
        exec_failed("no_new_privs is not set before seccomp");
    }
    if (syscall(SYS_seccomp, 1 /* SET_MODE_FILTER */, 1 /* FILTER_FLAG_TSYNC */, &P.seccomp) != 0)
        exec_failed("installing the seccomp profile");
}

/* execve along the job's own PATH (as Python's os.execvpe: the first error other than "no such
 * file" wins, a name with a slash is run as it is; no shell for a file without a #! line) */
static void exec_along_path(void) {
    const char *name = P.argv[0], *path = "/bin:/usr/bin";
    if (strchr(name, '/')) {
        execve(name, P.argv, P.envp);
    } else {
        for (int i = 0; i < P.envc; i++)
            if (strncmp(P.envp[i], "PATH=", 5) == 0)
                path = P.envp[i] + 5;
        int saved = 0, last = ENOENT;
        char file[4096];
        for (const char *dir = path;; dir++) {
            const char *end = strchrnul(dir, ':');
            int len = (int)(end - dir);
            int n = snprintf(file, sizeof file, "%.*s%s%s", len, dir, len ? "/" : "", name);
            if (n > 0 && n < (int)sizeof file)
                execve(file, P.argv, P.envp);
            else
                errno = ENAMETOOLONG;
            last = errno;
            if (last != ENOENT && last != ENOTDIR && !saved)
                saved = last;
            if (!*end)
                break;
            dir = end;
        }
        errno = saved ? saved : last;
    }
    if (errno == ENOENT) {
        char message[600];
        snprintf(message, sizeof message, "%s: command not found in the sandbox", name);
        send_message("exec_error", message);
        _exit(EXEC_FAILED);
    }
    exec_failed("execve");
}

__attribute__((noreturn)) static void exec_job(void) {
    if (setsid() < 0)
        exec_failed("setsid");
    if (chdir("/work") < 0)
        exec_failed("chdir /work");
    default_signals();
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) < 0)
        exec_failed("RLIMIT_CORE");
    become_job_user();
    keep_only_stdio_and_status();
    restrict_with_landlock();
    load_seccomp(); /* last: every call above may be one the filter forbids */
    exec_along_path();
    _exit(EXEC_FAILED);
}

/* ---- PID 1 once the job runs: forward signals, reap, report the end ------------------------ */

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
static volatile pid_t main_pid;

/* to the job's process group, and to its main process alone only once it has left that group: a
 * main process signalled twice may take the second after its handler of the first has ended (a
 * Python job that exits from its SIGTERM handler then dies of the second, as reason `signal 15`) */
static void forward(int sig) {
    int saved = errno;
    kill(-main_pid, sig);
    if (getpgid(main_pid) != main_pid)
        kill(main_pid, sig);
    errno = saved;
}

static int reap(void) {
    struct sigaction handler;
    memset(&handler, 0, sizeof handler);
    handler.sa_handler = forward;
    handler.sa_flags = SA_RESTART;
    sigset_t held;
    sigemptyset(&held);
    sigemptyset(&handler.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        sigaddset(&handler.sa_mask, forwarded[i]);
        sigaddset(&held, forwarded[i]);
    }
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &handler, NULL);
    sigprocmask(SIG_UNBLOCK, &held, NULL); /* held since the spawn: pending ones go on now */
    for (;;) {
        int st;
        pid_t done = waitpid(-1, &st, 0);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return 0; /* no child left */
        }
        if (done == main_pid)
            return st;
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL); /* a holder gone away: a status write fails, nothing more */
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGXFSZ, &sa, NULL);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        setup_failed("die with parent", "prctl");
    read_plan();
    keep_only_its_descriptors();
    check_pid_1();
    prefer_for_oom_kill();
    if (unshare(CLONE_NEWNS) < 0) /* nested: the pivot leaves the holder's view (it copies /work out) */
        setup_failed("private mount namespace", "unshare");
    mount_proc();
    if (sethostname(P.hostname, strlen(P.hostname)) < 0)
        setup_failed("set hostname", "sethostname %s", P.hostname);
    pivot();
    remount("root readonly", "/", MS_RDONLY | MS_NOSUID | MS_NODEV);
    loopback_up();
    wait_for_the_agent();
    if (unshare(CLONE_NEWCGROUP) < 0)
        setup_failed("cgroup namespace", "unshare");
    narrow_capabilities();

    pid_t pid = fork();
    if (pid < 0)
        setup_failed("fork the job", "fork");
    if (pid == 0)
        exec_job();
    main_pid = pid;
    if (keep_only_caps(P.reaper_caps) < 0) { /* root's uid (the job cannot signal or trace it), CAP_KILL */
        kill(pid, SIGKILL);
        setup_failed("reduce reaper", "capabilities");
    }
    char line[96];
    int n = snprintf(line, sizeof line, "{\"event\": \"running\", \"pid\": %d}\n", (int)pid);
    send_line(line, (size_t)n);
    int st = reap();
    if (WIFSIGNALED(st))
        n = snprintf(line, sizeof line, "{\"event\": \"exit\", \"exit_code\": null, \"signal\": %d}\n", WTERMSIG(st));
    else
        n = snprintf(line, sizeof line, "{\"event\": \"exit\", \"exit_code\": %d, \"signal\": null}\n", WEXITSTATUS(st));
    send_line(line, (size_t)n);
    return 0;
}
