"""The production sandbox, attacked from inside real jobs.

Every isolation claim that the seed and DESIGN.md make for production jobs is a test here, named
after the attack it tries (in the spirit of bubblewrap's test list). Each test runs a small probe
program (tests/escape/<name>.py) INSIDE a real job through the real agent; the probe exits 0 only if
the attack failed and prints what it saw, so a failing test shows the evidence in its message.
Where a syscall is probed, it gets invalid arguments, so "blocked" (EPERM) and "allowed" (EINVAL,
EFAULT, EBADF) give different errors, as bubblewrap's tests do.

The probes are harmless if the sandbox fails: files are opened for writing without writing and
never truncated, anything created is removed at once, hostnames are set to what they already are,
nothing real is written to /proc, /sys or cgroupfs, device nodes are only attempted in the job's own
/tmp and unlinked at once, and other processes only ever get signal 0.

Some tests prepare the host first (a submount under /usr, a marker in the host's /tmp, a SysV shm
segment, an abstract unix socket, the host's users, addresses and namespaces) so that the probe can
fail; tests/escapehost.py makes it, for these jobs and for the same probes as session cells
(test_escape_session.py), and removes it when the test ends.

The last tests attack the agent rather than the kernel: what a job leaves in /work (a sparse file,
many empty files, a very deep tree) and what it prints are stored by the agent on the host's disk.
Their sizes are kept small enough (at most 192 MiB, 20,000 files) to be harmless where the agent
does not bound them, and everything they leave is removed in a `finally`, by hand if DELETE fails.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agentproc import AgentProcess, Api, Result, host_processes_with, running_agent
from escapehost import file_capability_binaries, prepared, usr_submount

ESCAPE = Path(__file__).parent / "escape"

pytestmark = pytest.mark.root


# ---- running probes ------------------------------------------------------------------------------

def _upload(name: str, path: Path) -> dict[str, Any]:
    return {"path": name, "content_b64": base64.b64encode(path.read_bytes()).decode(), "mode": 0o644}


def run_probe(api: Api, name: str, env: dict[str, str] | None = None, **body: Any) -> Result:
    """Run tests/escape/<name>.py as the script of a real job, with probelib.py next to it."""
    uploads = [_upload("probelib.py", ESCAPE / "probelib.py")] + body.pop("uploads", [])
    return api.run(script=(ESCAPE / f"{name}.py").read_text(), env=env or {}, uploads=uploads, **body)


def assert_held(result: Result) -> None:
    """The probe ran to its end and every attack failed (its report shows with pytest -rP)."""
    print(result.stdout)
    assert result.record["status"] == "COMPLETED", result.explain()
    assert "PROBE_OK" in result.stdout, result.explain()


def assert_prepared_probe_held(api: Api, agent: AgentProcess, name: str) -> None:
    """Probe `name` as a job, with the host prepared for it (escapehost, shared with the sessions)."""
    with prepared(name, agent) as setup:
        assert_held(run_probe(api, name, **setup))


def stop_and_finish(api: Api, job_id: str) -> Result:
    r = api.call("POST", f"/v1/jobs/{job_id}/stop")
    assert r.status_code == 200, r.text
    events = api.events(job_id)
    return Result(job_id, api.call("GET", f"/v1/jobs/{job_id}").json(), events)


def kill_leftovers(marker: str) -> None:
    """Processes this test started (found by its unique marker) that outlived their job."""
    for pid in host_processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- host-side preparations ----------------------------------------------------------------------

@pytest.fixture
def host_tmp_marker() -> Iterator[str]:
    path = Path(f"/tmp/jnb-test-marker-{uuid.uuid4().hex}")
    path.write_text("the host's /tmp\n")
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


# ---- filesystem: read-only system, writable only where it should be -----------------------------

def test_cannot_write_usr_bin_lib_or_their_submounts(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "readonly_system")


def test_cannot_write_the_hosts_usr_or_its_submounts_with_base_host() -> None:
    with usr_submount() as path, running_agent("base: host\n") as agent:
        assert_held(run_probe(agent.api(), "readonly_system", env={"PROBE_SUBMOUNT": path, "PROBE_HOST_USR": "1"}))


def test_cannot_write_the_root_or_etc(api: Api) -> None:
    assert_held(run_probe(api, "readonly_root"))


def test_cannot_write_anywhere_but_work_tmp_and_dev_shm(api: Api) -> None:
    assert_held(run_probe(api, "writable_mounts"))


def test_cannot_gain_privileges_from_setuid_or_file_capability_binaries(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "setuid")


def test_cannot_gain_privileges_from_the_hosts_setuid_binaries_with_base_host() -> None:
    fcaps = ":".join(file_capability_binaries())
    with running_agent("base: host\n") as agent:
        assert_held(run_probe(agent.api(), "setuid", env={"PROBE_FCAPS": fcaps, "PROBE_HOST_USR": "1"}))


def test_cannot_read_host_secrets(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "host_secrets")


def test_cannot_reach_the_agent_root_or_its_tokens(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "agent_root")


def test_cannot_fill_the_disk_through_work_or_tmp(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "disk_fill")


def test_cannot_fill_memory_through_dev_shm(api: Api) -> None:
    """/dev/shm is a tmpfs of its own (RAM, charged to the job's memory cgroup) with a size limit."""
    env = {"PROBE_DIRS": "/dev/shm", "PROBE_FILL_MB": "256", "PROBE_DISK_MB": "128"}
    assert_held(run_probe(api, "disk_fill", env=env))


def test_cannot_exhaust_inodes(api: Api) -> None:
    """Empty files cost no bytes but kernel memory: something must stop them. Accepted: the probe
    sees ENOSPC/ENOMEM, or the job's memory cgroup kills it (reason oom): either way it is bounded."""
    env = {"PROBE_MAX_FILES": "2000000"}
    result = run_probe(api, "inode_fill", env=env, limits={"memory_mb": 64, "timeout_s": 120})
    if result.record["reason"] == "oom":
        assert "created 5000 files" in result.stdout, f"killed before it made files:\n{result.explain()}"
        assert "created 2000000 files" not in result.stdout, result.explain()
        return
    assert_held(result)


def test_cannot_see_the_hosts_tmp(api: Api, host_tmp_marker: str) -> None:
    assert_held(run_probe(api, "tmp_private_host", env={"PROBE_HOST_MARKER": host_tmp_marker}))


def test_cannot_see_another_jobs_tmp(api: Api) -> None:
    marker = f"jnb-probe-{uuid.uuid4().hex}"
    job_a = api.submit(script=(ESCAPE / "tmp_plant.py").read_text(), env={"PROBE_MARKER": marker})
    try:
        api.wait_for_output(job_a, "planted")
        assert_held(run_probe(api, "tmp_look", env={"PROBE_MARKER": marker}))
        assert api.call("GET", f"/v1/jobs/{job_a}").json()["status"] == "RUNNING", "job A ended too early"
    finally:
        stop_and_finish(api, job_a)


def test_cannot_hardlink_host_files_into_work(api: Api) -> None:
    assert_held(run_probe(api, "hardlinks"))


# ---- /proc and /dev -----------------------------------------------------------------------------

def test_cannot_see_host_pids(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "proc_pids")


def test_cannot_read_host_paths_from_the_reapers_command_line(api: Api, agent: AgentProcess) -> None:
    """The reaper is a fork of the launcher, started with the agent's interpreter and cgroup parent
    as arguments; no view of any job process's command line shows them (issue 13, item 8)."""
    words = {sys.executable, os.path.realpath(sys.executable), str(agent.root), "joblet_agent",
             "jnb-" + hashlib.sha1(str(os.path.realpath(agent.root)).encode()).hexdigest()[:8]}
    assert_held(run_probe(api, "init_cmdline", env={"PROBE_FORBIDDEN": ":".join(sorted(words))}))


def test_cannot_read_or_alter_the_inits_plan(api: Api, agent: AgentProcess) -> None:
    """jnb-init's plan (a sealed memfd, closed before the job's process exists) is in no process the
    job sees; PID 1's environment, memory, descriptors and executable are closed to it, and
    nothing readable of PID 1 names the job's root on the host or the agent's paths."""
    words = {sys.executable, str(agent.root), os.path.realpath(str(agent.root)), "joblet_agent", "/jobs/"}
    assert_held(run_probe(api, "init_plan", env={"PROBE_FORBIDDEN": ":".join(sorted(words))}))


def test_cannot_signal_the_agent(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "kill_agent")
    assert agent.proc is not None and agent.proc.poll() is None, "the agent died"


def test_cannot_signal_the_reaper(api: Api) -> None:
    """PID 1 is root-owned (uid 0 in the job's namespace, only CAP_KILL kept): kill(1, 0) gives
    PermissionError, and so would any real signal."""
    assert_held(run_probe(api, "pid1_reaper"))


def test_cannot_ptrace_pid1_or_other_processes(api: Api) -> None:
    assert_held(run_probe(api, "ptrace"))


def test_cannot_read_kcore_keys_or_trigger_sysrq(api: Api) -> None:
    assert_held(run_probe(api, "proc_masked"))


def test_cannot_write_proc_sys(api: Api) -> None:
    assert_held(run_probe(api, "proc_sys"))


def test_cannot_reach_host_devices(api: Api) -> None:
    assert_held(run_probe(api, "dev_minimal"))


def test_cannot_mknod_devices(api: Api) -> None:
    assert_held(run_probe(api, "mknod"))


def test_cannot_reach_sysfs_or_cgroupfs(api: Api) -> None:
    assert_held(run_probe(api, "no_sys_cgroupfs"))


# ---- identity, descriptors, environment -----------------------------------------------------------

def test_cannot_be_root_or_hold_capabilities(api: Api) -> None:
    assert_held(run_probe(api, "unprivileged"))


def test_cannot_use_leaked_descriptors_or_cwd(api: Api) -> None:
    assert_held(run_probe(api, "fds"))


def test_cannot_find_secrets_in_the_environment(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "environment")


def test_cannot_use_dangerous_kernel_interfaces(api: Api) -> None:
    assert_held(run_probe(api, "dangerous_syscalls"))


def test_cannot_open_other_netlink_families_memfd_secret_or_sync_the_host(api: Api) -> None:
    assert_held(run_probe(api, "narrow_syscalls"))


# ---- namespaces -----------------------------------------------------------------------------------

def test_cannot_share_host_namespaces(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "namespaces")


def test_cannot_set_the_hostname(api: Api, agent: AgentProcess) -> None:
    before = socket.gethostname()
    assert_prepared_probe_held(api, agent, "hostname")
    assert socket.gethostname() == before


def test_cannot_see_host_sysv_ipc(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "sysv_ipc")


def test_cannot_escape_with_chroot(api: Api) -> None:
    assert_held(run_probe(api, "chroot"))


def test_cannot_mount_pivot_root_unshare_or_setns(api: Api) -> None:
    assert_held(run_probe(api, "mount_syscalls"))


def test_cannot_create_user_namespaces(api: Api) -> None:
    assert_held(run_probe(api, "user_namespace"))


# ---- network "none" ---------------------------------------------------------------------------

def test_cannot_see_host_interfaces(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "network_none")


def test_loopback_works_inside_the_job(api: Api) -> None:
    assert_held(run_probe(api, "loopback"))


def test_cannot_connect_to_host_abstract_unix_sockets(api: Api, agent: AgentProcess) -> None:
    assert_prepared_probe_held(api, agent, "abstract_socket")


# ---- the job's processes: reaper, signals, daemons ----------------------------------------------

def test_reaper_reaps_orphans(api: Api) -> None:
    assert_held(run_probe(api, "reaper_orphans"))


def test_reaper_forwards_sigterm_on_stop(api: Api) -> None:
    job = api.submit(script=(ESCAPE / "sigterm.py").read_text())
    try:
        api.wait_for_output(job, "ready")
    finally:
        result = stop_and_finish(api, job)
    assert "got SIGTERM, exiting cleanly" in result.stdout, result.explain()
    assert result.record["status"] == "STOPPED" and result.record["reason"] == "stopped", result.explain()
    assert result.record["exit_code"] == 0 and not result.record["signal"], result.explain()


def test_daemon_does_not_outlive_its_job(api: Api) -> None:
    marker = f"jnb-daemon-{uuid.uuid4().hex}"
    try:
        result = api.run(script=(ESCAPE / "daemon.py").read_text(), env={"PROBE_MARKER": marker, "PROBE_THEN": "exit"})
        assert result.record["status"] == "COMPLETED" and "daemon running" in result.stdout, result.explain()
        left = host_processes_with(marker)
        assert not left, f"the job's daemon outlived it: host pids {left}\n{result.explain()}"
    finally:
        kill_leftovers(marker)


def test_daemon_does_not_outlive_its_stopped_job(api: Api) -> None:
    marker = f"jnb-daemon-{uuid.uuid4().hex}"
    try:
        job = api.submit(script=(ESCAPE / "daemon.py").read_text(), env={"PROBE_MARKER": marker, "PROBE_THEN": "wait"})
        api.wait_for_output(job, "daemon running")
        assert host_processes_with(marker), "the host cannot see the job's daemon: this test would prove nothing"
        result = stop_and_finish(api, job)
        assert result.record["status"] == "STOPPED", result.explain()
        left = host_processes_with(marker)
        assert not left, f"the stopped job's daemon outlived it: host pids {left}\n{result.explain()}"
    finally:
        kill_leftovers(marker)


# ---- the agent following what a job planted ----------------------------------------------------

def test_planted_symlinks_are_never_followed_by_downloads_listings_or_cleanup(api: Api, agent: AgentProcess) -> None:
    victim = Path(f"/tmp/jnb-test-victim-{uuid.uuid4().hex}")
    victim.write_text("host file: must stay as it is\n")
    tokens = Path(os.path.realpath(agent.root)) / "state" / "tokens.json"
    tokens_before = tokens.read_bytes()
    host_passwd = Path("/etc/passwd").read_bytes()
    try:
        env = {"PROBE_TOKENS_FILE": str(tokens), "PROBE_VICTIM": str(victim)}
        result = api.run(script=(ESCAPE / "plant_links.py").read_text(), env=env)
        assert result.record["status"] == "COMPLETED" and "planted" in result.stdout, result.explain()
        ok = api.call("GET", f"/v1/jobs/{result.id}/files/ok.txt", timeout=10)
        assert ok.status_code == 200 and ok.content == b"ordinary file\n", "downloads work (positive control)"
        answers = {}
        for name in ("shadow", "passwd", "tokens", "victim", "up", "up/etc/passwd", "hostroot/etc/passwd",
                     "hostroot", "etcdir/passwd", "sub/deep", "fifo", "sock"):
            r = api.call("GET", f"/v1/jobs/{result.id}/files/{name}", timeout=10)
            answers[name] = r.status_code
            assert host_passwd[:32] not in r.content and tokens_before[:32] not in r.content, f"{name} leaked host data"
        assert all(code == 404 for code in answers.values()), f"planted links must give 404: {answers}"
        listed = api.call("GET", f"/v1/jobs/{result.id}/files", timeout=10).json()["files"]
        assert [f["path"] for f in listed if not f["path"].startswith(".joblet/")] == ["ok.txt"], listed
        r = api.call("DELETE", f"/v1/jobs/{result.id}")
        assert r.status_code == 204, r.text
        assert victim.read_text() == "host file: must stay as it is\n", "the agent's cleanup touched a host file"
        assert tokens.read_bytes() == tokens_before, "the tokens file changed"
        assert Path("/etc/passwd").read_bytes() == host_passwd
    finally:
        victim.unlink(missing_ok=True)


# ---- the agent copying /work out after the job (and removing the copy) -------------------------
# The agent's launcher copies what a job left in /work to the host's disk (under the agent's root)
# so that it can be downloaded, and DELETE removes it. A job controls that tree completely.

def job_dirs_on_host(agent: AgentProcess, job_id: str) -> list[Path]:
    """The job's folders under the agent's root (state/jobs/<id> today), found without descending
    into them (a job's tree may be deeper than any recursive walk can go)."""
    root = Path(agent.root)
    return [p for pattern in (job_id, f"*/{job_id}", f"*/*/{job_id}", f"*/*/*/{job_id}")
            for p in root.glob(pattern) if p.is_dir() and not p.is_symlink()]


def host_usage(dirs: list[Path]) -> tuple[int, int]:
    """(allocated bytes, number of entries) below `dirs`, without recursion limits."""
    allocated = entries = 0
    for d in dirs:
        for dirpath, dirnames, files in os.walk(d):
            entries += len(dirnames) + len(files)
            for name in files:
                allocated += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return allocated, entries


def force_remove_job(api: Api, agent: AgentProcess, job_id: str) -> None:
    """DELETE the job; whatever the agent could not remove is removed here, so nothing is left."""
    try:
        api.call("DELETE", f"/v1/jobs/{job_id}")
    except requests.RequestException:  # a DELETE that breaks can reset the connection
        pass
    for d in job_dirs_on_host(agent, job_id):
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)


