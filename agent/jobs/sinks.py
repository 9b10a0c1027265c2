"""Where a sandbox's events and end go: a job's event log and record, or a session.

The JobService runs every sandbox the same way (spec, executor, limits, cleanup); only what
becomes of it differs. Its output becomes events through an output translator (sandbox/output.py:
a job's text, a session runner's frames), run by the sandbox's holder where it has one (its log is
written before the agent hears of it) and by the agent otherwise; either way the events land in the
sink's `log`, and what the translator tells (a session's cell ended) goes to `notice`.
"""

from __future__ import annotations

from typing import Any

from ..cluster.holder_link import LaunchNote
from ..config import AgentConfig
from ..contract import JobStatus
from ..models import JobRecord
from ..sandbox.outcome import Outcome
from .livejob import Keeper, LiveJob
from .jobstore import JobStore
from .verdict import Verdict, display_events, exec_note, outputs_event


class JobLog:
    """A job's sink: its log, its record's status and end."""

    def __init__(self, service: Keeper, live: LiveJob) -> None:
        self.service, self.live = service, live
        self.log = service.store.log(live.record.id)

    def bind(self, live: LiveJob) -> None:
        self.live = live  # made for its job already: a session's sink is the one bound later

    def running(self) -> None:
        # Within a second, with whatever follows (a short job's end saves it first): an agent that
        # dies before then learns it again from the job's holder (its hello's started_at) or,
        # once the job has ended, from the outcome its holder recorded (restore.py).
        self.service.store.save_soon(self.live.record)

    def note(self, text: str) -> None:
        self.log.append({"type": "stderr", "data": text})

    def notice(self, data: Any) -> None:
        pass  # a job's output translator has nothing to tell

    def ended(self, verdict: Verdict) -> None:
        live = self.live
        for event in last_events(self.service.store, self.service.config, live.record, live.note, live.outcome,
                                 verdict):
            self.log.append(event)
        live.record.kept_work = live.kept
        if live.hold_exit:
            live.verdict = verdict
        else:
            self.service.finish_record(live.record, verdict)


def last_events(store: JobStore, config: AgentConfig, record: JobRecord, note: LaunchNote | None,
                outcome: Outcome | None, verdict: Verdict) -> list[dict[str, Any]]:
    """What a job's log says after its output and before its `exit`: why its command did not
    start, a script's last value and open figures, and the `outputs` it was asked for."""
    artifacts, most = store.artifacts(record.id), config.max_outputs_bytes
    events = exec_note(outcome)
    if note is not None and note.cell and outcome is not None:
        events += display_events(artifacts, most)
    if note is not None and note.outputs and verdict.status == JobStatus.COMPLETED:
        try:
            events.append(outputs_event(artifacts, most))
        except OSError as exc:  # out of descriptors at this moment: the job still ends
            events.append({"type": "stderr", "data": f"[joblet] the --out values could not be read: {exc.strerror}\n"})
    return events
