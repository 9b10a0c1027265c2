"""At start: take back the jobs an earlier life of the agent left, and end the ones that ended.

For every job whose record is not finished, the job's log says whether a holder still lives: a
holder holds the log's lock for its whole life (eventfile.py), and nothing else does.

- The lock is held: the agent connects to the holder's socket and checks who answers
  (holder_link.check_hello: pidfd, cgroup membership, the job's token). A holder that passes is
  adopted: the job is live again, events resume, stop works. One that does not (or a runtime
  build, whose later phases lived in the agent) is killed with the job's cgroup, and the job ends
  `lost`, saying why.
- The lock is free: the job ended while no agent ran. Its holder recorded how (outcome.json), so it
  gets its true verdict; `lost` only when nothing was recorded: the holder was killed, the host
  rebooted (its boot id changed), or the agent stopped before the job was launched.

The on-disk format is versioned (`state/format.json`): an agent adopts what older formats left and
refuses, saying so, to run on a format newer than it knows.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..contract import JobType
from ..errors import CannotIsolate
from ..eventfile import LOG_NAME, EventFile, LogHeld
from ..models import JobRecord, Usage
from ..paths import AgentPaths
from ..sandbox import cgroups, control
from ..sandbox.outcome import Outcome
from ..cluster.holder_link import Checked, LaunchNote, check_hello, connect
from ..cluster.local import HOLDER_DIED
from .jobstore import launch_note
from .service import JobService
from .sinks import last_events
from .verdict import from_exit_event, lost, of_outcome

FORMAT = 3
"""1: before live restore (no format file; jobs ended with their agent). 2: jobs have holders.
3: a job's launch note is in its record file (jobstore.py; launch.json of format 2 is still read)."""
FORMAT_NAME = "format.json"
OLD_FORMAT = "the agent restarted while the job ran (jobs of an agent before live restore ended with it)"
SLURM_LOST = ("the agent restarted while the job ran: a job placed through Slurm ends with the agent "
              "that placed it (its Slurm job was cancelled)")
CONNECT_WAIT_S = 5.0   # a holder that holds the lock but is still taking its job
KILL_WAIT_S = 10.0


@dataclass
class RestoreReport:
    adopted: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)     # ended while no agent ran (true verdict or lost)
    refused: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def merge(self, other: "RestoreReport") -> None:
        self.adopted += other.adopted
        self.ended += other.ended
        self.refused.update(other.refused)
        self.seconds += other.seconds


def check_format(paths: AgentPaths) -> int:
    """The format of the state on disk; refuses (CannotIsolate, exit 2) one this agent does not know."""
    try:
        data = json.loads((paths.state / FORMAT_NAME).read_text())
        found, writer = int(data["format"]), str(data.get("agent", "?"))
    except FileNotFoundError:
        return 1
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CannotIsolate(f"{paths.state / FORMAT_NAME} is unreadable ({exc}): move it away only if no job "
                            f"of another agent version is running on this root") from None
    if found > FORMAT:
        raise CannotIsolate(f"the state in {paths.state} was written by joblet-agent {writer} (on-disk format "
                            f"{found}); this joblet-agent {__version__} knows formats up to {FORMAT}. Start the "
                            f"newer agent again (its jobs keep running meanwhile), or stop them with it first "
                            f"(joblet-agent serve --stop-jobs, then SIGTERM) and move {paths.state} away.")
    return found


def write_format(paths: AgentPaths) -> None:
    tmp = paths.state / (FORMAT_NAME + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "agent": __version__}))
    os.replace(tmp, paths.state / FORMAT_NAME)


@dataclass
class Adopted:
    """A sandbox whose holder lives and proved itself: the caller makes it live again."""

    note: LaunchNote
    checked: Checked


@dataclass
class Ended:
    """A sandbox whose holder is gone: its log, locked by the caller, and what it recorded."""

    log: EventFile
    outcome: Outcome | None
    note: LaunchNote | None
    problem: str | None       # why a holder that lived was not adopted (then it was killed)

    def why_lost(self, folder: Path) -> str:
        return self.problem or _why_lost(folder, self.note)


def take_back(driver: cgroups.CgroupDriver, folder: Path, sandbox_id: str,
              refuse: str | None = None) -> Adopted | Ended:
    """A sandbox an earlier life of the agent left: adopted if its holder lives and proves itself
    (and `refuse` gives no reason not to), else ended, its holder killed if it lived."""
    problem = None
    try:
        log = EventFile.open(str(folder / LOG_NAME))
    except LogHeld:
        found = refuse or _check(driver, folder, sandbox_id)
        if not isinstance(found, str):
            return found
        problem = found
        log = _kill(driver, folder, sandbox_id)
    outcome = None if problem else Outcome.read(str(folder))
    return Ended(log, outcome, launch_note(folder), problem)


