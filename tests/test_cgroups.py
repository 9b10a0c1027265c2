"""Tests of joblet_agent.sandbox.cgroups.

cgroup v1 is tested for real on the kernel (this host gives its controllers to v1). cgroup v2
cannot be exercised here: its hierarchy is mounted but has no controllers because v1 holds them
all, so the v2 backend's decisions are checked against a temporary tree laid out like cgroup2,
whose files a small fake "kernel" creates on mkdir just as cgroupfs does.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from joblet_agent.sandbox import cgroups
from joblet_agent.sandbox.cgroups import CgroupError, CgroupLimits, CgroupUsage, detect, whole_disk_of

ROOT = "/sys/fs/cgroup"
V1_USED = ("cpu", "cpuacct", "memory", "pids", "blkio", "freezer") + \
    (("devices",) if os.path.isdir(f"{ROOT}/devices") else ())  # optional: used where mounted
MiB = 1024 * 1024


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _real_v1() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        return detect("jnb-probe").version == "v1"
    except CgroupError:
        return False


def needs_v1(test: Callable[..., None]) -> Callable[..., None]:
    """Root, then this host's cgroup v1 controllers (without root, the root mark says why)."""
    return pytest.mark.root(pytest.mark.skipif(not _real_v1(), reason="needs cgroup v1 controllers")(test))


# --- real cgroup v1 ---


NULL, ZERO = os.stat("/dev/null").st_rdev, os.stat("/dev/zero").st_rdev


