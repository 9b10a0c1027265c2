"""`GET /v1/jobs/{id}/files` (beyond API.md): the listing of a finished job's kept /work copy.

The listing is what `--show '*.png'` and `--fetch 'out/*'` expand against; it names only regular
files (what the download call serves), never follows what a job planted, and is refused while the
job runs, like a download.
"""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from agentproc import Api, create_token
from joblet_agent.fs import list_files

pytestmark = pytest.mark.root

WRITES = """
import os
os.makedirs("plots/deep", exist_ok=True)
open("a.txt", "w").write("hello")
open("plots/deep/b.bin", "wb").write(b"x" * 1000)
open("run.sh", "w").write("#!/bin/sh\\n")
os.chmod("run.sh", 0o755)
os.symlink("/etc/passwd", "passwd")
os.symlink("/etc", "etcdir")
os.mkfifo("fifo")
"""


def test_a_finished_jobs_files_are_listed_with_size_and_mode(api: Api) -> None:
    result = api.run(script=WRITES)
    assert result.record["status"] == "COMPLETED", result.explain()
    r = api.call("GET", f"/v1/jobs/{result.id}/files")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["truncated"] is False
    mine = [f for f in body["files"] if not f["path"].startswith(".joblet/")]
    assert mine == [{"path": "a.txt", "size": 5, "mode": 0o644},
                    {"path": "plots/deep/b.bin", "size": 1000, "mode": 0o644},
                    {"path": "run.sh", "size": 10, "mode": 0o755}]
    assert [f["path"] for f in body["files"]] == sorted(f["path"] for f in body["files"])
    for entry in mine:  # every listed path downloads
        assert api.call("GET", f"/v1/jobs/{result.id}/files/{entry['path']}").status_code == 200


def test_listing_is_refused_while_the_job_runs_and_to_other_users(agent, api: Api) -> None:
    job_id = api.submit(command=["sleep", "30"])
    try:
        r = api.call("GET", f"/v1/jobs/{job_id}/files")
        assert r.status_code == 409 and "still running" in r.json()["error"]["message"]
    finally:
        api.call("POST", f"/v1/jobs/{job_id}/stop")
        api.events(job_id)
    other = Api(agent.url, create_token(agent.root, "user", "someone-else"))
    assert other.call("GET", f"/v1/jobs/{job_id}/files").status_code == 404
    r = Api(agent.url, agent.admin_token).call("GET", f"/v1/jobs/{job_id}/files")
    assert (r.status_code, r.json()) == (200, {"files": [], "truncated": False})  # it left /work empty
    assert api.call("GET", f"/v1/jobs/{job_id}/files/any").status_code == 404
    assert api.call("GET", "/v1/jobs/0123456789abcdef/files").status_code == 404
    assert api.call("GET", "/v1/jobs/NOT-AN-ID/files").status_code == 400


def test_the_walk_follows_no_symlink_and_stops_at_its_limit() -> None:
    """On a tree with links planted where folders were (as a job could leave them), the walk
    lists regular files below its root only, and cuts at `limit` saying so."""
    with tempfile.TemporaryDirectory(prefix="jnb-test-list-") as root:
        os.makedirs(f"{root}/sub")
        for i in range(5):
            with open(f"{root}/sub/f{i}", "w") as f:
                f.write("x" * i)
        os.symlink("/etc", f"{root}/etc")
        os.symlink("/etc/passwd", f"{root}/sub/passwd")
        os.mkfifo(f"{root}/fifo")
        files, cut = list_files(root, limit=100)
        assert [(f.path, f.size) for f in files] == [(f"sub/f{i}", i) for i in range(5)] and not cut
        assert all(stat.S_IMODE(f.mode) == f.mode for f in files)
        files, cut = list_files(root, limit=3)
        assert len(files) == 3 and cut
