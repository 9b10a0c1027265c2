/* The job's root, built by PID 1 before its nested mount namespace (so the holder, whose mount
 * namespace this still is, sees /work after the job to copy it out): the plan's root records
 * (rootfs.py decides them; this file applies them in their order).
 *
 * Every path below the root is walked one component at a time from the root's descriptor with
 * O_NOFOLLOW, '.', '..' and empty names refused; a source `beneath` a folder is opened with openat2
 * beneath it through no symlink, and bound from that descriptor. Binds use the new mount API:
 * open_tree clones a source with its submounts, mount_setattr makes every one of them nosuid,nodev
 * (+ro) in one call while keeping what the source had (noexec stays), move_mount puts the tree on a
 * descriptor of its target. A kernel without that API is a setup error, never a weaker root. */
#include "init.h"
#include <linux/openat2.h>

#define STEP "build root"
#define ANY_OWNER 0xFFFFFFFFU
enum { BIND_READONLY = 1, BIND_BENEATH = 2, MAX_PARTS = 256 };

static int root_fd = -1;

/* a mount-API call failed: ENOSYS says the kernel is too old, not that the path was wrong */
static void api_failed(const char *what, const char *path) {
    if (errno == ENOSYS)
        setup_failed(STEP, "%s %s: the kernel lacks the new mount API (open_tree, move_mount, mount_setattr, "
                     "fsopen, openat2: Linux 5.12 or later)", what, path);
    setup_failed(STEP, "%s %s", what, path);
}

/* ---- the records' fields ------------------------------------------------------------------- */

struct fields { const char *at; uint32_t left; };

static uint32_t u32_field(struct fields *f) {
    uint32_t v;
    if (f->left < 4) {
        errno = EINVAL;
        setup_failed(STEP, "a root record cut short");
    }
    memcpy(&v, f->at, 4);
    f->at += 4;
    f->left -= 4;
    return v;
}

static const char *text_field(struct fields *f) {
    const char *end = memchr(f->at, '\0', f->left);
    if (!end) {
        errno = EINVAL;
        setup_failed(STEP, "a root record's string without its end");
    }
    const char *v = f->at;
    f->left -= (uint32_t)(end + 1 - f->at);
    f->at = end + 1;
    return v;
}

/* ---- paths beneath the root ------------------------------------------------------------------ */

