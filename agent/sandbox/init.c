/* jnb-init: PID 1 of a job's namespaces, from the moment its holder spawns it to the job's end.
 *
 * The holder (a Python process) decides everything and mounts the job's tmpfs root in its own
 * mount namespace; it then spawns this program (posix_spawn, with the forwarded signals blocked)
 * with the job's descriptors at 0-4 and a sealed memfd holding the job's plan at 5 (initplan.py
 * and rootfs.py write it; init.h's tags are its records), and goes on to exec jnb-holder while
 * this program builds the root in that same mount namespace from the plan's root records (binds,
 * /etc, /work and its uploads, masks, /dev: init_root.c), so that the holder still sees /work
 * after the job. Then, in bubblewrap's order, what needs PID 1 of the new PID namespace or happens
 * after pivot_root, in a mount namespace of its own: /proc and its masks, hostname, pivot_root,
 * root read-only, lo up, wait for `go`, the cgroup namespace, capabilities narrowed; forks the
 * job's process (session, /work, default signals, no core, uid/gid, no capability, no_new_privs,
 * fds, Landlock, seccomp last, exec), reports on the status descriptor in status.py's format, and
 * reaps until the job's process ends.
 *
 * Every failure before the fork is `setup_error` naming the step; after it, the job's own
 * `exec_error` (exit 127). Built by scripts/install.sh (gcc, static) into the venv's libexec.
 *
 * This file is PID 1's order of things and its reaping; the rest is one job to a file:
 * init_plan.c (the plan), init_status.c (the status channel), init_root.c (the root), init_steps.c
 * (the other steps before the fork), init_exec.c (the job's process up to its exec).
 */
#include "init.h"

struct plan P;

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
    build_root();
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
