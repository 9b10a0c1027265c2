"""The warm launcher: a single-threaded process that forks one sandbox per job.

Starting a Python interpreter per job would cost more than bubblewrap's whole set-up, so the agent
starts this process once. It imports everything a sandbox needs, compiles the seccomp filters, and
then waits for specs on a unix socket. Forking it costs a copy-on-write page table, not an
interpreter start, and it is single-threaded, so a fork is safe (the agent's own process runs an
event loop and threads, and never forks a sandbox itself).

Per job, two processes are made:
  stage 1  unshares the namespaces, mounts the job's tmpfs root, forks the init, moves it into the
           job's cgroup, waits for it, then copies /work out to the job's artifacts folder;
  init     PID 1 of the new PID namespace (see init.py).
Descriptors handed over with each spec: the spec (a sealed memfd), stdout, stderr, the status pipe
and, optionally, the "go" pipe.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
from typing import NoReturn

from . import mounts, namespaces, seccomp, status
from .init import SETUP_FAILED_EXIT, run_init
from .libc import PR_SET_PDEATHSIG, close_range, prctl
from .safefs import copy_tree
from .spec import JobType, SandboxSpec

MAX_FDS = 5


def warm_up() -> None:
    """Pay once for what every job needs: imports and the compiled seccomp programs."""
    for job_type in JobType:
        seccomp.compile_profile(job_type)
    gc.collect()
    gc.freeze()  # forked stages share these objects; no collection of the children touches them


def serve(sock: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps stage-1 processes
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    warm_up()
    sock.sendall(b"ready")
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1024, MAX_FDS)
        except InterruptedError:
            continue
        if not msg:
            return
        try:
            _launch(fds)
        finally:
            for fd in fds:
                os.close(fd)


def _launch(fds: list[int]) -> None:
    spec_fd, out_fd, err_fd, status_fd = fds[:4]
    go_fd = fds[4] if len(fds) > 4 else None
    with os.fdopen(os.dup(spec_fd), "rb") as f:
        f.seek(0)
        spec = SandboxSpec.from_json_dict(json.load(f))
    pid = os.fork()
    if pid == 0:
        _stage1(spec, out_fd, err_fd, status_fd, go_fd)


def _stage1(spec: SandboxSpec, out_fd: int, err_fd: int, status_fd: int, go_fd: int | None) -> NoReturn:
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        gc.disable()  # short-lived stages allocate little; a collection would copy shared pages
        os.setsid()
        _arrange_fds(out_fd, err_fd, status_fd, go_fd)
        namespaces.enter_job_namespaces()
        mounts.make_private()
        mounts.mount_tmpfs(spec.root_dir, spec.disk_mb, 0o755)
        joined_r, joined_w = os.pipe()
    except Exception as exc:  # noqa: BLE001
        status.send("setup_error", message=f"sandbox stage 1: {exc}")
        os._exit(SETUP_FAILED_EXIT)
    init_pid = os.fork()
    if init_pid == 0:
        os.close(joined_w)
        run_init(spec, joined_r)
    os.close(joined_r)
    try:
        status.send("started", pid=init_pid)
        if go_fd is not None:
            os.close(status.GO_FD)
        _join_cgroup(spec, init_pid, joined_w)
        os.waitpid(init_pid, 0)
        _collect_artifacts(spec)
        status.send("done")
    except BaseException as exc:  # noqa: BLE001 - a stage-1 child must never return into serve()
        status.send("artifacts_error", message=f"sandbox stage 1: {type(exc).__name__}")
    finally:
        os._exit(0)


def _join_cgroup(spec: SandboxSpec, init_pid: int, joined_fd: int) -> None:
    """Move the init into the job's cgroup while it builds the root, then tell it so.

    On cgroup v1 the first migration waits for an RCU grace period (several ms); doing it here, in
    parallel with the init's mounts, takes it off the job's start-up path. The init forks the
    user's process only after this, so everything of the user's runs inside the cgroup.
    """
    try:
        for procs in spec.cgroup_procs:
            with open(procs, "w") as f:
                f.write(str(init_pid))
        os.write(joined_fd, b"j")
    except (BrokenPipeError, ProcessLookupError):
        pass  # the init already failed and said why
    except OSError as exc:
        status.send("setup_error", message=f"joining the job's cgroup: {exc}")
    finally:
        os.close(joined_fd)


def _arrange_fds(out_fd: int, err_fd: int, status_fd: int, go_fd: int | None) -> None:
    """0 = /dev/null, 1/2 = the job's output pipes, 3 = status, 4 = go; nothing else survives."""
    targets = [out_fd, err_fd, status_fd] + ([go_fd] if go_fd is not None else [])
    moved = [os.dup(fd) for fd in targets]  # above every fixed slot, so dup2 cannot clobber
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    for slot, fd in zip((1, 2, status.STATUS_FD, status.GO_FD), moved):
        os.dup2(fd, slot)
    close_range(5 if go_fd is not None else 4)


def _collect_artifacts(spec: SandboxSpec) -> None:
    """Copy what the job left in /work to the agent's files folder while the tmpfs still exists,
    bounded by the job's own disk size and depth; what is left behind is reported."""
    if not spec.artifacts_dir:
        return
    try:
        report = copy_tree(os.path.join(spec.root_dir, "work"), spec.artifacts_dir, limit_bytes=spec.disk_mb << 20)
    except OSError as exc:
        status.send("artifacts_error", message=f"copying /work out: {exc}")
        return
    if report.skipped:
        more = f" (and {len(report.skipped) - 3} more)" if len(report.skipped) > 3 else ""
        status.send("artifacts_error", message="not kept: " + "; ".join(report.skipped[:3]) + more)


def main() -> None:
    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    serve(sock)


if __name__ == "__main__":
    main()
