"""The seccomp profiles, attacked on the real kernel.

Each probe calls a syscall with invalid arguments (bubblewrap's technique), so that the answer tells
"blocked by the filter" (EPERM, or ENOSYS for clone3) apart from "allowed, and refused by the kernel"
(EINVAL, EFAULT, EBADF, ...). Every probe also runs once without a filter: that baseline must not be
the filter's answer already, or the probe proves nothing. The invalid arguments also make every probe
harmless if a filter were missing: nothing is mounted, unshared, traced or loaded.

Probes run in a forked child that sets no_new_privs and loads the profile, as the in-sandbox init
does; the child reports errnos through a pipe and the parent asserts.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import termios
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyseccomp
import pytest

from joblet_agent.sandbox import seccomp
from joblet_agent.contract import JobType

PR_SET_NO_NEW_PRIVS = 38
BAD = 0xFFFFFFFF           # invalid flags / commands
AT_FDCWD = -100
CLONE_FS, CLONE_THREAD = 0x200, 0x10000
CLONE_NEWUSER = 0x10000000
S_IFCHR, S_IFBLK, S_IFIFO = 0o020000, 0o060000, 0o010000
TCGETS = termios.TCGETS
TIOCSTI = termios.TIOCSTI
UPPER = 0xFFFFFFFF00000000

libc = ctypes.CDLL(None, use_errno=True)
X86_64 = platform.machine() == "x86_64"

# name -> (syscall, args). Every call fails; only the errno matters.
DENIED_PROBES: dict[str, tuple[str, tuple[int, ...]]] = {
    "io_uring_setup": ("io_uring_setup", (0, 0)),
    "io_uring_enter": ("io_uring_enter", (-1, 0, 0, 0, 0, 0)),
    "io_uring_register": ("io_uring_register", (-1, 0, 0, 0)),
    "userfaultfd": ("userfaultfd", (BAD,)),
    "keyctl": ("keyctl", (0x7FFFFFFF, 0, 0, 0, 0)),
    "add_key": ("add_key", (0, 0, 0, 0, 0)),
    "request_key": ("request_key", (0, 0, 0, 0)),
    "bpf": ("bpf", (0x7FFFFFFF, 0, 0)),
    "perf_event_open": ("perf_event_open", (0, 0, -1, -1, BAD)),
    "ptrace": ("ptrace", (0x7FFFFFFF, 0, 0, 0)),
    "process_vm_readv": ("process_vm_readv", (0, 0, 0, 0, 0, BAD)),
    "process_vm_writev": ("process_vm_writev", (0, 0, 0, 0, 0, BAD)),
    "pidfd_getfd": ("pidfd_getfd", (-1, -1, BAD)),
    "kcmp": ("kcmp", (0, 0, 0x7FFFFFFF, 0, 0)),
    "process_madvise": ("process_madvise", (-1, 0, 0, 0, BAD)),
    "mount": ("mount", (0, 0, 0, 0, 0)),
    "umount2": ("umount2", (0, BAD)),
    "fsopen": ("fsopen", (0, BAD)),
    "fsconfig": ("fsconfig", (-1, BAD, 0, 0, 0)),
    "fsmount": ("fsmount", (-1, BAD, 0)),
    "fspick": ("fspick", (-1, 0, BAD)),
    "move_mount": ("move_mount", (-1, 0, -1, 0, BAD)),
    "open_tree": ("open_tree", (-1, 0, BAD)),
    "mount_setattr": ("mount_setattr", (-1, 0, BAD, 0, 0)),
    "pivot_root": ("pivot_root", (0, 0)),
    "chroot": ("chroot", (0,)),
    "unshare": ("unshare", (0x1,)),                 # bit 0 is no namespace: EINVAL
    "setns": ("setns", (-1, 0)),
    "kexec_load": ("kexec_load", (0, 0xFFFF, 0, BAD)),
    "kexec_file_load": ("kexec_file_load", (-1, -1, 0, 0, BAD)),
    "init_module": ("init_module", (0, 0, 0)),
    "finit_module": ("finit_module", (-1, 0, BAD)),
    "delete_module": ("delete_module", (0, 0)),
    "open_by_handle_at": ("open_by_handle_at", (-1, 0, 0)),
    "name_to_handle_at": ("name_to_handle_at", (-1, 0, 0, 0, BAD)),
    "memfd_secret": ("memfd_secret", (BAD,)),
}

# Blocked by argument rules, or simply not on the allowlist (EPERM).
ARG_DENIED_PROBES: dict[str, tuple[str, tuple[int, ...]]] = {
    # CLONE_THREAD without CLONE_SIGHAND (and NEWUSER with CLONE_FS) is EINVAL: nothing is created
    "clone_newuser": ("clone", (CLONE_NEWUSER | CLONE_FS | CLONE_THREAD, 0, 0, 0, 0)),
    **{f"clone_ns_{flag:#x}": ("clone", (flag | CLONE_THREAD, 0, 0, 0, 0))
       for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x20000000, 0x40000000)},
    "socket_vsock": ("socket", (socket.AF_VSOCK, 15, 0)),               # type 15: EINVAL
    "socket_vsock_upper_bits": ("socket", (UPPER | socket.AF_VSOCK, 15, 0)),
    "ioctl_tiocsti": ("ioctl", (-1, TIOCSTI, 0)),
    "ioctl_tiocsti_upper_bits": ("ioctl", (-1, UPPER | TIOCSTI, 0)),
    "personality_addr_no_randomize": ("personality", (0x0040000,)),    # only the child's own
    "mknodat_chr": ("mknodat", (AT_FDCWD, 0, S_IFCHR | 0o600, 0x103)),  # NULL path: EFAULT
    "mknodat_blk": ("mknodat", (AT_FDCWD, 0, S_IFBLK | 0o600, 0x801)),
    "sethostname": ("sethostname", (0, 0x7FFFFFFF)),                    # not listed at all
    **{f"socket_netlink_{proto}": ("socket", (socket.AF_NETLINK, 15, proto))  # audit, netfilter, ...
       for proto in (6, 9, 12, 15, 16)},
    "socket_netlink_route_upper_bits": ("socket", (socket.AF_NETLINK, 15, UPPER)),  # fail closed
    "syslog": ("syslog", (0x7FFFFFFF, 0, 0)),
    **({"mknod_chr": ("mknod", (0, S_IFCHR | 0o600, 0x103)),
        "modify_ldt": ("modify_ldt", (0x7FFFFFFF, 0, 0))} if X86_64 else {}),
}

# Allowed by the production profile: the kernel's own error must come through.
ALLOWED_PROBES: dict[str, tuple[str, tuple[int, ...]]] = {
    "clone_no_ns": ("clone", (CLONE_FS | CLONE_THREAD, 0, 0, 0, 0)),
    "socket_inet_bad_type": ("socket", (socket.AF_INET, 15, 0)),
    "socket_netlink_bad_type": ("socket", (socket.AF_NETLINK, 15, 0)),
    "ioctl_tcgets": ("ioctl", (-1, TCGETS, 0)),
    "ioctl_tiocsti_neighbour": ("ioctl", (-1, TIOCSTI + 1, 0)),
    "personality_query": ("personality", (0xFFFFFFFF,)),
    "personality_query_upper_bits": ("personality", (UPPER | 0xFFFFFFFF,)),
    "mknodat_fifo": ("mknodat", (AT_FDCWD, 0, S_IFIFO | 0o600, 0)),
    "mknodat_fifo_upper_bits": ("mknodat", (AT_FDCWD, 0, UPPER | S_IFIFO, 0)),
}

CHOWN_PROBES: dict[str, tuple[str, tuple[int, ...]]] = {
    "fchown": ("fchown", (-1, -1, -1)),
    "fchownat": ("fchownat", (-1, 0, -1, -1, BAD)),
    **({"chown": ("chown", (0, -1, -1)), "lchown": ("lchown", (0, -1, -1))} if X86_64 else {}),
}

ALL_PROBES = {**DENIED_PROBES, **ARG_DENIED_PROBES, **ALLOWED_PROBES, **CHOWN_PROBES}


def raw_syscall(name: str, *args: int) -> int:
    """Call ``name`` directly (no libc wrapper in between); return 0 or the errno."""
    nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    assert nr >= 0, f"{name} does not exist here"
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) for a in args))
    return ctypes.get_errno() if rc == -1 else 0


def in_child(job_type: JobType | None, body: Callable[[], Any]) -> Any:
    """Fork; in the child set no_new_privs, load ``job_type``'s profile (None: no filter), run
    ``body`` and send its JSON result back. Raises if the child failed or died."""
    seccomp.compile_profile(JobType.STANDARD)        # warm, as the init does before forking
    seccomp.compile_profile(JobType.RUNTIME_BUILD)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(rfd)
            try:
                if job_type is not None:
                    if libc.prctl(PR_SET_NO_NEW_PRIVS, *(ctypes.c_ulong(v) for v in (1, 0, 0, 0))) != 0:
                        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
                    seccomp.load(job_type)
                payload = {"result": body()}
            except BaseException:  # noqa: BLE001 - report anything to the parent
                payload = {"error": traceback.format_exc()}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(wfd, data):]
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status:#x}"
    payload = json.loads(data)
    if "error" in payload:
        raise AssertionError(f"child failed:\n{payload['error']}")
    return payload["result"]


def run_probes() -> dict[str, int]:
    return {name: raw_syscall(sc, *args) for name, (sc, args) in ALL_PROBES.items()}


@pytest.fixture(scope="module")
def baseline() -> dict[str, int]:
    return in_child(None, run_probes)


@pytest.fixture(scope="module")
def production() -> dict[str, int]:
    return in_child(JobType.STANDARD, run_probes)


@pytest.fixture(scope="module")
def builder() -> dict[str, int]:
    return in_child(JobType.RUNTIME_BUILD, run_probes)


def discriminating(baseline: dict[str, int], probe: str, blocked: int = errno.EPERM) -> None:
    """A probe whose unfiltered answer is already the filter's answer proves nothing."""
    if baseline[probe] == blocked:
        pytest.skip(f"{probe}: unfiltered answer is already {errno.errorcode[blocked]} here")


