"""Runtime builds: time and size of each shipped runtime built by the agent (builder sandbox +
cleanup + manifest + test in a production sandbox + publish), next to a plain install on the host
in the same run:

- python-3.11:     `python3.11 -m venv` on the host
- python-3.11-ml:  `python3.11 -m venv` + `pip install --no-cache-dir numpy pandas matplotlib`
- node-24, openjdk-17: the runtime's own setup.sh run directly on the host as root (no sandbox,
  no cleanup, no manifest, no test), in a private mount namespace with its own /tmp

Run as root: `.venv/bin/python benchmarks/runtimes.py [NAME ...]`. The downloading runtimes need
the agent's bridge network; the host references download from the same registries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import AgentProcess, running_agent  # noqa: E402

CATALOGUE = HERE.parent / "runtimes"
DEFAULT = ["python-3.11", "python-3.11-ml", "node-24", "openjdk-17"]


def du(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def agent_build(agent: AgentProcess, name: str) -> dict:
    admin = agent.api(agent.admin_token)
    t0 = time.monotonic()
    r = admin.call("POST", f"/v1/runtimes/{name}/build", json={"force": True})
    if r.status_code != 201:
        return {"error": r.text}
    job_id = r.json()["id"]
    events = admin.events(job_id, timeout=3600)
    elapsed = time.monotonic() - t0
    record = admin.call("GET", f"/v1/jobs/{job_id}").json()
    if record["status"] != "COMPLETED":
        return {"error": events[-1].get("message"), "seconds": elapsed}
    version = Path(os.path.realpath(agent.root / "runtimes" / name))
    return {"seconds": round(elapsed, 1), "bytes": du(version / "isolated"),
            "files": admin.call("GET", f"/v1/runtimes/{name}").json().get("files")}


def host_reference(name: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="jnb-bench-", dir="/var/tmp"))
    try:
        t0 = time.monotonic()
        if name == "python-3.11":
            subprocess.run(["/usr/bin/python3.11", "-m", "venv", str(work / "venv")], check=True)
            what = "python3.11 -m venv"
        elif name == "python-3.11-ml":
            subprocess.run(["/usr/bin/python3.11", "-m", "venv", str(work / "venv")], check=True)
            subprocess.run([str(work / "venv/bin/pip"), "install", "-q", "--no-cache-dir", "--only-binary=:all:",
                            "--disable-pip-version-check", "numpy", "pandas", "matplotlib"], check=True)
            what = "venv + pip install numpy pandas matplotlib"
        else:
            spec = (CATALOGUE / name / "runtime.yml").read_text()
            import yaml

            packages = " ".join(yaml.safe_load(spec).get("packages", []))
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8",
                   "RUNTIME_PREFIX": str(work / "prefix"), "RUNTIME_NAME": name, "RUNTIME_PACKAGES": packages}
            script = CATALOGUE / name / "setup.sh"
            subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount -t tmpfs tmpfs /tmp && cd /tmp && sh -eu {script}"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            what = "setup.sh on the host (no sandbox/cleanup/manifest/test)"
        elapsed = time.monotonic() - t0
        return {"seconds": round(elapsed, 1), "bytes": du(work), "what": what}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(names: list[str]) -> None:
    rows = []
    with running_agent() as agent:
        for name in names:
            built = agent_build(agent, name)
            ref = host_reference(name)
            rows.append({"runtime": name, "agent": built, "host": ref})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'runtime':16} {'agent build s':>13} {'size MB':>8} {'files':>6} | {'host s':>7} {'size MB':>8}  host reference")
    for row in rows:
        a, h = row["agent"], row["host"]
        if "error" in a:
            print(f"{row['runtime']:16} failed: {a['error']}")
            continue
        print(f"{row['runtime']:16} {a['seconds']:>13} {a['bytes'] / 1e6:>8.1f} {a['files'] or 0:>6} | "
              f"{h['seconds']:>7} {h['bytes'] / 1e6:>8.1f}  {h['what']}")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
