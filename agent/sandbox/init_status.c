/* jnb-init's status channel: status.py's lines, one write each, and the failures reported on it. */
#include "init.h"

void send_line(const char *line, size_t n) {
    if (write(STATUS_FD, line, n) < 0)
        return; /* the holder went away; the job ends all the same */
}

/* {"event": EVENT, "message": MESSAGE} with MESSAGE escaped as JSON (bytes above 0x7f as \u00XX:
 * always valid, whatever the path's bytes) and cut as status.py cuts it */
void send_message(const char *event, const char *message) {
    char line[4096];
    size_t n = (size_t)snprintf(line, sizeof line, "{\"event\": \"%s\", \"message\": \"", event);
    size_t limit = sizeof line - 32, taken = 0;
    for (const unsigned char *c = (const unsigned char *)message; *c && n < limit; c++, taken++) {
        if (taken == 1750) {
            n += (size_t)snprintf(line + n, sizeof line - n, " [cut]");
            break;
        }
        if (*c == '"' || *c == '\\')
            n += (size_t)snprintf(line + n, sizeof line - n, "\\%c", *c);
        else if (*c < 0x20 || *c > 0x7e)
            n += (size_t)snprintf(line + n, sizeof line - n, "\\u%04x", *c);
        else
            line[n++] = (char)*c;
    }
    n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
    send_line(line, n);
}

/* "PREFIX: WHAT: strerror(err)" as EVENT on the status channel, then exit with CODE */
__attribute__((noreturn)) void report_and_exit(const char *event, int code, int err, const char *prefix,
                                                      const char *what, va_list ap) {
    char detail[768], message[1024];
    vsnprintf(detail, sizeof detail, what, ap);
    snprintf(message, sizeof message, "%s: %s%s%s", prefix, detail, err ? ": " : "", err ? strerror(err) : "");
    send_message(event, message);
    _exit(code);
}

/* the step's failure: "STEP: WHAT: strerror", reported as setup_error; the init exits */
__attribute__((noreturn, format(printf, 2, 3))) void setup_failed(const char *step, const char *what, ...) {
    int err = errno;
    va_list ap;
    va_start(ap, what);
    report_and_exit("setup_error", SETUP_FAILED, err, step, what, ap);
}
