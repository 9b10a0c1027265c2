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

from slurmcluster import SlurmCluster

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
