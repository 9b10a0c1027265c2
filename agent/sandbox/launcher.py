"""The warm launcher: a single-threaded process that forks one sandbox per job.

Starting a Python interpreter per job would cost more than bubblewrap's whole set-up, so the agent
starts this process once. It imports everything a sandbox needs, compiles the seccomp filters, and
then waits for specs on a unix socket. Forking it costs a copy-on-write page table, not an
interpreter start, and it is single-threaded, so a fork is safe (the agent's own process runs an
event loop and threads, and never forks a sandbox itself).

What runs in the processes it forks, and in which order, is `sequence.py`; this module is the
plumbing around it: the pool of waiting stages, handing a job's descriptors to one, and putting
them in their slots. A job comes in one of two ways. `hold`: the spec (a sealed memfd) and the
holder's end of its first control connection; the stage becomes the job's holder (holder.py), makes
the job's pipes itself and outlives this process and the agent (the agent's own jobs and sessions).
`job`: the spec, stdout, stderr, the status socket and, optionally, the "go" pipe and stdin; the
caller holds them (a cluster node's side, which is its job's holder on the node).
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import sys
from typing import NoReturn

from ..contract import JobType
from . import aheadsocket, cgroups, holder, holderplan, landlock, seccomp, sequence, status
from .stagewatch import StageWatch
from .libc import PR_SET_PDEATHSIG, close_range, prctl, scrub_command_line, set_process_name
from .miniloop import SelectorLoop
from .outcome import Outcome
from .output import translator_for
from .spec import BASE_PATH, Mount, SandboxSpec

MAX_FDS = 6  # spec, stdout, stderr, status, and optionally go and stdin


DRIVER: cgroups.CgroupDriver | None = None
SOCKET_DIR: str | None = None  # where waiting stages bind their holder's control socket ahead (aheadsocket.py)
REHEARSAL = b""  # a spec like a job's, which a waiting stage decodes ahead (`_rehearse`)


def warm_up(cgroup_parent: str, job_types: tuple[JobType, ...] = tuple(JobType)) -> None:
    """Pay once for what every job needs: imports, the cgroup driver, the seccomp programs (of the
    job types this process will start: a cluster node's side starts production jobs only), the
    kernel's Landlock version, whether jnb-holder is usable."""
    global DRIVER
    DRIVER = cgroups.detect(cgroup_parent)
    for job_type in job_types:
        seccomp.compile_profile(job_type)
    landlock.abi()  # asked once; the forks inherit the answer
    holderplan.available()  # jnb-holder's stamp checked once; the forks inherit the answer
    global REHEARSAL
    REHEARSAL = json.dumps(_rehearsal_spec().to_json_dict()).encode()
    gc.collect()
    gc.freeze()  # forked stages share these objects; no collection of the children touches them


JOB, HOLD = b"job", b"hold"   # how a job comes to a stage: its pipes, or to be held
LENT = b"stage"               # to the agent: a waiting stage's socket, for the agent's next job alone
POOL_SIZE = 2
IDLE_STAGE_NAME = "jnb-idle-stage"  # /proc/PID/comm of a stage waiting for its job
REFILL_AFTER_IDLE_S = 0.02


def serve(sock: socket.socket, cgroup_parent: str) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps stage-1 processes
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    warm_up(cgroup_parent)
    if SOCKET_DIR is not None:
        aheadsocket.prepare(SOCKET_DIR)
    assert DRIVER is not None
    pool = StagePool(sock.fileno(), watch=StageWatch(DRIVER))
    try:
        pool.fill()
        sock.sendall(b"ready")
        _serve(sock, pool)
    finally:
        assert pool.watch is not None
        pool.watch.settle()


def _serve(sock: socket.socket, pool: "StagePool") -> None:
    assert pool.watch is not None
    while True:
        pool.lend()
        pool.watch.prune()
        # refill only when no job has come for a moment: a fork then competes with no job's start
        ready = select.select([sock, *pool.lent_out, *pool.watch.pidfds()], [], [],
                              None if pool.full else REFILL_AFTER_IDLE_S)[0]
        ended = [r for r in ready if isinstance(r, int)]  # stages that ended (pidfds)
        if ended:
            pool.watch.ended(ended)
            ready = [r for r in ready if not isinstance(r, int)]
        if not ready:
            if not ended:
                pool.add_one()
            continue
        msg, fds = b"", []
        if sock in ready:  # first: an agent that stops closes this end before it gives back its lent stage
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, 1024, MAX_FDS)
            except ConnectionResetError:  # the agent closed its end with a lent stage unread
                return
            if not msg:
                return  # no stage is forked for nobody: one forked now would make its cgroup after the agent's sweep
        if pool.lent_out and pool.lent_out[0] in ready:
            pool.returned()
        if not msg:
            continue
        try:
            pool.dispatch(fds, HOLD if msg == HOLD else JOB)
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

    One waiting stage at a time is lent to the agent (`lend`: its socket, sent over): the agent
    hands its next job straight to that stage, and the job does not wait for this process to be
    scheduled on its way (on a busy host each wake-up can wait a time slice). A lent stage is the
    agent's alone, never given a job here; once it has one (it closes its socket) the next is lent.
    Jobs that come while the agent holds none (a burst) come here, to the other waiting stages.
    """

    def __init__(self, agent_fd: int, size: int = POOL_SIZE, watch: StageWatch | None = None) -> None:
        self.agent_fd = agent_fd
        self.size = size
        self.idle: list[socket.socket] = []
        self.lent_out: list[socket.socket] = []  # at most one: our end of the stage the agent holds
        self.watch = watch  # the warm launcher's: a stage that dies under its stage name leaves no cgroup
        self.names: dict[socket.socket, str] = {}  # each stage's cgroup name, by our end of its socket
        self._agent = socket.socket(fileno=os.dup(agent_fd)) if agent_fd >= 0 else None

    @property
    def full(self) -> bool:
        return len(self.idle) + len(self.lent_out) >= self.size

    def lend(self) -> None:
        """Lend the agent a waiting stage, if it holds none."""
        if self.lent_out or not self.idle or self._agent is None:
            return
        try:
            socket.send_fds(self._agent, [LENT], [self.idle[0].fileno()])
        except OSError:
            return  # the agent is gone: serve() hears it
        self.lent_out.append(self.idle.pop(0))

    def returned(self) -> None:
        """The lent stage closed its socket: it took the agent's job (or died)."""
        self._let_go(self.lent_out.pop(), taken=True)
        self._top_up()

    def fill(self) -> None:
        while not self.full:
            self.add_one()

    def add_one(self) -> None:
        self.idle.append(self._spawn())

    def dispatch(self, fds: list[int], kind: bytes = b"job") -> None:
        """Hand one job's descriptors to a waiting stage (one that died is skipped)."""
        for _ in range(self.size + 1):
            stage = self.idle.pop(0) if self.idle else self._spawn()
            try:
                socket.send_fds(stage, [kind], fds)
            except OSError:
                self._let_go(stage, taken=False)
                continue
            self._let_go(stage, taken=True)
            self._top_up()
            return
        raise RuntimeError("no sandbox stage could take the job")

    def _top_up(self) -> None:
        """A job took the last waiting stage: fork the next one now. Otherwise the pool is topped
        up when no job has come for a moment (a fork then competes with no job's start), but in a
        burst that moment does not come, and each next job forked its own stage and waited while
        it was prepared (the namespaces, the cgroup move)."""
        if self.size and not self.idle and not self.lent_out:  # a pool of none (a node's one job) keeps none
            self.add_one()

    def _let_go(self, stage: socket.socket, taken: bool) -> None:
        name = self.names.pop(stage, None)
        stage.close()
        if taken and name is not None and self.watch is not None:
            self.watch.taken(name)

    def _spawn(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        name = sequence.stage_cgroup_name()
        pid = os.fork()
        if pid == 0:
            _stage_waits(theirs, name)
        theirs.close()
        self.names[ours] = name
        if self.watch is not None:
            self.watch.forked(pid, name)
        return ours


def _stage_waits(sock: socket.socket, name: str) -> NoReturn:
    """A stage-1 process: prepared ahead, blocked until the launcher hands it a job, then the job's."""
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)  # the agent's socket and other stages' sockets are not ours
    set_process_name(IDLE_STAGE_NAME)
    assert DRIVER is not None
    stage = sequence.Stage(DRIVER, name)
    sequence.stage_ahead(stage)
    stage.ahead = _bind_ahead()
    _rehearse()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1024, MAX_FDS)
    except BaseException:  # noqa: BLE001
        msg = b""
    if msg == HOLD:
        _hold(stage, sock, fds)
    if stage.ahead is not None:  # a holder's alone
        stage.ahead.drop()
        stage.ahead = None
    if not msg:
        os._exit(0)
    spec_fd, out_fd, err_fd, status_fd, *extra = fds
    go_fd = None
    try:
        spec = _read_spec(spec_fd)
        go_fd = extra.pop(0) if spec.wait_for_go else None
        in_fd = extra.pop(0) if spec.stdin_pipe else None
        _arrange_fds(out_fd, err_fd, status_fd, go_fd, in_fd)
    except BaseException as exc:  # noqa: BLE001
        sequence.fail_setup(stage.problem or f"sandbox stage 1: receiving the job: {exc}")
    sequence.stage_1(stage, spec, go_fd is not None)


