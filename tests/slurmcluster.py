"""A one-node Slurm cluster with two fake GPUs, in one private temporary folder, for tests and
benchmarks (recipe: ../shared/recipes/slurm-one-node.md).

munged, slurmctld and slurmd run from Debian's packages with every path inside the folder;
nothing is written to /etc. Slurm's commands find the cluster through `SLURM_CONF` (see `env`).
The fake GPUs are character devices with NVIDIA's major (195) and no driver behind them: opening
one fails with ENXIO, so a process that gets ENXIO was let through by the device cgroup, and one
that gets EPERM was not. Teardown kills only the daemons this module started, each by the pid in
its own pid file, after checking that the process is still the daemon it started.

    python tests/slurmcluster.py up        # prints SLURM_CONF=...; leaves the cluster running
    python tests/slurmcluster.py down DIR  # stops it and removes DIR
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from waiting import wait_until

PREFIX = "jnb-slurm-"
GPU_MAJOR = 195  # NVIDIA's character major; no driver here, so opening a node gives ENXIO
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20


@dataclass
class SlurmCluster:
    """A running one-node cluster; `env` is what a Slurm command (or an agent) needs to find it."""

    dir: Path
    node: str
    gpus: int
    cpus: int
    memory_mb: int

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def gpu_paths(self) -> list[Path]:
        return [self.dir / f"fakegpu{i}" for i in range(self.gpus)]

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T").stdout.strip()

    def queue(self) -> list[str]:
        """Job ids in the queue (pending or running), any user."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def wait_node(self, states: tuple[str, ...] = ("idle",), timeout: float = 60) -> None:
        wait_until(lambda: self.node_state().rstrip("*~#") in states, timeout=timeout, interval=0.1,
                   message=lambda: f"node {self.node} is {self.node_state()!r}, not {states}:\n{self.logs()}")

    def set_node(self, state: str, reason: str = "jnb test") -> None:
        """`scontrol update nodename=... state=...` (down, resume, drain)."""
        args = ["scontrol", "update", f"nodename={self.node}", f"state={state}"]
        if state.lower() in ("down", "drain"):
            args.append(f"reason={reason}")
        # ReturnToService=2 brings a node that answers back by itself: resuming it may find it idle
        self.run(*args, check=state.lower() != "resume")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def slurm_config(node_root: Path, extra: str = "") -> str:
    """agent.yml of an agent that places its jobs through this cluster (`extra`: more slurm keys)."""
    return f"executor: slurm\nstop_grace_s: 2\nslurm:\n  node_root: {node_root}\n{extra}"