def name(errnum: int) -> str:
    return errno.errorcode.get(errnum, "ok") if errnum else "ok"


# ---------------------------------------------------------------------------------------------
# The data itself
# ---------------------------------------------------------------------------------------------

def test_every_listed_name_is_a_known_syscall() -> None:
    """A typo in a list would silently drop a syscall; -1 is libseccomp's "no such name"."""
    names = seccomp.ALLOWED + seccomp.BUILDER_EXTRA + seccomp.DENIED
    unknown = [n for n in names if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) == -1]
    assert unknown == []
    assert len(set(names)) == len(names), "a name is listed twice"
    assert not set(seccomp.DENIED) & (set(seccomp.ALLOWED) | set(seccomp.BUILDER_EXTRA))


def test_every_denied_syscall_has_a_probe() -> None:
    assert set(DENIED_PROBES) == set(seccomp.DENIED)


def test_compile_is_cached_per_profile() -> None:
    first = seccomp.compile_profile(JobType.STANDARD)
    assert seccomp.compile_profile(JobType.STANDARD) is first
    assert seccomp.compile_profile(JobType.RUNTIME_BUILD) != first
    assert len(first) % 8 == 0 and 0 < len(first) // 8 <= 4096


def test_unknown_job_type_gets_production() -> None:
    assert seccomp.compile_profile("no-such-type") is seccomp.compile_profile(JobType.STANDARD)  # type: ignore[arg-type]


