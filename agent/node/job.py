"""The node side's holder of one job: the agent's SandboxSpec made local to this node, started
with the local launcher's code, its output and status streamed back as frames (wire.py).

It owns what the job holds on the node and removes all of it: the job's cgroup, its root folder,
the copy of /work (sent to the agent as `file` frames first), and the cgroup parent once no other
job of this node root runs. It enforces the stop (Slurm's SIGTERM, e.g. from scancel or a node
going down: the job gets SIGTERM, and SIGKILL after the grace the agent chose) and the timeout.
"""

from __future__ import annotations

import base64
import codecs
import errno
import fcntl
import hashlib
import os
import selectors
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import gres
from .shared import STOP_SIGNALS, NodeSetupError
from ..cluster import wire
from ..fs import remove_tree
from ..jobs import etcfiles
from ..sandbox import cgroups, launcher, status
from ..sandbox.spec import JobType, SandboxSpec
from ..cluster.launcher_client import JobPipes, hand_over
from .relay import InputRelay

READ_CHUNK = wire.OUT_CHUNK
FORWARDED = (status.Kind.RUNNING, status.Kind.SETUP_ERROR, status.Kind.EXEC_ERROR, status.Kind.EXIT,
             status.Kind.ARTIFACTS_ERROR)


class NodeJob:
    def __init__(self, payload: dict[str, Any], root: str, runtimes: str | None) -> None:
        self.payload = payload
        self.root = Path(os.path.realpath(root))
        self.runtimes = runtimes
        self.node = os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
        self.parent = "jnb-" + hashlib.sha1(str(self.root).encode()).hexdigest()[:8]
        self.stop_reason: str | None = None
        self.init_pidfd: int | None = None
        self.kill_at: float | None = None
        self.timeout_at: float | None = None
        self.sent = 0
        self.relay: InputRelay | None = None
        self.status_buffer = bytearray()
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in ("stdout", "stderr")}
        self.said_hello = False
        self.gone = False            # our stdout (the agent's srun) is gone

    # ---- the whole life ------------------------------------------------------------------

    def run(self) -> int:
        lock = self._lock()
        spec = None
        try:
            spec = self.prepare()
            self.pump(self.start(spec))
        except NodeSetupError as exc:  # a runtime this node lacks, GPUs it cannot match, ...
            self._setup_failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug here still ends the job with a reason
            self._setup_failed(f"node side on {self.node}: {type(exc).__name__}: {exc}")
        finally:
            try:
                self.finish(spec)
            finally:
                self._release(lock)
        return 0

    def _setup_failed(self, message: str) -> None:
        if not self.said_hello:
            self.send("hello", node=self.node, slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                      gpus=[], devices=[])
        self.send("status", event={"event": "setup_error", "message": message})

    # ---- before: the spec, local to this node ------------------------------------------

    def prepare(self) -> SandboxSpec:
        """The agent's spec with this node's paths, runtime mounts and GPUs; nothing is made yet."""
        p = self.payload
        spec = SandboxSpec.from_json_dict(p["spec"])
        if spec.job_type != JobType.STANDARD or spec.network != "none" or p["slurm_job_name"] != (
                f"{p['job_name_prefix']}{spec.job_id}"):
            raise NodeSetupError("the node side runs production jobs without network only")
        spec.root_dir = str(self.root / "jobs" / spec.job_id)
        spec.artifacts_dir = str(self.root / "work" / spec.job_id)
        spec.wait_for_go = False
        limits = spec.cgroup_limits  # the agent's disk is not this node's: throttle this node's own
        limits.io_device = cgroups.whole_disk_of(str(self.root)) if limits.io_bps else None
        spec.mounts = etcfiles.etc_binds()
        spec.system = None  # the agent's path; the base image is found by its build, as a runtime is
        if p.get("runtime") or p.get("base"):
            from .runtime import mounts as runtime_mounts  # the manifest code loads for runtime jobs only

            if p.get("runtime"):
                spec.mounts += runtime_mounts(p["runtime"], self.runtimes or "", self.node)
            if p.get("base"):
                spec.system = replace(runtime_mounts(p["base"], self.runtimes or "", self.node)[0], target="/usr")
        alloc = gres.allocation(dict(os.environ), int(p.get("gpus") or 0)) if p.get("gpus") else gres.Allocation()
        spec.devices = alloc.devices
        if alloc.visible is not None:
            spec.env["CUDA_VISIBLE_DEVICES"] = alloc.visible
        self.send("hello", node=self.node, slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                  gpus=alloc.indices, devices=[os.path.basename(d) for d in alloc.devices])
        self.said_hello = True
        return spec

    def start(self, spec: SandboxSpec) -> JobPipes:
        """A stage forked from this process with the local launcher's code takes the job. The stop
        signals are still blocked (node.main); ignored too, the stage and init inherit that."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the stage
        launcher.warm_up(self.parent, (JobType.STANDARD,))
        os.makedirs(spec.root_dir, mode=0o700)
        return hand_over(spec, False, launcher.StagePool(-1, size=0).dispatch)

    # ---- during: frames out, stop and timeout -----------------------------------------

    def pump(self, pipes: JobPipes) -> None:
        """Until the sandbox's stdout, stderr and status pipes have all ended: their data out as
        frames, a session's input in, Slurm's signals and the timers acted on."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: None)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came early is handled now
        sel = selectors.DefaultSelector()
        for name, fd in (("stdout", pipes.stdout), ("stderr", pipes.stderr), ("status", pipes.status)):
            sel.register(fd, selectors.EVENT_READ, name)
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        if pipes.stdin is not None:
            self.relay = InputRelay(pipes.stdin, self._signal, lambda: self.stop("stopped"))
            sel.register(0, selectors.EVENT_READ, "input")
        open_pipes = 3
        while open_pipes:
            self._want_output(sel)
            for key, _ in sel.select(self._next_wait()):
                open_pipes -= self._serve(sel, key, wake_r)
            self._timers()
        signal.set_wakeup_fd(-1)
        for fd in (wake_r, wake_w):
            os.close(fd)
        if self.relay is not None:
            self.relay.close()

    def _serve(self, sel: selectors.BaseSelector, key: selectors.SelectorKey, wake_r: int) -> int:
        """One ready descriptor; 1 if a sandbox pipe ended with it."""
        if key.data == "signal":
            os.read(wake_r, 64)
            self.stop("stopped")
            return 0
        if key.data == "sandbox-in":
            assert self.relay is not None
            self.relay.flush()
            return 0
        fds: list[int] = []
        if key.data == "status":  # a seqpacket socket: "started" brings the init's pidfd
            data, fds, _flags, _addr = socket.recv_fds(key.fileobj, READ_CHUNK, 1)  # type: ignore[arg-type]
        else:
            data = os.read(key.fd, READ_CHUNK)
        if not data:
            sel.unregister(key.fd)
            if key.data == "status":
                key.fileobj.close()  # type: ignore[union-attr]
            elif key.data != "input":
                os.close(key.fd)
        if key.data == "input":
            assert self.relay is not None
            self.relay.from_agent(data)
            return 0
        if key.data == "status":
            self._status(self.status_buffer, data, fds)
        else:
            self._output(key.data, self.decoders[key.data].decode(data, final=not data))
        return 0 if data else 1

    def _want_output(self, sel: selectors.BaseSelector) -> None:
        """Watch the sandbox's stdin for room exactly while input waits for it."""
        wanted = self.relay is not None and self.relay.wants_to_write
        watched = any(k.data == "sandbox-in" for k in sel.get_map().values())
        if wanted and not watched:
            assert self.relay is not None and self.relay.target is not None
            sel.register(self.relay.target, selectors.EVENT_WRITE, "sandbox-in")
        elif watched and not wanted:
            sel.unregister(next(k.fd for k in sel.get_map().values() if k.data == "sandbox-in"))

    def _status(self, buffer: bytearray, data: bytes, fds: list[int]) -> None:
        for msg in status.take_lines(buffer, data):
            if msg.kind is status.Kind.STARTED and fds and self.init_pidfd is None:
                self._adopt_init(fds.pop())
            elif msg.kind is status.Kind.RUNNING:
                timeout = self.payload.get("timeout_s")
                self.timeout_at = time.monotonic() + float(timeout) if timeout else None
            if msg.kind in FORWARDED:
                # the agent gets the message without pids: a node's pids mean nothing to it
                self.send("status", event=status.Message(msg.kind, message=msg.message, exit_code=msg.exit_code,
                                                          signal=msg.signal).to_dict())
        for fd in fds:  # a descriptor no message took
            os.close(fd)

    def _output(self, stream: str, text: str) -> None:
        """Output as it comes, in pieces; beyond the agent's limit (plus one piece, so that the
        agent sees the overflow and says so) it is read and dropped."""
        if not text or self.sent > int(self.payload.get("max_output_bytes", 64 << 20)):
            return
        self.sent += len(text.encode())
        self.send("out", s=stream, d=text)

    def _adopt_init(self, pidfd: int) -> None:
        """The init's pidfd, which stage 1 opened before the init could be reaped."""
        self.init_pidfd = pidfd
        if self.stop_reason:
            self._signal(signal.SIGKILL)

    def stop(self, reason: str) -> None:
        """SIGTERM now (the job may already have it from Slurm), SIGKILL after the grace."""
        if self.stop_reason is None:
            self.stop_reason = reason
            grace = float(self.payload.get("grace_s", 2))
            self._signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            self.kill_at = time.monotonic() + grace

    def _signal(self, sig: int) -> None:
        """SIGKILL: the whole cgroup; anything else: to the init, which forwards it to the job."""
        if sig == signal.SIGKILL:
            self._cgroup().kill()
        elif self.init_pidfd is not None:
            try:
                signal.pidfd_send_signal(self.init_pidfd, sig)
            except ProcessLookupError:
                pass

    def _next_wait(self) -> float | None:
        times = [t for t in (self.kill_at, self.timeout_at) if t is not None]
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _timers(self) -> None:
        now = time.monotonic()
        if self.timeout_at is not None and now >= self.timeout_at:
            self.timeout_at = None
            self.stop("timeout")
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self._signal(signal.SIGKILL)

    # ---- after: usage, files, cleanup -------------------------------------------------

    def finish(self, spec: SandboxSpec | None) -> None:
        """Usage and OOM from the job's cgroup, then every trace of the job removed; /work goes
        to the agent first. Runs after a setup failure too (spec None: nothing was made)."""
        usage: dict[str, Any] = {}
        oom = False
        if spec is not None and launcher.DRIVER is not None:
            group = self._cgroup()
            try:
                u = group.usage()
                usage = {"cpu_s": round(u.cpu_s, 3), "memory_peak_bytes": u.memory_peak_bytes}
                oom = group.oom_killed()
            except cgroups.CgroupError:
                pass
            group.remove()
            _rmdir(spec.root_dir)
        if self.init_pidfd is not None:
            os.close(self.init_pidfd)
        if spec is not None and spec.artifacts_dir and os.path.isdir(spec.artifacts_dir):
            self.send_files(spec.artifacts_dir)
            remove_tree(spec.artifacts_dir)
        self.send("end", usage=usage, oom=oom, stop=self.stop_reason)

    def send_files(self, top: str) -> None:
        """What the job left in /work (the stage's bounded copy: regular files and folders)."""
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, top)
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    mode = os.fstat(fd).st_mode & 0o755
                    chunk = f.read(wire.FILE_CHUNK)
                    while True:
                        following = f.read(wire.FILE_CHUNK)
                        self.send("file", p=rel, m=mode, d=base64.b64encode(chunk).decode(), end=not following)
                        if not following:
                            break
                        chunk = following

    # ---- plumbing ------------------------------------------------------------------------

    def send(self, kind: str, **fields: Any) -> None:
        """One frame on stdout. If the agent's srun is gone, the job is stopped at once."""
        if self.gone:
            return
        data = memoryview(wire.frame(kind, **fields))
        try:
            while data:
                data = data[os.write(1, data):]
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self.gone = True
            self.stop_reason = self.stop_reason or "stopped"
            self.payload["grace_s"] = 0
            self._signal(signal.SIGKILL)

    def _cgroup(self) -> cgroups.JobCgroup:
        assert launcher.DRIVER is not None
        return launcher.DRIVER.open(f"job-{self.payload['spec']['job_id']}")

    def _lock(self) -> int:
        """A shared lock on the node root for the job's life. Whoever can take it exclusively
        first is alone on this node root and sweeps what a killed node side left."""
        for sub in ("", "jobs", "work"):
            (self.root / sub).mkdir(mode=0o700 if sub else 0o755, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._sweep()
        except BlockingIOError:
            pass
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def _sweep(self) -> None:
        driver = cgroups.detect(self.parent)
        for name in driver.leftovers():
            driver.open(name).remove()
        for sub in ("jobs", "work"):
            for entry in (self.root / sub).iterdir():
                remove_tree(str(entry))

    def _release(self, fd: int) -> None:
        """Drop the lock; the last job of this node root removes the cgroup parent."""
        fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            cgroups.detect(self.parent).remove_parent()
        except (BlockingIOError, cgroups.CgroupError):
            pass
        finally:
            os.close(fd)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
