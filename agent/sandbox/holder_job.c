/* The job: what the agent asks of it (go, abort, stop, signals, input), its output and status
 * pipes, its init's end, and the loop that waits on all of them and on the timers. */
#include "holder.h"

void send_signal(int sig) {
    if (H.fd[F_INIT] >= 0)
        syscall(SYS_pidfd_send_signal, H.fd[F_INIT], sig, NULL, 0);
}

static double min_d(double a, double b) { return a < b ? a : b; }

static double max_d(double a, double b) { return a > b ? a : b; }

/* ---- what the agent asks ------------------------------------------------------------------- */

static void close_go(void) {
    if (H.fd[F_GO] >= 0) {
        close(H.fd[F_GO]);
        H.fd[F_GO] = -1;
    }
}

void job_abort(const char *message) {
    if (H.fd[F_GO] < 0)
        return;
    if (message && !H.agent_error)
        set_text(&H.agent_error, message);
    close_go();
}

void job_stop(const char *reason, double grace) {
    if (!H.stop_reason)
        set_text(&H.stop_reason, reason);
    if (H.fd[F_INIT] < 0)
        return;
    if (H.fd[F_GO] >= 0)
        job_abort(NULL);
    send_signal(grace > 0 ? SIGTERM : SIGKILL);
    if (grace > 0 && H.kill_at == 0)
        H.kill_at = monotonic() + grace;
}

void job_go(void) {
    if (H.fd[F_GO] >= 0) {
        if (write(H.fd[F_GO], "g", 1) < 0) {
            /* the init is gone: its end is seen on its pidfd */
        }
        close_go();
        H.state = "starting";
    }
}

static void close_input(void) {
    if (H.fd[F_STDIN] >= 0) {
        close(H.fd[F_STDIN]);
        H.fd[F_STDIN] = -1;
        release(&H.input);
    }
}

static void flush_input(void) {
    if (H.fd[F_STDIN] < 0)
        return;
    size_t at = 0;
    while (at < H.input.len) {
        ssize_t n = write(H.fd[F_STDIN], H.input.p + at, H.input.len - at);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            close_input();
            return;
        }
        at += (size_t)n;
    }
    memmove(H.input.p, H.input.p + at, H.input.len - at);
    H.input.len -= at;
    if (!H.input.len)
        release(&H.input);
}

void write_input(const char *data, size_t n) {
    if (H.fd[F_STDIN] < 0)
        return;
    add(&H.input, data, n);
    if (H.input.len > MAX_PENDING_INPUT) {
        release(&H.input);
        job_stop("stopped", 0);  /* a sandbox that does not read its input */
        return;
    }
    flush_input();
}


/* ---- the job's output and status ----------------------------------------------------------- */

static unsigned char *read_buffer;

/* the one buffer every read of the job's output goes through */
void prepare_reads(void) {
    read_buffer = malloc(READ_SIZE);
    if (!read_buffer)
        out_of_memory();
}

static void close_stream(int role) {
    close(H.fd[role]);
    H.fd[role] = -1;
    H.open_streams--;
}

static void read_output(int kind) {
    int role = kind ? F_ERR : F_OUT;
    ssize_t n = read(H.fd[role], read_buffer, READ_SIZE);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0)
        n = 0;  /* a pipe that broke: its end */
    text_output(kind, read_buffer, (size_t)n);
    if (n == 0) {
        close_stream(role);
        return;
    }
    double now = monotonic();
    H.streak[kind] = now - H.last_read[kind] < BUSY_PAUSE_S * 2 ? H.streak[kind] + 1 : 0;
    H.last_read[kind] = now;
    if (H.streak[kind] >= BUSY_STREAK && n < SMALL_READ)
        H.resume_at[kind] = now + BUSY_PAUSE_S;  /* left alone until then */
}

static void on_status(const char *line, size_t n) {
    enum { EVENT, PID, MESSAGE, EXIT_CODE, SIGNAL, FILES, SIZE, NF };
    struct jfield f[NF] = {{"event", {0}}, {"pid", {0}}, {"message", {0}}, {"exit_code", {0}},
                           {"signal", {0}}, {"files", {0}}, {"size", {0}}};
    if (jparse_object(line, n, f, NF) < 0)
        return;  /* garbage */
    int ok = f[EVENT].v.type == J_STR;
    for (int k = PID; k < NF && ok; k++)
        if (k != MESSAGE && f[k].v.type != J_NONE && f[k].v.type != J_NULL && f[k].v.type != J_NUM)
            ok = 0;
    const char *kind = ok ? f[EVENT].v.s : "";
    if (strcmp(kind, "running") == 0) {
        H.state = "running";
        H.started_at = clock_s(CLOCK_REALTIME);
        mark("running");
        begin_event();
        adds(&H.pending, "\"type\":\"status\",\"status\":\"RUNNING\"");
        end_event();
        flush_events();
        struct buf b = {0};
        adds(&b, "{\"ev\":\"running\",\"at\":");
        add_float(&b, H.started_at);
        adds(&b, "}\n");
        tell(&b);
        release(&b);
        if (H.timeout_s > 0)
            H.timeout_at = monotonic() + H.timeout_s;
    } else if (strcmp(kind, "setup_error") == 0 || strcmp(kind, "exec_error") == 0) {
        set_text(&H.end, kind);
        struct jval *m = &f[MESSAGE].v;
        char number[64];
        const char *text = NULL;
        if (m->type == J_STR)
            text = m->s;
        else if (m->type == J_NUM) {
            snprintf(number, sizeof number, "%lld", m->ival);
            text = number;
        } else if (m->type == J_BOOL)
            text = m->truth ? "True" : "False";
        set_text(&H.message, text);
    } else if (strcmp(kind, "exit") == 0 && (!H.end || strcmp(H.end, "exit") == 0)) {
        set_text(&H.end, "exit");
        H.has_exit_code = f[EXIT_CODE].v.type == J_NUM;
        H.exit_code = f[EXIT_CODE].v.is_int ? f[EXIT_CODE].v.ival : (long long)f[EXIT_CODE].v.num;
        H.has_signal = f[SIGNAL].v.type == J_NUM;
        H.signal = f[SIGNAL].v.is_int ? f[SIGNAL].v.ival : (long long)f[SIGNAL].v.num;
    }
    jfree(f, NF);
}