@pytest.fixture
def v1() -> Iterator[cgroups.CgroupDriver]:
    """A driver under a unique parent; whatever a test leaves is killed and removed afterwards."""
    driver = detect(f"jnb-test-{secrets.token_hex(4)}")
    try:
        yield driver
    finally:
        for name in driver.leftovers():
            driver.open(name).remove()
        driver.remove_parent()
        assert not any(os.path.exists(f"{ROOT}/{c}/{driver.parent}") for c in V1_USED)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes a test starts; killed and reaped whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait()
            for pipe in (p.stdin, p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()


def _waiting(argv: list[str], procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start a child that blocks on stdin, so it can join a cgroup before it does anything."""
    pipe = subprocess.PIPE
    p = subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe)
    procs.append(p)
    return p


@needs_v1
def test_real_detect_picks_v1() -> None:
    driver = detect("jnb-probe")
    assert driver.version == "v1"
    assert driver.missing() == []


@needs_v1
def test_v1_limits_join_kill_remove(v1: cgroups.CgroupDriver, procs: list) -> None:
    disk = whole_disk_of("/")
    limits = CgroupLimits(cpu_percent=50, memory_mb=64, pids=32, io_bps=10 * MiB, io_device=disk)
    if disk is None:
        limits.io_bps = None
    job = v1.create("job1", limits)
    d = {c: f"{ROOT}/{c}/{v1.parent}/job1" for c in V1_USED}
    assert all(os.path.isdir(p) for p in d.values())
    assert sorted(job.procs_files()) == sorted(f"{p}/cgroup.procs" for p in d.values())
    assert _read(f"{d['cpu']}/cpu.cfs_period_us") == "100000"
    assert _read(f"{d['cpu']}/cpu.cfs_quota_us") == "50000"
    assert _read(f"{d['memory']}/memory.limit_in_bytes") == str(64 * MiB)
    if os.path.exists(f"{d['memory']}/memory.memsw.limit_in_bytes"):
        assert _read(f"{d['memory']}/memory.memsw.limit_in_bytes") == str(64 * MiB)
    assert _read(f"{d['pids']}/pids.max") == "32"
    if disk is not None:
        line = f"{disk[0]}:{disk[1]} {10 * MiB}"
        assert _read(f"{d['blkio']}/blkio.throttle.read_bps_device") == line
        assert _read(f"{d['blkio']}/blkio.throttle.write_bps_device") == line
    assert v1.leftovers() == ["job1"]

    sleeper = subprocess.Popen(["sleep", "30"])
    procs.append(sleeper)
    job.join(sleeper.pid)
    assert job.pids() == [sleeper.pid]
    with open(f"/proc/{sleeper.pid}/cgroup") as f:
        member = {line.split(":")[1]: line.split(":")[2].strip() for line in f}
    for c in V1_USED:
        assert member[c] == f"/{v1.parent}/job1", c

    job.kill()
    assert sleeper.wait() == -signal.SIGKILL
    assert _read(f"{d['freezer']}/freezer.state") == "THAWED"
    job.remove()
    assert not any(os.path.exists(p) for p in d.values())
    job.remove()  # idempotent
    v1.open("job1").remove()
    assert v1.leftovers() == []
    v1.remove_parent()
    assert not any(os.path.exists(f"{ROOT}/{c}/{v1.parent}") for c in V1_USED)
    v1.remove_parent()  # idempotent


@needs_v1
@pytest.mark.skipif(not os.path.isdir(f"{ROOT}/devices"), reason="this host mounts no v1 devices hierarchy")
def test_v1_device_allowlist_is_enforced_by_the_kernel(v1: cgroups.CgroupDriver, procs: list) -> None:
    """Only the listed devices open; mknod of any is refused (a GPU a job was not given stays shut)."""
    job = v1.create("job1", CgroupLimits(devices=(("c", os.major(NULL), os.minor(NULL)),)))
    assert _read(f"{ROOT}/devices/{v1.parent}/job1/devices.list") == f"c {os.major(NULL)}:{os.minor(NULL)} rw"
    probe = subprocess.Popen(
        ["sh", "-c", "read go; cat /dev/null && echo null-opened; "
                     "head -c1 /dev/zero >/dev/null 2>&1 && echo zero-OPENED || echo zero-refused; "
                     f"mknod /tmp/jnb-test-node-$$ c {os.major(ZERO)} {os.minor(ZERO)} 2>/dev/null "
                     "&& { rm -f /tmp/jnb-test-node-$$; echo mknod-ALLOWED; } || echo mknod-refused"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    procs.append(probe)
    job.join(probe.pid)
    out, _ = probe.communicate("go\n", timeout=30)
    assert out.split() == ["null-opened", "zero-refused", "mknod-refused"]


@needs_v1
def test_v1_remove_kills_what_is_left(v1: cgroups.CgroupDriver, procs: list) -> None:
    job = v1.create("busy", CgroupLimits())
    sh = _waiting(["sh", "-c", "read x; sleep 30 </dev/null >/dev/null 2>&1 & sleep 30"], procs)
    job.join(sh.pid)
    sh.stdin.write(b"go\n")  # type: ignore[union-attr]
    sh.stdin.close()  # type: ignore[union-attr]
    job.remove()  # sh and its sleep: killed, then every directory removed
    assert sh.wait() == -signal.SIGKILL
    assert v1.leftovers() == []


@needs_v1
def test_v1_two_removers_of_one_cgroup_both_succeed(v1: cgroups.CgroupDriver, procs: list) -> None:
    """A dead stage's cgroup can be removed by the launcher's watch (stagewatch.py) while an agent's
    start-up sweep or stop removes it too: the one that finds a file or directory gone from under
    it (freezer.state, cgroup.procs: ENOENT, ENODEV) must not fail, as the agent's start would."""
    failures = []
    for i in range(30):
        job = v1.create(f"stage-{i:02x}", CgroupLimits())
        for _ in range(3):
            job.join(_waiting(["sleep", "30"], procs).pid)
        go_r, go_w = os.pipe()
        other = os.fork()
        if other == 0:
            os.read(go_r, 1)
            try:
                v1.open(job.name).remove()
            except BaseException:  # noqa: BLE001 - reported through the exit code
                os._exit(1)
            os._exit(0)
        os.close(go_r)
        os.write(go_w, b"x")
        os.close(go_w)
        try:
            v1.open(job.name).remove()
        except CgroupError as exc:
            failures.append(f"this remover: {exc}")
        except OSError as exc:
            failures.append(f"this remover: {exc!r}")
        if os.waitstatus_to_exitcode(os.waitpid(other, 0)[1]) != 0:
            failures.append("the other remover failed")
    assert failures == []
    assert v1.leftovers() == []


@needs_v1
def test_v1_rename_keeps_processes_and_limits_apply_after(v1: cgroups.CgroupDriver, procs: list) -> None:
    """A sandbox stage joins a cgroup of its own before its job exists, then renames it after the
    job and writes the job's limits: the process stays in it, under the new name."""
    stage = v1.create("stage-x", CgroupLimits())
    sh = _waiting(["sh", "-c", "read x"], procs)
    stage.join(sh.pid)
    job = stage.rename("job-0123456789abcdef")
    job.apply(CgroupLimits(pids=7, memory_mb=64))
    assert v1.leftovers() == ["job-0123456789abcdef"]
    assert job.pids() == [sh.pid]
    assert all(line.endswith(f"/{v1.parent}/job-0123456789abcdef")
               for line in _read(f"/proc/{sh.pid}/cgroup").splitlines()
               if any(f":{c}" in line or f",{c}" in line for c in ("pids", "memory")))
    assert _read(f"{ROOT}/pids/{v1.parent}/job-0123456789abcdef/pids.max").strip() == "7"
    job.remove()
    assert v1.leftovers() == []


@needs_v1
def test_v1_a_stage_made_with_the_standard_devices_takes_its_jobs_limits_in_fewer_writes(
        v1: cgroups.CgroupDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage's cgroup allows the standard /dev's devices from its creation (sequence.py), so its
    job's limits write only CPU quota, memory and pids; every file ends as on a cgroup given the
    same limits at once, and other devices (a job given one) still replace the allowlist."""
    from joblet_agent.sandbox import mounts

    standard = mounts.device_allowlist()
    job = v1.create("stage-y", CgroupLimits(devices=standard)).rename("job-00112233aabbccdd")
    writes: list[str] = []
    write = cgroups.files.write
    monkeypatch.setattr(cgroups.files, "write", lambda path, value: (writes.append(os.path.basename(path)),
                                                                     write(path, value)))
    limits = CgroupLimits(cpu_percent=50, memory_mb=64, pids=10, devices=standard)
    job.apply(limits)
    memsw = os.path.exists(f"{ROOT}/memory/{v1.parent}/job-00112233aabbccdd/memory.memsw.limit_in_bytes")
    assert writes == ["cpu.cfs_quota_us", "memory.limit_in_bytes"] + ["memory.memsw.limit_in_bytes"] * memsw + \
        ["pids.max"]
    monkeypatch.setattr(cgroups.files, "write", write)
    v1.create("job-at-once", limits)
    files = ["cpu/cpu.cfs_period_us", "cpu/cpu.cfs_quota_us", "memory/memory.limit_in_bytes", "pids/pids.max"]
    files += ["memory/memory.memsw.limit_in_bytes"] * memsw + ["devices/devices.list"] * ("devices" in V1_USED)
    for name in files:
        controller, file = name.split("/")
        assert _read(f"{ROOT}/{controller}/{v1.parent}/job-00112233aabbccdd/{file}") == \
            _read(f"{ROOT}/{controller}/{v1.parent}/job-at-once/{file}"), name
    if "devices" in V1_USED:
        job.apply(CgroupLimits(cpu_percent=50, memory_mb=64, pids=10, devices=(("c", os.major(NULL), os.minor(NULL)),)))
        assert _read(f"{ROOT}/devices/{v1.parent}/job-00112233aabbccdd/devices.list") == \
            f"c {os.major(NULL)}:{os.minor(NULL)} rw"


@needs_v1
def test_v1_usage(v1: cgroups.CgroupDriver, procs: list) -> None:
    job = v1.create("usage", CgroupLimits(memory_mb=256))
    code = "import sys; sys.stdin.read(1); b = bytearray(20 * 1024 * 1024); sum(range(10**6))"
    p = _waiting([sys.executable, "-c", code], procs)
    job.join(p.pid)
    p.communicate(b"x")
    assert p.returncode == 0
    u = job.usage()
    assert isinstance(u, CgroupUsage)
    assert u.cpu_s > 0
    assert u.memory_peak_bytes >= 20 * MiB
    assert u.memory_peak_bytes <= 256 * MiB
    assert not job.oom_killed()


@needs_v1
def test_v1_oom_kill_is_reported(v1: cgroups.CgroupDriver, procs: list) -> None:
    job = v1.create("oom", CgroupLimits(memory_mb=32))
    code = (
        "import sys; sys.stdin.read(1); n = 200 * 1024 * 1024; b = bytearray(n)\n"
        "for i in range(0, n, 4096): b[i] = 1\n"
    )
    p = _waiting([sys.executable, "-c", code], procs)
    job.join(p.pid)
    p.communicate(b"x")
    assert p.returncode == -signal.SIGKILL
    assert job.oom_killed()
    assert job.usage().memory_peak_bytes <= 32 * MiB


@needs_v1
def test_v1_pids_limit_stops_a_fork_bomb(v1: cgroups.CgroupDriver, procs: list) -> None:
    job = v1.create("forks", CgroupLimits(pids=5))
    script = (
        "read x; i=0; while [ $i -lt 20 ]; do"
        " sleep 30 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; echo all-forked"
    )
    sh = _waiting(["sh", "-c", script], procs)
    job.join(sh.pid)
    out, err = sh.communicate(b"go\n")
    assert b"all-forked" not in out
    assert b"fork" in err.lower()
    assert 0 < len(job.pids()) <= 5
    events = _read(f"{ROOT}/pids/{v1.parent}/forks/pids.events")
    assert int(events.split()[1]) > 0
    job.kill()


@needs_v1
def test_v1_refused_io_device_names_it_and_cleans_up(v1: cgroups.CgroupDriver) -> None:
    bogus = (254, 4095)
    assert not os.path.exists(f"/sys/dev/block/{bogus[0]}:{bogus[1]}")
    with pytest.raises(CgroupError, match="254:4095"):
        v1.create("badio", CgroupLimits(io_bps=MiB, io_device=bogus))
    assert v1.leftovers() == []
    assert not any(os.path.exists(f"{ROOT}/{c}/{v1.parent}/badio") for c in V1_USED)


@needs_v1
def test_v1_existing_cgroup_is_not_reused_or_removed(v1: cgroups.CgroupDriver) -> None:
    v1.create("twice", CgroupLimits())
    with pytest.raises(CgroupError, match="twice"):
        v1.create("twice", CgroupLimits())
    assert v1.leftovers() == ["twice"]
    assert all(os.path.isdir(f"{ROOT}/{c}/{v1.parent}/twice") for c in V1_USED)


def test_bad_names_and_limits_are_refused(tmp_path) -> None:
    with pytest.raises(CgroupError):
        cgroups.CgroupV2("system.slice", str(tmp_path))  # never sweep someone else's cgroups
    driver = cgroups.CgroupV2("jnb-x", str(tmp_path))
    for bad in ("", "..", "a/b", "../escape"):
        with pytest.raises(CgroupError):
            driver.open(bad)
    for limits in (CgroupLimits(cpu_percent=0), CgroupLimits(memory_mb=-1), CgroupLimits(io_bps=5)):
        with pytest.raises(CgroupError):
            limits.check()


# --- v1 layout from a mounts file ---


def test_v1_detect_from_mounts_file_with_comounted_controllers(tmp_path) -> None:
    base = tmp_path / "cg"
    mounts = tmp_path / "mounts"
    mounts.write_text(
        f"tmpfs {base} tmpfs rw 0 0\n"
        f"cgroup {base}/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
        f"cgroup {base}/mem\\040ory cgroup rw,memory 0 0\n"
        f"cgroup {base}/systemd cgroup rw,name=systemd 0 0\n"
        f"cgroup {base}/freezer cgroup rw,freezer 0 0\n"
        f"cgroup2 {base}/unified cgroup2 rw 0 0\n"
    )
    driver = detect("jnb-t", mount_root=str(base), mounts_file=str(mounts))
    assert driver.version == "v1"
    assert driver.missing() == ["pids", "blkio"]
    job = driver.open("j")
    assert job.procs_files() == [
        f"{base}/cpu,cpuacct/jnb-t/j/cgroup.procs",
        f"{base}/mem ory/jnb-t/j/cgroup.procs",
        f"{base}/freezer/jnb-t/j/cgroup.procs",
    ]
    with pytest.raises(CgroupError, match="pids"):
        driver.create("j", CgroupLimits())


def test_v1_oom_fallback_without_oom_kill_counter(tmp_path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup {tmp_path}/memory cgroup rw,memory 0 0\n")
    job = detect("jnb-t", mount_root=str(tmp_path), mounts_file=str(mounts)).open("j")
    mem = tmp_path / "memory" / "jnb-t" / "j"
    mem.mkdir(parents=True)
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    (mem / "memory.limit_in_bytes").write_text(f"{32 * MiB}\n")
    (mem / "memory.failcnt").write_text("0\n")
    (mem / "memory.max_usage_in_bytes").write_text(f"{32 * MiB}\n")
    assert not job.oom_killed()
    (mem / "memory.failcnt").write_text("17\n")
    assert job.oom_killed()
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert not job.oom_killed()  # the real counter wins when the kernel has it


# --- cgroup v2 against a fake tree ---

V2_FILES = {
    "cgroup.procs": "",
    "cgroup.controllers": "",
    "cgroup.subtree_control": "",
    "cgroup.events": "populated 0\nfrozen 1\n",
    "cgroup.freeze": "0",
    "cgroup.kill": "",
    "cpu.max": "max 100000",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "memory.max": "max",
    "memory.swap.max": "max",
    "memory.current": "0",
    "memory.peak": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    "pids.max": "max",
    "io.max": "",
}


class FakeKernel:
    """Populates a directory the way cgroupfs does on mkdir, and lets rmdir ignore those files."""

    def __init__(self, omit: tuple[str, ...] = ()):
        self.omit = omit

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        for name, content in V2_FILES.items():
            if name not in self.omit:
                with open(os.path.join(path, name), "w") as f:
                    f.write(content)

    def rmdir(self, path: str) -> None:
        for name in os.listdir(path):
            if os.path.isfile(os.path.join(path, name)):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)


def _v2_tree(tmp_path, monkeypatch, controllers: str = "cpu io memory pids", omit=()) -> str:
    kernel = FakeKernel(omit)
    monkeypatch.setattr(cgroups.files, "mkdir", kernel.mkdir)
    monkeypatch.setattr(cgroups.files, "rmdir", kernel.rmdir)
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("1\n")
    return str(root)


def test_v2_detected_and_limits_written(tmp_path, monkeypatch) -> None:
    root = _v2_tree(tmp_path, monkeypatch)
    empty_mounts = tmp_path / "mounts"
    empty_mounts.write_text("")
    driver = detect("jnb-t", mount_root=root, mounts_file=str(empty_mounts))
    assert driver.version == "v2"
    assert driver.missing() == []
    limits = CgroupLimits(cpu_percent=50, memory_mb=64, pids=7, io_bps=MiB, io_device=(8, 0))
    job = driver.create("j", limits)
    d = f"{root}/jnb-t/j"
    assert job.procs_files() == [f"{d}/cgroup.procs"]
    assert _read(f"{root}/cgroup.subtree_control") == "+cpu +memory +pids +io"
    assert _read(f"{root}/jnb-t/cgroup.subtree_control") == "+cpu +memory +pids +io"
    assert _read(f"{d}/cpu.max") == "50000 100000"
    assert _read(f"{d}/memory.max") == str(64 * MiB)
    assert _read(f"{d}/memory.swap.max") == "0"
    assert _read(f"{d}/pids.max") == "7"
    assert _read(f"{d}/io.max") == f"8:0 rbps={MiB} wbps={MiB}"
    assert driver.leftovers() == ["j"]

    job.apply(CgroupLimits(cpu_percent=200, io_device=(8, 0)))  # back to unlimited where None
    assert _read(f"{d}/cpu.max") == "200000 100000"
    assert _read(f"{d}/memory.max") == "max"
    assert _read(f"{d}/memory.swap.max") == "max"
    assert _read(f"{d}/pids.max") == "max"
    assert _read(f"{d}/io.max") == "8:0 rbps=max wbps=max"

    job.join(4242)
    assert _read(f"{d}/cgroup.procs") == "4242"
    job.kill()
    assert _read(f"{d}/cgroup.kill") == "1"

    (tmp_path / "cgroup2" / "jnb-t" / "j" / "cgroup.procs").write_text("")
    job.remove()
    assert not os.path.exists(d)
    job.remove()
    driver.remove_parent()
    assert not os.path.exists(f"{root}/jnb-t")


def test_v2_only_missing_controllers_are_enabled(tmp_path, monkeypatch) -> None:
    root = _v2_tree(tmp_path, monkeypatch)
    with open(f"{root}/cgroup.subtree_control", "w") as f:
        f.write("cpu memory\n")
    driver = cgroups.CgroupV2("jnb-t", root)
    driver.create("j", CgroupLimits())
    assert _read(f"{root}/cgroup.subtree_control") == "+pids +io"


def test_v2_without_swap_accounting(tmp_path, monkeypatch) -> None:
    root = _v2_tree(tmp_path, monkeypatch, omit=("memory.swap.max", "memory.peak"))
    driver = cgroups.CgroupV2("jnb-t", root)
    job = driver.create("j", CgroupLimits(memory_mb=16))
    d = f"{root}/jnb-t/j"
    assert not os.path.exists(f"{d}/memory.swap.max")
    assert _read(f"{d}/memory.max") == str(16 * MiB)
    with open(f"{d}/memory.current", "w") as f:
        f.write("12345\n")
    assert job.usage().memory_peak_bytes == 12345  # no memory.peak: current is all there is


def test_v2_usage_and_oom_parsing(tmp_path, monkeypatch) -> None:
    root = _v2_tree(tmp_path, monkeypatch)
    job = cgroups.CgroupV2("jnb-t", root).create("j", CgroupLimits())
    d = f"{root}/jnb-t/j"
    with open(f"{d}/cpu.stat", "w") as f:
        f.write("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 3\n")
    with open(f"{d}/memory.peak", "w") as f:
        f.write("7340032\n")
    with open(f"{d}/memory.current", "w") as f:
        f.write("4096\n")
    assert job.usage() == CgroupUsage(cpu_s=1.5, memory_peak_bytes=7340032)
    assert not job.oom_killed()
    with open(f"{d}/memory.events", "w") as f:
        f.write("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert job.oom_killed()


def test_v2_kill_falls_back_to_freeze_kill_thaw(tmp_path, monkeypatch, procs: list) -> None:
    """Kernels before 5.14 have no cgroup.kill: the driver freezes, kills each pid, then thaws."""
    root = _v2_tree(tmp_path, monkeypatch, omit=("cgroup.kill",))
    job = cgroups.CgroupV2("jnb-t", root).create("j", CgroupLimits())
    sleeper = subprocess.Popen(["sleep", "30"])
    procs.append(sleeper)
    job.join(sleeper.pid)  # only recorded in the fake tree; the process stays where it is
    monkeypatch.setattr(type(job), "holds", lambda _self, pid: pid == sleeper.pid)  # as the fake tree says
    assert job.pids() == [sleeper.pid]
    job.kill()
    assert sleeper.wait() == -signal.SIGKILL
    assert _read(f"{root}/jnb-t/j/cgroup.freeze") == "0"


def test_a_listed_pid_that_is_not_in_the_cgroup_is_never_killed(tmp_path, monkeypatch, procs: list) -> None:
    """A PID read from cgroup.procs may name another process by the time it is signalled (the
    member ended, its PID was given again): the kill goes through a pidfd, and only to a process
    that is in the cgroup by its own /proc/<pid>/cgroup (issue 13, item 1). Here the fake tree
    lists a process that lives elsewhere, as a recycled PID would."""
    root = _v2_tree(tmp_path, monkeypatch, omit=("cgroup.kill",))
    job = cgroups.CgroupV2("jnb-t", root).create("j", CgroupLimits())
    bystander = subprocess.Popen(["sleep", "30"])
    procs.append(bystander)
    job.join(bystander.pid)
    job.kill()
    assert bystander.poll() is None, "a process outside the job's cgroup was killed by its listed PID"


def test_v2_create_failure_removes_what_it_made(tmp_path, monkeypatch) -> None:
    root = _v2_tree(tmp_path, monkeypatch, omit=("pids.max",))
    driver = cgroups.CgroupV2("jnb-t", root)
    with pytest.raises(CgroupError, match="pids.max"):
        driver.create("j", CgroupLimits(pids=3))
    assert driver.leftovers() == []


def test_v2_rename_moves_the_one_directory(tmp_path, monkeypatch) -> None:
    """On cgroup2 a job is one directory: the stage's cgroup is renamed there, limits follow."""
    root = _v2_tree(tmp_path, monkeypatch)
    driver = cgroups.CgroupV2("jnb-t", root)
    job = driver.create("stage-x", CgroupLimits()).rename("job-1")
    job.apply(CgroupLimits(pids=9))
    assert driver.leftovers() == ["job-1"]
    assert job.dirs == [f"{root}/jnb-t/job-1"]
    assert open(f"{root}/jnb-t/job-1/pids.max").read().strip() == "9"


def test_detect_prefers_complete_backend(tmp_path, monkeypatch) -> None:
    root = _v2_tree(tmp_path, monkeypatch, controllers="cpu memory")
    empty = tmp_path / "mounts"
    empty.write_text("")
    partial_v2 = detect("jnb-t", mount_root=root, mounts_file=str(empty))
    assert partial_v2.version == "v2"
    assert partial_v2.missing() == ["pids", "io"]

    full_v1 = tmp_path / "mounts-v1"
    full_v1.write_text(
        "".join(f"cgroup {tmp_path}/{c} cgroup rw,{c} 0 0\n" for c in cgroups.CgroupV1.needed)
    )
    assert detect("jnb-t", mount_root=root, mounts_file=str(full_v1)).version == "v1"

    with pytest.raises(CgroupError, match="no cgroup"):
        detect("jnb-t", mount_root=str(tmp_path / "nothing"), mounts_file=str(empty))


@needs_v1
def test_detect_real_unified_mount_is_not_v2() -> None:
    """This host's cgroup2 at /sys/fs/cgroup/unified has no controllers: v2 there is refused."""
    v2 = detect("jnb-probe", mount_root=f"{ROOT}/unified", mounts_file="/dev/null")
    assert v2.version == "v2"
    assert set(v2.missing()) == {"cpu", "memory", "pids", "io"}


# --- whole_disk_of ---


def test_whole_disk_of_real_root_and_tmpfs() -> None:
    disk = whole_disk_of("/")
    if disk is not None:
        node = f"/sys/dev/block/{disk[0]}:{disk[1]}"
        assert os.path.exists(node)
        assert not os.path.exists(f"{node}/partition")
    assert whole_disk_of("/dev/shm") is None  # tmpfs: no block device


def test_whole_disk_of_partition_maps_to_its_disk(tmp_path) -> None:
    dev = os.stat("/").st_dev
    major, minor = os.major(dev), os.minor(dev)
    disk = tmp_path / "devices" / "virtual" / "sdz"
    part = disk / "sdz3"
    part.mkdir(parents=True)
    (disk / "dev").write_text("8:0\n")
    (part / "dev").write_text(f"{major}:{minor}\n")
    (part / "partition").write_text("3\n")
    (tmp_path / "dev" / "block").mkdir(parents=True)
    os.symlink(part, tmp_path / "dev" / "block" / f"{major}:{minor}")
    assert whole_disk_of("/", sysfs=str(tmp_path)) == (8, 0)
    (part / "partition").unlink()
    assert whole_disk_of("/", sysfs=str(tmp_path)) == (major, minor)
