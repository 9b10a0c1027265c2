"""The Landlock layer on its own (agent/sandbox/landlock.py), each rule in a forked child that has
no other layer which would refuse the same action: no namespace, no read-only mount, no seccomp,
and folders, a loopback listener, a process and an abstract socket that the child may use without
Landlock (each test shows that first, as a control). A child that Landlock failed to stop does
nothing harmful: files are opened for writing without writing, or created and removed at once;
processes get signal 0. Real sandboxes: tests/test_landlock_sandbox.py."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from joblet_agent.sandbox import landlock
from joblet_agent.sandbox.landlock import Policy

ABI = landlock.abi()
needs = {level: pytest.mark.skipif(ABI < level, reason=f"this kernel's Landlock ABI is {ABI}, not {level} or later")
         for level in (1, 3, 4, 6)}


def in_child(policy: Policy | None, action: Callable[[], object], version: int | None = None) -> int:
    """The errno `action` fails with (0: it worked) in a forked child restricted to `policy`
    (None: not restricted), with no_new_privs as in a job."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            os.close(r)
            ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            if policy is not None:
                landlock.apply(policy, version)
            try:
                action()
                code = 0
            except OSError as exc:
                code = exc.errno or 254
        finally:
            os.write(w, str(code).encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    return int(out or 253)


def create_and_remove(folder: Path) -> Callable[[], None]:
    def act() -> None:
        path = folder / f"new-{os.getpid()}"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        os.unlink(path)
    return act


def open_for_write(path: Path | str) -> Callable[[], None]:
    return lambda: os.close(os.open(path, os.O_WRONLY | os.O_NOFOLLOW))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two folders anyone may write: `allowed` is in the policy, `other` is not."""
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    for folder in (allowed, other):
        folder.mkdir(mode=0o777)
        folder.chmod(0o777)
        (folder / "existing").write_text("kept\n")
        (folder / "existing").chmod(0o666)
    return allowed, other


def only(allowed: Path, **kw: object) -> Policy:
    return Policy(writable=(str(allowed),), **{"devices": None, "tcp": True, "scoped": False, **kw})  # type: ignore[arg-type]


# ---- filesystem ------------------------------------------------------------------------------


@needs[1]
def test_writes_outside_the_writable_folders_are_refused(folders: tuple[Path, Path]) -> None:
    allowed, other = folders
    assert in_child(None, create_and_remove(other)) == 0  # control: nothing else refuses it
    assert in_child(None, open_for_write(other / "existing")) == 0
    policy = only(allowed)
    assert in_child(policy, create_and_remove(other)) == errno.EACCES
    assert in_child(policy, open_for_write(other / "existing")) == errno.EACCES
    assert in_child(policy, lambda: os.rmdir(os.mkdir(other / "d") or other / "d")) == errno.EACCES
    assert in_child(policy, lambda: os.symlink("existing", other / "link")) == errno.EACCES
    assert in_child(policy, lambda: os.rename(other / "existing", other / "renamed")) == errno.EACCES
    assert (other / "existing").read_text() == "kept\n" and sorted(p.name for p in other.iterdir()) == ["existing"]
    # beneath the writable folder everything works, and reading and executing work everywhere
    assert in_child(policy, create_and_remove(allowed)) == 0
    assert in_child(policy, open_for_write(allowed / "existing")) == 0
    assert in_child(policy, lambda: (other / "existing").read_text()) == 0
    assert in_child(policy, lambda: os.listdir(other)) == 0
    assert in_child(policy, lambda: _run_true()) == 0


def _run_true() -> None:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv("/bin/true", ["/bin/true"])
        finally:
            os._exit(126)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(errno.EACCES, "exec of /bin/true failed")


@needs[1]
def test_moving_a_file_out_of_the_writable_folder_is_refused(folders: tuple[Path, Path]) -> None:
    allowed, other = folders
    assert in_child(only(allowed), lambda: os.link(allowed / "existing", other / "linked")) == errno.EACCES
    assert in_child(only(allowed), lambda: os.rename(allowed / "existing", other / "moved")) in (errno.EACCES, errno.EXDEV)
    assert (allowed / "existing").exists() and not (other / "moved").exists() and not (other / "linked").exists()


@needs[3]
def test_truncating_outside_the_writable_folders_is_refused(folders: tuple[Path, Path]) -> None:
    allowed, other = folders
    size = (other / "existing").stat().st_size  # truncating to its own size changes nothing
    assert in_child(None, lambda: os.truncate(other / "existing", size)) == 0
    assert in_child(only(allowed), lambda: os.truncate(other / "existing", size)) == errno.EACCES
    assert in_child(only(allowed), lambda: os.truncate(allowed / "existing", size)) == 0


@needs[1]
def test_device_nodes_are_writable_only_through_the_device_rule(folders: tuple[Path, Path]) -> None:
    allowed, _ = folders
    assert in_child(only(allowed), open_for_write("/dev/null")) == errno.EACCES
    assert in_child(only(allowed, devices="/dev"), open_for_write("/dev/null")) == 0


# ---- TCP ---------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on this host's loopback that accepts connections."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def tcp_connect(port: int) -> Callable[[], None]:
    def act() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    return act


def tcp_bind() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))


@needs[4]
def test_tcp_connect_and_bind_are_refused_when_the_network_mode_has_none(folders: tuple[Path, Path],
                                                                         listener: int) -> None:
    allowed, _ = folders
    assert in_child(None, tcp_connect(listener)) == 0
    assert in_child(only(allowed, tcp=False), tcp_connect(listener)) == errno.EACCES
    assert in_child(only(allowed, tcp=False), tcp_bind) == errno.EACCES
    assert in_child(only(allowed, tcp=True), tcp_connect(listener)) == 0
    assert landlock.policy_for("none").tcp is True  # by default TCP is the namespace's to answer
    assert landlock.policy_for("none", refuse_tcp=True).tcp is False
    assert landlock.policy_for("bridge", refuse_tcp=True).tcp is True


# ---- scopes ------------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A process of this test (same user) outside every Landlock domain."""
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@needs[6]
def test_a_signal_to_a_process_outside_the_domain_is_refused(folders: tuple[Path, Path], sleeper: int) -> None:
    allowed, _ = folders
    assert in_child(None, lambda: os.kill(sleeper, 0)) == 0
    assert in_child(only(allowed, scoped=True), lambda: os.kill(sleeper, 0)) == errno.EPERM
    assert in_child(only(allowed, scoped=True), lambda: os.kill(os.getpid(), 0)) == 0  # its own domain


@pytest.fixture
def abstract_socket() -> Iterator[str]:
    """An abstract unix socket made outside every Landlock domain."""
    name = f"\0jnb-landlock-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(16)
        yield name


def unix_connect(name: str) -> Callable[[], None]:
    def act() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(name)
    return act


def connect_to_own_abstract_socket() -> None:
    name = f"\0jnb-landlock-own-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(1)
        unix_connect(name)()


@needs[6]
def test_an_abstract_socket_made_outside_the_domain_is_refused(folders: tuple[Path, Path],
                                                               abstract_socket: str) -> None:
    allowed, _ = folders
    assert in_child(None, unix_connect(abstract_socket)) == 0
    assert in_child(only(allowed, scoped=True), unix_connect(abstract_socket)) == errno.EPERM
    assert in_child(only(allowed, scoped=True), connect_to_own_abstract_socket) == 0


# ---- older kernels -----------------------------------------------------------------------------


@needs[4]
def test_an_older_abi_keeps_what_it_has_and_runs(folders: tuple[Path, Path], listener: int) -> None:
    """Acting as a kernel of ABI 3 (no TCP rules): writes stay refused, TCP goes through; and with
    no Landlock at all nothing is refused and nothing fails."""
    allowed, other = folders
    policy = only(allowed, tcp=False, scoped=True)
    assert in_child(policy, create_and_remove(other), version=3) == errno.EACCES
    assert in_child(policy, tcp_connect(listener), version=3) == 0
    assert in_child(policy, create_and_remove(other), version=0) == 0
    assert in_child(policy, tcp_connect(listener), version=0) == 0


def test_status_names_what_the_kernel_lacks() -> None:
    assert landlock.status(7) == {"abi": 7, "missing": [], "enforced": [
        "filesystem", "truncate", "tcp", "device_ioctl", "scope_signal", "scope_abstract_unix_socket"]}
    assert landlock.status(3)["missing"] == ["tcp", "device_ioctl", "scope_signal", "scope_abstract_unix_socket"]
    assert landlock.status(0) == {"abi": 0, "enforced": [], "missing": [name for name, _ in landlock.PARTS]}
    assert landlock.status()["abi"] == ABI


@needs[1]
def test_a_file_bind_gets_file_rights_only(tmp_path: Path) -> None:
    """A writable bind may be a single file: its rule holds the file rights, which the kernel takes."""
    target = tmp_path / "f"
    target.write_text("x")
    target.chmod(0o666)
    policy = Policy(writable=(str(target),), devices=None, tcp=True, scoped=False)
    assert in_child(policy, open_for_write(target)) == 0
    assert in_child(policy, create_and_remove(tmp_path)) == errno.EACCES