def test_sparse_file_cannot_fill_the_host_disk_through_the_work_copy(api: Api, agent: AgentProcess) -> None:
    """A 64 MiB sparse file costs the job nothing (disk_mb 8); the host copy must not cost the host
    more than the job's own limit either (at most one file over it, as the copy's budget allows)."""
    disk_mb, apparent_mb = 8, 64
    result = api.run(script=(ESCAPE / "plant_sparse.py").read_text(), env={"PROBE_APPARENT_MB": str(apparent_mb)},
                     limits={"disk_mb": disk_mb})
    try:
        assert result.record["status"] == "COMPLETED" and "planted" in result.stdout, result.explain()
        allocated, _ = host_usage(job_dirs_on_host(agent, result.id))
        assert allocated <= 2 * disk_mb << 20, (
            f"a job limited to {disk_mb} MiB made the agent write {allocated >> 20} MiB to the host's disk "
            f"(its sparse file of {apparent_mb} MiB was copied byte for byte)")
    finally:
        force_remove_job(api, agent, result.id)


def test_empty_files_cannot_exhaust_host_inodes_through_the_work_copy(api: Api, agent: AgentProcess) -> None:
    """Empty files count no bytes. A real disk of disk_mb = 8 MiB would hold 512 inodes (ext4's
    default of 16 KiB per inode); the host copy of one job must stay within a few thousand."""
    files, bound = 20000, 4096
    result = api.run(script=(ESCAPE / "plant_many_files.py").read_text(), env={"PROBE_FILES": str(files)},
                     limits={"disk_mb": 8})
    try:
        assert result.record["status"] == "COMPLETED" and "planted" in result.stdout, result.explain()
        _, entries = host_usage(job_dirs_on_host(agent, result.id))
        assert entries <= bound, (f"a job limited to 8 MiB left {entries} inodes on the host's disk "
                                  f"(it made {files} empty files in /work; bound {bound})")
    finally:
        force_remove_job(api, agent, result.id)