/* `rel`'s components into `buf`/`parts`; refuses '.', '..', an empty path and one too long */
static int split(const char *rel, char *buf, char **parts) {
    int n = 0;
    if (strlen(rel) >= PATH_MAX) {
        errno = ENAMETOOLONG;
        setup_failed(STEP, "path %.64s...", rel);
    }
    strcpy(buf, rel);
    for (char *save = NULL, *part = strtok_r(buf, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (!strcmp(part, ".") || !strcmp(part, "..") || n == MAX_PARTS) {
            errno = EINVAL;
            setup_failed(STEP, "path %s: '.', '..' or too deep", rel);
        }
        parts[n++] = part;
    }
    if (n == 0) {
        errno = EINVAL;
        setup_failed(STEP, "an empty path below the root");
    }
    return n;
}

/* an O_PATH descriptor of the folder after the first `count` parts, each walked through no
 * symlink; with `create`, missing folders are made (0755, chowned to uid:gid unless ANY_OWNER) */
static int walk(const char *rel, char **parts, int count, int create, uint32_t uid, uint32_t gid) {
    int fd = dup(root_fd);
    if (fd < 0)
        setup_failed(STEP, "dup");
    for (int i = 0; i < count; i++) {
        if (create && mkdirat(fd, parts[i], 0755) == 0) {
            if (uid != ANY_OWNER && fchownat(fd, parts[i], uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                setup_failed(STEP, "chown %s in %s", parts[i], rel);
        } else if (create && errno != EEXIST) {
            setup_failed(STEP, "mkdir %s in %s", parts[i], rel);
        }
        int next = openat(fd, parts[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0)
            setup_failed(STEP, "%s in %s", parts[i], rel);
        close(fd);
        fd = next;
    }
    return fd;
}

/* the folder `rel` beneath the root, made if missing: an O_PATH descriptor of it */
static int folder(const char *rel) {
    char buf[PATH_MAX], *parts[MAX_PARTS];
    return walk(rel, parts, split(rel, buf, parts), 1, ANY_OWNER, ANY_OWNER);
}

/* the file `rel` beneath the root (created if missing; with `fresh`, it must not exist), its
 * folders made on the way: a descriptor of it, never through a symlink */
static int file_at(const char *rel, int fresh) {
    char buf[PATH_MAX], *parts[MAX_PARTS];
    int n = split(rel, buf, parts), dir = walk(rel, parts, n - 1, 1, ANY_OWNER, ANY_OWNER);
    int fd = openat(dir, parts[n - 1], O_RDONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | (fresh ? O_EXCL : 0), 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        setup_failed(STEP, "file %s", rel);
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        setup_failed(STEP, "file %s is not a regular file", rel);
    }
    close(dir);
    return fd;
}

/* ---- mounts ------------------------------------------------------------------------------- */

static void set_attrs(int tree, uint64_t set, uint64_t clear, unsigned int flags, const char *what) {
    struct mount_attr attr = {.attr_set = set, .attr_clr = clear, .propagation = MS_PRIVATE};
    if (mount_setattr(tree, "", AT_EMPTY_PATH | flags, &attr, sizeof attr) < 0)
        api_failed("mount_setattr", what);
}

/* the detached `tree` onto the target descriptor; both closed */
static void attach(int tree, int target, const char *what) {
    if (move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        api_failed("move_mount onto", what);
    close(tree);
    close(target);
}

/* a clone of `source` with all its submounts, each nosuid,nodev (+ro), onto `target` (a folder or
 * a file, as the source is) */
static void bind_tree(const char *source, const char *beneath, const char *target, uint32_t flags) {
    int tree;
    if (flags & BIND_BENEATH) {
        int base = open(beneath, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (base < 0)
            setup_failed(STEP, "runtime mount source '%s': its folder %s", source, beneath);
        struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
        int src = (int)syscall(SYS_openat2, base, source, &how, sizeof how);
        struct stat st;
        if (src < 0 || fstat(src, &st) < 0)
            setup_failed(STEP, "runtime mount source '%s' (resolved beneath its folder, no symlink followed)", source);
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
            errno = EINVAL;
            setup_failed(STEP, "runtime mount source '%s': neither a folder nor a regular file", source);
        }
        tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
        close(src);
        close(base);
    } else {
        tree = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    }
    struct stat st;
    if (tree < 0 || fstat(tree, &st) < 0)
        api_failed("open_tree", source);
    set_attrs(tree, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (flags & BIND_READONLY ? MOUNT_ATTR_RDONLY : 0), 0,
              AT_RECURSIVE, source);
    attach(tree, S_ISDIR(st.st_mode) ? folder(target) : file_at(target, 0), target);
}

/* a new filesystem (tmpfs, devpts) with `options` ("k=v" or a flag, comma-separated) on `target` */
static void new_fs(const char *type, const char *options, uint64_t attrs, const char *target) {
    char buf[512];
    int fs = fsopen(type, FSOPEN_CLOEXEC);
    if (fs < 0)
        api_failed("fsopen", type);
    if (strlen(options) >= sizeof buf) {
        errno = E2BIG;
        setup_failed(STEP, "options of %s", target);
    }
    strcpy(buf, options);
    for (char *save = NULL, *opt = strtok_r(buf, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
        char *value = strchr(opt, '=');
        if (value)
            *value++ = '\0';
        if (fsconfig(fs, value ? FSCONFIG_SET_STRING : FSCONFIG_SET_FLAG, opt, value, 0) < 0)
            setup_failed(STEP, "%s on %s: option %s", type, target, opt);
    }
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        setup_failed(STEP, "%s on %s", type, target);
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, (unsigned int)attrs);
    if (mnt < 0)
        api_failed("fsmount", target);
    close(fs);
    attach(mnt, folder(target), target);
}

/* ---- the records ----------------------------------------------------------------------------- */

static void make_folder(struct fields *f) {
    uint32_t mode = u32_field(f), uid = u32_field(f), gid = u32_field(f);
    const char *rel = text_field(f);
    char buf[PATH_MAX], *parts[MAX_PARTS];
    int n = split(rel, buf, parts), dir = walk(rel, parts, n - 1, 1, ANY_OWNER, ANY_OWNER);
    if (mkdirat(dir, parts[n - 1], 0700) < 0 && errno != EEXIST)
        setup_failed(STEP, "mkdir %s", rel);
    int fd = openat(dir, parts[n - 1], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fchmod(fd, mode) < 0 || (uid != ANY_OWNER && fchown(fd, uid, gid) < 0))
        setup_failed(STEP, "folder %s", rel);
    close(fd);
    close(dir);
}

static void make_link(const char *to, const char *rel) {
    char buf[PATH_MAX], *parts[MAX_PARTS];
    int n = split(rel, buf, parts), dir = walk(rel, parts, n - 1, 1, ANY_OWNER, ANY_OWNER);
    if (symlinkat(to, dir, parts[n - 1]) < 0)
        setup_failed(STEP, "symlink %s -> %s", rel, to);
    close(dir);
}

/* a new file (never an existing one, never through a link) with its mode, owner and content */
static void write_file(struct fields *f) {
    uint32_t mode = u32_field(f), uid = u32_field(f), gid = u32_field(f);
    const char *rel = text_field(f);
    char buf[PATH_MAX], *parts[MAX_PARTS];
    int n = split(rel, buf, parts), dir = walk(rel, parts, n - 1, 1, uid, gid);
    int fd = openat(dir, parts[n - 1], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
    if (fd < 0 || fchmod(fd, mode & 0777) < 0 || (uid != ANY_OWNER && fchown(fd, uid, gid) < 0))
        setup_failed(STEP, "write %s", rel);
    for (const char *at = f->at; at < f->at + f->left;) {
        ssize_t done = write(fd, at, (size_t)(f->at + f->left - at));
        if (done < 0 && errno == EINTR)
            continue;
        if (done <= 0)
            setup_failed(STEP, "write %s", rel);
        at += done;
    }
    close(fd);
    close(dir);
}

/* the host's /NAME as the host has it: a link copied, a folder bound read-only, nothing else */
static void host_entry(const char *name) {
    char host[PATH_MAX], to[PATH_MAX];
    struct stat st;
    snprintf(host, sizeof host, "/%s", name);
    ssize_t n = readlink(host, to, sizeof to - 1);
    if (n > 0) {
        to[n] = '\0';
        make_link(to, name);
    } else if (lstat(host, &st) == 0 && S_ISDIR(st.st_mode)) {
        bind_tree(host, "", name, BIND_READONLY);
    }
}

/* `rel` as the job will see it (links resolved inside the root): a folder gets an empty read-only
 * tmpfs, anything else /dev/null bound read-only; nothing there, nothing to hide */
static void mask(const char *rel) {
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    int target = (int)syscall(SYS_openat2, root_fd, rel, &how, sizeof how);
    struct stat st;
    if (target < 0 && (errno == ENOENT || errno == ENOTDIR))
        return;
    if (target < 0 || fstat(target, &st) < 0)
        api_failed("mask", rel);
    const uint64_t hard = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (S_ISDIR(st.st_mode)) {
        int fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
        if (fs < 0 || fsconfig(fs, FSCONFIG_SET_STRING, "size", "1m", 0) < 0 ||
            fsconfig(fs, FSCONFIG_SET_STRING, "nr_inodes", "1024", 0) < 0 ||
            fsconfig(fs, FSCONFIG_SET_STRING, "mode", "755", 0) < 0 || fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
            api_failed("mask (tmpfs)", rel);
        int mnt = fsmount(fs, FSMOUNT_CLOEXEC, (unsigned int)hard);
        if (mnt < 0)
            api_failed("mask (fsmount)", rel);
        close(fs);
        attach(mnt, target, rel);
        return;
    }
    int tree = open_tree(AT_FDCWD, "/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0)
        api_failed("mask (open_tree /dev/null)", rel);
    set_attrs(tree, hard, 0, 0, rel);
    attach(tree, target, rel);
}

/* a host character device bound in under its own name: usable (no nodev), never exec or setuid */
static void device(const char *source, const char *target) {
    int src = open(source, O_PATH | O_CLOEXEC);
    struct stat st;
    if (src < 0 || fstat(src, &st) < 0)
        setup_failed(STEP, "device %s", source);
    if (!S_ISCHR(st.st_mode)) {
        errno = 0;
        setup_failed(STEP, "device %s is not a character device", source);
    }
    int tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (tree < 0)
        api_failed("open_tree", source);
    close(src);
    set_attrs(tree, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_RDONLY, 0, source);
    attach(tree, file_at(target, 1), target);
}

/* a folder of the root tmpfs made its own writable mount: it stays writable under the read-only root */
static void bind_self(const char *rel) {
    int at = folder(rel);
    int tree = open_tree(at, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (tree < 0)
        api_failed("open_tree", rel);
    set_attrs(tree, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, rel);
    attach(tree, at, rel);
}

static void apply(uint32_t tag, struct fields *f) {
    uint32_t flags;
    const char *a, *b;
    switch (tag) {
    case R_MKDIR: make_folder(f); break;
    case R_SYMLINK: a = text_field(f); make_link(a, text_field(f)); break;
    case R_BIND:
        flags = u32_field(f);
        a = text_field(f);
        b = text_field(f);
        bind_tree(a, b, text_field(f), flags);
        break;
    case R_HOST: host_entry(text_field(f)); break;
    case R_WRITE: write_file(f); break;
    case R_MASK: mask(text_field(f)); break;
    case R_FS:
        flags = u32_field(f);
        a = text_field(f);
        b = text_field(f);
        new_fs(a, b, flags, text_field(f));
        break;
    case R_NODE: a = text_field(f); device(a, text_field(f)); break;
    case R_REMOUNT: {
        flags = u32_field(f);
        a = text_field(f);
        int fd = folder(a);
        set_attrs(fd, flags, 0, 0, a);
        close(fd);
        break;
    }
    case R_BIND_SELF: bind_self(text_field(f)); break;
    default: errno = EINVAL; setup_failed(STEP, "unknown root record %u", tag);
    }
}

void build_root(void) {
    root_fd = open(P.root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root_fd < 0)
        setup_failed(STEP, "open the root %s", P.root);
    for (int i = 0; i < P.n_root_ops; i++) {
        struct fields f = {P.root_ops[i].value, P.root_ops[i].len};
        apply(P.root_ops[i].tag, &f);
    }
    close(root_fd);
}
