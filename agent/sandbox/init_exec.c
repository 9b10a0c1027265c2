/* The job's process, from its fork to its exec: session, signals, identity, descriptors, Landlock,
 * seccomp last; a failure here is the job's own exec_error. */
#include "init.h"

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

__attribute__((noreturn)) void exec_job(void) {
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
