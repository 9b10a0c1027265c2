"""The warm launcher: a single-threaded process that forks one sandbox per job.

Starting a Python interpreter per job would cost more than bubblewrap's whole set-up, so the agent
starts this process once. It imports everything a sandbox needs, compiles the seccomp filters, and
then waits for specs on a unix socket. Forking it costs a copy-on-write page table, not an
interpreter start, and it is single-threaded, so a fork is safe (the agent's own process runs an
event loop and threads, and never forks a sandbox itself).

Per job, two processes are made:
  stage 1  forked, moved into fresh namespaces and into a cgroup of its own ahead of time
           (StagePool); given a job, it renames that cgroup after the job, writes its limits, takes
           a copy of the host's mounts, mounts the job's tmpfs root, forks the init, moves it into the job's cgroup, waits for it, then
           copies /work out to the job's artifacts folder;
  init     PID 1 of the new PID namespace (see init.py).
Descriptors handed over with each spec: the spec (a sealed memfd), stdout, stderr, the status pipe
and, optionally, the "go" pipe.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import signal
import socket
import sys
from typing import NoReturn

from . import cgroups, mounts, namespaces, seccomp, status
from .init import SETUP_FAILED_EXIT, run_init
from .libc import PR_SET_PDEATHSIG, close_range, prctl, set_process_name
from ..fs import copy_tree
from ..contract import JobType
from .spec import SandboxSpec

MAX_FDS = 5


DRIVER: cgroups.CgroupDriver | None = None


def warm_up(cgroup_parent: str) -> None:
    """Pay once for what every job needs: imports, the cgroup driver, the seccomp programs."""
    global DRIVER
    DRIVER = cgroups.detect(cgroup_parent)
    for job_type in JobType:
        seccomp.compile_profile(job_type)
    gc.collect()
    gc.freeze()  # forked stages share these objects; no collection of the children touches them


POOL_SIZE = 2
IDLE_STAGE_NAME = "jnb-idle-stage"  # /proc/PID/comm of a stage waiting for its job
REFILL_AFTER_IDLE_S = 0.02


def serve(sock: socket.socket, cgroup_parent: str) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps stage-1 processes
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    warm_up(cgroup_parent)
    pool = StagePool(sock.fileno())
    pool.fill()
    sock.sendall(b"ready")
    while True:
        # refill only when no job has come for a moment: a fork then competes with no job's start
        if not select.select([sock], [], [], None if pool.full else REFILL_AFTER_IDLE_S)[0]:
            pool.add_one()
            continue
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1024, MAX_FDS)
        if not msg:
            return
        try:
            pool.dispatch(fds)
        finally:
            for fd in fds:
                os.close(fd)


class StagePool:
    """Stage-1 processes forked, in fresh namespaces and in a cgroup of their own, before their
    job arrives.

    Forking the launcher (about 1.5 ms), unsharing the namespaces (about 0.7 ms) and above all
    moving a process into a cgroup (on cgroup v1 the first move after a quiet moment waits for an
    RCU grace period: about 10 ms) are the same for every job, so they happen between jobs. A job
    only waits for its descriptors to be passed on, its limits to be written and its cgroup to be
    renamed after it. A waiting stage holds nothing of any job: no spec, no descriptor, no mount.
    """

    def __init__(self, agent_fd: int, size: int = POOL_SIZE) -> None:
        self.agent_fd = agent_fd
        self.size = size
        self.idle: list[socket.socket] = []

    @property
    def full(self) -> bool:
        return len(self.idle) >= self.size

    def fill(self) -> None:
        while not self.full:
            self.add_one()

    def add_one(self) -> None:
        self.idle.append(self._spawn())

    def dispatch(self, fds: list[int]) -> None:
        """Hand one job's descriptors to a waiting stage (one that died is skipped)."""
        for _ in range(self.size + 1):
            stage = self.idle.pop(0) if self.idle else self._spawn()
            try:
                socket.send_fds(stage, [b"job"], fds)
                return
            except OSError:
                continue
            finally:
                stage.close()
        raise RuntimeError("no sandbox stage could take the job")

    def _spawn(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            _stage_waits(theirs)
        theirs.close()
        return ours


def _stage_waits(sock: socket.socket) -> NoReturn:
    """A stage-1 process before its job: prepared, then blocked until the launcher hands it one."""
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)  # the agent's socket and other stages' sockets are not ours
    problem = None
    group = None
    set_process_name(IDLE_STAGE_NAME)
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        gc.disable()  # short-lived stages allocate little; a collection would copy shared pages
        os.setsid()
        assert DRIVER is not None
        group = DRIVER.create(f"stage-{os.urandom(6).hex()}", cgroups.CgroupLimits())
        group.join(os.getpid())
        namespaces.enter_job_namespaces(ahead=True)
    except Exception as exc:  # noqa: BLE001 - told to the job that comes, as reason setup
        problem = f"sandbox stage 1: {exc}"
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1024, MAX_FDS)
    except BaseException:  # noqa: BLE001
        os._exit(0)
    if not msg:
        os._exit(0)
    spec_fd, out_fd, err_fd, status_fd = fds[:4]
    go_fd = fds[4] if len(fds) > 4 else None
    try:
        with os.fdopen(os.dup(spec_fd), "rb") as f:
            f.seek(0)
            spec = SandboxSpec.from_json_dict(json.load(f))
        _arrange_fds(out_fd, err_fd, status_fd, go_fd)
        if problem or group is None:
            raise RuntimeError(problem)
        group = group.rename(f"job-{spec.job_id}")  # from here on the agent finds and removes it
        group.apply(spec.cgroup_limits)
    except BaseException as exc:  # noqa: BLE001
        status.send(status.setup_error(str(exc) if problem else f"sandbox stage 1: cgroup: {exc}"))
        os._exit(SETUP_FAILED_EXIT)
    _stage1(spec, go_fd is not None)