def test_load_refuses_without_no_new_privs() -> None:
    def body() -> str:
        try:
            seccomp.load(JobType.STANDARD)
        except seccomp.SeccompError as exc:
            return str(exc)
        return "loaded"

    assert "no_new_privs" in in_child(None, body)


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("probe", sorted(DENIED_PROBES))
def test_denied_syscall_gets_eperm(probe: str, baseline: dict[str, int],
                                   production: dict[str, int], builder: dict[str, int]) -> None:
    discriminating(baseline, probe)
    assert (name(production[probe]), name(builder[probe])) == ("EPERM", "EPERM"), \
        f"unfiltered: {name(baseline[probe])}"


@pytest.mark.parametrize("probe", sorted(ARG_DENIED_PROBES))
def test_argument_rule_gets_eperm(probe: str, baseline: dict[str, int],
                                  production: dict[str, int], builder: dict[str, int]) -> None:
    discriminating(baseline, probe)
    assert (name(production[probe]), name(builder[probe])) == ("EPERM", "EPERM"), \
        f"unfiltered: {name(baseline[probe])}"


@pytest.mark.parametrize("probe", sorted(ALLOWED_PROBES))
def test_allowed_call_reaches_the_kernel(probe: str, baseline: dict[str, int],
                                         production: dict[str, int], builder: dict[str, int]) -> None:
    assert name(production[probe]) == name(baseline[probe]) != "EPERM"
    assert name(builder[probe]) == name(baseline[probe])


@pytest.mark.parametrize("probe", sorted(CHOWN_PROBES))
def test_chown_family_only_in_builder(probe: str, baseline: dict[str, int],
                                      production: dict[str, int], builder: dict[str, int]) -> None:
    discriminating(baseline, probe)
    assert name(production[probe]) == "EPERM"
    assert name(builder[probe]) == name(baseline[probe])


