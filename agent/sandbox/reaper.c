/* jnb-reaper: PID 1 of a job's sandbox once its init has set the sandbox up (sequence.py `init`).
 *
 * The init is a fork of the agent's warm Python launcher; staying Python for the job's whole life
 * would keep a copy of every page it touched (about 3 MB per job). Once the job's process runs,
 * the init executes this program by descriptor (opened before pivot_root: nothing of it is inside
 * the job's root), with the privileges the init had left (root's uid, only CAP_KILL, no_new_privs,
 * the bounding set down to CAP_KILL), and it does what reaper.py did there: forward the signals a
 * user or the agent sends to the job's process group, reap every child until the main one ends,
 * and report how it ended on the status descriptor as the init would (status.py `exited`).
 *
 * Built by scripts/install.sh (gcc, static) into the venv's libexec folder.
 * Usage: jnb-reaper MAIN_PID STATUS_FD    (the forwarded signals arrive blocked; pending ones stay)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
static volatile pid_t main_pid;

static void forward(int sig) {
    int saved = errno;
    kill(-main_pid, sig);  /* the job's process group, then its main process (it may have left the group) */
    kill(main_pid, sig);
    errno = saved;
}

static int number(const char *text, long *out) {
    char *end;
    errno = 0;
    *out = strtol(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && *out > 0;
}

int main(int argc, char **argv) {
    long pid, fd;
    if (argc != 3 || !number(argv[1], &pid) || !number(argv[2], &fd))
        return 125;
    prctl(PR_SET_NAME, "jnb-init");
    prctl(PR_SET_DUMPABLE, 0);
    main_pid = (pid_t)pid;

    struct sigaction ignore = {0}, deflt = {0}, handler = {0};
    ignore.sa_handler = SIG_IGN;
    deflt.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &ignore, NULL);  /* a holder gone away: the write below fails, nothing more */
    sigaction(SIGCHLD, &deflt, NULL);   /* children must stay waitable */
    handler.sa_handler = forward;
    handler.sa_flags = SA_RESTART;
    sigemptyset(&handler.sa_mask);
    sigset_t held;
    sigemptyset(&held);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        sigaddset(&handler.sa_mask, forwarded[i]);
        sigaddset(&held, forwarded[i]);
    }
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &handler, NULL);
    sigprocmask(SIG_UNBLOCK, &held, NULL);  /* signals held since the init's first step go on now */

    int status = 0;
    for (;;) {
        int st;
        pid_t done = waitpid(-1, &st, 0);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            break;  /* no child left: as the Python reaper, an exit code of 0 */
        }
        if (done == main_pid) {
            status = st;
            break;
        }
    }
    char line[96];
    int n;
    if (WIFSIGNALED(status))
        n = snprintf(line, sizeof line, "{\"event\": \"exit\", \"exit_code\": null, \"signal\": %d}\n",
                     WTERMSIG(status));
    else
        n = snprintf(line, sizeof line, "{\"event\": \"exit\", \"exit_code\": %d, \"signal\": null}\n",
                     WEXITSTATUS(status));
    if (write((int)fd, line, (size_t)n) < 0)
        return 0;  /* the holder went away; the job has ended all the same */
    return 0;
}
