"""A job that prints its Landlock status as one line, `LANDLOCK {json}`. /proc has no field for it,
so each part is found by an action only Landlock refuses here (harmless if it is allowed):

- abi: landlock_create_ruleset's version query (the kernel's, not yet the job's);
- filesystem: open /proc/self/comm for writing, writing nothing. The job owns that file and /proc
  is mounted read-write, so only Landlock says EACCES; /work, /tmp, /dev/shm, /dev/null and
  PROBE_WRITABLE (a build's install prefix) must stay writable: a file is created and removed;
- tcp: connect to 127.0.0.1:1 in the job's own namespace: ECONNREFUSED without Landlock's TCP
  rules, EACCES with them;
- nested: a child adds a domain of its own under seccomp (landlock_restrict_self is allowed) that
  scopes signals, and is then refused signal 0 to its parent (EPERM), which it may signal before.

Stdlib only: the builder runs it with the host's python3."""
import ctypes
import errno
import json
import os
import socket

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CREATE_RULESET, RESTRICT_SELF = 444, 446


def ename(code):
    return "success" if not code else errno.errorcode.get(code, str(code))


def attempt(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return ename(exc.errno)
    return "success"


def open_for_write(path):
    os.close(os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK))


def create_and_remove(folder):
    path = os.path.join(folder, f".jnb-landlock-{os.getpid()}")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    os.unlink(path)


def tcp_connect():
    with socket.socket() as s:
        s.settimeout(3)
        s.connect(("127.0.0.1", 1))


def nested_scope():
    """errno names: signal 0 to the parent before and after a signal-scoped domain of its own."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = attempt(os.kill, os.getppid(), 0)
        attr = (ctypes.c_uint64 * 3)(1 << 2, 0, 1 << 1)  # handles READ_FILE only; scopes signals
        ruleset = libc.syscall(ctypes.c_long(CREATE_RULESET), attr, ctypes.c_size_t(24), ctypes.c_uint32(0))
        made = libc.syscall(ctypes.c_long(RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) if ruleset >= 0 else -1
        restrict = "success" if made == 0 else ename(ctypes.get_errno())
        after = attempt(os.kill, os.getppid(), 0)
        os.write(w, json.dumps({"before": before, "restrict_self": restrict, "after": after}).encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 4096)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(out)


version = max(int(libc.syscall(ctypes.c_long(CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))), 0)
writable = ["/work", "/tmp", "/dev/shm"] + [p for p in os.environ.get("PROBE_WRITABLE", "").split(":") if p]
status = {
    "abi": version,
    "write_proc_self_comm": attempt(open_for_write, "/proc/self/comm"),
    "write_dev_null": attempt(open_for_write, "/dev/null"),
    "create": {folder: attempt(create_and_remove, folder) for folder in writable},
    "tcp_connect_loopback": attempt(tcp_connect),
    "nested": nested_scope() if version >= 6 else None,
}
print("LANDLOCK " + json.dumps(status, sort_keys=True), flush=True)
