"""jnb-init's plan and its failures, without an agent: the plan is sealed, and the init reports a
failed step on its status descriptor as status.py's `setup_error` naming the step, exit 125.

A spawn here has no PID namespace of its own (the test's process is not a stage), so a real init
stops at its PID-1 check: before it mounts or changes anything."""

from __future__ import annotations

import os

import pytest

from joblet_agent.contract import JobType
from joblet_agent.sandbox import initplan, libc, status
from joblet_agent.sandbox.spec import SandboxSpec

pytestmark = pytest.mark.root


def _spec() -> SandboxSpec:
    return SandboxSpec(job_id="jnbplan", job_type=JobType.STANDARD, root_dir="/nonexistent-jnb-root",
                       argv=["true"], env={"JOB_ID": "jnbplan", "PATH": "/usr/bin"}, uid=65534, gid=65534)


def _spawn(plan_fd: int, st_w: int) -> int:
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(initplan.BINARY, ["jnb-init"], {}, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2),
            (os.POSIX_SPAWN_DUP2, st_w, 3), (os.POSIX_SPAWN_DUP2, plan_fd, initplan.PLAN_FD)])
    finally:
        os.close(null)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _run_init(plan_fd: int, as_pid_1: bool = False) -> tuple[int, list[status.Message]]:
    """jnb-init with the status pipe at 3 and `plan_fd` at 5 (as PID 1 of a PID namespace of a
    child of this test's, if asked): its exit code and its messages."""
    st_r, st_w = os.pipe2(os.O_CLOEXEC)
    try:
        if not as_pid_1:
            code = _spawn(plan_fd, st_w)
        else:
            child = os.fork()
            if child == 0:
                try:
                    libc.unshare(libc.CLONE_NEWPID)
                    os._exit(_spawn(plan_fd, st_w))
                finally:
                    os._exit(99)
            code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    finally:
        os.close(st_w)
    with os.fdopen(st_r, "rb") as f:
        messages = status.take_lines(bytearray(), f.read())
    return code, messages


def test_the_plan_is_sealed_against_every_change() -> None:
    fd = initplan.sealed(initplan.plan(_spec()))
    try:
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        with pytest.raises(PermissionError):
            os.write(fd, b"more")
    finally:
        os.close(fd)


def test_an_init_outside_a_pid_namespace_refuses_naming_the_step() -> None:
    fd = initplan.sealed(initplan.plan(_spec()))
    try:
        code, messages = _run_init(fd)
    finally:
        os.close(fd)
    assert code == 125, messages
    assert [m.kind for m in messages] == [status.Kind.SETUP_ERROR], messages
    assert messages[0].message.startswith("validate job context: not PID 1"), messages


def test_a_broken_plan_is_a_setup_error_not_a_crash() -> None:
    truncated = initplan.plan(_spec())[:-3]
    for data in (truncated, b"\x63\0\0\0\0\0\0\0", initplan._record(initplan.ROOT, b"no end")):
        fd = initplan.sealed(data)
        try:
            code, messages = _run_init(fd)
        finally:
            os.close(fd)
        assert code == 125, (data[:16], messages)
        assert [m.kind for m in messages] == [status.Kind.SETUP_ERROR], messages
        assert messages[0].message.startswith("read plan: "), messages


def test_a_failed_mount_names_its_step_and_path_in_one_valid_line() -> None:
    """As PID 1 of a PID namespace, an init whose root does not exist stops when it builds it
    (nothing is mounted); the root's path, with quotes, a backslash, a newline and UTF-8, comes
    back whole through the init's JSON escaping."""
    spec = _spec()
    spec.root_dir = '/nonexistent-jnb "such"\\root\nwith é'
    fd = initplan.sealed(initplan.plan(spec))
    try:
        code, messages = _run_init(fd, as_pid_1=True)
    finally:
        os.close(fd)
    assert code == 125 and [m.kind for m in messages] == [status.Kind.SETUP_ERROR], messages
    expected = "build root: open the root " + spec.root_dir.encode().decode("latin-1") + ": No such file or directory"
    assert messages[0].message == expected, messages


def test_a_missing_init_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initplan, "BINARY", "/nonexistent/jnb-init")
    with pytest.raises(initplan.MissingInit, match="scripts/install.sh builds it"):
        initplan.spawn(_spec(), {})
