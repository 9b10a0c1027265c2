"""The minimal production root (runtimes/base, agent/builds/base.py): what a default production job
has and lacks, `base: host`, and an agent that has no base yet or a tampered one."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from agentproc import Api, running_agent
from waiting import run_coroutine

BASE_YML = Path(__file__).resolve().parent.parent / "runtimes" / "base" / "runtime.yml"
TOOLS = ("gcc", "apt", "apt-get", "dpkg", "pip", "pip3", "cc1", "perl", "make", "ld")
PROBE = """
import glob, json, os, shutil, subprocess, sys
found = {t: bool(shutil.which(t)) for t in %r}
found["cc1"] = bool(glob.glob("/usr/lib/gcc/*/*/cc1") + glob.glob("/usr/libexec/gcc/*/*/cc1"))
pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
found["python3 -m pip"] = pip.returncode == 0
usr = [l.split() for l in open("/proc/self/mountinfo") if l.split()[4] == "/usr"]
packages = open("/usr/share/joblet/base-packages.txt").read() if os.path.exists("/usr/share/joblet/base-packages.txt") else ""
print(json.dumps({"found": found, "usr_root": usr[0][3], "packages": packages,
                  "files": sum(len(f) for _, _, f in os.walk("/usr"))}))
""" % (TOOLS,)


def probe(api: Api) -> dict:
    res = api.run(script=PROBE)
    assert res.record["status"] == "COMPLETED", res.explain()
    return json.loads(res.stdout.strip().splitlines()[-1])


def on_host() -> dict[str, bool]:
    """What the host's own /usr holds (a `base: host` job sees exactly that)."""
    found = {t: any(os.path.lexists(f"{d}/{t}") for d in ("/usr/bin", "/usr/sbin")) for t in TOOLS}
    found["cc1"] = bool(glob.glob("/usr/lib/gcc/*/*/cc1") + glob.glob("/usr/libexec/gcc/*/*/cc1"))
    return found


@pytest.mark.root
def test_a_default_job_has_no_compiler_package_manager_or_pip(api: Api):
    got = probe(api)
    assert not any(got["found"].values()), got["found"]
    assert "/.versions/base/" in got["usr_root"] and got["usr_root"].endswith("/isolated/usr"), got["usr_root"]
    declared = yaml.safe_load(BASE_YML.read_text())["packages"]
    assert sorted(line.split()[0] for line in got["packages"].splitlines()) == sorted(declared)


@pytest.mark.root
def test_a_default_job_has_the_text_tools_scripts_expect(api: Api):
    """The shell tools every Debian root has (priority required) work in the minimal root."""
    script = ("bash -c 'echo bash' && echo x | grep x && echo y | sed s/y/sed/ && echo awk | awk '{print}' "
              "&& find /work -maxdepth 0 && hostname")
    res = api.run(command=["sh", "-c", script])
    assert res.record["status"] == "COMPLETED", res.explain()
    assert res.stdout.split() == ["bash", "x", "sed", "awk", "/work", "joblet"], res.stdout


@pytest.mark.root
def test_a_default_job_imports_the_standard_library_from_its_bytecode(api: Api):
    """The image keeps each source's mtime, which its `.pyc` records: without it, python3
    compiled every module it imported, in every job (the cell runner's imports: ~100 ms)."""
    res = api.run(command=["python3", "-v", "-c", "import ast, json"])
    assert res.record["status"] == "COMPLETED", res.explain()
    assert "bytecode is stale" not in res.stderr, res.stderr
    assert re.search(r"code object from '?/usr/lib/python3[.0-9]*/__pycache__/ast\.cpython", res.stderr), res.stderr


@pytest.mark.root
def test_base_host_keeps_the_hosts_usr():
    host = on_host()
    assert host["gcc"] and host["apt"] and host["dpkg"] and host["cc1"], host  # scripts/install.sh
    with running_agent("base: host\n") as agent:
        got = probe(agent.api())
    assert {t: got["found"][t] for t in TOOLS} == host
    assert got["usr_root"] == "/usr" and got["packages"] == ""
    assert got["found"]["python3 -m pip"] == bool(shutil.which("pip3", path="/usr/bin"))


@pytest.mark.root
def test_an_agent_builds_its_base_before_it_serves_and_never_uses_a_tampered_one():
    with running_agent(seed_base=False) as agent:
        api, admin = agent.api(), agent.api(agent.admin_token)
        first = probe(api)
        assert not any(first["found"].values()), first["found"]
        info = admin.call("GET", "/v1/runtimes/base").json()
        assert info["status"] == "verified", info
        version = Path(os.path.realpath(agent.root / "runtimes" / "base"))
        assert first["usr_root"] == f"{version}/isolated/usr"
        # a changed file in the published base: the next job never sees it, it waits for a new build
        target = version / "isolated" / "usr" / "bin" / "ls"
        os.chmod(target, 0o777)
        second = probe(api)
        assert Path(os.path.realpath(agent.root / "runtimes" / "base")) != version
        assert second["usr_root"] != first["usr_root"] and not any(second["found"].values())
        log = agent.log_path.read_text()
        assert "building the minimal base image" in log and "failed verification" in log, log[-3000:]


def test_a_base_that_cannot_be_built_refuses_jobs_with_the_reason_and_is_not_retried_per_job():
    """The failure path, on the BaseImage alone: the catalogue's base cannot be built here (in a
    real agent: a package missing on the host, the build's own test failing)."""
    import asyncio

    from joblet_agent.builds.base import BaseImage
    from joblet_agent.errors import BadRequest, NotFound, Unavailable

    class Published:
        def resolve(self, name: str):
            raise BadRequest(f"unknown runtime: no runtime {name!r} is published on this agent")

    class Runtimes:
        published, building, builds = Published(), {}, 0

        async def build(self, who, name, body):
            self.builds += 1
            raise NotFound("no runtime 'base' in this agent's catalogue")

    runtimes = Runtimes()
    base = BaseImage(runtimes)  # type: ignore[arg-type]

    async def twice() -> list[str]:
        await base.prepare()
        out = []
        for _ in range(2):
            with pytest.raises(Unavailable) as err:
                await base()
            out.append(err.value.message)
        return out

    messages = run_coroutine(twice())
    assert runtimes.builds == 1
    assert all("no runtime 'base' in this agent's catalogue" in m and "base: host" in m for m in messages), messages
