"""`executor: slurm`: every job and session is one `srun` step that runs the node side on the node
Slurm picks.

Per job or session, in a folder of its own (`<root>/state/slurm/<id>/`, root-only; removed at its end):
  spec     the signed spec (wire.envelope): a job's srun reads it as its stdin
  frames   srun's stdout, the node side's frames, appended by srun itself
  srun.log srun's stderr (why Slurm refused or lost the job)
srun runs in a session of its own and holds no pipe to the agent (a job's; a session's stdin is a
pipe from the agent): if the agent goes away, the Slurm job goes on and its frames keep landing
in `frames` (live restore, issue 14, can follow them from disk). The agent follows `frames` with
inotify and turns frames into the job's events; its event log stays the source of truth. srun's
files are bounded by RLIMIT_FSIZE.

While a job waits for its first frame, one poller asks squeue (at most once a second, for all
waiting jobs at once) for its Slurm job id and pending reason; a reason after which Slurm will
never start it ends it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from . import slurm, wire
from .executor import JobEvents, RuntimeRef
from .slurm_job import SlurmExecution
from ..config import SlurmConfig
from ..errors import BadRequest, Unavailable
from ..inotify import TreeWatch
from ..models import JobLimits
from ..sandbox.spec import SandboxSpec

NODES_FRESH_S = 30.0
POLL_FIRST_S = 0.5
POLL_EVERY_S = 1.0


class SlurmExecutor:
    """One per agent: the cluster's size, the waiting-job poller, the inotify watch."""

    def __init__(self, config: SlurmConfig, node_command: list[str], tag: str, env: dict[str, str],
                 key: bytes, grace_s: float, max_output_bytes: int) -> None:
        self.config = config
        self.node_command = node_command      # python -m joblet_agent.node --key ... --root ...
        self.prefix = f"jnb-{tag}-"           # Slurm job names: jnb-<agent>-<job id>
        self.env = env
        self.key = key
        self.grace_s = grace_s
        self.max_output_bytes = max_output_bytes
        self.watch = TreeWatch()
        self.jobs: dict[str, SlurmExecution] = {}
        self._nodes: tuple[float, list[slurm.Node]] = (0.0, [])
        self._poller: asyncio.Task[None] | None = None
        self._reading = False

    # ---- before a job: could the cluster ever run it? -------------------------------------

    def nodes(self) -> list[slurm.Node]:
        when, cached = self._nodes
        if time.monotonic() - when > NODES_FRESH_S:
            try:
                cached = slurm.nodes(self.env, self.config.partition)
            except slurm.SlurmError as exc:
                raise Unavailable(f"Slurm does not answer: {exc}") from None
            self._nodes = (time.monotonic(), cached)
        return cached

    def ask(self, limits: JobLimits) -> slurm.Ask:
        return slurm.Ask.of(limits.cpu_percent, limits.memory_mb, limits.gpus or 0, limits.timeout_s, self.grace_s)

    def check(self, limits: JobLimits) -> None:
        why = slurm.refusal(self.ask(limits), self.nodes(), self.config.partition)
        if why:
            raise BadRequest(f"Slurm could never run this job: {why}")

    # ---- a job -------------------------------------------------------------------------------

    def start(self, spec: SandboxSpec, limits: JobLimits, runtime: Any, events: JobEvents,
              folder: Path, base: Any = None) -> SlurmExecution:  # type: ignore[assignment]
        """srun the node side for `spec`; `runtime` is the job's resolved runtime and `base` its
        base image (each named to the node by its build), `folder` the job's own for srun's files."""
        self._ensure_reading()
        ask = self.ask(limits)
        name = self.prefix + spec.job_id
        job = SlurmExecution(self, name, folder, events, spec.artifacts_dir,
                             (limits.disk_mb or 256) << 20, interactive=spec.stdin_pipe)
        self.jobs[spec.job_id] = job
        try:
            payload = self.payload(spec, name, ask, runtime, limits)
            payload["base"] = RuntimeRef.of(base).__dict__ if base is not None else None
            job.launch(wire.envelope(self.key, payload), slurm.srun_argv(self.config, name, ask, self.node_command))
        except (OSError, ValueError) as exc:
            job.fail_to_launch(f"handing the job to Slurm: {exc}")
            return job
        self.watch.watch(spec.job_id, str(folder), recursive=False)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return job

    def payload(self, spec: SandboxSpec, name: str, ask: slurm.Ask, runtime: Any, limits: JobLimits) -> dict[str, Any]:
        """What the node side gets: the agent's spec (the node makes its paths, mounts and devices
        its own; the files of a session's runner travel in it as uploads), the runtime by build,
        and how to stop and bound the job."""
        ref = RuntimeRef.of(runtime).__dict__ if runtime is not None else None
        return {"v": 1, "slurm_job_name": name, "job_name_prefix": self.prefix, "spec": spec.to_json_dict(),
                "runtime": ref, "gpus": ask.gpus, "grace_s": self.grace_s, "timeout_s": limits.timeout_s,
                "max_output_bytes": self.max_output_bytes}

    def _ensure_reading(self) -> None:
        if not self._reading and self.watch.fd is not None:
            asyncio.get_running_loop().add_reader(self.watch.fd, self._changed)
            self._reading = True

    def _changed(self) -> None:
        for job_id in self.watch.changed():
            job = self.jobs.get(job_id)
            if job is not None:
                job.read()

    def forget(self, name: str) -> None:
        job_id = name.removeprefix(self.prefix)
        self.jobs.pop(job_id, None)
        self.watch.forget(job_id)

    async def _poll(self) -> None:
        """squeue for the jobs that have not said hello yet: their Slurm id and pending reason."""
        await asyncio.sleep(POLL_FIRST_S)
        while True:
            waiting = {j.name: j for j in self.jobs.values() if j.placement is None and not j.finished}
            if not waiting:
                return
            try:
                entries = await asyncio.to_thread(slurm.queue, self.env, list(waiting))
            except slurm.SlurmError:
                entries = {}
            for name, entry in entries.items():
                if name in waiting:
                    waiting[name].seen_in_queue(entry)
            await asyncio.sleep(POLL_EVERY_S)

    def cancel_left(self, job_id: str, slurm_id: str | None) -> None:
        """scancel a job an earlier life of the agent started (the start-up sweep ends it `lost`)."""
        try:
            slurm.cancel(self.env, slurm_id, None if slurm_id else self.prefix + job_id)
        except slurm.SlurmError:
            pass  # long gone

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._reading and self.watch.fd is not None:
            asyncio.get_running_loop().remove_reader(self.watch.fd)
        self.watch.close()