static void read_status(void) {
    char data[4096];
    ssize_t n = read(H.fd[F_STATUS], data, sizeof data);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        add(&H.status_in, data, (size_t)n);
        size_t start = 0;
        char *nl;
        while ((nl = memchr(H.status_in.p + start, '\n', H.status_in.len - start))) {
            size_t end = (size_t)(nl - H.status_in.p);
            on_status(H.status_in.p + start, end - start);
            start = end + 1;
        }
        memmove(H.status_in.p, H.status_in.p + start, H.status_in.len - start);
        H.status_in.len -= start;
        return;
    }
    close_stream(F_STATUS);
}

static void init_ended(void) {
    waitpid(H.init_pid, NULL, 0);
    mark("init_ended");
    close(H.fd[F_INIT]);
    H.fd[F_INIT] = -1;
    H.init_pid = 0;
    H.state = "ending";
    close_input();
    close_go();
}

/* ---- the loop ------------------------------------------------------------------------------ */

enum { W_OUT, W_ERR, W_STATUS, W_INIT, W_STDIN, W_LISTEN, W_CHANNEL };

void run_once(void) {
    struct pollfd pfd[8 + MAX_CONNECTIONS];
    int what[8 + MAX_CONNECTIONS], n = 0;
    double now = monotonic(), wake = INFINITY;
#define WATCH(fd_, events_, what_) do { pfd[n].fd = (fd_); pfd[n].events = (events_); pfd[n].revents = 0; what[n++] = (what_); } while (0)
    for (int k = 0; k < 2; k++) {
        int fd = H.fd[k ? F_ERR : F_OUT];
        if (fd < 0)
            continue;
        if (H.resume_at[k] > now) {
            wake = min_d(wake, H.resume_at[k]);
            continue;
        }
        H.resume_at[k] = 0;
        WATCH(fd, POLLIN, k ? W_ERR : W_OUT);
    }
    if (H.fd[F_STATUS] >= 0)
        WATCH(H.fd[F_STATUS], POLLIN, W_STATUS);
    if (H.fd[F_INIT] >= 0)
        WATCH(H.fd[F_INIT], POLLIN, W_INIT);
    if (H.fd[F_STDIN] >= 0 && H.input.len)
        WATCH(H.fd[F_STDIN], POLLOUT, W_STDIN);
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (H.channels[i])
            WATCH(H.channels[i]->fd, POLLIN | (H.channels[i]->out.len ? POLLOUT : 0), W_CHANNEL + i);
    if (H.fd[F_LISTEN] >= 0)
        WATCH(H.fd[F_LISTEN], POLLIN, W_LISTEN);
#undef WATCH
    if (H.go_deadline > 0)
        wake = min_d(wake, H.go_deadline);
    if (H.timeout_at > 0)
        wake = min_d(wake, H.timeout_at);
    if (H.kill_at > 0)
        wake = min_d(wake, H.kill_at);
    struct timespec ts, *tsp = NULL;
    if (wake < INFINITY) {
        double left = max_d(0.0, wake - now);
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
        tsp = &ts;
    }
    if (ppoll(pfd, (nfds_t)n, tsp, NULL) < 0 && errno != EINTR)
        crashed("waiting for the job", errno);
    for (int k = 0; k < n; k++) {
        short ev = pfd[k].revents;
        if (!ev)
            continue;
        switch (what[k]) {
        case W_OUT: case W_ERR: read_output(what[k] == W_ERR); break;
        case W_STATUS: read_status(); break;
        case W_INIT: init_ended(); break;
        case W_STDIN: flush_input(); break;
        case W_LISTEN: accept_channel(); break;
        default: {
            int i = what[k] - W_CHANNEL;
            if (!H.channels[i])
                break;
            if (ev & (POLLIN | POLLHUP | POLLERR))
                channel_readable(i);
            if (H.channels[i] && !H.channels[i]->closed && (ev & POLLOUT))
                flush_channel(i);
        }
        }
    }
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (H.channels[i] && H.channels[i]->closed)
            close_channel(i);
    now = monotonic();
    if (H.go_deadline > 0 && now >= H.go_deadline) {
        H.go_deadline = 0;
        job_abort("no agent finished the job's network set-up");
    }
    if (H.timeout_at > 0 && now >= H.timeout_at) {
        H.timeout_at = 0;
        job_stop("timeout", H.grace_s);
    }
    if (H.kill_at > 0 && now >= H.kill_at) {
        H.kill_at = -1;  /* fired: stop never sets it again */
        send_signal(SIGKILL);
    }
}
