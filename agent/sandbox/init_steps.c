/* PID 1's steps before the job's fork, in bubblewrap's order: /proc and its masks, pivot_root,
 * lo up, the wait for `go`, capabilities narrowed. */
#include "init.h"

void keep_only_its_descriptors(void) {
    /* 0 = input, 1/2 = output, 3 = status, 4 = go (when it waits for go) */
    if (syscall(SYS_close_range, P.wait_go ? 5U : 4U, ~0U, 0) < 0)
        setup_failed("keep only its descriptors", "close_range");
}

void check_pid_1(void) {
    if (getpid() != 1) {
        errno = 0;
        setup_failed("validate job context", "not PID 1 of a new PID namespace: refusing to build a sandbox");
    }
}

void prefer_for_oom_kill(void) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "1000", 4) != 4)
        setup_failed("prefer for oom kill", "/proc/self/oom_score_adj");
    close(fd);
}

void remount(const char *step, const char *target, unsigned long flags) {
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
void mount_proc(void) {
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

void pivot(void) {
    if (chdir(P.root) < 0)
        setup_failed("pivot root", "chdir %s", P.root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        setup_failed("pivot root", "pivot_root %s", P.root);
    if (umount2(".", MNT_DETACH) < 0)
        setup_failed("pivot root", "detach the old root");
    if (chdir("/") < 0)
        setup_failed("pivot root", "chdir /");
}

void loopback_up(void) {
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

void wait_for_the_agent(void) {
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
int drop_bounding_set(uint64_t keep) {
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

int set_caps(uint64_t keep) {
    struct cap_header header = {0x20080522, 0};
    struct cap_data data[2] = {{(uint32_t)keep, (uint32_t)keep, 0}, {(uint32_t)(keep >> 32), (uint32_t)(keep >> 32), 0}};
    return (int)syscall(SYS_capset, &header, data);
}

int keep_only_caps(uint64_t keep) {
    return drop_bounding_set(keep) < 0 ? -1 : set_caps(keep);
}

void narrow_capabilities(void) {
    if (keep_only_caps(P.fork_caps) < 0)
        setup_failed("narrow capabilities", "capabilities");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        setup_failed("narrow capabilities", "prctl");
}
