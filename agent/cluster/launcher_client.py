"""The agent's side of the warm launcher: start it, hand it specs, restart it if it died."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Unavailable
from ..sandbox.launcher import HOLD, JOB, LENT, MAX_FDS
from ..sandbox.spec import SandboxSpec

FD_SIZE = array.array("i").itemsize


@dataclass
class JobPipes:
    """The agent's ends of one job's pipes (read ends, plus the write end of `go`)."""

    stdout: int
    stderr: int
    status: socket.socket   # a seqpacket socket: the init's pidfd comes with the "started" message
    go: int | None
    stdin: int | None = None   # a session's: the agent writes the runner's requests here


def hand_over(spec: SandboxSpec, wait_for_go: bool, send: Callable[[list[int]], None]) -> JobPipes:
    """Make the job's descriptors (the spec in a memfd, its pipes), `send` the stage's ends (the
    warm launcher's socket, or a stage pool in this very process on a cluster's node), and keep ours."""
    spec.wait_for_go = wait_for_go
    memfd = os.memfd_create(f"jnb-spec-{spec.job_id}", os.MFD_CLOEXEC)
    status_ours, status_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    count = 2 + int(wait_for_go) + int(spec.stdin_pipe)
    pipes: list[tuple[int, int]] = [os.pipe2(os.O_CLOEXEC) for _ in range(count)]
    try:
        os.write(memfd, json.dumps(spec.to_json_dict()).encode())
        (out_r, out_w), (err_r, err_w) = pipes[:2]
        extra = pipes[2:]
        go_pipe = extra.pop(0) if wait_for_go else None
        in_pipe = extra.pop(0) if spec.stdin_pipe else None
        theirs = [memfd, out_w, err_w, status_theirs.fileno()] + [p[0] for p in (go_pipe, in_pipe) if p is not None]
        send(theirs)
    except BaseException:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        status_ours.close()
        raise
    finally:
        os.close(memfd)
        status_theirs.close()
    for _, w in pipes[:2]:
        os.close(w)
    for pipe in (go_pipe, in_pipe):
        if pipe is not None:
            os.close(pipe[0])
    return JobPipes(out_r, err_r, status_ours, go_pipe[1] if go_pipe else None, in_pipe[1] if in_pipe else None)


class Launcher:
    def __init__(self, cgroup_parent: str, job_nofile: int | None = None, translators: list[str] | None = None,
                 socket_dir: str | None = None) -> None:
        self.cgroup_parent = cgroup_parent  # stages make their cgroups under it, named job-<id> once used
        self.socket_dir = socket_dir  # stages bind their holder's socket there ahead (sandbox/aheadsocket.py)
        self.job_nofile = job_nofile  # the soft descriptor limit of jobs (the agent raised its own)
        self.translators = translators or []  # modules the launcher imports: their output translators
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lent: list[socket.socket] = []  # waiting stages the launcher lent us (launcher.StagePool)

    def start(self) -> None:
        self._give_back()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "joblet_agent.sandbox.launcher", str(theirs.fileno()), self.cgroup_parent]
            + ["--nofile", str(self.job_nofile or 0)]
            + (["--sockets", self.socket_dir] if self.socket_dir else [])
            + [arg for module in self.translators for arg in ("--translator", module)],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
        )
        theirs.close()
        ours.settimeout(60)
        ready = ours.recv(16)
        ours.settimeout(None)
        if ready != b"ready":
            self._proc.kill()
            raise Unavailable("the sandbox launcher failed to start (see the agent's stderr)")
        self._sock = ours

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def launch(self, spec: SandboxSpec, wait_for_go: bool = False) -> JobPipes:
        """Fork a sandbox for `spec`; returns the pipes to read its output and status from (and,
        for a spec with `stdin_pipe`, to write its input to)."""
        return hand_over(spec, wait_for_go, self._send)

    def hold(self, spec: SandboxSpec) -> socket.socket:
        """Hand `spec` to a waiting stage that becomes the sandbox's holder (sandbox/holder.py);
        returns the agent's end of the holder's first control connection (sandbox/control.py)."""
        memfd = os.memfd_create(f"jnb-spec-{spec.job_id}", os.MFD_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.write(memfd, json.dumps(spec.to_json_dict()).encode())
            self._send([memfd, theirs.fileno()], HOLD)
        except BaseException:
            ours.close()
            raise
        finally:
            os.close(memfd)
            theirs.close()
        return ours

    def _send(self, fds: list[int], kind: bytes = JOB) -> None:
        """Straight to a stage the launcher lent us where we hold one (no wake-up of the launcher
        on the job's way), through the launcher otherwise."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is not None:
                self._give_back()  # its stages died with it
            self._take_lent()
            while self._lent:
                stage = self._lent.pop(0)
                try:
                    socket.send_fds(stage, [kind], fds)
                    return
                except OSError:
                    continue  # it died: the launcher saw it close and lends another
                finally:
                    stage.close()
            for attempt in range(2):
                if self._sock is None or (self._proc and self._proc.poll() is not None):
                    self.start()
                try:
                    assert self._sock is not None  # start() made it
                    socket.send_fds(self._sock, [kind], fds)
                    return
                except OSError:
                    if attempt:
                        raise Unavailable("the sandbox launcher is not answering") from None
                    self._sock = None

    def _take_lent(self) -> None:
        """The stages lent since the last job (the messages wait on our socket; nothing blocks)."""
        while self._sock is not None:
            try:  # not socket.recv_fds: it drops its flags (CPython 3.11), and this must not block
                msg, ancdata, _flags, _addr = self._sock.recvmsg(16, socket.CMSG_LEN(MAX_FDS * FD_SIZE),
                                                                 socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # a launcher that died: _send starts another
            if not msg:
                return
            fds = array.array("i")
            for level, kind, data in ancdata:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                    fds.frombytes(data[:len(data) - len(data) % FD_SIZE])
            lent = [socket.socket(fileno=fd) for fd in fds]
            self._lent += lent if msg == LENT else []
            for stage in lent if msg != LENT else []:
                stage.close()

    def _give_back(self) -> None:
        for stage in self._lent:
            stage.close()
        self._lent.clear()

    def stop(self) -> None:
        with self._lock:
            if self._sock is not None:  # first: the launcher then forks no stage for the lent one given back
                self._sock.close()
                self._sock = None
            self._give_back()
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None