def _check(driver: cgroups.CgroupDriver, folder: Path, sandbox_id: str) -> Adopted | str:
    """Adopted once the holder answers and proves itself; else why not."""
    note = launch_note(folder)
    if note is None:
        return "the job's launch note is missing"
    cgroup = driver.open(f"job-{sandbox_id}")
    deadline = time.monotonic() + CONNECT_WAIT_S
    while True:
        try:
            sock, msg, fds, received = connect(folder)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                return "its holder holds the log but does not answer on its socket"
            time.sleep(0.02)  # a holder still taking its job: it listens in a moment
        except (OSError, ValueError) as exc:
            return f"its holder did not answer hello: {exc}"
    checked = check_hello(msg, fds, sandbox_id, note.token, lambda pid: pid in cgroup.pids())
    if isinstance(checked, str):
        sock.close()
        return f"the process answering for the job is not its holder: {checked}"
    hello, pidfd = checked
    return Adopted(note, Checked(sock, hello, pidfd, received))


def _kill(driver: cgroups.CgroupDriver, folder: Path, sandbox_id: str) -> EventFile:
    """End a holder that was not adopted (with everything in the sandbox's cgroup), then take its
    log once its lock is free."""
    cgroup = driver.open(f"job-{sandbox_id}")
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        cgroup.kill()
        try:
            return EventFile.open(str(folder / LOG_NAME))
        except LogHeld:
            if time.monotonic() > deadline:
                print(f"joblet-agent: {sandbox_id}: its log is still held after {KILL_WAIT_S:g} s; "
                      f"waiting for it", file=sys.stderr, flush=True)
                return EventFile.open(str(folder / LOG_NAME), wait=True)
            time.sleep(0.05)


class Restorer:
    """The jobs of an earlier life: adopted, or ended with their true verdict (or `lost`)."""

    def __init__(self, service: JobService, format_found: int = FORMAT) -> None:
        self.service = service
        self.store = service.store
        self.format_found = format_found
        self.report = RestoreReport()

    def run(self) -> RestoreReport:
        began = time.monotonic()
        for record in self.store.load():
            if not record.status.finished:
                self._one(record)
        self.report.seconds = time.monotonic() - began
        return self.report

    def _one(self, record: JobRecord) -> None:
        folder = self.store.dir(record.id)
        refuse = None
        if record.type == JobType.RUNTIME_BUILD:
            refuse = "the agent restarted during the runtime build (its later phases run in the agent); build it again"
        taken = take_back(self.service.driver, folder, record.id, refuse)
        if isinstance(taken, Adopted):
            self.service.adopt(record, taken.note, taken.checked)
            self.report.adopted.append(record.id)
            return
        if taken.problem:
            self.report.refused[record.id] = taken.problem
        try:
            self._end_while_away(record, folder, taken)
        finally:
            taken.log.close()
        self.report.ended.append(record.id)

    def _end_while_away(self, record: JobRecord, folder: Path, taken: Ended) -> None:
        """Its true verdict where its holder recorded one; `lost` (saying why) where not. The
        last events go into the log under its lock, then the record says the same."""
        log, outcome, note = taken.log, taken.outcome, taken.note
        if log.ended and log.last is not None:  # an agent wrote the end, and died before the record
            self.store.settle(record, from_exit_event(log.last))
            return
        why = OLD_FORMAT if self.format_found < 2 else taken.why_lost(folder)
        if note is None and self.service.cluster is not None and taken.problem is None:
            why = SLURM_LOST  # placed through Slurm: its srun went with the agent
            self.service.cluster.cancel_left(record.id, record.cluster.job_id if record.cluster else None)
        verdict = of_outcome(outcome, record.limits) if outcome else lost(why)
        events = last_events(self.store, self.service.config, record, note, outcome, verdict) + [verdict.exit_event()]
        if outcome and outcome.cpu_s is not None:
            record.usage = Usage(cpu_s=outcome.cpu_s, memory_peak_bytes=outcome.memory_peak_bytes)
        if outcome and outcome.started_at and not record.started_at:
            record.started_at = outcome.started_at
        log.append(events)
        self.store.settle(record, verdict, outcome.ended_at if outcome else None)
        self.service.audit.write("end", job=record.id, owner=record.owner, status=verdict.status.value,
                                 reason=verdict.reason, exit_code=verdict.exit_code, signal=verdict.signal,
                                 while_away=True)


def _why_lost(folder: Path, note: LaunchNote | None) -> str:
    if note is None:
        return "the agent stopped before the job was launched"
    try:
        holder = json.loads((folder / control.HOLDER_NAME).read_text())
    except (OSError, ValueError):
        holder = {}
    boot_id = holder.get("boot_id") or note.boot_id  # the holder's, or the launch's if it died before it said
    if boot_id and boot_id != control.boot_id():
        return "the host restarted while the job ran: a restart of the host ends every job"
    return HOLDER_DIED
