"""seccomp profiles for the two job types, compiled once in the agent and loaded last before exec.

Why the shape:
- The production profile is an allowlist in the spirit of Docker's default profile: a syscall that is
  not listed returns EPERM, so a new kernel syscall is denied until someone reviews it.
- Only the native ABI is accepted. Any other audit arch (i386 through ``int 0x80``, arm32 on arm64)
  and x32 numbers (bit 0x40000000 on x86_64) kill the whole process: those entry points see other
  syscall numbers and other struct layouts, and they have a history of their own kernel bugs.
- The program is built here from the data below, in the agent's memory (libseccomp writes it to a
  memfd), never read from a file that a sandbox can write.
- ``load`` only hands the cached program to the kernel, because the init calls it for every job.

libseccomp refuses a rule whose action equals the default action (EACCES) and has no "masked not
equal" comparison. Neither ``ioctl(fd, TIOCSTI)`` nor ``socket(AF_VSOCK)`` can therefore be carved
out of an EPERM-by-default allowlist with one libseccomp filter, and the explicit deny list could
not be written down in BPF at all. The program is thus built from two libseccomp filters:

1. the *deny stage* (default allow): EPERM for DENIED, for TIOCSTI and for AF_VSOCK, compared on
   the low 32 bits only, as the kernel itself reads those arguments as ``int``/``unsigned int``;
2. the *allow stage* (default EPERM): the allowlist, clone without namespace flags, clone3 -> ENOSYS.

Every "allow" return of stage 1 is rewritten into a jump to the first instruction of stage 2, which
gives one classic BPF program with the verdict of the two filters stacked (a denial in stage 1 is
final). The kernel's per-syscall allow cache understands that jump, so unconditionally allowed
syscalls stay as cheap as with a single filter.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import termios
from dataclasses import dataclass

import pyseccomp

from ..contract import JobType

# --------------------------------------------------------------------------------------------------
# Data. Names that do not exist on the host's architecture (e.g. ``open`` or ``arch_prctl`` on
# aarch64) are skipped when the filter is built, so one list serves every 64-bit host.
# --------------------------------------------------------------------------------------------------

#: Allowed without argument checks, for both job types. Docker's default list, minus what the job
#: has no business with: the chown family (builder only), name_to_handle_at (denied, below),
#: modify_ldt (16-bit segments are for Wine/DOSEMU, and the LDT code has had its share of kernel
#: bugs), fanotify_mark (useless without fanotify_init, which is not allowed), epoll_*_old (never
#: implemented), and the 32-bit-only names.
ALLOWED: tuple[str, ...] = (
    # files and descriptors
    "access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd", "chmod", "fchmod", "fchmodat",
    "fchmodat2", "close", "close_range", "creat", "dup", "dup2", "dup3", "fcntl", "flock", "fstat",
    "fstatfs", "statfs", "stat", "lstat", "newfstatat", "statx", "getdents", "getdents64", "link",
    "linkat", "symlink", "symlinkat", "lseek", "mkdir", "mkdirat", "open", "openat", "openat2",
    "pipe", "pipe2", "read", "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64",
    "pwritev", "pwritev2", "readlink", "readlinkat", "rename", "renameat", "renameat2", "rmdir",
    "unlink", "unlinkat", "umask", "truncate", "ftruncate", "fallocate", "fadvise64", "readahead",
    "fsync", "fdatasync", "sync_file_range", "sendfile", "splice", "tee",
    "vmsplice", "copy_file_range", "utime", "utimes", "futimesat", "utimensat", "memfd_create",
    "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr",
    "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    # polling, events, timers
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_settime", "timerfd_gettime", "timer_create", "timer_settime",
    "timer_gettime", "timer_getoverrun", "timer_delete", "alarm", "getitimer", "setitimer", "pause",
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "clock_adjtime", "adjtimex",
    "gettimeofday", "time", "times",
    # asynchronous I/O (the old aio; io_uring is denied)
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    # sockets (``socket`` itself is allowed by both stages, less AF_VSOCK in stage 1)
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "sendto", "sendmsg", "sendmmsg", "recvfrom",
    "recvmsg", "recvmmsg", "shutdown",
    # ``ioctl`` itself is allowed, less TIOCSTI in stage 1
    "ioctl",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock", "mlock2",
    "mlockall", "munlock", "munlockall", "remap_file_pages", "membarrier",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack",
    # processes, threads, signals
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill", "tkill",
    "tgkill", "pidfd_open", "pidfd_send_signal", "process_mrelease", "rt_sigaction",
    "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "restart_syscall", "futex",
    "futex_waitv", "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "arch_prctl",
    "get_thread_area", "set_thread_area", "prctl", "seccomp", "capget", "capset",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr",
    "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
    "getpriority", "setpriority", "ioprio_get", "ioprio_set", "getrlimit", "setrlimit",
    "prlimit64", "getrusage", "getcpu", "getrandom", "uname", "sysinfo",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    # identity: the job has no capabilities, so these only move between its own ids (and refusing
    # them breaks programs that drop privileges defensively)
    "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "getuid",
    "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "setuid", "setgid",
    "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
    # System V and POSIX IPC (private to the job's IPC namespace)
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl", "shmget",
    "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
)

#: Added for ``runtime-build`` only. Package managers (dpkg, tar, pip, npm) set owners on what they
#: unpack; as an unprivileged user without CAP_CHOWN this only reaches the user's own groups. Not
#: added, on purpose: mount (the seed's builder example had it; a build needs no mount), mknod of
#: devices, setuid/capability tricks, or anything from DENIED.
BUILDER_EXTRA: tuple[str, ...] = ("chown", "fchown", "lchown", "fchownat")

#: Denied with EPERM in stage 1, for every job type, although none of them is on the allowlist
#: either: this keeps them out even if someone adds one to ALLOWED by mistake (compile_profile
#: refuses that outright, too).
DENIED: tuple[str, ...] = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",        # a large, young attack surface
    "userfaultfd",                                                    # stalls kernel copies: race aid
    "keyctl", "add_key", "request_key",                               # keyrings are not namespaced
    "bpf", "perf_event_open",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "pidfd_getfd", "kcmp", "process_madvise",                         # ptrace in other clothes
    "mount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "pivot_root", "chroot",
    "unshare", "setns",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at",                         # "shocker": walks past the root
    "memfd_secret",                  # memory even the kernel cannot read: no use to a job, new code
)

#: Answered with success without reaching the kernel: they flush every filesystem of the host (sync)
#: or the whole filesystem behind a descriptor (syncfs, e.g. the host's root under a read-only
#: bind). A job's own files live on its tmpfs, where there is nothing to flush; programs that call
#: them "to be safe" go on as if it was done. fsync and fdatasync stay: they flush one file.
NO_OP: tuple[str, ...] = ("sync", "syncfs")

#: personality(2) values that Docker allows: PER_LINUX, PER_LINUX32, UNAME26, both, and the query
#: 0xffffffff. Anything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) weakens the job's own
#: hardening and is refused.
PERSONALITY_ALLOWED: tuple[int, ...] = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

#: clone(2) flags that create namespaces; clone with any of them gets EPERM.
CLONE_NAMESPACE_FLAGS: int = (
    0x00020000    # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

#: socket(2) families that get EPERM. AF_VSOCK talks to the hypervisor, outside every network
#: namespace.
SOCKET_DENIED_FAMILIES: tuple[int, ...] = (socket.AF_VSOCK,)

#: AF_NETLINK sockets other than NETLINK_ROUTE get EPERM: glibc's getaddrinfo needs NETLINK_ROUTE
#: (AI_ADDRCONFIG), and in the job's own network namespace without capabilities it shows only the
#: job's links and changes nothing. The other families (audit, netfilter, xfrm, uevent, generic
#: netlink and its many families) are kernel interfaces a job has no use for, several of them not
#: namespaced at all (uevents, audit).
NETLINK_ALLOWED_PROTOCOL = 0  # NETLINK_ROUTE

#: ... and for a runtime build also AF_UNIX sockets. The builder sees the host's /var, /home and
#: /root read-only, and a read-only mount stops neither connect(2) nor sendto(2) to a unix socket
#: living there; a build needs pipes and socketpairs, not the host's daemons.
BUILDER_SOCKET_DENIED_FAMILIES: tuple[int, ...] = (socket.AF_UNIX,)

#: socketpair(AF_UNIX, ...) types a build may not make: a datagram socket (SOCK_RAW is one too for
#: AF_UNIX) can sendto(2) any socket path it can see, socketpair or not. Stream and seqpacket pairs
#: are connected for good: connect(2) and sendto(2) with an address give EISCONN on them.
BUILDER_SOCKETPAIR_DENIED_TYPES: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_RAW)
SOCK_TYPE_MASK = 0xF

#: ioctl(2) requests that get EPERM. TIOCSTI pushes bytes into a terminal's input queue: with a
#: shared tty, the job could type commands into the shell that started it.
IOCTL_DENIED_REQUESTS: tuple[int, ...] = (termios.TIOCSTI,)

#: mknod(2) file types allowed: regular files, FIFOs (mkfifo) and sockets. Device nodes need
#: CAP_MKNOD, which the job lacks, and every mount is nodev; this is the third lock on that door.
MKNOD_ALLOWED_TYPES: tuple[int, ...] = (0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK)

LOW32 = 0xFFFFFFFF  # the kernel reads int-typed arguments from the low 32 bits of the register
S_IFMT = 0o170000   # the file-type bits of a mode (``stat.S_IFMT`` is a function in Python)

# --------------------------------------------------------------------------------------------------
# Kernel interface constants.
# --------------------------------------------------------------------------------------------------
_PR_GET_NO_NEW_PRIVS = 39
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_BPF_MAXINSNS = 4096
_BPF_CLASS_MASK = 0x07
_BPF_CLASS_RET = 0x06
_BPF_RET_K = 0x06       # BPF_RET | BPF_K: return a constant
_BPF_JMP_JA = 0x05      # BPF_JMP | BPF_JA: jump forward by k
_SOCK_FILTER = struct.Struct("=HBBI")   # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}


class SeccompError(RuntimeError):
    """A profile could not be built or installed. The job must not run."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@dataclass(frozen=True)
