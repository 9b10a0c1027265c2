"""The hand-over of a text job's holder to jnb-holder (holder.c), and the plan that goes with it.

holder.py takes the job, prepares its root, spawns the init and announces itself; a job whose
output is text (output.TextOutput) then needs nothing of Python until its end, and a fork of the
warm launcher costs megabytes of its own pages for as long as the job runs. So the holder execs
jnb-holder: the same process (pid, cgroup, namespaces, the log's lock, which lives on the open
file description), its descriptors kept open across the exec and named in a plan, a sealed memfd
of tagged records (u32 tag, u32 length, value; strings end with a NUL) as initplan.py writes the
init's. Sessions and any other translator stay with the Python holder, and so does every job
when jnb-holder was not built or is stale (preflight.py says so once, when the agent starts).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from . import builtfrom, control, initplan, workcopy
from .cgroups import JobCgroup
from .spec import SandboxSpec

BINARY = os.path.join(sys.prefix, "libexec", "jnb-holder")

# the records and descriptor roles (holder.c has the same numbers)
JOB_ID, TOKEN, BOOT_ID, STATE, UID, TIMEOUT, GRACE, CAP, SEQ, MARK, FD = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
INIT_PID, GO_DEADLINE, WORK_DIR, WORK_TO, WORK_LIMITS = 12, 13, 14, 15, 16
ROLES = {"log": 1, "dir": 2, "first": 3, "listen": 4, "stdout": 5, "stderr": 6, "status": 7, "go": 8, "stdin": 9,
         "init": 10, "cpu_stat": 11, "cpu_ns": 12, "peak": 13, "events": 14, "failcnt": 15, "limit": 16}


@dataclass(frozen=True)
class State:
    """Where the Python holder stands at the hand-over (nothing asked by an agent has been read yet)."""

    seq: int                      # the log's last seq, all of it written
    state: str                    # waiting (for go) or starting
    marks: Mapping[str, float]    # outcome.py's marks so far
    init_pid: int
    go_deadline: float | None     # CLOCK_MONOTONIC when a job still waiting for go is aborted


_checked: tuple[tuple[int, ...], bool] | None = None


def available() -> bool:
    """jnb-holder is there and was built from the sources beside this package (builtfrom.py: a
    stale one would take the job and fail on its plan). The sources are read again only when the
    binary or its stamp changed; the launcher asks once before it forks (warm_up)."""
    global _checked
    try:
        binary = os.stat(BINARY)
        if not os.access(BINARY, os.X_OK):
            return False
    except OSError:
        return False
    try:
        stamp = os.stat(builtfrom.stamp_path(BINARY))
        key: tuple[int, ...] = (binary.st_ino, binary.st_mtime_ns, stamp.st_ino, stamp.st_mtime_ns, stamp.st_size)
    except OSError:
        key = (binary.st_ino, binary.st_mtime_ns)
    if _checked is None or _checked[0] != key:
        _checked = (key, not builtfrom.stale(BINARY))
    return _checked[1]


def hand_over(spec: SandboxSpec, cgroup: JobCgroup | None, fds: Mapping[str, int], state: State) -> None:
    """Exec jnb-holder with `fds` (by role) and the job's plan; returns if it is missing or the exec
    failed (the caller keeps the job then)."""
    if not available():
        return
    usage = open_usage_files(cgroup.usage_files()) if cgroup is not None else {}
    try:
        data = plan(spec, fds={**fds, **usage}, state=state, boot_id=control.boot_id())
        exec_holder(data, {**fds, **usage})
    except ValueError:
        pass  # a plan it cannot carry (a NUL byte in a name): the Python holder keeps the job
    finally:
        for fd in usage.values():
            os.close(fd)


def _text(tag: int, value: str) -> bytes:
    raw = value.encode()
    if b"\0" in raw:
        raise ValueError(f"a NUL byte in {value[:40]!r}")
    return struct.pack("=II", tag, len(raw) + 1) + raw + b"\0"


def _packed(tag: int, fmt: str, *values: object) -> bytes:
    raw = struct.pack(fmt, *values)
    return struct.pack("=II", tag, len(raw)) + raw


def plan(spec: SandboxSpec, *, fds: Mapping[str, int], state: State, boot_id: str) -> bytes:
    """The records jnb-holder runs the job's steady state by; with a files folder, where /work
    goes at the job's end and within which limits (holder_copy.c copies it as workcopy.py does)."""
    parts = [_text(JOB_ID, spec.job_id), _text(TOKEN, spec.holder_token), _text(BOOT_ID, boot_id),
             _text(STATE, state.state), _packed(UID, "=I", spec.uid),
             _packed(TIMEOUT, "=d", float(spec.timeout_s or 0)), _packed(GRACE, "=d", float(spec.stop_grace_s)),
             _packed(CAP, "=Q", spec.max_output_bytes or 0), _packed(SEQ, "=Q", state.seq),
             _packed(INIT_PID, "=i", state.init_pid)]
    parts += [_mark(name, at) for name, at in state.marks.items()]
    parts += [_packed(FD, "=Ii", ROLES[role], fd) for role, fd in fds.items()]
    if state.go_deadline is not None:
        parts.append(_packed(GO_DEADLINE, "=d", state.go_deadline))
    if spec.artifacts_dir:
        entries = -1 if spec.work_files is None else spec.work_files
        parts += [_text(WORK_DIR, os.path.join(spec.root_dir, "work")), _text(WORK_TO, spec.artifacts_dir),
                  _packed(WORK_LIMITS, "=qq", workcopy.work_limit(spec), entries)]
    return b"".join(parts)


def _mark(name: str, at: float) -> bytes:
    value = struct.pack("=d", at) + name.encode() + b"\0"
    return struct.pack("=II", MARK, len(value)) + value


def open_usage_files(paths: Mapping[str, str]) -> dict[str, int]:
    """The cgroup's usage files, open (read at the job's end by a process that resolves no path);
    one that cannot be opened is left out, and jnb-holder then records no usage, as holder.py
    records none when a read fails."""
    fds = {}
    for role, path in paths.items():
        try:
            fds[role] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass
    return fds


def exec_holder(data: bytes, fds: Mapping[str, int]) -> None:
    """Become jnb-holder; returns only if the exec failed (the caller keeps the job then)."""
    plan_fd = initplan.sealed(data)
    try:
        for fd in (*fds.values(), plan_fd):
            os.set_inheritable(fd, True)
        os.execve(BINARY, ["jnb-holder", str(plan_fd)], {})
    except OSError:
        for fd in fds.values():
            os.set_inheritable(fd, False)
    finally:
        os.close(plan_fd)
