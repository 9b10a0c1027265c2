"""Job records (the generic store, store.py, for jobs): how a job's record ends, and a running
job's launch note kept in its record file, not in a file of its own (one inode less per job, each
about a millisecond of CPU on a busy ext4: spare.py). A job an agent before format 3 launched has
its note beside the record as launch.json, which `launch_note` still reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..cluster.holder_link import LaunchNote
from ..models import JobRecord
from . import recordfile
from .spare import RECORD_NAME, SpareFolders
from .store import RecordStore
from .verdict import Verdict

NOTE_KEY = "launch"  # a running job's launch note, in its record file (JobRecord ignores the key)


class JobStore(RecordStore[JobRecord]):
    """Job records; a running job's launch note is kept in its record file (`NOTE_KEY`), not in a
    file of its own: one inode less per job (launch.json, which a job of an agent before
    format 3 still has, is read where the record has none: `launch_note`)."""

    record_type = JobRecord
    shelves = True

    def __init__(self, root: Path, spares: SpareFolders | None = None) -> None:
        super().__init__(root, spares)
        self.notes: dict[str, LaunchNote] = {}  # running jobs' launch notes, saved with their records

    def keep_note(self, record: JobRecord, note: LaunchNote) -> None:
        """`note` goes with the record: on disk now (before the job is launched; an error here is
        the launch's), and in every save until the job ends."""
        self.notes[record.id] = note
        self._write(record)

    def _data(self, record: JobRecord) -> bytes:
        data = super()._data(record)
        note = self.notes.get(record.id)
        if note is None or record.status.finished:
            return data
        return b"%s,\"%s\":%s}" % (data[:-1], NOTE_KEY.encode(), json.dumps(note.to_json()).encode())

    def _shelved(self, record_id: str) -> None:
        self.notes.pop(record_id, None)

    def finished(self, record: JobRecord) -> bool:
        return record.status.finished

    def recovered(self, folder: Path) -> JobRecord | None:
        """A finished job's record from its log's exit event, which carries it and is written
        first (`finish`); the record's own file is rewritten in place after it."""
        return recordfile.from_exit_event(folder, JobRecord)

    def artifacts(self, job_id: str) -> Path:
        return self.dir(job_id) / "work"

    def finish(self, record: JobRecord, verdict: Verdict) -> None:
        """End a job: the `exit` event closes its log, then its record says how (in memory at once,
        on disk once the log's followers have had the exit). In that order, an agent killed between
        the two leaves a log that restore.py settles the record from; the other way round it would
        leave a finished record whose log never ends. The event carries the ended record (API.md
        extension), so a follower needs no GET after it."""
        ended(record, verdict)
        event = verdict.exit_event()
        event["record"] = record.model_dump(mode="json")
        self.log(record.id).append(event)
        self.save_next(record)

    def settle(self, record: JobRecord, verdict: Verdict, ended_at: float | None = None) -> None:
        """The record of an ended job says how it ended (its log is closed by whoever ends it)."""
        ended(record, verdict, ended_at)
        self.save(record)


def launch_note(folder: Path) -> LaunchNote | None:
    """A sandbox's launch note: in its record file (a job's, format 3 on), else in launch.json
    beside it (a session's, or a job an agent before format 3 launched)."""
    try:
        with open(folder / RECORD_NAME, "rb") as f:
            data = json.loads(f.read()).get(NOTE_KEY)
    except (OSError, ValueError, AttributeError):
        data = None
    return LaunchNote.from_json(data) if data is not None else LaunchNote.read(folder)


def ended(record: JobRecord, verdict: Verdict, ended_at: float | None = None) -> None:
    """`record` in memory says how its job ended."""
    record.status, record.reason, record.message = verdict.status, verdict.reason, verdict.message
    record.exit_code, record.signal = verdict.exit_code, verdict.signal
    record.ended_at = ended_at or time.time()
