"""Ctrl-C in a running cell stops the remote job, and its whole process tree is gone.

The interrupt is a real SIGINT sent to the shell's (main) thread while it blocks reading the
event stream, as a kernel interrupt does. The job starts a child and a detached grandchild with
a marker in their command lines; afterwards no host process carries the marker.
"""

from __future__ import annotations

import signal
import sys
import threading
import uuid

import pytest

from joblet_nb.core.errors import JobInterrupted
from agentproc import host_processes_with
from nbshell import wait_ended
from waiting import wait_until

pytestmark = pytest.mark.root


def _interrupt_when(predicate) -> threading.Thread:
    main = threading.main_thread().ident

    def interrupter() -> None:
        wait_until(predicate)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=interrupter, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_stops_the_job_and_its_process_tree(nb, client):
    marker = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 10**3}"  # a unique sleep time
    script = (
        "import subprocess, time\n"
        f"subprocess.Popen(['sleep', '{marker}'])\n"
        f"subprocess.Popen(['sh', '-c', 'sleep {marker} & sleep {marker}'], start_new_session=True)\n"
        "print('started', flush=True)\n"
        "for i in range(600):\n"
        "    time.sleep(0.1)\n"
    )
    thread = _interrupt_when(lambda: len(host_processes_with(f"sleep {marker}")) >= 3)
    cell = nb.run("%%joblet run\n" + script)
    thread.join(timeout=60)

    assert isinstance(cell.error, JobInterrupted), (cell.error, cell.stdout, cell.stderr)
    assert isinstance(cell.error, KeyboardInterrupt)
    assert cell.stdout.startswith("started\n")
    job_id = cell.error.job_id
    record = client.get_job(job_id)
    assert record.status == "STOPPED" and record.reason == "stopped"
    assert host_processes_with(f"sleep {marker}") == []
    # a short message, not a traceback through requests
    rendered = cell.error._render_traceback_()
    assert len(rendered) == 1 and "STOPPED" in rendered[0] and "processes are gone" in rendered[0]


def test_ctrl_c_on_attach_detaches_and_leaves_the_job_running(nb, client):
    nb.run("%%joblet run --bg\nimport time\nprint('bg', flush=True)\ntime.sleep(60)")
    (job_id,) = nb.magics.background
    wait_until(lambda: client.get_job(job_id).status == "RUNNING")

    def bg_line_shown() -> bool:  # the cell's captured stdout already holds the job's line
        getvalue = getattr(sys.stdout, "getvalue", None)
        return bool(getvalue and "bg\n" in getvalue())

    thread = _interrupt_when(bg_line_shown)
    attached = nb.run(f"%joblet attach {job_id}")
    thread.join(timeout=60)
    assert isinstance(attached.error, JobInterrupted)
    assert "detached" in str(attached.error) and attached.stdout.startswith("bg\n")
    assert client.get_job(job_id).status == "RUNNING"
    client.stop(job_id)
    assert wait_ended(client, job_id).status == "STOPPED"
