"""A job's holder makes no new inode on the job's way from its arrival to its end (on ext4 that freed
many lately each costs a search past the recently deleted ones): its control socket is the one its
stage bound ahead, renamed into the job's folder (sandbox/aheadsocket.py), and its holder.json and
outcome.json are written into the temporary files a spare job folder holds (jobs/spare.py)."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from agentproc import AgentProcess, Api
from test_holder_c import _hello, _holder
from waiting import wait_until

from joblet_agent.jobs.spare import SPARE_FILES, SpareFolders
from joblet_agent.sandbox import aheadsocket, control
from joblet_agent.sandbox.holder import Holder
from joblet_agent.sandbox.launcher import POOL_SIZE
from joblet_agent.sandbox.outcome import OUTCOME_NAME, OUTCOME_TEMPORARY, Outcome


def test_a_socket_bound_ahead_is_listened_on_where_it_was_moved(tmp_path: Path) -> None:
    """Bound in the launcher's folder, moved to `holder.sock` in a job's folder (over a file left
    there): the same inode, found there by a client once listening; the launcher's folder keeps nothing."""
    stages, job = tmp_path / "stages", tmp_path / "job"
    aheadsocket.prepare(str(stages))
    job.mkdir()
    (job / control.SOCKET_NAME).write_text("stale")
    ahead = aheadsocket.Ahead.bind(str(stages))
    [name] = os.listdir(stages)
    bound = os.stat(stages / name)
    assert stat.S_ISSOCK(bound.st_mode) and stat.S_IMODE(os.stat(stages).st_mode) == 0o700
    dir_fd = os.open(job, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listening = ahead.move_to(dir_fd, control.SOCKET_NAME)
    finally:
        os.close(dir_fd)
    assert listening is not None and not os.listdir(stages)
    assert os.stat(job / control.SOCKET_NAME).st_ino == bound.st_ino
    with listening:
        listening.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(job / control.SOCKET_NAME))
            peer, _ = listening.accept()
            client.sendall(b"hi")
            assert peer.recv(2) == b"hi"
            peer.close()