def test_clone3_gets_enosys_so_libc_falls_back() -> None:
    """clone3(NULL, 0) is EINVAL for the kernel; the filter answers ENOSYS first."""
    probe = lambda: raw_syscall("clone3", 0, 0)  # noqa: E731
    assert name(in_child(None, probe)) == "EINVAL"
    assert name(in_child(JobType.STANDARD, probe)) == "ENOSYS"
    assert name(in_child(JobType.RUNTIME_BUILD, probe)) == "ENOSYS"


@pytest.mark.parametrize("job_type", list(JobType))
def test_real_sockets_still_work(job_type: JobType) -> None:
    def body() -> list[int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            out = [s.getsockname()[1]]
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as nl:  # NETLINK_ROUTE
            out.append(nl.fileno())
        a, b = socket.socketpair()
        a.sendall(b"x")
        out.append(len(b.recv(1)))
        a.close(), b.close()
        return out

    port, fd, n = in_child(job_type, body)
    assert port > 0 and fd >= 0 and n == 1


def test_builder_cannot_open_unix_sockets_but_jobs_can() -> None:
    """A build sees host trees read-only, and read-only does not stop connect() to a unix socket
    there: the builder profile refuses socket(AF_UNIX) (socketpair stays), production allows it."""
    def body() -> list[int]:
        out = []
        try:
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
            out.append(0)
        except OSError as exc:
            out.append(exc.errno)
        a, b = socket.socketpair()
        a.close(), b.close()
        return out

    assert in_child(JobType.RUNTIME_BUILD, body) == [errno.EPERM]
    assert in_child(JobType.STANDARD, body) == [0]


# ---------------------------------------------------------------------------------------------
# Whole programs under the profile: the init's last step is load(), then execve
# ---------------------------------------------------------------------------------------------

def _seal(job_type: JobType | None) -> Callable[[], None]:
    """preexec_fn: no core files from killed helpers, then no_new_privs and the profile."""
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if job_type is not None:
            if libc.prctl(PR_SET_NO_NEW_PRIVS, *(ctypes.c_ulong(v) for v in (1, 0, 0, 0))) != 0:
                raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
            seccomp.load(job_type)
    seccomp.compile_profile(JobType.parse(job_type))
    return preexec


ORDINARY_PYTHON = """
import json, mmap, os, select, subprocess, threading
subprocess.run(["/bin/true"], check=True)
out = subprocess.run(["/bin/echo", "hi"], capture_output=True, check=True).stdout
assert out == b"hi\\n", out
box = []
t = threading.Thread(target=lambda: box.append(os.getpid()))
t.start(); t.join()
assert box == [os.getpid()]
m = mmap.mmap(-1, 1 << 20); m[:3] = b"abc"; m.close()
assert len(os.getrandom(16)) == 16
r, w = os.pipe()
ep = select.epoll(); ep.register(r, select.EPOLLIN)
os.write(w, b"x")
assert ep.poll(1) == [(r, select.EPOLLIN)]
os.mkfifo(os.path.join(os.environ["TMPDIR"], "fifo"))
print(json.dumps({"ok": True}))
"""


@pytest.mark.parametrize("job_type", list(JobType))
def test_ordinary_programs_still_work(job_type: JobType, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    py = subprocess.run(["/usr/bin/python3", "-c", ORDINARY_PYTHON], env=env,
                        preexec_fn=_seal(job_type), capture_output=True, text=True, timeout=60)
    assert (py.returncode, py.stdout.strip()) == (0, '{"ok": true}'), py.stderr
    sh = subprocess.run(["sh", "-c", "ls / >/dev/null && echo done"], env=env,
                        preexec_fn=_seal(job_type), capture_output=True, text=True, timeout=60)
    assert (sh.returncode, sh.stdout.strip()) == (0, "done"), sh.stderr


@pytest.fixture(scope="module")
def foreign_abi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not X86_64:
        pytest.skip("i386/x32 probes are x86_64 only")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the foreign-ABI probe: scripts/install.sh installs it")
    src = Path(__file__).parent / "seccomp_probe" / "foreign_abi.c"
    exe = tmp_path_factory.mktemp("seccomp_probe") / "foreign_abi"
    subprocess.run([gcc, "-O0", "-o", str(exe), str(src)], check=True)
    return exe


def _run_abi(exe: Path, abi: str, job_type: JobType | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), abi], preexec_fn=_seal(job_type), capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("job_type", list(JobType))
@pytest.mark.parametrize("abi", ["i386", "x32"])
def test_foreign_abi_syscall_kills_the_process(foreign_abi: Path, abi: str,
                                               job_type: JobType) -> None:
    unfiltered = _run_abi(foreign_abi, abi, None)
    if unfiltered.returncode != 0:
        pytest.skip(f"{abi} syscalls do not work here even without a filter: {unfiltered}")
    native = _run_abi(foreign_abi, "native", job_type)
    assert native.returncode == 0 and int(native.stdout) > 0   # the helper itself runs
    assert _run_abi(foreign_abi, abi, job_type).returncode == -signal.SIGSYS


# ---------------------------------------------------------------------------------------------
# sync and syncfs: answered with success, never run
# ---------------------------------------------------------------------------------------------

SECCOMP_RET_TRACE, SECCOMP_RET_ALLOW = 0x7FF00000, 0x7FFF0000


def _trace_filter(syscall: str) -> bytes:
    """A classic BPF program that answers SECCOMP_RET_TRACE for `syscall`, allows the rest."""
    import struct

    nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, syscall)
    return b"".join(struct.pack("=HBBI", *ins) for ins in (
        (0x20, 0, 0, 0), (0x15, 0, 1, nr), (0x06, 0, 0, SECCOMP_RET_TRACE), (0x06, 0, 0, SECCOMP_RET_ALLOW)))


