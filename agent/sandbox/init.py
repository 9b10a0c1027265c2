"""The in-sandbox init: PID 1 of the job's namespaces.

`run_init` answers "what happens before the user's code runs?" in the order the kernel sees it
(bubblewrap's lesson). Each step is a call into a module with one job. The init is a fork of the
warm launcher, never an exec of a host binary into the sandbox.
"""

from __future__ import annotations

import os
import resource
import signal
from typing import NoReturn

from . import identity, mounts, namespaces, reaper, seccomp, status
from .libc import PR_SET_PDEATHSIG, close_range, prctl, set_process_name, sethostname
from ..fs import write_beneath
from .spec import SandboxSpec

SETUP_FAILED_EXIT = 125
EXEC_FAILED_EXIT = 127


class SetupError(Exception):
    """A step of the sandbox set-up failed; the message names the step."""


def run_init(spec: SandboxSpec) -> NoReturn:
    """Build the job's sandbox, start its command under the reaper, report how it ended."""
    step = "validate job context"
    set_process_name("jnb-init")
    reaper.hold_signals()
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        validate_context(spec)
        identity.prefer_for_oom_kill()
        step = "private mount namespace"
        namespaces.new_mount_namespace()
        step = "build root"
        build_root(spec)
        step = "set hostname"
        sethostname(spec.hostname)
        step = "pivot_root"
        mounts.pivot(spec.root_dir)
        mounts.root_readonly()
        step = "loopback"
        namespaces.loopback_up()
        step = "wait for the agent"
        wait_for_go(spec)
        step = "cgroup namespace"
        namespaces.own_cgroup_namespace()
    except Exception as exc:  # noqa: BLE001 - every failure becomes reason "setup"
        status.send(status.setup_error(f"{step}: {exc}"))
        os._exit(SETUP_FAILED_EXIT)

    main_pid = os.fork()
    if main_pid == 0:
        exec_job(spec)
    reaper.install_forwarding(main_pid)
    identity.reduce_reaper()
    status.send(status.running(main_pid))
    wait_status = reaper.reap_until(main_pid)
    if os.WIFSIGNALED(wait_status):
        status.send(status.exited(None, os.WTERMSIG(wait_status)))
    else:
        status.send(status.exited(os.WEXITSTATUS(wait_status), None))
    os._exit(0)


def validate_context(spec: SandboxSpec) -> None:
    """Refuse to touch any filesystem unless this really is a job's PID 1 (the seed's check)."""
    if not spec.job_id or spec.env.get("JOB_ID") != spec.job_id:
        raise SetupError("not in job context: JOB_ID not set")
    if os.getpid() != 1:
        raise SetupError("not PID 1 of a new PID namespace: refusing to build a sandbox")


def build_root(spec: SandboxSpec) -> None:
    """Lay out the job's root on its tmpfs: read-only system binds, /etc copies, /work, /tmp,
    runtime mounts, masks, uploads, proc and dev."""
    root = spec.root_dir
    table = mounts.MountTable()
    for name in ("usr", "etc", "work", "tmp", "proc", "dev"):
        os.mkdir(os.path.join(root, name), 0o755)
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(root, name))
        elif os.path.isdir(host):
            os.mkdir(os.path.join(root, name), 0o755)
            mounts.bind(host, os.path.join(root, name), readonly=True, table=table)
    mounts.bind("/usr", os.path.join(root, "usr"), readonly=True, table=table)
    for name, content in spec.etc_files.items():
        write_beneath(os.path.join(root, "etc"), name, content.encode(), 0o644)
    for m in spec.mounts:
        target = mounts.mkdirs_beneath(root, m.target) if os.path.isdir(m.source) else _file_target(root, m.target)
        mounts.bind(m.source, target, readonly=m.readonly, table=table)
    for path in spec.masks:
        target = os.path.join(root, path.lstrip("/"))
        if os.path.isdir(target):
            mounts.mount_tmpfs(target, 1, 0o755)
            mounts.remount(target, mounts.MS_RDONLY | mounts.MS_NOSUID | mounts.MS_NODEV)
        elif os.path.exists(target):
            mounts.bind("/dev/null", target, readonly=True)
    work, tmp = os.path.join(root, "work"), os.path.join(root, "tmp")
    os.chown(work, spec.uid, spec.gid)
    os.chmod(tmp, 0o1777)
    for up in spec.uploads:
        write_beneath(work, up.path, up.content, up.mode, owner=(spec.uid, spec.gid))
    mounts.bind_self(work)
    mounts.bind_self(tmp)
    mounts.mount_proc(root)
    mounts.mount_dev(root, spec.shm_mb)


def _file_target(root: str, target: str) -> str:
    parent, _, name = target.strip("/").rpartition("/")
    directory = mounts.mkdirs_beneath(root, parent) if parent else root
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        open(path, "x").close()
    return path


def wait_for_go(spec: SandboxSpec) -> None:
    """Block until the agent has finished outside work (e.g. the job's veth); EOF means abort."""
    if spec.wait_for_go:
        go = os.read(status.GO_FD, 1)
        os.close(status.GO_FD)
        if go != b"g":
            raise SetupError("the agent aborted the job before it started")


def exec_job(spec: SandboxSpec) -> NoReturn:
    """In the job's main process: become the job user, keep only 0-2 open, seccomp last, exec."""
    try:
        os.setsid()
        os.chdir("/work")
        reaper.default_signals()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash writes no core file into the job
        identity.become_job_user(spec.uid, spec.gid)
        os.dup2(status.STATUS_FD, 3)
        os.set_inheritable(3, False)
        close_range(4)
        seccomp.load(spec.job_type)
        os.execvpe(spec.argv[0], spec.argv, spec.env)
    except FileNotFoundError:
        status.send(status.exec_error(f"{spec.argv[0]}: command not found in the sandbox"))
    except Exception as exc:  # noqa: BLE001
        status.send(status.exec_error(f"starting {spec.argv[0]}: {exc}"))
    os._exit(EXEC_FAILED_EXIT)
