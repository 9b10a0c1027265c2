"""The node side's trust model, attacked through a real one-node Slurm cluster (README "Clusters").

Each test runs `python -m joblet_agent.node` the way an attacker could: as a plain Slurm
user's own step, or as root without the agent's signature. Every refusal must come before anything
is made on the node (no node folder, no cgroup), with a message that says why.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet_agent.cluster import signing, wire

from slurmcluster import SlurmCluster, node_leftovers

pytestmark = pytest.mark.root
AGENT_DIR = Path(__file__).resolve().parents[1] / "agent"
NODE = ["-m", "joblet_agent.node"]
PROBE_V1 = Path("/sys/fs/cgroup/memory/jnb-trust-probe")
PROBE_V2 = Path("/sys/fs/cgroup/jnb-trust-probe")


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> SlurmCluster:
    return slurm_cluster


@pytest.fixture
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A root-only key, a node root that must never appear, and an import path any user can read."""
    base = Path(tempfile.mkdtemp(prefix="jnb-trust-"))
    os.chmod(base, 0o755)
    key = base / "cluster.key"
    signing.ensure_key(str(key))
    shim = base / "py"
    shim.mkdir()
    (shim / "joblet_agent").symlink_to(AGENT_DIR)
    yield {"base": base, "key": key, "root": base / "node-root", "shim": shim}
    subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def srun(cluster: SlurmCluster, place: dict[str, Path], stdin: bytes, as_user: str | None = None,
         name: str = "jnb-trust", key: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """The node side as a Slurm step named `name`, run as root or as `as_user` (their own srun)."""
    python = "/usr/bin/python3" if as_user else sys.executable
    argv = ["srun", "--quiet", f"--job-name={name}", "--mem=64", "--time=1", python, *NODE,
            "--key", str(key or place["key"]), "--root", str(place["root"])]
    if as_user:
        argv = ["runuser", "-u", as_user, "--"] + argv
    env = {**os.environ, **cluster.env, "PYTHONPATH": str(place["shim"])}
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=60)


def payload(name: str = "jnb-trust") -> dict:
    return {"slurm_job_name": name, "record": {}, "request": {}}


def assert_refused(result: subprocess.CompletedProcess[bytes], place: dict[str, Path], why: str) -> None:
    assert result.returncode == 2, result
    assert why in result.stderr.decode(), result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert frames and frames[-1]["k"] == "refused" and why in frames[-1]["message"], frames
    assert not place["root"].exists(), "a refused node side made its folder"


def test_a_slurm_user_who_is_not_the_agent_runs_it_as_themselves_and_is_refused(cluster, place):
    signed = wire.envelope(signing.load_key(str(place["key"])), payload())  # even with the real MAC
    result = srun(cluster, place, signed, as_user="nobody")
    assert_refused(result, place, f"this is uid {pwd.getpwnam('nobody').pw_uid}")