class _Compiled:
    """A finished program plus the ctypes objects that load() hands to the kernel unchanged."""

    program: bytes
    buffer: ctypes.Array  # type: ignore[type-arg]  # keeps the memory behind fprog alive
    fprog: _SockFprog


_cache: dict[JobType, _Compiled] = {}
_libc = ctypes.CDLL(None, use_errno=True)


def _nr(name: str) -> int:
    """The native syscall number, or a negative number if the host's arch has no such syscall."""
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


def _new_filter(default_action: int) -> pyseccomp.SyscallFilter:
    flt = pyseccomp.SyscallFilter(default_action)
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)  # i386, x32, arm32: killed
    # A binary tree instead of a linear chain of syscall numbers: the kernel emulates the program
    # for every syscall number when it is loaded (to cache constant "allow" verdicts), so a tree
    # halves load(): ~0.26 ms instead of ~0.49 ms per job here, for 84 more instructions.
    flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    return flt


def _export(flt: pyseccomp.SyscallFilter) -> bytes:
    """The filter as raw BPF, through a memfd: nothing touches a filesystem."""
    fd = os.memfd_create("joblet-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            flt.export_bpf(f)
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _clone_flags_arg() -> int:
    """clone(2) takes its flags first everywhere but on s390, where the stack comes first."""
    return 1 if pyseccomp.system_arch() in (pyseccomp.Arch.S390, pyseccomp.Arch.S390X) else 0


def _deny_stage(job_type: JobType) -> bytes:
    eperm = pyseccomp.ERRNO(errno.EPERM)
    flt = _new_filter(pyseccomp.ALLOW)
    for name in DENIED:
        if _nr(name) >= 0:
            flt.add_rule(eperm, name)
    builder = job_type is JobType.RUNTIME_BUILD
    for family in SOCKET_DENIED_FAMILIES + (BUILDER_SOCKET_DENIED_FAMILIES if builder else ()):
        flt.add_rule(eperm, "socket", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, LOW32, family))
    # a protocol whose upper bits are set is "not NETLINK_ROUTE" here, and refused: fail closed
    flt.add_rule(eperm, "socket", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, LOW32, socket.AF_NETLINK),
                 pyseccomp.Arg(2, pyseccomp.NE, NETLINK_ALLOWED_PROTOCOL))
    for kind in BUILDER_SOCKETPAIR_DENIED_TYPES if builder else ():
        flt.add_rule(eperm, "socketpair", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, LOW32, socket.AF_UNIX),
                     pyseccomp.Arg(1, pyseccomp.MASKED_EQ, SOCK_TYPE_MASK, kind))
    for name in NO_OP:
        if _nr(name) >= 0:
            flt.add_rule(pyseccomp.ERRNO(0), name)
    for request in IOCTL_DENIED_REQUESTS:
        flt.add_rule(eperm, "ioctl", pyseccomp.Arg(1, pyseccomp.MASKED_EQ, LOW32, request))
    return _export(flt)


