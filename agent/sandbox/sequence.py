"""The sandbox sequence: everything that runs between a job's spec and the job's exec, in order.

Three processes carry a job (launcher.py only forks stage 1 and hands it its job's descriptors):

  stage 1   forked by the launcher's pool before any job comes: STAGE_AHEAD. When its job comes:
            STAGE_1 and JOB_ROOT, then it spawns the init, reports it, waits for it and copies
            /work out. A job the agent's own launcher takes is *held*: stage 1 becomes its holder
            (holder.py), which takes the job, prepares its root (STAGE_1_ROOT, JOB_ROOT), makes
            the job's pipes, spawns the init, names its cgroup after the job (TAKE, while the init
            works) and keeps the job until its end, outliving the agent. A cluster node's side holds its jobs itself and hands a stage the pipes (`stage_1`).
  init      jnb-init (init.c), PID 1 of the job's namespaces, spawned with its plan (initplan.py):
            builds the root from the plan's root records (rootfs.py decides them, init_root.c
            applies them: binds, /etc, /work and its uploads, masks, /dev) in stage 1's mount
            namespace while the holder execs jnb-holder, then /proc, pivot_root, lo, go,
            capabilities; it forks the job and reaps until it ends.
  the job   its identity, Landlock and seccomp (init.c), then execve of the user's command.

Each table lists functions, and a function's name is what a failure reports ("build root: ...",
reason `setup`): the report cannot drift from what ran; init.c names its steps the same way (the
list is below). Read top to bottom, the steps are the order the kernel sees (bubblewrap's):
namespaces, private mounts, the root on a tmpfs, binds, proc, pivot_root, read-only root,
network, identity, no_new_privs, Landlock, seccomp, exec.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from . import aheadsocket, initplan, mounts, namespaces, rootfs, status
from .cgroups import CgroupDriver, CgroupLimits, JobCgroup
from .libc import PR_SET_PDEATHSIG, prctl, set_process_name
from .spec import SandboxSpec
from .workcopy import copy_work, work_limit

SETUP_FAILED_EXIT = 125
EXEC_FAILED_EXIT = 127


class SetupError(Exception):
    """A step of the sandbox set-up failed; the message names the step."""


@dataclass
class Stage:
    """What a stage-1 process holds of its own before its job comes: nothing of any job."""

    driver: CgroupDriver
    name: str = ""  # its cgroup's name while it waits (the launcher chose it, to remove it if the stage dies)
    cgroup: JobCgroup | None = None
    problem: str | None = None  # a step ahead failed: told to the job that comes, as reason setup
    devices: tuple[tuple[str, int, int], ...] | None = None  # the standard /dev's, allowed ahead
    ahead: aheadsocket.Ahead | None = None  # a holder's control socket, bound ahead (launcher.py)


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
    """A cgroup of its own under the agent's parent, renamed after the job when the job comes; it
    allows the devices of the standard /dev already (mount_dev's: what nearly every job gets)."""
    stage.devices = mounts.device_allowlist()
    stage.cgroup = stage.driver.create(stage.name or stage_cgroup_name(), CgroupLimits(devices=stage.devices))
    stage.cgroup.join(os.getpid())


def stage_cgroup_name() -> str:
    return f"stage-{os.urandom(6).hex()}"


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
    """From here on the agent finds the cgroup as `job-<id>`, and removes it when the job ends. A
    holder does it once its init is spawned (holder.py): until then the launcher removes the
    stage's cgroup if the stage dies (launcher.StagePool)."""
    assert stage.cgroup is not None
    stage.cgroup = stage.cgroup.rename(f"job-{spec.job_id}")


def apply_limits(stage: Stage, spec: SandboxSpec) -> None:
    """The spec's limits, and a device allowlist made from what the job's /dev will hold (the
    hierarchy-less v2 leaves devices to the binds: only what mount_dev binds exists for the job)."""
    assert stage.cgroup is not None
    devices = stage.devices if not spec.devices and stage.devices else mounts.device_allowlist(spec.devices)
    stage.cgroup.apply(replace(spec.cgroup_limits, devices=devices))


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
    """Stage 1 with its job: STAGE_1, JOB_ROOT, spawn the init, wait for it, copy /work out, report."""
    set_process_name("jnb-stage")
    if stage.problem:
        fail_setup(stage.problem)
    try:
        run_steps(STAGE_1, stage, spec)
    except SetupError as exc:
        fail_setup(f"sandbox stage 1: {exc}")
    try:
        run_steps(JOB_ROOT, stage, spec)
        init_pid = start_init(spec)
    except SetupError as exc:
        fail_setup(str(exc))
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
    return copy_work(spec.root_dir, spec.artifacts_dir, work_limit(spec), spec.work_files)


# ---- the job's root, then its init ----------------------------------------------------------
# Stage 1 mounts the root's tmpfs in its own mount namespace (a copy of the host's, private to this
# job); the init builds the root on it in that same namespace ("build root", init_root.c, from
# rootfs.py's records: a spec that asks for a root that cannot be built fails here, named the same),
# then nests another one for its pivot_root, so the stage still sees the root's /work afterwards,
# to copy it out.


def validate_job_context(_: Stage, spec: SandboxSpec) -> None:
    """Refuse to touch any filesystem for a spec that is not a job's (the seed's check); init.c
    checks that it is PID 1 of a new PID namespace before it mounts anything."""
    if not spec.job_id or spec.env.get("JOB_ID") != spec.job_id:
        raise SetupError("not in job context: JOB_ID not set")


JOB_ROOT = (validate_job_context,)

def prepare_root(stage: Stage, spec: SandboxSpec, mark: Callable[[str], None]) -> str | None:
    """A held job's: STAGE_1_ROOT, then JOB_ROOT (`mark` after each: benchmarks/); the problem to
    record as reason setup, or None."""
    try:
        run_steps(STAGE_1_ROOT, stage, spec)
    except SetupError as exc:
        return f"sandbox stage 1: {exc}"
    mark("root")
    try:
        run_steps(JOB_ROOT, stage, spec)
    except SetupError as exc:
        return str(exc)
    mark("root_built")
    return None


# What jnb-init does, in this order (init.c; a failure is reported as `setup_error` naming the
# step, "STEP: what: why"): read plan, keep only its descriptors, validate job context (PID 1),
# prefer for oom kill, build root (init_root.c, in stage 1's namespace), private mount namespace,
# mount proc (and its masks), set hostname, pivot root, root readonly, loopback up, wait for the
# agent, cgroup namespace, narrow capabilities (identity.FORK_CAPS, not dumpable, no_new_privs),
# fork the job, reduce reaper (identity.REAPER_CAPS), `running`, then it reaps and reports the
# job's `exit`.
# The job's process: setsid, chdir /work, default signals and an empty mask, RLIMIT_CORE 0, the
# bounding set dropped, no groups, gid, uid, no capability, no_new_privs, 0-2 and the status on 3
# close-on-exec, Landlock, seccomp last, exec along the job's PATH. A failure there is the job's
# (`exec_error`, exit 127), not the set-up's.


def start_init(spec: SandboxSpec, slots: dict[int, int] | None = None) -> int:
    """Spawn jnb-init with its plan; `slots` puts descriptors at 0-4 (the caller's own 0-4 stay
    where they are otherwise). Returns its PID; raises SetupError naming the step (a root the spec
    cannot have is "build root", as when the init fails to build it)."""
    try:
        return initplan.spawn(spec, slots or {})
    except rootfs.BadRoot as exc:
        raise SetupError(f"build root: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - every failure becomes reason "setup"
        raise SetupError(f"start init: {exc}") from None