def run_deep_tree_job(api: Api) -> Result:
    result = api.run(script=(ESCAPE / "plant_deep_tree.py").read_text(), env={"PROBE_DEPTH": "3000"},
                     limits={"disk_mb": 64})
    assert result.record["status"] == "COMPLETED" and "planted" in result.stdout, result.explain()
    return result


def test_deep_work_tree_cannot_crash_the_copy(api: Api, agent: AgentProcess) -> None:
    """3000 nested directories in /work: the agent's copy must not crash, nor show its own traceback
    (with the agent's paths) in the job's output, and what it could copy stays downloadable."""
    result = run_deep_tree_job(api)
    try:
        assert "Traceback" not in result.stderr and "safefs" not in result.stderr, \
            f"the agent's own error reached the job's output:\n{result.stderr[-1200:]}"
        r = api.call("GET", f"/v1/jobs/{result.id}/files/ok.txt")
        assert r.status_code == 200, r.text
    finally:
        force_remove_job(api, agent, result.id)


def test_deep_work_tree_cannot_block_delete(api: Api, agent: AgentProcess) -> None:
    """DELETE of a job whose /work copy is deeper than any recursive walk must still remove it all
    (otherwise a job can leave files on the host that no API call removes)."""
    result = run_deep_tree_job(api)
    try:
        try:
            r = api.call("DELETE", f"/v1/jobs/{result.id}")
            answer = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as exc:
            answer = f"no answer ({exc})"
        left = job_dirs_on_host(agent, result.id)
        assert answer.startswith("204") and not left, f"DELETE: {answer}; left on the host: {left}"
    finally:
        force_remove_job(api, agent, result.id)


def test_output_flood_cannot_fill_the_host_disk(api: Api, agent: AgentProcess) -> None:
    """The agent writes a job's stdout to its log on the host's disk. A job limited to disk_mb = 8
    writes 192 MiB of output: what the agent keeps of it must be bounded (here: under 96 MiB), or
    one job with no timeout fills the host's disk through its log at pipe speed."""
    output_mb, bound_mb = 192, 96
    job = api.submit(script=(ESCAPE / "flood_output.py").read_text(), env={"PROBE_OUTPUT_MB": str(output_mb)},
                     limits={"disk_mb": 8, "timeout_s": 120})
    try:
        record = api.wait_for_status(job, timeout=300, interval=0.2)
        stored = sum(p.stat().st_size for d in job_dirs_on_host(agent, job) for p in d.rglob("*") if p.is_file())
        assert stored <= bound_mb << 20, (
            f"a job limited to 8 MiB wrote {output_mb} MiB of output and the agent stored {stored >> 20} MiB of it "
            f"on the host's disk (status {record['status']}, reason {record['reason']})")
    finally:
        force_remove_job(api, agent, job)
