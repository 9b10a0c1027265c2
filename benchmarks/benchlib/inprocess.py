"""The agent's JobService and Launcher in this process, on their own temporary root, without HTTP:
the `service` row (start + wait) and the `launcher` row (the sandbox code alone)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from .agent import TRUE, sweep_root
from .common import PREFIX


class InProcess:
    """JobService and Launcher of the agent, in this process, on their own temporary root."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX + "inproc-"))
        self.launcher: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        from joblet_agent.auth import Principal
        from joblet_agent.config import AgentConfig
        from joblet_agent.jobs.service import JobService
        from joblet_agent.cluster.launcher_client import Launcher
        from joblet_agent.models import JobRequest
        from joblet_agent.paths import AgentPaths
        from joblet_agent.sandbox import cgroups

        self.paths = AgentPaths.at(self.root)
        self.paths.ensure()
        self.driver = cgroups.detect(self.paths.cgroup_parent())
        if self.driver.missing():
            raise RuntimeError(f"cgroup controllers missing: {self.driver.missing()}")
        self.launcher = Launcher(self.paths.cgroup_parent(), socket_dir=self.paths.stage_sockets())  # as cli.py
        # The warm launcher is our child: keep Ctrl-C (sent to our whole process group) from killing
        # it mid-job; it exits when we close its socket, or by PR_SET_PDEATHSIG if we die.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.launcher.start()
        finally:
            signal.signal(signal.SIGINT, old)
        self.config = AgentConfig()
        self.service = JobService(self.paths, self.config, self.driver, self.launcher)
        self.who = Principal(id="bench", name="bench", role="user")
        self.request = JobRequest(command=[TRUE])
        self.loop = asyncio.new_event_loop()

    # -- row "service" --
    def run_service(self, marks: dict[str, float]) -> None:
        assert self.loop is not None
        record = self.loop.run_until_complete(self._service_once(marks))
        if record.status.value != "COMPLETED" or record.exit_code != 0:
            raise RuntimeError(f"service job {record.id}: {record.status.value} {record.reason} {record.message}")

    async def _service_once(self, marks: dict[str, float]) -> Any:
        t0 = time.perf_counter()
        record = await self.service.start(self.who, self.request)
        marks["start"] = time.perf_counter() - t0
        await self.service.wait(record.id)
        return record

    # -- row "launcher" --
    def run_launcher(self, marks: dict[str, float]) -> None:
        """The sandbox part of JobService.start/_finalize, with nothing else: no records, no
        asyncio. The spec is the agent's own (jobspec.standard_spec), so it cannot drift. The job's
        holder answers hello once its init is forked, tells `running`, tells `ended` once /work is
        copied out and the outcome is on disk (the row's timing ends there: the agent reports the
        end then), and closes its connection when it exits; the clean-up follows, untimed."""
        from joblet_agent.jobs import spec as jobspec
        from joblet_agent.models import JobRecord
        from joblet_agent.sandbox.outcome import Outcome

        t0, m0 = time.perf_counter(), time.monotonic()
        svc = self.service
        job_id = secrets.token_hex(8)
        limits = jobspec.effective_limits(self.request.limits, svc.config.defaults, svc.config.max_limits)
        record = JobRecord(id=job_id, owner=self.who.id, limits=limits, network="none",
                           command=[TRUE], created_at=time.time())
        slot = svc._take_slot()
        cgroup = None
        state_dir = svc.store.dir(job_id)
        try:
            cgroup = svc.driver.open(f"job-{job_id}")  # made ahead by the stage that takes the job
            marks["cgroup_create"] = time.perf_counter() - t0
            spec = jobspec.standard_spec(record, self.request, None, svc.config.uid_base + slot,
                                         svc.paths.jobs, svc.store.artifacts(job_id),
                                         svc._cgroup_limits(limits))
            spec.state_dir = str(state_dir)
            if svc.store.spares is None or not svc.store.spares.take(state_dir):  # as JobStore.add
                state_dir.mkdir(mode=0o700, parents=True)
            marks["launch_start"] = time.perf_counter() - t0
            sock = self.launcher.hold(spec)
            marks["launch_end"] = time.perf_counter() - t0
            with sock:
                sock.settimeout(60)
                sock.sendall(b'{"op":"hello"}\n')
                try:
                    for line in sock.makefile("rb"):
                        kind = json.loads(line).get("ev")
                        marks.setdefault({"hello": "ev_started", "running": "ev_running"}.get(kind, kind),
                                         time.perf_counter() - t0)
                except ConnectionResetError:  # a holder whose set-up failed ends before it reads the hello
                    pass
                marks["eof"] = time.perf_counter() - t0
            marks["timed_end"] = marks.get("ended", marks["eof"])  # the end is known: what follows is clean-up
            outcome = Outcome.read(str(state_dir))
            for name, at in (outcome.marks if outcome is not None else {}).items():
                marks["holder_" + name] = at - m0  # the holder's CLOCK_MONOTONIC marks, as offsets
        finally:
            if cgroup is not None:
                t2 = time.perf_counter()
                cgroup.remove()
                marks["cgroup_remove"] = time.perf_counter() - t2
            t3 = time.perf_counter()
            shutil.rmtree(state_dir, ignore_errors=True)
            marks["folders_remove"] = time.perf_counter() - t3
            if svc.store.spares is not None:  # the agent's worker thread makes the next spares meanwhile
                svc.store.spares.fill()
            svc._slots.discard(slot)
        if outcome is None or outcome.end != "exit" or outcome.exit_code != 0:
            raise RuntimeError(f"launcher job {job_id} failed: {outcome}")

    def remove(self) -> None:
        # No service.shutdown(): after an interrupt a job's _finalize may have been cut short and
        # would never signal "done". The sweep below kills and removes whatever a job left.
        if self.loop is not None:
            with contextlib.suppress(Exception):  # the last jobs' clean-ups, which follow their ends
                self.loop.run_until_complete(self.service.cleanups.wait_all(timeout=15))
            if self.service.store.spares is not None:  # no spare made after the rmtree below
                self.loop.run_until_complete(self.service.store.spares.close())
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()
        if self.launcher is not None:
            self.launcher.stop()
        sweep_root(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