def _bind_ahead() -> aheadsocket.Ahead | None:
    """The socket the holder will listen on, bound now (none: the holder binds one itself)."""
    if SOCKET_DIR is None:
        return None
    try:
        return aheadsocket.Ahead.bind(SOCKET_DIR)
    except OSError:
        return None


def _hold(stage: sequence.Stage, sock: socket.socket, fds: list[int]) -> NoReturn:
    """The stage becomes the holder of its job (the spec and a control connection came)."""
    try:
        sock.close()
        spec_fd, control_fd = fds
        spec = _read_spec(spec_fd)
        os.close(spec_fd)
    except BaseException:  # noqa: BLE001 - not a usable job
        os._exit(0)  # the agent sees its control connection close without a hello: reason setup
    holder.hold(stage, spec, control_fd)


def _read_spec(spec_fd: int) -> SandboxSpec:
    """The spec from its memfd: read whole at once, no file object."""
    size, parts = os.fstat(spec_fd).st_size, []
    while size > 0:
        part = os.pread(spec_fd, size, sum(map(len, parts)))
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return SandboxSpec.from_json_dict(json.loads(b"".join(parts)))


def _rehearsal_spec() -> SandboxSpec:
    """A spec shaped like a job's (mounts, environment, /etc files, masks, limits with devices)."""
    mounts = [Mount(f"/usr/{name}", f"/usr/{name}") for name in ("bin", "lib", "lib64", "sbin", "share", "libexec", "local")]
    return SandboxSpec(job_id="0" * 16, job_type=JobType.STANDARD, root_dir="/", argv=["/bin/true"],
                       env={"PATH": BASE_PATH, "HOME": "/work", "JOB_ID": "0" * 16, "LANG": "C.UTF-8", "TMPDIR": "/tmp"},
                       uid=65534, gid=65534, mounts=mounts, masks=["/proc/kcore", "/proc/keys", "/proc/timer_list"],
                       etc_files={"passwd": "x\n", "group": "x\n", "hosts": "x\n"},
                       cgroup_limits=cgroups.CgroupLimits(cpu_percent=100, memory_mb=512, pids=64,
                                                          devices=(("c", 1, 3), ("c", 1, 5), ("c", 5, 0))),
                       state_dir="/", holder_token="0" * 32, timeout_s=60.0)


