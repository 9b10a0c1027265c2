"""The sandbox sequence: everything that runs between a job's spec and the job's exec, in order.

Three processes carry a job (launcher.py only forks stage 1 and hands it its job's descriptors):

  stage 1   forked by the launcher's pool before any job comes: STAGE_AHEAD. When its job comes:
            STAGE_1, then it forks the init, reports it, waits for it and copies /work out. A job
            the agent's own launcher takes is *held*: stage 1 becomes its holder (holder.py),
            which takes the job (TAKE), prepares its root (STAGE_1_ROOT), makes the job's pipes,
            forks the init and keeps the job until its end, outliving the agent. A cluster node's
            side holds its jobs itself and hands a stage the pipes (`stage_1`).
  init      PID 1 of the job's namespaces: INIT, then it forks the job and reaps until it ends.
  the job   EXEC, then execve of the user's command.

Each table lists functions, and a function's name is what a failure reports ("build root: ...",
reason `setup`): the report cannot drift from what ran. Read top to bottom, the tables are the
order the kernel sees (bubblewrap's): namespaces, private mounts, the root on a tmpfs, binds,
pivot_root, read-only root, network, identity, no_new_privs, Landlock, seccomp, exec.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from ..fs import copy_tree
from . import identity, landlock, mounts, namespaces, reaper, seccomp, status
from .cgroups import CgroupDriver, CgroupLimits, JobCgroup
from .libc import PR_SET_PDEATHSIG, close_range, prctl, set_process_name, sethostname
from .rootfs import build_root
from .spec import SandboxSpec

SETUP_FAILED_EXIT = 125
EXEC_FAILED_EXIT = 127


class SetupError(Exception):
    """A step of the sandbox set-up failed; the message names the step."""


@dataclass
class Stage:
    """What a stage-1 process holds of its own before its job comes: nothing of any job."""

    driver: CgroupDriver
    cgroup: JobCgroup | None = None
    problem: str | None = None  # a step ahead failed: told to the job that comes, as reason setup


def run_steps(steps: Sequence[Callable[..., None]], *args: Any) -> None:
    """Every step in order; the first that fails raises SetupError naming it."""
    for step in steps:
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - every failure becomes reason "setup"
            raise SetupError(f"{step_name(step)}: {exc}") from None


def step_name(step: Callable[..., None]) -> str:
    return step.__name__.replace("_", " ")


def fail_setup(message: str) -> NoReturn:
    status.send(status.setup_error(message))
    os._exit(SETUP_FAILED_EXIT)


# ---- stage 1, ahead of its job ---------------------------------------------------------------
# Forking, unsharing and above all joining a cgroup (on v1 the first move after a quiet moment
# waits for an RCU grace period) cost the same for every job, so they happen between jobs.


def default_child_signal(_: object) -> None:
    """The launcher lets the kernel reap its children; this process waits for its init itself."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def die_with_parent(_: object) -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def no_garbage_collection(_: object) -> None:
    """Stages are short-lived and allocate little; a collection would copy pages shared with the
    launcher."""
    gc.disable()


def new_session(_: object) -> None:
    os.setsid()


def join_own_cgroup(stage: Stage) -> None:
    """A cgroup of its own under the agent's parent, renamed after the job when the job comes."""
    stage.cgroup = stage.driver.create(f"stage-{os.urandom(6).hex()}", CgroupLimits())
    stage.cgroup.join(os.getpid())


def unshare_namespaces_ahead(_: Stage) -> None:
    namespaces.enter_job_namespaces(ahead=True)


STAGE_AHEAD = (default_child_signal, die_with_parent, no_garbage_collection, new_session, join_own_cgroup,
               unshare_namespaces_ahead)


def stage_ahead(stage: Stage) -> None:
    try:
        run_steps(STAGE_AHEAD, stage)
    except SetupError as exc:
        stage.problem = f"sandbox stage 1: {exc}"


# ---- stage 1, with its job -------------------------------------------------------------------


def name_cgroup_after_job(stage: Stage, spec: SandboxSpec) -> None:
    """From here on the agent finds the cgroup as `job-<id>`, and removes it when the job ends."""
    assert stage.cgroup is not None
    stage.cgroup = stage.cgroup.rename(f"job-{spec.job_id}")


def apply_limits(stage: Stage, spec: SandboxSpec) -> None:
    """The spec's limits, and a device allowlist made from what the job's /dev will hold (the
    hierarchy-less v2 leaves devices to the binds: only what mount_dev binds exists for the job)."""
    assert stage.cgroup is not None
    stage.cgroup.apply(replace(spec.cgroup_limits, devices=mounts.device_allowlist(spec.devices)))