def _stage1(spec: SandboxSpec, has_go: bool) -> NoReturn:
    set_process_name("jnb-stage")
    try:
        namespaces.new_mount_namespace()
        mounts.make_private()
        mounts.mount_tmpfs(spec.root_dir, spec.disk_mb, 0o755)
    except Exception as exc:  # noqa: BLE001
        status.send(status.setup_error(f"sandbox stage 1: {exc}"))
        os._exit(SETUP_FAILED_EXIT)
    init_pid = os.fork()
    if init_pid == 0:
        run_init(spec)
    try:
        status.send(status.started(init_pid))
        if has_go:
            os.close(status.GO_FD)
        os.waitpid(init_pid, 0)
        _collect_artifacts(spec)
        status.send(status.done())
    except BaseException as exc:  # noqa: BLE001 - a stage-1 child must never return into serve()
        status.send(status.artifacts_error(f"sandbox stage 1: {type(exc).__name__}"))
    finally:
        os._exit(0)


def _arrange_fds(out_fd: int, err_fd: int, status_fd: int, go_fd: int | None) -> None:
    """0 = /dev/null, 1/2 = the job's output pipes, 3 = status, 4 = go; nothing else survives."""
    targets = [out_fd, err_fd, status_fd] + ([go_fd] if go_fd is not None else [])
    # first above every fixed slot, so that no dup2 below can overwrite a descriptor still needed
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in targets]
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
        status.send(status.artifacts_error(f"copying /work out: {exc}"))
        return
    if report.skipped:
        more = f" (and {len(report.skipped) - 3} more)" if len(report.skipped) > 3 else ""
        status.send(status.artifacts_error("not kept: " + "; ".join(report.skipped[:3]) + more))


def main() -> None:
    fd, cgroup_parent = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(fileno=fd)
    serve(sock, cgroup_parent)


if __name__ == "__main__":
    main()
