/* jnb-init's plan: the tagged records initplan.py writes into a sealed memfd, read into P. */
#include "init.h"

static const char *text(const char *value, uint32_t len) {
    if (len == 0 || value[len - 1] != '\0') {
        errno = EINVAL;
        setup_failed("read plan", "a string without its end");
    }
    return value;
}

static uint64_t u64_at(const char *value, size_t offset) {
    uint64_t out;
    memcpy(&out, value + offset, sizeof out);
    return out;
}

static void add(const char **list, int *count, int max, const char *value) {
    if (*count >= max) {
        errno = E2BIG;
        setup_failed("read plan", "too many entries");
    }
    list[(*count)++] = value;
}

static void need(uint32_t len, uint32_t want) {
    if (len != want) {
        errno = EINVAL;
        setup_failed("read plan", "a record of %u bytes where %u belong", len, want);
    }
}

static void take_record(uint32_t tag, char *value, uint32_t len) {
    switch (tag) {
    case T_ROOT: P.root = text(value, len); break;
    case T_HOSTNAME: P.hostname = text(value, len); break;
    case T_MASK_FILE: add(P.mask_files, &P.n_mask_files, 64, text(value, len)); break;
    case T_MASK_DIR: add(P.mask_dirs, &P.n_mask_dirs, 64, text(value, len)); break;
    case T_READONLY_DIR: add(P.readonly_dirs, &P.n_readonly_dirs, 64, text(value, len)); break;
    case T_WAIT_GO: P.wait_go = 1; break;
    case T_IDS: need(len, 8); memcpy(&P.uid, value, 4); memcpy(&P.gid, value + 4, 4); break;
    case T_CAPS: need(len, 16); P.fork_caps = u64_at(value, 0); P.reaper_caps = u64_at(value, 8); break;
    case T_ARG: add((const char **)P.argv, &P.argc, MAX_ITEMS, text(value, len)); break;
    case T_ENV: add((const char **)P.envp, &P.envc, MAX_ITEMS, text(value, len)); break;
    case T_LANDLOCK:
        need(len, 36);
        P.landlock = 1;
        P.handled_fs = u64_at(value, 0);
        P.handled_net = u64_at(value, 8);
        P.scoped = u64_at(value, 16);
        P.file_rights = u64_at(value, 24);
        memcpy(&P.attr_size, value + 32, 4);
        break;
    case T_LANDLOCK_RULE:
        if (len < 9)
            need(len, 9);
        P.rule_access[P.n_rules < 64 ? P.n_rules : 0] = u64_at(value, 0);
        add(P.rule_paths, &P.n_rules, 64, text(value + 8, len - 8));
        break;
    case T_SECCOMP:
        if (len == 0 || len % sizeof(struct sock_filter) || len / sizeof(struct sock_filter) > 4096) {
            errno = EINVAL;
            setup_failed("read plan", "a seccomp program of %u bytes", len);
        }
        P.seccomp.len = (unsigned short)(len / sizeof(struct sock_filter));
        P.seccomp.filter = (struct sock_filter *)value; /* malloc'd: aligned for any type */
        break;
    default:
        errno = EINVAL;
        setup_failed("read plan", "unknown record %u", tag);
    }
}

/* a root record: kept where it lies in the plan's mapping, in its order (init_root.c applies it) */
static void add_root_op(uint32_t tag, const char *value, uint32_t len) {
    static int room;
    if (P.n_root_ops == room) {
        room = room ? room * 2 : 64;
        P.root_ops = realloc(P.root_ops, (size_t)room * sizeof *P.root_ops);
        if (!P.root_ops)
            setup_failed("read plan", "malloc");
    }
    P.root_ops[P.n_root_ops++] = (struct root_op){tag, len, value};
}

void read_plan(void) {
    struct stat st;
    if (fstat(PLAN_FD, &st) < 0)
        setup_failed("read plan", "fstat");
    if (st.st_size <= 0 || st.st_size > MAX_PLAN) {
        errno = EINVAL;
        setup_failed("read plan", "a plan of %lld bytes", (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size, at;
    /* sealed against writes: the mapping is what initplan.py wrote, whoever else holds the memfd */
    const char *data = mmap(NULL, size, PROT_READ, MAP_PRIVATE, PLAN_FD, 0);
    if (data == MAP_FAILED)
        setup_failed("read plan", "mmap");
    close(PLAN_FD);
    for (at = 0; at + 8 <= size;) {
        uint32_t tag, len;
        memcpy(&tag, data + at, 4);
        memcpy(&len, data + at + 4, 4);
        at += 8;
        if (len > size - at) {
            errno = EINVAL;
            setup_failed("read plan", "a record past the end");
        }
        if (tag >= R_MKDIR && tag <= R_BIND_SELF) {
            add_root_op(tag, data + at, len);
            at += len;
            continue;
        }
        /* each other value gets its own aligned copy (the seccomp program is read as an array) */
        char *value = malloc(len ? len : 1);
        if (!value)
            setup_failed("read plan", "malloc");
        memcpy(value, data + at, len);
        take_record(tag, value, len);
        at += len;
    }
    if (at != size) {
        errno = EINVAL;
        setup_failed("read plan", "a record header cut short");
    }
    if (!P.root || !P.hostname || P.argc == 0 || !P.seccomp.len || !P.uid || !P.gid) {
        errno = EINVAL;
        setup_failed("read plan", "incomplete (root, hostname, argv, seccomp, ids)");
    }
}