def _rehearse() -> None:
    """A waiting stage decodes a spec like its job's ahead, and makes the objects a holder makes
    first: in a freshly forked process every shared page written first (an object's reference
    count, a type's cache, the allocator's arenas) is copied on that write, which made the same
    Python work about twice as slow on the job's way as warm. Done here, those copies are made
    before the job comes. Nothing of it is kept, and a failure changes nothing."""
    try:
        rehearsal()
    except Exception:  # noqa: BLE001 - the job's own decoding reports what is wrong with its spec
        pass


def rehearsal() -> SandboxSpec:
    spec = SandboxSpec.from_json_dict(json.loads(REHEARSAL))
    SelectorLoop().selector.close()
    Outcome().mark("came")
    translator_for(spec)
    return spec


def _arrange_fds(out_fd: int, err_fd: int, status_fd: int, go_fd: int | None, in_fd: int | None) -> None:
    """0 = the job's input pipe (a session's) or /dev/null, 1/2 = the job's output pipes,
    3 = status, 4 = go; nothing else survives."""
    stdin = in_fd if in_fd is not None else os.open("/dev/null", os.O_RDONLY)
    targets = [stdin, out_fd, err_fd, status_fd] + ([go_fd] if go_fd is not None else [])
    # first above every fixed slot, so that no dup2 below can overwrite a descriptor still needed
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in targets]
    for slot, fd in zip((0, 1, 2, status.STATUS_FD, status.GO_FD), moved):
        os.dup2(fd, slot)
    close_range(5 if go_fd is not None else 4)


def main() -> None:
    fd, cgroup_parent = int(sys.argv[1]), sys.argv[2]
    scrub_command_line("jnb-launcher")  # its forks are every job's stage and holder: no host path in their cmdline
    options = sys.argv[3:]
    global SOCKET_DIR
    for flag, value in zip(options[::2], options[1::2]):
        if flag == "--nofile" and int(value):  # the soft descriptor limit the agent had before it raised its own
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(value), hard), hard))
        elif flag == "--sockets":  # a folder of the agent's, on its job folders' filesystem
            SOCKET_DIR = value
        elif flag == "--translator":  # a layer above the sandbox registers its output translator
            importlib.import_module(value)
    sock = socket.socket(fileno=fd)
    serve(sock, cgroup_parent)


if __name__ == "__main__":
    main()