def test_a_slurm_user_cannot_make_the_sandbox_without_the_check_either(cluster, place):
    """Slurm runs a user's step as that user: the namespaces, mounts and cgroups a sandbox needs are
    out of reach whatever code they run (no setuid helper exists to lend them root)."""
    probe = PROBE_V2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else PROBE_V1
    code = ("import ctypes, errno, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "def unshare():\n"
            "    if libc.unshare(0x00020000 | 0x20000000) != 0:  # CLONE_NEWNS | CLONE_NEWPID\n"
            "        raise PermissionError(ctypes.get_errno(), 'unshare')\n"
            f"for what, call in (('unshare', unshare), ('cgroup', lambda: os.mkdir({str(probe)!r}))):\n"
            "    try:\n"
            "        call(); print(what, 'ALLOWED')\n"
            "    except PermissionError:\n"
            "        print(what, 'refused')\n")
    env = {**os.environ, **cluster.env}
    out = subprocess.run(["runuser", "-u", "nobody", "--", "srun", "--quiet", "--mem=64", "--time=1",
                          "/usr/bin/python3", "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split("\n")[:2] == ["unshare refused", "cgroup refused"], out
    assert not probe.exists()


def test_root_with_no_spec_is_refused(cluster, place):
    assert_refused(srun(cluster, place, b""), place, "no spec header")


def test_root_with_a_spec_signed_by_another_key_is_refused(cluster, place):
    forged = wire.envelope(os.urandom(32), payload())
    assert_refused(srun(cluster, place, forged), place, "MAC does not verify")


def test_a_changed_byte_breaks_the_mac(cluster, place):
    signed = wire.envelope(signing.load_key(str(place["key"])), payload())
    tampered = signed.replace(b'"record":{}', b'"record":[]')
    assert tampered != signed
    assert_refused(srun(cluster, place, tampered), place, "MAC does not verify")


def test_a_signed_spec_replayed_into_another_slurm_job_is_refused(cluster, place):
    signed = wire.envelope(signing.load_key(str(place["key"])), payload("jnb-some-other-job"))
    assert_refused(srun(cluster, place, signed, name="jnb-trust"), place, "is for Slurm job")


def test_a_key_others_can_read_is_refused(cluster, place):
    loose = place["base"] / "loose.key"
    loose.write_bytes(place["key"].read_bytes())
    os.chmod(loose, 0o644)
    signed = wire.envelope(signing.load_key(str(place["key"])), payload())
    assert_refused(srun(cluster, place, signed, key=loose), place, "mode 0600 or stricter")


def test_a_symlinked_key_is_refused(cluster, place):
    link = place["base"] / "link.key"
    link.symlink_to(place["key"])
    signed = wire.envelope(signing.load_key(str(place["key"])), payload())
    assert_refused(srun(cluster, place, signed, key=link), place, "cannot open the cluster key")


# ---- a Slurm user who is not the agent, on the node while the agent's job runs there -------------

INTRUDER = r"""
import errno, json, os, sys
root, job, pids = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
out = {}

def attempt(name, call):
    try:
        call()
        out[name] = "ALLOWED"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))

def create_and_remove(path):  # harmless if it works: nothing stays
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(path)

attempt("list the job's root", lambda: os.listdir(f"{root}/jobs/{job}"))
attempt("read the job's /work file", lambda: open(f"{root}/work/{job}/secret.txt").close())
attempt("write in the node root", lambda: create_and_remove(f"{root}/jnb-intruder"))
attempt("write in the job folders", lambda: create_and_remove(f"{root}/jobs/jnb-intruder"))
attempt("signal the job", lambda: [os.kill(pid, 0) for pid in pids])
attempt("enter the job's root through /proc", lambda: os.listdir(f"/proc/{pids[0]}/root/"))
attempt("read the job's environment", lambda: open(f"/proc/{pids[0]}/environ").close())
print(json.dumps(out))
"""


def _job_pids(node_root: Path) -> list[int]:
    """The processes of the node side's sandboxes, from its cgroup parent in any hierarchy."""
    import hashlib

    parent = "jnb-" + hashlib.sha1(str(node_root.resolve()).encode()).hexdigest()[:8]
    found = {int(p) for f in [*Path("/sys/fs/cgroup").glob(f"*/{parent}/**/cgroup.procs"),
                               *Path("/sys/fs/cgroup").glob(f"{parent}/**/cgroup.procs")]
             for p in f.read_text().split()}
    return sorted(found)


def _as_nobody(cluster: SlurmCluster, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **cluster.env}, timeout=60)


def test_a_slurm_user_on_the_node_cannot_reach_the_agents_running_job(cluster, place):
    """Another user of the cluster, with a step of their own on the same node while the agent's
    job runs there: they cannot cancel it, join its allocation, attach to its I/O (where the spec
    and a session's input travel), enter its folders, read its files or signal its processes."""
    from agentproc import running_agent
    from slurmcluster import slurm_config
    from waiting import wait_until

    node_root = place["root"]
    with running_agent(slurm_config(node_root), env=cluster.env) as agent:
        api = agent.api()
        job_id = api.submit(command=["sh", "-c", "echo secret > /work/secret.txt; echo up; sleep 120"])
        api.wait_for_output(job_id, "up")
        slurm_id = api.record(job_id)["cluster"]["job_id"]
        pids = wait_until(lambda: _job_pids(node_root), timeout=30)
        try:
            probe = _as_nobody(cluster, "srun", "--quiet", "--mem=64", "--time=1", "/usr/bin/python3", "-c",
                               INTRUDER, str(node_root.resolve()), job_id, ",".join(map(str, pids)))
            assert probe.returncode == 0, probe
            denied = {what: "EPERM" if what == "signal the job" else "EACCES" for what in json.loads(probe.stdout)}
            assert json.loads(probe.stdout) == denied and len(denied) == 7, probe.stdout
            cancel = _as_nobody(cluster, "scancel", slurm_id)
            join = _as_nobody(cluster, "srun", "--quiet", f"--jobid={slurm_id}", "--overlap", "true")
            for refused in (cancel, join):
                assert refused.returncode != 0 and "denied" in refused.stderr.lower(), refused
            # slurmstepd refuses another user's attach, which sattach words "no tasks running"; an
            # attach that worked would print the step's frames and block until the job ends
            attach = _as_nobody(cluster, "sattach", f"{slurm_id}.0", stdin="x = 1\n")
            assert attach.stdout == "" and "no tasks running" in attach.stderr, attach
            record = api.record(job_id)
            assert record["status"] == "RUNNING", record
            out = "".join(e["data"] for e in api.events(job_id, follow=False) if e["type"] == "stdout")
            assert out == "up\n", out
        finally:
            api.call("POST", f"/v1/jobs/{job_id}/stop")
            assert api.wait_for_status(job_id)["status"] == "STOPPED"
    wait_until(lambda: not node_leftovers(node_root), timeout=30, message=lambda: node_leftovers(node_root))
