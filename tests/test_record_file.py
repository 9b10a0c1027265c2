"""A job's record file: one block rewritten in place once it exists (no file made and renamed per
save), whole records still, and a finished record that a crash left unreadable is taken back from
its log's exit event, which carries it and is written first."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from waiting import run_coroutine

from joblet_agent.contract import JobStatus
from joblet_agent.jobs.recordfile import BLOCK as RECORD_BLOCK
from joblet_agent.jobs.jobstore import JobStore
from joblet_agent.jobs.verdict import Verdict
from joblet_agent.models import JobLimits, JobRecord

JOB_ID = "00112233aabbccdd"


def _record(command: list[str] | None = None) -> JobRecord:
    return JobRecord(id=JOB_ID, owner="alice", limits=JobLimits(), network="none", command=command or ["true"],
                     created_at=time.time())


def _file(root: Path) -> Path:
    return root / JOB_ID / "record.json"


def test_a_later_save_overwrites_the_records_block_in_place(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path)
    record = _record()

    async def steps() -> None:
        jobs.add(record)
        first = _file(tmp_path).stat()
        record.status, record.started_at = JobStatus.RUNNING, time.time()
        jobs.save(record)
        jobs.finish(record, Verdict(JobStatus.COMPLETED, "exit", exit_code=0))
        jobs.save_pending()
        after = _file(tmp_path).stat()
        assert first.st_size == RECORD_BLOCK
        assert (after.st_ino, after.st_size) == (first.st_ino, RECORD_BLOCK)  # the same file, rewritten

    run_coroutine(steps())
    text = _file(tmp_path).read_bytes()
    assert text.rstrip(b" \n") == record.model_dump_json().encode()  # the JSON, then only blanks
    assert JobStore(tmp_path).load()[0] == record
    assert not list((tmp_path / JOB_ID).glob("*.tmp"))


def test_a_record_beyond_one_block_is_replaced_whole(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path)
    record = _record(["echo", "x" * RECORD_BLOCK])
    jobs.add(record)
    assert _file(tmp_path).stat().st_size == 2 * RECORD_BLOCK
    record.status = JobStatus.RUNNING
    jobs.save(record)
    assert json.loads(_file(tmp_path).read_text())["status"] == "RUNNING"
    record.command = ["true"]  # shorter again: back to one block, replaced, then in place
    jobs.save(record)
    assert _file(tmp_path).stat().st_size == RECORD_BLOCK
    record.status = JobStatus.STOPPED
    jobs.save(record)
    assert JobStore(tmp_path).load() == [record]


def test_an_unreadable_finished_record_comes_back_from_its_logs_exit_event(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path)
    record = _record()

    async def steps() -> None:
        jobs.add(record)
        jobs.finish(record, Verdict(JobStatus.FAILED, "exit", exit_code=3))
        jobs.save_pending()

    run_coroutine(steps())
    data = _file(tmp_path).read_bytes()
    with open(_file(tmp_path), "r+b") as f:  # as a write cut short by a crash might leave it
        f.write(data[:len(data) // 8])
        f.truncate(len(data) // 8)
    (loaded,) = JobStore(tmp_path).load()
    assert loaded == record and loaded.status == JobStatus.FAILED and loaded.exit_code == 3


def test_an_unreadable_record_of_a_log_without_an_exit_stays_unloaded(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path)
    jobs.add(_record())
    _file(tmp_path).write_bytes(b'{"id": "' + JOB_ID.encode())
    assert JobStore(tmp_path).load() == []
    (tmp_path / JOB_ID / "events.ndjson").write_bytes(b'{"seq":1,"type":"exit","record":{"id":"ffffffffffffffff"}}\n')
    assert JobStore(tmp_path).load() == []  # a record of another job is not this one's
    os.unlink(tmp_path / JOB_ID / "events.ndjson")
    assert JobStore(tmp_path).load() == []


def test_a_first_write_goes_into_the_file_there_and_cuts_what_was_longer(tmp_path: Path) -> None:
    """A record's and a launch note's first write (fs.write_first, no O_TRUNC): into a spare's
    empty file in place (its inode kept), a new file made where none is, anything longer cut off,
    and never through a symlink."""
    import pytest

    from joblet_agent.cluster.holder_link import LAUNCH_NAME, LaunchNote
    from joblet_agent.fs import write_first

    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    inode = empty.stat().st_ino
    write_first(empty, b'{"a": 1}')
    assert empty.read_bytes() == b'{"a": 1}' and empty.stat().st_ino == inode
    write_first(tmp_path / "new", b"x")
    assert (tmp_path / "new").read_bytes() == b"x" and (tmp_path / "new").stat().st_mode & 0o777 == 0o600
    longer = tmp_path / "longer"
    longer.write_bytes(b"y" * 10_000)
    write_first(longer, b"short")
    assert longer.read_bytes() == b"short"
    (tmp_path / "link").symlink_to(empty)
    with pytest.raises(OSError):
        write_first(tmp_path / "link", b"z")
    assert empty.read_bytes() == b'{"a": 1}'
    note = LaunchNote(token="t" * 32, uid_slot=7, outputs=["x"], cell=True, network={"veth": "v", "address": "a"},
                      work_files=3, work_bytes=4, boot_id="b")
    (tmp_path / LAUNCH_NAME).write_bytes(b"{" + b" " * 5000 + b"}")
    note.write(tmp_path, fresh=True)
    assert LaunchNote.read(tmp_path) == note
    note.uid_slot = 8
    note.write(tmp_path)
    assert LaunchNote.read(tmp_path) == note


def test_a_running_jobs_launch_note_is_in_its_record_file_until_the_job_ends(tmp_path: Path) -> None:
    """No launch.json per job (format 3): the note is saved with the record while the job runs,
    survives the record's later saves and a reload (JobRecord ignores it), and goes with the
    job's end; a folder with launch.json (format 2) is still read."""
    from joblet_agent.cluster.holder_link import LaunchNote
    from joblet_agent.jobs.jobstore import launch_note

    store = JobStore(tmp_path)
    record = _record()
    note = LaunchNote(token="t" * 32, uid_slot=5, outputs=["x"], cell=True, boot_id="b")
    store.add(record)
    assert launch_note(tmp_path / JOB_ID) is None  # not launched yet
    store.keep_note(record, note)
    assert launch_note(tmp_path / JOB_ID) == note and not (tmp_path / JOB_ID / "launch.json").exists()
    record.status = JobStatus.RUNNING
    note.network = {"veth": "jnb-v", "address": "10.0.0.2"}
    store.save(record)
    assert launch_note(tmp_path / JOB_ID) == note
    assert JobStore(tmp_path).load()[0] == record
    assert _file(tmp_path).stat().st_size == RECORD_BLOCK  # still its one block, overwritten in place

    async def end() -> None:
        store.finish(record, Verdict(JobStatus.COMPLETED, "exit", exit_code=0))
        await asyncio.sleep(0.01)

    run_coroutine(end())
    assert "launch" not in json.loads(_file(tmp_path).read_text()) and not store.notes
    assert launch_note(tmp_path / JOB_ID) is None
    note.write(tmp_path / JOB_ID, fresh=True)  # format 2's launch.json
    assert launch_note(tmp_path / JOB_ID) == note