def test_a_socket_that_cannot_be_moved_is_dropped_and_the_launchers_stale_ones_are_cleared(tmp_path: Path) -> None:
    """Another filesystem (a tmpfs) refuses the rename: None, the socket closed and its file gone (the
    holder binds a new one, in place of a stale file). A launcher that starts removes its stages' files an earlier one left,
    and nothing else."""
    stages = tmp_path / "stages"
    aheadsocket.prepare(str(stages))
    ahead = aheadsocket.Ahead.bind(str(stages))
    other = Path("/dev/shm") / f"jnb-test-{os.getpid()}"
    other.mkdir()
    try:
        dir_fd = os.open(other, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert ahead.move_to(dir_fd, control.SOCKET_NAME) is None
        finally:
            os.close(dir_fd)
        assert not os.listdir(stages) and not os.listdir(other) and ahead.sock.fileno() == -1
        (other / control.SOCKET_NAME).write_text("stale")
        dir_fd = os.open(other, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with aheadsocket.placed(None, dir_fd, control.SOCKET_NAME):  # what the holder does then
                assert stat.S_ISSOCK(os.stat(other / control.SOCKET_NAME).st_mode)
        finally:
            os.close(dir_fd)
            (other / control.SOCKET_NAME).unlink()
    finally:
        other.rmdir()
    left = aheadsocket.Ahead.bind(str(stages))
    left.sock.close()  # as a stage killed by its death signal leaves it
    (stages / "notes.txt").write_text("not a stage's")
    aheadsocket.prepare(str(stages))
    assert os.listdir(stages) == ["notes.txt"]


def test_the_holders_files_are_written_into_a_spare_folders_files(tmp_path: Path) -> None:
    """holder.json and outcome.json, each written whole under its temporary name and renamed, take
    the inodes a spare folder made ahead, in place (not truncated first: fs.write_first), and
    what a file held beyond them is cut."""
    spares = SpareFolders(tmp_path / "spare", keep=1)
    spares.clear()
    spares.fill()
    folder = tmp_path / "job"
    assert spares.take(folder)
    assert {control.HOLDER_TEMPORARY, OUTCOME_TEMPORARY} <= set(SPARE_FILES)
    made = {name: os.stat(folder / name).st_ino for name in (control.HOLDER_TEMPORARY, OUTCOME_TEMPORARY)}
    (folder / OUTCOME_TEMPORARY).write_text(" " * 65536 + "left over")
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stand_in = SimpleNamespace(dir_fd=dir_fd, spec=SimpleNamespace(job_id="00112233aabbccdd"))
        Holder._write_holder_file(stand_in)  # type: ignore[arg-type]
        Outcome(end="exit", exit_code=0).write(dir_fd)
    finally:
        os.close(dir_fd)
    assert os.stat(folder / control.HOLDER_NAME).st_ino == made[control.HOLDER_TEMPORARY]
    assert os.stat(folder / OUTCOME_NAME).st_ino == made[OUTCOME_TEMPORARY]
    assert json.loads((folder / control.HOLDER_NAME).read_text())["job_id"] == "00112233aabbccdd"
    assert Outcome.read(str(folder)).exit_code == 0  # type: ignore[union-attr]
    assert not (folder / control.HOLDER_TEMPORARY).exists() and not (folder / OUTCOME_TEMPORARY).exists()


@pytest.mark.root
def test_a_held_jobs_socket_is_one_a_waiting_stage_bound_ahead(api: Api, agent: AgentProcess) -> None:
    """The agent's waiting stages each have a socket bound in its stage-sockets folder; a job's
    holder.sock is one of them, and answers there; the job's end leaves no temporary file."""
    stages = agent.root / "state" / "stage-sockets"

    def waiting() -> dict[int, str] | None:
        found = {os.stat(stages / name).st_ino: name for name in os.listdir(stages)} if stages.is_dir() else {}
        return found if len(found) == POOL_SIZE else None

    bound = wait_until(waiting, 30, 0.02, message="the stages' sockets")
    job_id = api.submit(command=["sleep", "30"])
    pid, folder = _holder(agent, job_id)
    assert os.stat(folder / control.SOCKET_NAME).st_ino in bound
    hello = _hello(folder)
    assert hello["pid"] == pid and hello["job_id"] == job_id, hello
    assert api.call("POST", f"/v1/jobs/{job_id}/stop").status_code == 200
    api.events(job_id)
    api.settle(job_id)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    deadline = time.monotonic() + 30
    while len(os.listdir(stages)) != POOL_SIZE and time.monotonic() < deadline:  # the pool refilled
        time.sleep(0.02)
    assert all(stat.S_ISSOCK(os.stat(stages / name).st_mode) for name in os.listdir(stages))


@pytest.mark.root
def test_jnb_holder_writes_its_outcome_into_a_spare_file_cutting_what_it_held(api: Api, agent: AgentProcess) -> None:
    """Every spare's outcome.json.tmp made longer than any outcome (as a reused file could be): a job's
    jnb-holder writes its outcome in place and cuts the rest, and the job's end reads right."""
    spare = agent.root / "state" / "spare"
    api.run(command=["true"])  # spares are made after a job has taken one
    wait_until(lambda: list(spare.glob("*/" + OUTCOME_TEMPORARY)), 30, 0.02, message="spare folders")
    for path in spare.glob("*/" + OUTCOME_TEMPORARY):
        path.write_text("{" + " " * 65536 + "left over")
    job_id = api.submit(command=["sh", "-c", "exit 3"])
    api.events(job_id)
    folder = agent.root / "state" / "jobs" / job_id
    record = api.record(job_id)
    assert (record["status"], record["exit_code"]) == ("FAILED", 3), record
    assert json.loads((folder / OUTCOME_NAME).read_text())["exit_code"] == 3
