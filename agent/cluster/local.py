"""`executor: local` (the default): a job's sandbox on this host, held by a holder that outlives the
agent (sandbox/holder.py).

The warm launcher hands the spec to a stage that becomes the sandbox's holder: it writes the
sandbox's log itself (through the spec's output translator), enforces its timeout and records how
it ended. A `LocalExecution` talks to it through a `HolderLink` (stop, go, input, signals), passes
on what it tells (the log's growth, RUNNING, a translator's notices), sets up a bridge job's
network from outside before the init goes on, and once the holder is gone turns what it recorded
into the executor's report (`status`, `Ending`) and removes what the sandbox held: its cgroup, its
network link and its root folder. `adopt` takes back the holder of a sandbox an earlier life of
the agent launched (jobs/restore.py checked it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..eventfile import LOG_NAME, EventFile, LogHeld
from ..fdlimit import QUIET, is_shortage, until_descriptors
from .holder_link import Checked, Hello, HolderLink, LaunchNote
from ..sandbox import cgroups, control, status
from ..sandbox.outcome import Outcome
from ..sandbox.spec import SandboxSpec
from .executor import Ending, JobEvents
from .launcher_client import Launcher

HOLDER_DIED = "the job's holder ended without recording how the job ended"
BOOT_ID = control.boot_id()
LOG_FREE_WAIT_S = 2.0
NoteSaver = Callable[[bool], None]
"""Keeps a sandbox's launch note on disk (True: its first write, before the launch)."""


class JobNetwork(Protocol):
    """Outside set-up of a job's network namespace (bridge mode); see network/bridge.py."""

    def attach(self, job_id: str, init_pidfd: int) -> dict[str, Any]: ...

    def adopt(self, job_id: str, veth: str, address: str) -> None: ...

    def release(self, job_id: str) -> None: ...


class LocalExecutor:
    def __init__(self, launcher: Launcher, driver: cgroups.CgroupDriver, network: JobNetwork | None,
                 stop_grace_s: float, max_output_bytes: int, jobs_dir: Path) -> None:
        self.launcher = launcher
        self.jobs_dir = jobs_dir            # the mount point of every job's root, each in its own mount namespace
        self.driver = driver
        self.network = network
        self.stop_grace_s = stop_grace_s
        self.max_output_bytes = max_output_bytes

    def start(self, spec: SandboxSpec, events: JobEvents, folder: Path, note: LaunchNote,
              save_note: NoteSaver | None = None, soon: bool = False) -> "LocalExecution":
        """Launch `spec`; its holder writes the log in `folder` (the job's or the session's).
        `save_note` keeps the note where its record is (default: launch.json in `folder`).
        `soon`: handed over once the event loop's turn ends, so that what the caller answers
        meanwhile (a POST's 201) goes out first: the stage the hand-over wakes could take the
        host's cores from the agent for a while before it answered. A stop asked before the
        holder answers is kept for it, as ever."""
        job = LocalExecution(self, spec.job_id, spec.network, folder, note, events, save_note)
        if soon:
            asyncio.get_running_loop().call_soon(job.launch_surely, spec)
        else:
            job.launch(spec)
        return job

    def adopt(self, job_id: str, network: str, folder: Path, note: LaunchNote, checked: Checked,
              events: JobEvents, save_note: NoteSaver | None = None) -> "LocalExecution":
        """A holder an earlier life of the agent launched; its link goes on the event loop in
        `resume` (at start-up, before the loop runs)."""
        job = LocalExecution(self, job_id, network, folder, note, events, save_note)
        job.adopted = checked
        if note.network and self.network is not None:
            try:
                self.network.adopt(job_id, note.network["veth"], note.network["address"])
            except Exception as exc:  # noqa: BLE001 - the job runs on; its network is its own loss
                print(f"joblet-agent: {job_id}: taking back its network link: {exc}", file=sys.stderr)
        return job