def copy_host_mounts(_: Stage, spec: SandboxSpec) -> None:
    """The mount namespace is taken now, not ahead, so it shows the host's mounts as they are."""
    namespaces.new_mount_namespace()


def make_mounts_private(_: Stage, spec: SandboxSpec) -> None:
    mounts.make_private()


def mount_job_root(_: Stage, spec: SandboxSpec) -> None:
    """The job's root: a tmpfs of the job's disk size (root skeleton, /work and /tmp)."""
    mounts.mount_tmpfs(spec.root_dir, spec.disk_mb, 0o755)


TAKE = (name_cgroup_after_job,)
STAGE_1_ROOT = (apply_limits, copy_host_mounts, make_mounts_private, mount_job_root)
STAGE_1 = TAKE + STAGE_1_ROOT


def stage_1(stage: Stage, spec: SandboxSpec, has_go: bool) -> NoReturn:
    """Stage 1 with its job: STAGE_1, fork the init, wait for it, copy /work out, report."""
    set_process_name("jnb-stage")
    if stage.problem:
        fail_setup(stage.problem)
    try:
        run_steps(STAGE_1, stage, spec)
    except SetupError as exc:
        fail_setup(f"sandbox stage 1: {exc}")
    init_pid = os.fork()
    if init_pid == 0:
        init(spec)
    try:
        # the init cannot be reaped before the waitpid below, so this pidfd is of it for sure
        pidfd = os.pidfd_open(init_pid)
        status.send_with_descriptor(status.started(), pidfd)
        os.close(pidfd)
        if has_go:
            os.close(status.GO_FD)  # the init alone holds the go pipe: the agent's close aborts it
        os.waitpid(init_pid, 0)
        entries, size, notes = collect_work(spec)
        for note in notes:
            status.send(status.artifacts_error(note))
        status.send(status.done(entries, size))
    except BaseException as exc:  # noqa: BLE001 - a stage-1 child must never return into the launcher
        status.send(status.artifacts_error(f"sandbox stage 1: {type(exc).__name__}"))
    finally:
        os._exit(0)


def collect_work(spec: SandboxSpec) -> tuple[int, int, list[str]]:
    """After the job: copy what it left in /work to the agent's files folder while the tmpfs still
    exists, bounded by the job's own disk size, its user's quota left (bytes, files and folders)
    and depth. Returns the files and folders and the bytes kept, and notes on what was not."""
    if not spec.artifacts_dir:
        return 0, 0, []
    limit = spec.disk_mb << 20 if spec.work_bytes is None else min(spec.disk_mb << 20, spec.work_bytes)
    try:
        report = copy_tree(os.path.join(spec.root_dir, "work"), spec.artifacts_dir, limit_bytes=limit,
                           limit_entries=spec.work_files)
    except OSError as exc:
        return 0, 0, [f"copying /work out: {exc}"]
    notes = []
    if report.skipped:
        left_out = len(report.skipped) + report.skipped_more
        more = f" (and {left_out - 3} more)" if left_out > 3 else ""
        notes.append("not kept: " + "; ".join(report.skipped[:3]) + more)
    return report.files + report.dirs, report.copied, notes


# ---- the init: PID 1 of the job's namespaces -------------------------------------------------


def hold_signals(_: SandboxSpec) -> None:
    """First: a stop that comes before the init's handlers exist still reaches the job."""
    reaper.hold_signals()


def keep_only_its_descriptors(spec: SandboxSpec) -> None:
    """0 = input (a pipe or /dev/null), 1/2 = output pipes, 3 = status, 4 = go, where stage 1 put
    them before the fork; none of a holder's own (its log, its sockets) stays."""
    close_range(5 if spec.wait_for_go else 4)


def validate_job_context(spec: SandboxSpec) -> None:
    """Refuse to touch any filesystem unless this really is a job's PID 1 (the seed's check)."""
    if not spec.job_id or spec.env.get("JOB_ID") != spec.job_id:
        raise SetupError("not in job context: JOB_ID not set")
    if os.getpid() != 1:
        raise SetupError("not PID 1 of a new PID namespace: refusing to build a sandbox")


def prefer_for_oom_kill(_: SandboxSpec) -> None:
    identity.prefer_for_oom_kill()


def private_mount_namespace(_: SandboxSpec) -> None:
    """Nested in stage 1's, so the pivot_root below leaves the stage's view (which copies /work
    out afterwards) alone."""
    namespaces.new_mount_namespace()


def open_reaper(_: SandboxSpec) -> None:
    """The PID-1 program the init becomes once the job runs, opened while the host is in view."""
    reaper.open_binary()


def set_hostname(spec: SandboxSpec) -> None:
    sethostname(spec.hostname)


