/* jnb-holder's shared parts: the plan's numbers, the buffers, the parsed JSON values and the
 * holder's state, which every one of its files (holder_*.c, one job each) works on. */
#ifndef JNB_HOLDER_H
#define JNB_HOLDER_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* holder.py's and control.py's numbers */
#define READ_SIZE (512 << 10)
#define SMALL_READ (READ_SIZE >> 2)
#define BUSY_PAUSE_S 0.002
#define BUSY_STREAK 8
#define MAX_CONNECTIONS 16
#define MAX_PENDING_INPUT ((size_t)64 << 20)
#define MAX_LINE ((size_t)64 << 20)
#define CHANNEL_READ (256 << 10)
#define MAX_FDS 4
#define PROTOCOL 1
#define MAX_PLAN (1 << 20)
#define MAX_DEPTH 512

/* the plan's records (holderplan.py has the same numbers) */
enum {
    H_JOB_ID = 1, H_TOKEN, H_BOOT_ID, H_STATE, H_UID, H_TIMEOUT, H_GRACE, H_CAP, H_SEQ, H_MARK, H_FD,
    H_INIT_PID, H_GO_DEADLINE, H_WORK_DIR, H_WORK_TO, H_WORK_LIMITS,
};
/* H_FD roles */
enum {
    F_LOG = 1, F_DIR, F_FIRST, F_LISTEN, F_OUT, F_ERR, F_STATUS, F_GO, F_STDIN, F_INIT,
    F_CG_CPU_STAT, F_CG_CPU_NS, F_CG_PEAK, F_CG_EVENTS, F_CG_FAILCNT, F_CG_LIMIT, F_ROLES,
};
/* unsent bytes a greeted channel may hold (the same bound as a line in): a peer that never reads
 * is cut off rather than grow the holder without end */
#define MAX_UNSENT ((size_t)64 << 20)

struct buf {
    char *p;
    size_t len, cap;
};

struct decoder {
    unsigned char pend[4];
    size_t npend;
};

enum jtype { J_NONE, J_NULL, J_BOOL, J_NUM, J_STR, J_OTHER };

struct jval {
    enum jtype type;
    double num;
    int is_int, big;
    long long ival;
    int truth;
    char *s;
    size_t slen;
    int surrogate;
};

struct jfield {
    const char *name;
    struct jval v;
};

struct channel {
    int fd, greeted, closed;
    struct buf in, out;
    size_t scanned;
};

struct mark {
    char name[32];
    double at;
};

struct holder {
    /* from the plan */
    const char *job_id, *token, *boot_id, *work_dir, *work_to;
    long long work_bytes, work_entries;  /* /work's copy: its limits (no entry limit: < 0) */
    uint32_t uid;
    double timeout_s, grace_s;
    uint64_t cap;
    int fd[F_ROLES];
    pid_t init_pid;
    double go_deadline;
    /* the job's life */
    const char *state;
    uint64_t seq, told_seq, pending_events;
    struct buf pending;
    struct decoder decoders[2];
    uint64_t out_bytes;
    int cut;
    int open_streams;
    double last_read[2], resume_at[2];
    int streak[2];
    struct buf status_in;
    struct buf input;
    double timeout_at, kill_at;
    int own_pidfd;
    struct channel *channels[MAX_CONNECTIONS];
    /* the outcome */
    char *end, *message, *stop_reason, *agent_error;
    int has_exit_code, has_signal;
    long long exit_code, signal;
    int oom, has_usage;
    double cpu_s, started_at, ended_at;
    long long memory_peak;
    long long kept_files, kept_bytes;
    struct mark marks[32];
    int nmarks;
};

extern struct holder H;

/* clocks */
static inline double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline double monotonic(void) { return clock_s(CLOCK_MONOTONIC); }

/* holder_buf.c: growing buffers, and values into them as Python's json.dumps writes them */
void reserve(struct buf *b, size_t more);
void add(struct buf *b, const void *data, size_t n);
void adds(struct buf *b, const char *s);
void addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void release(struct buf *b);
void add_float(struct buf *b, double v);
void add_pystr(struct buf *b, const char *s, size_t n);
void add_pystr_or_null(struct buf *b, const char *s);

/* holder_utf8.c: the job's bytes as Python decodes them (UTF-8 with replacement), escaped as orjson */
int utf8_sequence(const unsigned char *s, size_t n);
void decode_into(struct buf *b, struct decoder *d, const unsigned char *data, size_t n, int final);

/* holder_json.c: the strict parser of control and status lines */
int jparse_object(const char *line, size_t n, struct jfield *fields, int nfields);
void jfree(struct jfield *fields, int n);
int truthy(const struct jval *v);

/* holder_events.c: the event log */
void begin_event(void);
void end_event(void);
void text_event(const char *kind, const char *text);
void text_output(int kind, const unsigned char *data, size_t n);
void write_pending(void);

/* holder_control.c: the control channels */
void close_channel(int i);
void flush_channel(int i);
void tell(struct buf *line);
void flush_events(void);
void channel_readable(int i);
void add_channel(int fd);
void accept_channel(void);

/* holder_job.c: the job's pipes, what the agent asks of it, and the loop */
void send_signal(int sig);
void job_abort(const char *message);
void job_stop(const char *reason, double grace);
void job_go(void);
void write_input(const char *data, size_t n);
void prepare_reads(void);
void run_once(void);

/* holder_copy.c: /work copied out (fs.copy_tree, workcopy.copy_work) */
void copy_work(const char *src, const char *dst, long long limit_bytes, long long limit_entries);

/* holder_end.c: the job's end, outcome.json, and the holder's own failure */
void mark(const char *name);
void set_text(char **field, const char *value);
__attribute__((noreturn)) void crashed(const char *what, int err);
__attribute__((noreturn)) void out_of_memory(void);
void finish(void);

#endif