def node_leftovers(node_root: Path) -> list[str]:
    """What the node side left on this host for `node_root`: job folders, /work copies, and its
    cgroup parent (`jnb-<hash of the node root>`) in any hierarchy."""
    import hashlib

    parent = "jnb-" + hashlib.sha1(str(node_root.resolve()).encode()).hexdigest()[:8]
    found = [str(p) for sub in ("jobs", "work") if (node_root / sub).is_dir() for p in (node_root / sub).iterdir()]
    return found + [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{parent}")] + \
        [str(p) for p in Path("/sys/fs/cgroup").glob(parent)]


def write_config(folder: Path, node: str, cpus: int, memory_mb: int, gpus: int) -> None:
    """slurm.conf and gres.conf for one node named after this host, every path inside `folder`.
    More CPUs than the host has are declared with SlurmdParameters=config_overrides (a benchmark's
    node that runs many small jobs at once)."""
    lines = [
        "ClusterName=jnb",
        f"SlurmctldHost={node}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder}/munge.sock",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid",
        f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log",
        f"SlurmdLogFile={folder}/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill",
        "GresTypes=gpu",
        "MpiDefault=none",
        "ReturnToService=2",
        "KillWait=5",
        "DefMemPerCPU=256",
        "InactiveLimit=0",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        *(["SlurmdParameters=config_overrides"] if cpus > (os.cpu_count() or 1) else []),
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{gpus} State=UNKNOWN",
        "PartitionName=jnb Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    (folder / "slurm.conf").write_text("\n".join(lines) + "\n")
    if gpus:
        files = f"{folder}/fakegpu[0-{gpus - 1}]" if gpus > 1 else f"{folder}/fakegpu0"
        (folder / "gres.conf").write_text(f"Name=gpu File={files}\n")
    else:
        (folder / "gres.conf").write_text("")


def _start_munge(folder: Path) -> None:
    key = folder / "munge.key"
    with open(key, "wb", opener=lambda p, f: os.open(p, f, 0o400)) as f:
        f.write(os.urandom(1024))
    subprocess.run(["munged", "--force", f"--socket={folder}/munge.sock", f"--key-file={key}",
                    f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                    f"--seed-file={folder}/munged.seed"], check=True, capture_output=True, timeout=30)


def start(gpus: int = 2, cpus: int | None = None, memory_mb: int | None = None) -> SlurmCluster:
    """Bring a cluster up and wait until its node is idle; on failure nothing is left running."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    os.chmod(folder, 0o755)  # the socket and the config are read by Slurm commands of any user
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(folder, node, gpus, cpus or os.cpu_count() or 1, memory_mb or _memory_mb() // 2)
    try:
        for sub in ("state", "spool"):
            (folder / sub).mkdir(mode=0o700)
        for i in range(gpus):
            os.mknod(folder / f"fakegpu{i}", 0o666 | stat.S_IFCHR, os.makedev(GPU_MAJOR, i))
            os.chmod(folder / f"fakegpu{i}", 0o666)  # as the NVIDIA driver makes them
        write_config(folder, node, cluster.cpus, cluster.memory_mb, gpus)
        _start_munge(folder)
        env = {**os.environ, **cluster.env}
        subprocess.run(["slurmctld", "-i", "-f", str(cluster.conf)], env=env, check=True, capture_output=True,
                       timeout=30)
        subprocess.run(["slurmd", "-f", str(cluster.conf)], env=env, check=True, capture_output=True, timeout=30)
        cluster.wait_node()
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _daemon_pid(folder: Path, name: str) -> int | None:
    """The pid in `name`.pid, if that process is still the daemon we started (its name and its
    command line naming our folder), so that a recycled pid is never signalled."""
    try:
        pid = int((folder / f"{name}.pid").read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name and str(folder).encode() in cmdline else None


def _end(folder: Path, name: str, timeout: float = 15) -> None:
    pid = _daemon_pid(folder, name)
    if pid is None:
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if _daemon_pid(folder, name) != pid:
            return  # the pid changed hands between the check and the pidfd
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not select.select([fd], [], [], timeout)[0]:  # a pidfd reads ready once the process has exited
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def stop(cluster: SlurmCluster) -> None:
    """Cancel the cluster's jobs, stop its daemons (by pid file) and remove its folder."""
    if cluster.conf.exists() and _daemon_pid(cluster.dir, "slurmctld"):
        with contextlib.suppress(subprocess.SubprocessError, OSError, AssertionError):  # the daemons end anyway
            cluster.run("scancel", "--full", "--partition=jnb", check=False, timeout=10)
            wait_until(lambda: not cluster.queue(), timeout=10, interval=0.1)
    for name in DAEMONS:
        _end(cluster.dir, name)
    shutil.rmtree(cluster.dir, ignore_errors=True)


@contextlib.contextmanager
def one_node_cluster(gpus: int = 2, cpus: int | None = None) -> Iterator[SlurmCluster]:
    cluster = start(gpus=gpus, cpus=cpus)
    try:
        yield cluster
    finally:
        stop(cluster)


def main() -> None:
    if sys.argv[1:2] == ["up"]:
        cluster = start()
        print(f"SLURM_CONF={cluster.conf}")
    elif sys.argv[1:2] == ["down"] and len(sys.argv) == 3:
        folder = Path(sys.argv[2]).resolve()
        if not folder.name.startswith(PREFIX):
            raise SystemExit(f"{folder} is not a cluster folder made here ({PREFIX}*)")
        stop(SlurmCluster(folder, socket.gethostname().split(".")[0], 0, 0, 0))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
