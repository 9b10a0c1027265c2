/* Attack: syscalls through a foreign ABI from inside a real job: i386 (int 0x80, the ia32 compat
 * entry, where getpid is 20) and x32 (the x86_64 entry with bit 30 set, getpid | 0x40000000).
 * These entry points have other syscall numbers and struct layouts; the job's seccomp filter must
 * kill the process (SIGSYS) on either, before the kernel serves it.
 *
 * Each attempt runs in a forked child, with core dumps off (RLIMIT_CORE 0 and not dumpable), and
 * the parent reports how the child died. A native getpid child is the positive control (it must
 * exit normally with a pid). getpid is harmless whichever ABI serves it.
 * Exits 0 and prints PROBE_OK only if both foreign calls were killed. x86_64 only; compiled by
 * tests/test_escape_more.py at test time and uploaded into the job.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int failed;

static long do_call(const char *abi)
{
    long ret = -1;
    if (strcmp(abi, "native") == 0) {
        __asm__ volatile("syscall" : "=a"(ret) : "a"(39L) : "rcx", "r11", "memory");
    } else if (strcmp(abi, "i386") == 0) {
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "r8", "r9", "r10", "r11", "memory");
    } else if (strcmp(abi, "x32") == 0) {
        __asm__ volatile("syscall" : "=a"(ret) : "a"(0x40000000L | 39L) : "rcx", "r11", "memory");
    }
    return ret;
}

/* Returns the wait status of a child that made one getpid through `abi`; the child's return value
 * (if it returned at all) comes back through a pipe. */
static int attempt(const char *abi, long *ret, int *returned)
{
    int fds[2], status = 0;
    *returned = 0;
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        struct rlimit none = {0, 0};
        close(fds[0]);
        setrlimit(RLIMIT_CORE, &none);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        long r = do_call(abi);
        if (write(fds[1], &r, sizeof r) != (ssize_t)sizeof r)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], ret, sizeof *ret) == (ssize_t)sizeof *ret)
        *returned = 1;
    close(fds[0]);
    waitpid(pid, &status, 0);
    return status;
}

static void expect(int ok, const char *what)
{
    printf("%s%s\n", ok ? "held:   " : "BROKEN: ", what);
    if (!ok)
        failed++;
}

int main(void)
{
    char line[256];
    const char *abis[] = {"i386", "x32"};
    long ret;
    int returned;

    int st = attempt("native", &ret, &returned);
    snprintf(line, sizeof line, "native getpid returned %ld (exit status %#x): the helper itself runs",
             returned ? ret : 0L, st);
    expect(returned && ret > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, line);

    for (int i = 0; i < 2; i++) {
        st = attempt(abis[i], &ret, &returned);
        if (returned)
            snprintf(line, sizeof line, "%s getpid returned %ld: the call got past the filter", abis[i], ret);
        else if (WIFSIGNALED(st))
            snprintf(line, sizeof line, "%s getpid: child killed by signal %d (%s)%s", abis[i],
                     WTERMSIG(st), strsignal(WTERMSIG(st)), WCOREDUMP(st) ? ", core dumped" : "");
        else
            snprintf(line, sizeof line, "%s getpid: child ended with status %#x", abis[i], st);
        expect(!returned && WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS && !WCOREDUMP(st), line);
    }
    if (failed) {
        printf("%d attack(s) got through\n", failed);
        return 1;
    }
    printf("PROBE_OK: every attack failed\n");
    return 0;
}