class LocalExecution:
    """One held sandbox on this host, from launch (or adoption) to `events.ended`."""

    holds_log = True  # its holder writes the log, translates the output, enforces the timeout

    def __init__(self, executor: LocalExecutor, job_id: str, network: str, folder: Path, note: LaunchNote,
                 events: JobEvents, save_note: NoteSaver | None = None) -> None:
        self.executor = executor
        self.job_id = job_id
        self.network = network
        self.folder = folder
        self.note = note
        self.save_note: NoteSaver = save_note or (lambda fresh: note.write(folder, fresh))
        self.events = events
        self.cgroup = executor.driver.open(f"job-{job_id}")
        self.link: HolderLink | None = None
        self.adopted: Checked | None = None
        self.stop_asked: tuple[str, float] | None = None   # before the holder answered: told once it does
        self.launch_error: str | None = None
        self.attaching: asyncio.Task[None] | None = None   # a bridge job's network set-up, off the loop
        self.ended = False
        self.gone = asyncio.Event()                         # the holder's process has ended
        self.cleanup: asyncio.Task[None] | None = None      # removes what the sandbox held, once it is gone

    def launch(self, spec: SandboxSpec) -> None:
        """Hand `spec` to a holder. The job's root is a tmpfs its holder mounts on the executor's
        one mount point, in the holder's private mount namespace: every job's root is mounted
        there, each in its own namespace, and no folder is made or removed on the host per job."""
        spec.root_dir = str(self.executor.jobs_dir)
        spec.state_dir, spec.holder_token = str(self.folder), self.note.token
        spec.stop_grace_s, spec.max_output_bytes = self.executor.stop_grace_s, self.executor.max_output_bytes
        spec.wait_for_go = spec.network != "none"
        self.note.boot_id = BOOT_ID
        try:
            self.save_note(True)
            sock = self.executor.launcher.hold(spec)
        except Exception as exc:  # noqa: BLE001 - reported as a setup failure, never a 500
            self.launch_error = f"launching the sandbox: {exc}"
            self.holder_gone()
            return
        self.link = self._link()
        self.link.open(sock)

    def launch_surely(self, spec: SandboxSpec) -> None:
        """`launch` where no caller hears its error (a loop callback): the job ends with it."""
        try:
            self.launch(spec)
        except Exception as exc:  # noqa: BLE001 - a setup failure of this job, never of the loop
            if self.launch_error is None and self.cleanup is None:
                self.launch_error = f"launching the sandbox: {exc}"
                self.holder_gone()

    def resume(self) -> None:
        """An adopted holder, from its checked hello on, on the event loop."""
        assert self.adopted is not None
        self.link = self._link()
        self.link.resume(self.adopted)

    def _link(self) -> HolderLink:
        return HolderLink(self.job_id, self.note.token, lambda pid: listed_in(self.cgroup.procs_files(), pid),
                          _Told(self))

    # ---- what the holder tells ------------------------------------------------------------

    def greeted(self, hello: Hello) -> None:
        """The holder proved who it is. A stop asked meanwhile goes to it now; a bridge job of
        this life gets its network; one an earlier life left half set up is aborted."""
        self.events.logged(hello.seq)
        if hello.started_at is not None:
            self.events.status(status.running(0, at=hello.started_at))
        if self.adopted is not None and hello.translator:
            self.events.notice({"state": hello.translator})
        if self.stop_asked is not None:
            self.stop(*self.stop_asked)
        if hello.state == "waiting" and self.link is not None:
            if self.adopted is not None:
                self.link.abort("the agent restarted during the job's network set-up")
            else:
                self.attaching = asyncio.get_running_loop().create_task(self._attach_network())

    async def _attach_network(self) -> None:
        """Set up the job's network from outside (in a thread: netlink work never blocks the event
        loop) in the holder's network namespace, which is the job's, entered through the holder's
        pidfd (never a bare PID; a copy, so the link may close its own meanwhile), then let the
        init go on."""
        link, network = self.link, self.executor.network
        if link is None or network is None:
            return
        try:
            if link.pidfd is None or self.stop_asked is not None:
                raise RuntimeError("the job ended before its network was set up")
            pidfd = os.dup(link.pidfd)
            try:
                attached = await asyncio.to_thread(network.attach, self.job_id, pidfd)
            finally:
                os.close(pidfd)
            self.note.network = {"veth": attached["veth"], "address": attached["address"]}
            self.save_note(False)
            if not link.is_alive():
                raise RuntimeError("the job's holder ended during the network set-up")
            link.go()
        except Exception as exc:  # noqa: BLE001 - the init sees EOF and reports reason setup
            link.abort(f"network: {exc}")

    # ---- what the agent does to it ---------------------------------------------------------

    def stop(self, grace: float | None = None, reason: str = "stopped") -> None:
        """The holder stops the job: SIGTERM (the init forwards it), SIGKILL after `grace`; it
        records `reason`, so an agent that comes back after the end knows why it was stopped."""
        if self.ended:
            return
        grace = self.executor.stop_grace_s if grace is None else grace
        if self.link is None or self.link.hello is None:
            self.stop_asked = (grace, reason) if self.stop_asked is None else (min(grace, self.stop_asked[0]),
                                                                                self.stop_asked[1])
            return
        self.link.stop(reason, grace)

    def signal(self, sig: int) -> None:
        if self.link is not None and not self.ended:
            self.link.signal(sig)

    def write_input(self, data: bytes) -> None:
        """Input for the holder's translator (a session's request), which decides when it goes to
        the program's stdin."""
        if self.link is None or self.ended:
            raise BrokenPipeError("the sandbox's input is closed")
        self.link.input(data.decode())

    def kill(self) -> None:
        self.cgroup.kill()

    def usage(self) -> cgroups.CgroupUsage | None:
        try:
            return self.cgroup.usage()
        except Exception:  # noqa: BLE001 - the cgroup may be going away right now
            return None

    async def detach(self) -> None:
        """The agent stops and leaves the job to its holder, running, for the next agent (a
        network set-up under way is finished first: the holder is told go or abort)."""
        if self.attaching is not None:
            await asyncio.gather(self.attaching, return_exceptions=True)
        if self.link is not None:
            self.link.detach()

    # ---- the end ---------------------------------------------------------------------------
    # The end is reported as soon as the holder says `ended` (its outcome is on disk and its log
    # let go), or when it is gone without a word; what the sandbox held (its cgroup, its network
    # link, its root folder) is removed after that, once the holder is gone: nobody waits for it
    # but a DELETE of the job and the agent's shutdown (`Ending.cleanup`).

    def holder_ended(self) -> None:
        self._end_once()

    def holder_gone(self) -> None:
        self.gone.set()
        self._end_once()

    def _end_once(self) -> None:
        if self.cleanup is None:
            loop = asyncio.get_running_loop()
            self.cleanup = loop.create_task(self._clean_up())
            loop.create_task(self._report_surely(self.cleanup))

    async def _report_surely(self, cleanup: "asyncio.Task[None]") -> None:
        """`_report`; if it breaks half-way, the job still ends (saying why): a job never stays
        RUNNING because its report failed (out of descriptors, say)."""
        try:
            await self._report(cleanup)
        except Exception as exc:  # noqa: BLE001
            QUIET.say("finish", f"job {self.job_id}: reporting its end failed: {exc!r}")
            if not self.ended:
                self.ended = True
                self.events.ended(Ending(setup=f"the agent could not read how the sandbox ended: {exc}",
                                         cleanup=cleanup))

    async def _report(self, cleanup: "asyncio.Task[None]") -> None:
        """What the holder recorded becomes the report."""
        if self.attaching is not None:
            await asyncio.gather(self.attaching, return_exceptions=True)
        outcome, ending = await until_descriptors(self._outcome, f"reading how job {self.job_id} ended")
        await _log_free(self.folder)
        self.ended = True
        if outcome is not None and outcome.end is not None:
            self.events.status(status.Message(status.Kind(outcome.end), message=outcome.message,
                                              exit_code=outcome.exit_code, signal=outcome.signal))
        if outcome is not None:
            self.events.status(status.done(outcome.kept_files, outcome.kept_bytes))
        ending.cleanup = cleanup
        self.events.ended(ending)

    async def _clean_up(self) -> None:
        """Once the holder is gone: its cgroup (whatever is left in it: nothing, when the holder
        ended well), the network link, and the root folder of a job an agent before the shared
        mount point launched. A failure is said and left for the sweep."""
        await self.gone.wait()
        if self.attaching is not None:
            await asyncio.gather(self.attaching, return_exceptions=True)  # release after attach, never before
        try:
            await until_descriptors(lambda: asyncio.to_thread(self.cgroup.remove),
                                    f"removing job {self.job_id}'s cgroup")
        except cgroups.CgroupError as exc:  # left for the start-up sweep
            QUIET.say("cgroup-remove", f"job {self.job_id}: {exc}")
        except Exception as exc:  # noqa: BLE001
            QUIET.say("finish", f"job {self.job_id}: clean-up failed: {exc!r}")
        if self.network != "none" and self.executor.network is not None:
            self.executor.network.release(self.job_id)
        if self.adopted is not None:
            try:
                (self.executor.jobs_dir / self.job_id).rmdir()
            except OSError:
                pass

    def _outcome(self) -> tuple[Outcome | None, Ending]:
        if self.launch_error is not None:
            return None, Ending(setup=self.launch_error)
        outcome = Outcome.read(str(self.folder))
        if outcome is None:
            link = self.link
            if link is not None and link.hello is None and self.adopted is None:
                return None, Ending(setup=f"the sandbox stage: {link.problem or 'it ended before it took the job'}")
            return None, Ending(lost=HOLDER_DIED)
        ending = Ending(cpu_s=outcome.cpu_s, memory_peak_bytes=outcome.memory_peak_bytes, oom=outcome.oom,
                        stop=outcome.stop_reason)
        if outcome.end == status.Kind.SETUP_ERROR and outcome.agent_error:
            ending.setup = outcome.agent_error
        return outcome, ending


