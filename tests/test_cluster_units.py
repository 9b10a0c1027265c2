"""Pure pieces of the cluster executor: how a job's limits become a Slurm ask, what is refused in
the user's terms, how Slurm's output is read (no Slurm needed; tests/test_cluster_agent.py runs
the real thing)."""

from __future__ import annotations

import pytest

from joblet_agent.cluster import slurm
from joblet_agent.node import gres
from joblet_agent.config import AgentConfig, SlurmConfig

NODES = [slurm.Node("a", 8, 64000, 0, "idle"), slurm.Node("b", 4, 32000, 2, "mixed")]


def test_limits_become_an_ask_with_room_for_the_node_side():
    ask = slurm.Ask.of(cpu_percent=150, memory_mb=512, gpus=1, timeout_s=90, grace_s=5)
    assert (ask.cpus, ask.memory_mb, ask.gpus) == (2, 512 + slurm.NODE_OVERHEAD_MB, 1)
    assert ask.time_min == 3  # 90 s + grace + margin, in whole minutes: a backstop behind the node's own
    assert slurm.Ask.of(None, None, 0, None, 5).time_min is None


def test_srun_gets_the_ask_and_the_site_options_last():
    config = SlurmConfig(partition="gpu", account="teach", extra_args=["--qos=notebook"])
    argv = slurm.srun_argv(config, "jnb-x-1", slurm.Ask(2, 576, 1, 3), ["python", "-m", "node"])
    assert argv[:2] == ["srun", "--job-name=jnb-x-1"]
    for option in ("--cpus-per-task=2", "--mem=576", "--gres=gpu:1", "--time=3", "--partition=gpu",
                   "--account=teach", "--export=NONE", "--chdir=/"):
        assert option in argv, option
    assert argv[-4:] == ["--qos=notebook", "python", "-m", "node"]


@pytest.mark.parametrize("ask, why", [
    (slurm.Ask(1, 100, 3, None), "3 GPUs asked, the largest node of partition p has 2"),
    (slurm.Ask(1, 70000, 0, None), "the largest node of partition p has 64000 MB"),
    (slurm.Ask(16, 100, 0, None), "16 CPUs asked, the largest node of partition p has 8"),
    (slurm.Ask(8, 100, 1, None), "no node of partition p has 8 CPUs, 100 MB and 1 GPUs at once"),
])
def test_what_no_node_could_run_is_refused_in_the_users_terms(ask, why):
    assert why in slurm.refusal(ask, NODES, "p")


def test_what_one_node_fits_is_not_refused():
    assert slurm.refusal(slurm.Ask(4, 32000, 2, None), NODES, None) is None
    assert slurm.refusal(slurm.Ask(1, 1, 0, None), [], None) == "this cluster has no nodes"


@pytest.mark.parametrize("field, count", [("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:2,mps:100", 2),
                                          ("(null)", 0), ("gpu:tesla:1,gpu:a100:2", 3)])
def test_gpus_are_counted_from_sinfo(field, count):
    assert slurm.gpu_count(field) == count


def test_pending_reasons_keep_slurms_word_and_hopeless_ones_are_known():
    assert slurm.pending_message("Resources").startswith("Resources: waiting")
    assert slurm.pending_message("ReqNodeNotAvail, UnavailableNodes:vm").startswith("ReqNodeNotAvail")
    assert slurm.hopeless("PartitionTimeLimit") and not slurm.hopeless("Priority")


def test_gres_device_files_come_from_slurmd_g():
    text = ("slurmd: Gres Name=gpu Type=a100 Count=2 Index=0 ID=7696487 File=/dev/nvidia[0-1] (null)\n"
            "slurmd: Gres Name=gpu Type=a100 Count=1 Index=2 ID=7696487 File=/dev/nvidia3 (null)\n"
            "slurmd: Gres Name=mps Count=100 Index=0 File=/dev/nvidia0\n")
    assert gres.device_files(text) == {0: "/dev/nvidia0", 1: "/dev/nvidia1", 2: "/dev/nvidia3"}
    assert gres.expand("/dev/gpu[00-02,7]") == ["/dev/gpu00", "/dev/gpu01", "/dev/gpu02", "/dev/gpu7"]
    assert gres.allocated_indices({"SLURM_STEP_GPUS": "1,3"}) == [1, 3]
    with pytest.raises(gres.GresError, match="2 GPUs asked"):
        gres.allocation({"SLURM_STEP_GPUS": "0"}, 2)


