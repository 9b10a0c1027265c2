/* The control channels (control.py's protocol): root peers accepted on the listening socket,
 * JSON lines in and out, the holder's pidfd passed with hello by SCM_RIGHTS, none taken in. */
#include "holder.h"

/* ---- the control channels (control.py) ---------------------------------------------------- */

void close_channel(int i) {
    struct channel *ch = H.channels[i];
    close(ch->fd);
    release(&ch->in);
    release(&ch->out);
    free(ch);
    H.channels[i] = NULL;
}

void flush_channel(int i) {
    struct channel *ch = H.channels[i];
    while (ch->out.len) {
        ssize_t n = send(ch->fd, ch->out.p, ch->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            ch->closed = 1;
            return;
        }
        memmove(ch->out.p, ch->out.p + n, ch->out.len - (size_t)n);
        ch->out.len -= (size_t)n;
    }
}

/* a message line to one channel; with `pass_pidfd`, the holder's pidfd rides on its first byte
 * (nothing may be queued before it: otherwise the channel is closed, as control.py does) */
static void send_line(int i, struct buf *line, int pass_pidfd) {
    struct channel *ch = H.channels[i];
    if (!ch || ch->closed)
        return;
    size_t sent = 0;
    if (pass_pidfd) {
        if (ch->out.len) {
            ch->closed = 1;
            return;
        }
        char control[CMSG_SPACE(sizeof(int))];
        memset(control, 0, sizeof control);
        struct iovec iov = {line->p, line->len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &H.own_pidfd, sizeof(int));
        ssize_t n = sendmsg(ch->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            ch->closed = 1;
            return;
        }
        sent = (size_t)n;
    }
    add(&ch->out, line->p + sent, line->len - sent);
    flush_channel(i);
    if (ch->out.len > MAX_UNSENT)
        ch->closed = 1;  /* a peer that does not read: cut off, as one whose line in has no end */
}

/* a message to every channel that said hello */
void tell(struct buf *line) {
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (H.channels[i] && H.channels[i]->greeted)
            send_line(i, line, 0);
    line->len = 0;
}

static void tell_seq(void) {
    if (H.seq == H.told_seq)
        return;
    H.told_seq = H.seq;
    struct buf line = {0};
    addf(&line, "{\"ev\":\"seq\",\"seq\":%llu}\n", (unsigned long long)H.seq);
    tell(&line);
    release(&line);
}

void flush_events(void) {
    write_pending();
    tell_seq();
}

static void hello_line(struct buf *b) {
    addf(b, "{\"ev\":\"hello\",\"protocol\":%d,\"job_id\":", PROTOCOL);
    add_pystr_or_null(b, H.job_id);
    adds(b, ",\"token\":");
    add_pystr_or_null(b, H.token);
    addf(b, ",\"pid\":%d,\"uid\":%u,\"state\":", (int)getpid(), H.uid);
    add_pystr_or_null(b, H.state);
    addf(b, ",\"seq\":%llu,\"started_at\":", (unsigned long long)H.seq);
    if (H.started_at > 0)
        add_float(b, H.started_at);
    else
        adds(b, "null");
    adds(b, ",\"stop_reason\":");
    add_pystr_or_null(b, H.stop_reason);
    adds(b, ",\"boot_id\":");
    add_pystr_or_null(b, H.boot_id);
    adds(b, ",\"translator\":{}}\n");
}

/* a number as Python's float()/int() takes it from a JSON value (-1: not one) */
static int as_number(const struct jval *v, double *out) {
    if (v->type == J_NUM) {
        *out = v->num;
        return 0;
    }
    if (v->type == J_BOOL) {
        *out = v->truth;
        return 0;
    }
    return -1;
}

static void on_message(int i, const char *line, size_t n) {
    enum { OP, REASON, GRACE, MESSAGE, SIGNAL, DATA, NF };
    struct jfield f[NF] = {{"op", {0}}, {"reason", {0}}, {"grace", {0}}, {"message", {0}}, {"signal", {0}}, {"data", {0}}};
    if (jparse_object(line, n, f, NF) < 0)
        return;  /* not an object: ignored */
    const char *op = f[OP].v.type == J_STR ? f[OP].v.s : "";
    if (strcmp(op, "hello") == 0) {
        struct buf b = {0};
        hello_line(&b);
        send_line(i, &b, 1);
        release(&b);
        if (H.channels[i] && !H.channels[i]->closed)
            H.channels[i]->greeted = 1;
    } else if (strcmp(op, "stop") == 0) {
        double grace = H.grace_s;
        if (f[GRACE].v.type == J_NONE || as_number(&f[GRACE].v, &grace) == 0) {
            const char *reason = truthy(&f[REASON].v) && f[REASON].v.type == J_STR ? f[REASON].v.s : "stopped";
            job_stop(reason, grace);
        }
    } else if (strcmp(op, "go") == 0) {
        job_go();
    } else if (strcmp(op, "abort") == 0) {
        const char *message = truthy(&f[MESSAGE].v) && f[MESSAGE].v.type == J_STR ? f[MESSAGE].v.s
                                                                                   : "the agent aborted the job";
        job_abort(message);
    } else if (strcmp(op, "signal") == 0) {
        double sig;
        if (as_number(&f[SIGNAL].v, &sig) == 0 && sig >= 1 && sig < 65)
            send_signal((int)sig);
    } else if (strcmp(op, "input") == 0 && H.fd[F_STDIN] >= 0) {
        if (f[DATA].v.type == J_STR && !f[DATA].v.surrogate)
            write_input(f[DATA].v.s, f[DATA].v.slen);
        else if (f[DATA].v.type == J_NONE)
            write_input("", 0);
    }
    jfree(f, NF);
}

void channel_readable(int i) {
    struct channel *ch = H.channels[i];
    reserve(&ch->in, CHANNEL_READ);
    char control[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct iovec iov = {ch->in.p + ch->in.len, CHANNEL_READ};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(ch->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            ch->closed = 1;
        return;
    }
    /* the holder takes no descriptors from anyone */
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t k = 0; k < count; k++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof fd);
                close(fd);
            }
        }
    }
    if (n == 0) {
        ch->closed = 1;
        return;
    }
    ch->in.len += (size_t)n;
    size_t start = 0;
    while (!ch->closed) {
        char *nl = memchr(ch->in.p + ch->scanned, '\n', ch->in.len - ch->scanned);
        if (!nl) {
            ch->scanned = ch->in.len;
            break;
        }
        size_t end = (size_t)(nl - ch->in.p);
        on_message(i, ch->in.p + start, end - start);
        ch = H.channels[i];
        start = ch->scanned = end + 1;
    }
    if (ch->closed)
        return;
    memmove(ch->in.p, ch->in.p + start, ch->in.len - start);
    ch->in.len -= start;
    ch->scanned -= start;
    if (ch->in.len > MAX_LINE)
        ch->closed = 1;
    else if (!ch->in.len && ch->in.cap > (64u << 10))
        release(&ch->in);
}

void add_channel(int fd) {
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (!H.channels[i]) {
            struct channel *ch = calloc(1, sizeof *ch);
            if (!ch)
                out_of_memory();
            ch->fd = fd;
            H.channels[i] = ch;
            return;
        }
    close(fd);
}

void accept_channel(void) {
    int fd = accept4(H.fd[F_LISTEN], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    int count = 0;
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        count += H.channels[i] != NULL;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (count >= MAX_CONNECTIONS || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
        close(fd);
        return;
    }
    add_channel(fd);
}