class _Told:
    """What a sandbox's holder tells (holder_link.HolderEvents), for its LocalExecution."""

    def __init__(self, job: LocalExecution) -> None:
        self.job = job

    def greeted(self, hello: Hello) -> None:
        self.job.greeted(hello)

    def running(self, at: float) -> None:
        self.job.events.status(status.running(0, at=at))

    def advanced(self, seq: int) -> None:
        self.job.events.logged(seq)

    def notice(self, data: Any) -> None:
        self.job.events.notice(data)

    def ended(self) -> None:
        self.job.holder_ended()

    def gone(self) -> None:
        self.job.holder_gone()


def listed_in(procs_files: list[str], pid: int) -> bool:
    """Whether `pid` is in any of these cgroup.procs (as `pid in cgroup.pids()`, their union):
    read raw, up to the first that lists it. A holder is in all of a v1 cgroup's six, so one read
    answers, where the union took six text-mode opens of about nine syscalls each."""
    want = str(pid).encode()
    for path in procs_files:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            data = b""
            while chunk := os.read(fd, 1 << 16):
                data += chunk
        finally:
            os.close(fd)
        if want in data.split():
            return True
    return False


async def _log_free(folder: Path) -> None:
    """Until the log's lock is free. It is at once, unless a child of the holder that just ended
    (an init in its very first step) still has the log's descriptor for a moment."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOG_FREE_WAIT_S
    while True:
        try:
            EventFile.open(str(folder / LOG_NAME)).close()
            return
        except OSError as exc:  # no descriptor free: wait for one
            if not is_shortage(exc):
                raise
            await asyncio.sleep(0.05)
        except LogHeld:
            if loop.time() > deadline:
                return  # the owner's write will say so
            await asyncio.sleep(0.02)