def pivot_root(spec: SandboxSpec) -> None:
    mounts.pivot(spec.root_dir)


def root_readonly(_: SandboxSpec) -> None:
    mounts.root_readonly()


def loopback_up(_: SandboxSpec) -> None:
    namespaces.loopback_up()


def wait_for_the_agent(spec: SandboxSpec) -> None:
    """Block until the agent has finished outside work (e.g. the job's veth); EOF means abort."""
    if spec.wait_for_go:
        go = os.read(status.GO_FD, 1)
        os.close(status.GO_FD)
        if go != b"g":
            raise SetupError("the agent aborted the job before it started")


def cgroup_namespace(_: SandboxSpec) -> None:
    """Once the init is in the job's cgroup: the job's view of cgroups is rooted there."""
    namespaces.own_cgroup_namespace()


def narrow_capabilities(_: SandboxSpec) -> None:
    """Last before the job's process is forked: the init is not dumpable and keeps only CAP_KILL
    and what the job's process needs to become the job user."""
    identity.narrow_for_fork()


INIT = (hold_signals, keep_only_its_descriptors, die_with_parent, validate_job_context, prefer_for_oom_kill,
        private_mount_namespace, build_root, open_reaper, set_hostname, pivot_root, root_readonly, loopback_up,
        wait_for_the_agent, cgroup_namespace, narrow_capabilities)


def init(spec: SandboxSpec) -> NoReturn:
    """INIT, then start the job's command and become its reaper (reaper.py), which reports how it
    ended. The init is a fork of the warm launcher; once the job runs it executes jnb-reaper, a
    small host program opened before pivot_root (never a file of the job's root)."""
    set_process_name("jnb-init")
    try:
        run_steps(INIT, spec)
    except SetupError as exc:
        fail_setup(str(exc))
    main_pid = os.fork()
    if main_pid == 0:
        exec_job(spec)
    identity.reduce_reaper()  # root's uid (the job cannot signal or trace it), only CAP_KILL
    status.send(status.running(main_pid))
    reaper.become_reaper(main_pid, status.STATUS_FD)  # jnb-reaper from here on; below only if that failed
    reaper.install_forwarding(main_pid)
    wait_status = reaper.reap_until(main_pid)
    if os.WIFSIGNALED(wait_status):
        status.send(status.exited(None, os.WTERMSIG(wait_status)))
    else:
        status.send(status.exited(os.WEXITSTATUS(wait_status), None))
    os._exit(0)


# ---- the job's main process, up to its exec --------------------------------------------------


def enter_work(_: SandboxSpec) -> None:
    os.chdir("/work")


def default_signals(_: SandboxSpec) -> None:
    reaper.default_signals()


def no_core_dumps(_: SandboxSpec) -> None:
    """A crash writes no core file into the job."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def become_job_user(spec: SandboxSpec) -> None:
    """The unprivileged job uid, no capabilities in any set, no_new_privs."""
    identity.become_job_user(spec.uid, spec.gid)


def keep_only_stdio_and_status(_: SandboxSpec) -> None:
    """0-2 stay; the status socket moves to 3, close-on-exec (for exec errors); nothing else."""
    os.dup2(status.STATUS_FD, 3)
    os.set_inheritable(3, False)
    close_range(4)


def restrict_with_landlock(spec: SandboxSpec) -> None:
    """Second to last: writes only beneath /work, /tmp, /dev/shm and the writable binds, TCP only
    as the network mode allows, signals and abstract sockets kept inside (landlock.py). Before
    seccomp, whose filter is the last thing installed; a kernel without Landlock skips it."""
    writable = tuple(m.target for m in spec.mounts if not m.readonly)
    landlock.apply(landlock.policy_for(spec.network, writable, refuse_tcp=spec.refuse_tcp))


def load_seccomp(spec: SandboxSpec) -> None:
    """Last before exec: every step above may still make calls the filter forbids."""
    seccomp.load(spec.job_type)


EXEC = (new_session, enter_work, default_signals, no_core_dumps, become_job_user, keep_only_stdio_and_status,
        restrict_with_landlock, load_seccomp)


def exec_job(spec: SandboxSpec) -> NoReturn:
    """EXEC, then the user's command. A failure is the job's (`exec_error`, exit 127), not setup."""
    try:
        for step in EXEC:
            step(spec)
        os.execvpe(spec.argv[0], spec.argv, spec.env)
    except FileNotFoundError:
        status.send(status.exec_error(f"{spec.argv[0]}: command not found in the sandbox"))
    except Exception as exc:  # noqa: BLE001
        status.send(status.exec_error(f"starting {spec.argv[0]}: {exc}"))
    os._exit(EXEC_FAILED_EXIT)