def _allow_stage(job_type: JobType) -> bytes:
    flt = _new_filter(pyseccomp.ERRNO(errno.EPERM))
    names = ALLOWED + (BUILDER_EXTRA if job_type is JobType.RUNTIME_BUILD else ())
    for name in names:
        if _nr(name) >= 0:
            flt.add_rule(pyseccomp.ALLOW, name)
    flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")  # glibc then falls back to clone
    flt.add_rule(pyseccomp.ALLOW, "clone",
                 pyseccomp.Arg(_clone_flags_arg(), pyseccomp.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
    for value in PERSONALITY_ALLOWED:
        flt.add_rule(pyseccomp.ALLOW, "personality",
                     pyseccomp.Arg(0, pyseccomp.MASKED_EQ, LOW32, value))
    for name, mode_arg in (("mknod", 1), ("mknodat", 2)):
        if _nr(name) >= 0:
            for ftype in MKNOD_ALLOWED_TYPES:
                flt.add_rule(pyseccomp.ALLOW, name,
                             pyseccomp.Arg(mode_arg, pyseccomp.MASKED_EQ, S_IFMT, ftype))
    return _export(flt)


def _chain(first: bytes, second: bytes) -> bytes:
    """Run ``first``; where it would allow, continue with ``second`` (see the module docstring)."""
    n = len(first) // _SOCK_FILTER.size
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(_SOCK_FILTER.iter_unpack(first)):
        if code & _BPF_CLASS_MASK == _BPF_CLASS_RET:
            if code != _BPF_RET_K:
                raise SeccompError(f"unexpected return instruction {code:#x} from libseccomp")
            if k == pyseccomp.ALLOW:
                code, jt, jf, k = _BPF_JMP_JA, 0, 0, n - i - 1  # lands on second[0]
        out += _SOCK_FILTER.pack(code, jt, jf, k)
    return bytes(out) + second


def _check_lists() -> None:
    overlap = (set(DENIED) | set(NO_OP)) & (set(ALLOWED) | set(BUILDER_EXTRA))
    if overlap:
        raise SeccompError(f"syscalls both allowed and denied: {sorted(overlap)}")


def compile_profile(job_type: JobType) -> bytes:
    """The BPF program for ``job_type`` (unknown types get production), built once and cached.

    Call it at warm-up, before forking per job: libseccomp is slow enough (milliseconds) that it
    does not belong on the per-job path, and the forked children inherit the cache.
    """
    job_type = JobType.parse(job_type)
    cached = _cache.get(job_type)
    if cached is not None:
        return cached.program
    _check_lists()
    try:
        program = _chain(_deny_stage(job_type), _allow_stage(job_type))
    except OSError as exc:
        raise SeccompError(f"libseccomp could not build the {job_type.value} profile: {exc}") from exc
    count = len(program) // _SOCK_FILTER.size
    if not 0 < count <= _BPF_MAXINSNS:
        raise SeccompError(f"the {job_type.value} profile has {count} instructions")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.cast(buffer, ctypes.c_void_p))
    _cache[job_type] = _Compiled(program, buffer, fprog)
    return program


_NR_SECCOMP = _nr("seccomp")


def load(job_type: JobType) -> None:
    """Install the profile for ``job_type`` on every thread of the calling process.

    Meant as the very last step before execve: nothing is built here, only one prctl and one
    seccomp(2) call. no_new_privs must already be set (the init sets it). This checks rather than
    sets it, so that an init that forgot it fails here instead of exec'ing the job without it: a
    process with CAP_SYS_ADMIN could load the filter without no_new_privs, and nothing would say.
    """
    job_type = JobType.parse(job_type)
    compile_profile(job_type)  # a no-op after warm-up
    compiled = _cache[job_type]
    zero = ctypes.c_ulong(0)
    if _libc.prctl(_PR_GET_NO_NEW_PRIVS, zero, zero, zero, zero) != 1:
        raise SeccompError("no_new_privs is not set: set it (prctl 38) before loading seccomp")
    rc = _libc.syscall(ctypes.c_long(_NR_SECCOMP), ctypes.c_ulong(_SECCOMP_SET_MODE_FILTER),
                       ctypes.c_ulong(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(compiled.fprog))
    if rc != 0:
        err = ctypes.get_errno()
        why = f"thread {rc} could not be synchronised" if rc > 0 else os.strerror(err)
        raise SeccompError(f"installing the {job_type.value} seccomp profile failed: {why}")
