/* The event log (eventfile.py's lines): events are built in H.pending and written by
 * write_pending, each with its seq. */
#include "holder.h"

/* ---- the event log (eventfile.py) ---------------------------------------------------------- */

/* an event's line starts: {"seq":N, then its fields; ended by end_event */
void begin_event(void) { addf(&H.pending, "{\"seq\":%llu,", (unsigned long long)(H.seq + H.pending_events + 1)); }

void end_event(void) {
    adds(&H.pending, "}\n");
    H.pending_events++;
}

void text_event(const char *kind, const char *text) {
    begin_event();
    addf(&H.pending, "\"type\":\"%s\",\"data\":\"", kind);
    decode_into(&H.pending, &(struct decoder){{0}, 0}, (const unsigned char *)text, strlen(text), 1);
    adds(&H.pending, "\"");
    end_event();
}

/* output.py TextOutput.output: one event per read, the cap cut at its byte and noted once */
void text_output(int kind, const unsigned char *data, size_t n) {
    if (H.cut)
        return;
    int over = H.cap && H.out_bytes + n > H.cap;
    if (over)
        n = (size_t)(H.cap - H.out_bytes);
    H.out_bytes += n;
    size_t start = H.pending.len;
    begin_event();
    addf(&H.pending, "\"type\":\"%s\",\"data\":\"", kind ? "stderr" : "stdout");
    size_t text_at = H.pending.len;
    decode_into(&H.pending, &H.decoders[kind], data, n, over || n == 0);
    if (H.pending.len == text_at)
        H.pending.len = start;  /* no text: no event */
    else {
        adds(&H.pending, "\"");
        end_event();
    }
    if (over) {
        H.cut = 1;
        char note[96];
        snprintf(note, sizeof note, "[joblet] output beyond %llu MB is not kept\n", (unsigned long long)(H.cap >> 20));
        text_event("stderr", note);
    }
}

void write_pending(void) {
    if (!H.pending_events)
        return;
    size_t at = 0;
    while (at < H.pending.len) {
        ssize_t n = write(H.fd[F_LOG], H.pending.p + at, H.pending.len - at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            crashed("writing the event log", n < 0 ? errno : EIO);
        at += (size_t)n;
    }
    H.seq += H.pending_events;
    H.pending_events = 0;
    H.pending.len = 0;
    if (H.pending.cap > (4u << 20))
        release(&H.pending);  /* a burst's buffer goes back: the steady state stays small */
}