@pytest.mark.parametrize("args, why", [(["-p", "x"], "long option"), (["--uid=0"], "set by the agent"),
                                       (["--gres=gpu:8"], "set by the agent"), (["--export=ALL"], "set by the agent")])
def test_site_options_cannot_override_what_the_agent_sets(args, why):
    with pytest.raises(ValueError, match=why):
        AgentConfig.model_validate({"executor": "slurm", "slurm": {"extra_args": args}})


# ---- a runtime as the node side finds it in its view of the shared folder --------------------------

def _published(tmp_path, build: str = "b1") -> tuple[str, dict]:
    """A runtime `tiny` published in tmp_path/runtimes (version folder, manifest, the name's symlink)
    and the reference the agent would send for it."""
    import os

    from joblet_agent.builds import manifest as mf

    runtimes = tmp_path / "runtimes"
    version = runtimes / ".versions" / "tiny" / build
    (version / "isolated" / "tree").mkdir(parents=True)
    (version / "isolated" / "tree" / "hello").write_text("hello\n")
    mf.write_manifest(str(version))
    link = runtimes / "tiny"
    if link.is_symlink():
        link.unlink()
    os.symlink(f".versions/tiny/{build}", link)
    return str(runtimes), {"name": "tiny", "build": build, "manifest_sha256": mf.manifest_digest(str(version)),
                           "mounts": [{"source": "isolated/tree", "target": "/opt/runtimes/tiny/tree"}]}


def test_a_node_mounts_the_runtime_build_the_agent_verified(tmp_path):
    from joblet_agent.node.runtime import mounts

    runtimes, ref = _published(tmp_path)
    [bind] = mounts(ref, runtimes, "n1")
    # bound from a descriptor: the source resolved beneath the verified build's isolated/ folder
    assert bind.beneath is not None and bind.beneath.endswith("/.versions/tiny/b1/isolated"), bind
    assert bind.source == "tree" and bind.readonly, bind
    assert bind.target == "/opt/runtimes/tiny/tree"


def _refusal(ref: dict, runtimes: str) -> str:
    from joblet_agent.node.runtime import RuntimeMissing, mounts

    with pytest.raises(RuntimeMissing) as refused:
        mounts(ref, runtimes, "n1")
    assert "on node n1" in str(refused.value) or "not valid" in str(refused.value)
    return str(refused.value)


def test_a_node_lagging_behind_a_rebuild_refuses_the_job(tmp_path):
    runtimes, old = _published(tmp_path, "b1")
    _, new = _published(tmp_path, "b2")           # the agent's view: rebuilt and published as b2
    (tmp_path / "runtimes" / "tiny").unlink()     # this node's view still publishes b1
    (tmp_path / "runtimes" / "tiny").symlink_to(".versions/tiny/b1")
    assert "publishes build b1 instead" in _refusal(new, runtimes)
    assert "manifest differs" in _refusal({**old, "manifest_sha256": "0" * 64}, runtimes)


def test_a_changed_tree_on_the_node_refuses_the_job(tmp_path):
    runtimes, ref = _published(tmp_path)
    with open(tmp_path / "runtimes" / ".versions" / "tiny" / "b1" / "isolated" / "tree" / "hello", "a") as f:
        f.write("changed on this node\n")
    assert "failed verification" in _refusal(ref, runtimes) and "hello" in _refusal(ref, runtimes)


@pytest.mark.parametrize("change, why", [
    ({"name": "../etc"}, "not valid"),
    ({"build": "../../b1"}, "not valid"),
    ({"mounts": [{"source": "isolated/../../../etc", "target": "/x"}]}, "is not inside isolated/"),
    ({"mounts": [{"source": "runtime.yml", "target": "/x"}]}, "is not inside isolated/"),
    ({"mounts": [{"source": "isolated/tree", "target": "relative"}]}, "is not inside isolated/"),
])
def test_a_reference_that_points_elsewhere_is_refused(tmp_path, change, why):
    runtimes, ref = _published(tmp_path)
    assert why in _refusal({**ref, **change}, runtimes)
