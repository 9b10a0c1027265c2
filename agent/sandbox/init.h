/* jnb-init's shared parts: the plan's numbers and records, the plan itself, and what each of its
 * files (init_*.c, one job each) gives the others. */
#ifndef JNB_INIT_H
#define JNB_INIT_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
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
#include <sys/mman.h>
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

enum { STATUS_FD = 3, GO_FD = 4, PLAN_FD = 5, SETUP_FAILED = 125, EXEC_FAILED = 127, MAX_PLAN = 1 << 30 };
/* the plan carries a job's uploads; initplan.MAX_PLAN is the same bound */

/* the plan's records: u32 tag, u32 length, then the value; strings end with their NUL */
enum {
    T_ROOT = 1, T_HOSTNAME, T_MASK_FILE, T_MASK_DIR, T_READONLY_DIR, T_WAIT_GO, T_IDS, T_CAPS,
    T_ARG, T_ENV, T_LANDLOCK, T_LANDLOCK_RULE, T_SECCOMP,
    /* the root's records (rootfs.py has the same numbers), applied in their order (init_root.c) */
    R_MKDIR, R_SYMLINK, R_BIND, R_HOST, R_WRITE, R_MASK, R_FS, R_NODE, R_REMOUNT, R_BIND_SELF,
};

struct root_op { uint32_t tag, len; const char *value; };

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
    struct root_op *root_ops;            /* values point into the plan's mapping: uploads are not copied */
    int n_root_ops;
};

extern struct plan P;

/* init_status.c: the status channel (status.py's lines) */
void send_line(const char *line, size_t n);
void send_message(const char *event, const char *message);
__attribute__((noreturn)) void report_and_exit(const char *event, int code, int err, const char *prefix,
                                               const char *what, va_list ap);
__attribute__((noreturn, format(printf, 2, 3))) void setup_failed(const char *step, const char *what, ...);

/* init_plan.c: the plan, from its sealed memfd */
void read_plan(void);

/* init_root.c: the job's root from the root records, in the holder's mount namespace */
void build_root(void);

/* init_steps.c: PID 1's steps before the job's fork, in bubblewrap's order */
void keep_only_its_descriptors(void);
void check_pid_1(void);
void prefer_for_oom_kill(void);
void remount(const char *step, const char *target, unsigned long flags);
void mount_proc(void);
void pivot(void);
void loopback_up(void);
void wait_for_the_agent(void);
int drop_bounding_set(uint64_t keep);
int set_caps(uint64_t keep);
int keep_only_caps(uint64_t keep);
void narrow_capabilities(void);

/* init_exec.c: the job's process, from its fork to its exec */
__attribute__((noreturn)) void exec_job(void);

#endif