def _under_trace_marker(syscall: str) -> Callable[[], int]:
    """Stack a filter that answers TRACE for `syscall`, then call it with no arguments. With no
    tracer, TRACE is ENOSYS and the call never runs; a filter loaded before that decides on its own
    (ERRNO, KILL) wins over TRACE. So: ENOSYS = the profile let it through, harmlessly."""
    def body() -> int:
        program = _trace_filter(syscall)
        buf = ctypes.create_string_buffer(program, len(program))
        fprog = _Fprog(len(program) // 8, ctypes.addressof(buf))
        if libc.prctl(PR_SET_NO_NEW_PRIVS, *(ctypes.c_ulong(v) for v in (1, 0, 0, 0))) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        assert raw_syscall("seccomp", 1, 0, ctypes.addressof(fprog)) == 0
        return raw_syscall(syscall)
    return body


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@pytest.mark.parametrize("job_type", list(JobType))
def test_sync_is_answered_without_flushing_the_host(job_type: JobType) -> None:
    assert name(in_child(None, _under_trace_marker("sync"))) == "ENOSYS"  # the marker works
    assert name(in_child(job_type, _under_trace_marker("sync"))) == "ok"


@pytest.mark.parametrize("job_type", list(JobType))
def test_syncfs_is_answered_without_reaching_the_kernel(job_type: JobType) -> None:
    probe = lambda: raw_syscall("syncfs", -1)  # noqa: E731
    assert name(in_child(None, probe)) == "EBADF"
    assert name(in_child(job_type, probe)) == "ok"


def test_builder_cannot_make_datagram_socketpairs_to_reach_host_sockets(tmp_path: Path) -> None:
    """socketpair(AF_UNIX, SOCK_DGRAM) gives an unnamed datagram socket, which can sendto() any
    socket path it sees (the builder sees the host's /var, /home, /root read-only). The builder
    profile refuses datagram (and SOCK_RAW, the same for AF_UNIX) socketpairs; stream and seqpacket
    pairs stay, and cannot be pointed anywhere else (a stream pair says EISCONN, a seqpacket pair
    ignores the address and sends to its own peer)."""
    path = str(tmp_path / "host.sock")
    host = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    host.bind(path)
    host.setblocking(False)

    def body() -> list[int]:
        out = []
        for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
            try:
                a, b = socket.socketpair(socket.AF_UNIX, kind)
                a.sendto(b"from the build", path)
                a.close(), b.close()
                out.append(0)
            except OSError as exc:
                out.append(exc.errno)
        for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
            a, b = socket.socketpair(socket.AF_UNIX, kind)
            try:
                a.sendto(b"from the build", path)
                out.append(0)
            except OSError as exc:
                out.append(exc.errno)
            a.close(), b.close()
        return out

    try:
        assert in_child(JobType.RUNTIME_BUILD, body) == [errno.EPERM, errno.EPERM, errno.EISCONN, 0]
        with pytest.raises(BlockingIOError):
            host.recv(64)
        assert in_child(JobType.STANDARD, body)[:2] == [0, 0]  # the attack, where the profile allows it
        assert host.recv(64) == b"from the build"
    finally:
        host.close()
