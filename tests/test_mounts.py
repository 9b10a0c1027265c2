"""The job's root as jnb-init builds it (init_root.c, from rootfs.py's records), attacked for real.

Each test forks a child with its own private mount and PID namespaces, mounts a tmpfs root there,
may prepare sources (tmpfs submounts, a noexec mount) in that namespace, and spawns the real
jnb-init with the spec's plan, as a stage does: nothing can reach the host's mount table even when
the build is wrong. The job's command prints what it sees (its /proc/self/mountinfo, stat lines).

Harmless if the sandbox fails: the host secrets are files this test made under /tmp/jnb-*, a write
that escaped would land in folders it made and removes, and the job only reads or creates files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from joblet_agent.contract import JobType
from joblet_agent.sandbox import initplan, libc, mounts, rootfs, sequence, status
from joblet_agent.sandbox.spec import Mount, SandboxSpec, WorkFile

UID = 65534


@dataclass
class Built:
    code: int
    stdout: str
    messages: list[status.Message] = field(default_factory=list)

    @property
    def setup_error(self) -> str:
        errors = [m.message for m in self.messages if m.kind is status.Kind.SETUP_ERROR]
        return errors[0] if errors else ""

    def options_of(self, point: str) -> list[set[str]]:
        """The per-mount options of `point` and every mount below it, as the job's mountinfo has them."""
        found = []
        for line in self.stdout.splitlines():
            fields = line.split()
            if len(fields) > 5 and (fields[4] == point or fields[4].startswith(point + "/")):
                found.append(set(fields[5].split(",")))
        return found


@contextmanager
def scratch() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="jnb-test-root-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def spec_for(root: str, command: str, **fields: object) -> SandboxSpec:
    return SandboxSpec(job_id="jnbroot", job_type=JobType.STANDARD, root_dir=root, argv=["/bin/sh", "-c", command],
                       env={"JOB_ID": "jnbroot", "PATH": "/usr/bin:/bin"}, uid=UID, gid=UID, **fields)  # type: ignore[arg-type]


def build(spec: SandboxSpec, prepare: Callable[[], None] = lambda: None, extra: bytes = b"") -> Built:
    """jnb-init for `spec` (its plan, then `extra` records) as PID 1 in a child's namespaces, the
    root's tmpfs mounted and `prepare` run there first: its exit code, stdout and messages."""
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:
        out: dict[str, object] = {"code": 99, "stdout": "", "status": ""}
        try:
            libc.unshare(libc.CLONE_NEWNS | libc.CLONE_NEWPID | libc.CLONE_NEWNET | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC)
            mounts.make_private()
            mounts.mount_tmpfs(spec.root_dir, 16)
            prepare()
            out["code"], out["stdout"], out["status"] = _spawn(spec, extra)
        except BaseException as exc:  # noqa: BLE001
            out["status"] = json.dumps({"event": "setup_error", "message": f"harness: {exc!r}"}) + "\n"
        finally:
            os.write(result_w, json.dumps(out).encode())
            os._exit(0)
    os.close(result_w)
    with os.fdopen(result_r, "rb") as f:
        out = json.loads(f.read())
    os.waitpid(child, 0)
    return Built(out["code"], out["stdout"], status.take_lines(bytearray(), out["status"].encode()))


def _spawn(spec: SandboxSpec, extra: bytes) -> tuple[int, str, str]:
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    st_r, st_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    plan_fd = initplan.sealed(initplan.plan(spec) + extra)
    try:
        pid = os.posix_spawn(initplan.BINARY, ["jnb-init"], {}, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, null, 2),
            (os.POSIX_SPAWN_DUP2, st_w, 3), (os.POSIX_SPAWN_DUP2, plan_fd, initplan.PLAN_FD)])
    finally:
        for fd in (out_w, st_w, null, plan_fd):
            os.close(fd)
    with os.fdopen(out_r, "rb") as o, os.fdopen(st_r, "rb") as s:
        stdout, lines = o.read(), s.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code, stdout.decode(errors="replace"), lines.decode(errors="replace")


def ran(built: Built) -> Built:
    assert built.code == 0 and not built.setup_error, (built.code, built.messages, built.stdout)
    return built


# ---- the root as it should be -----------------------------------------------------------------

@pytest.mark.root
def test_the_root_has_its_folders_files_and_dev_as_the_spec_says():
    with scratch() as root:
        spec = spec_for(root, "stat -c '%n %a %u' /work /tmp /work/tools /work/tools/run.sh /etc/hosts; "
                              "./tools/run.sh; cat /etc/hosts; echo x > /dev/null && ls /dev | tr '\\n' ' '; echo; "
                              "cat /proc/self/mountinfo",
                        etc_files={"hosts": "127.0.0.1 jnb\n"},
                        uploads=[WorkFile("tools/run.sh", b"#!/bin/sh\necho ran\n", 0o755)])
        built = ran(build(spec))
    lines = built.stdout.splitlines()
    assert lines[:5] == [f"/work 755 {UID}", "/tmp 1777 0", f"/work/tools 755 {UID}",
                         f"/work/tools/run.sh 755 {UID}", "/etc/hosts 644 0"], built.stdout
    assert lines[5:7] == ["ran", "127.0.0.1 jnb"], built.stdout
    assert set(lines[7].split()) == {"null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout",
                                     "stderr", "ptmx", "pts", "shm"}, lines[7]
    assert {"ro", "nosuid", "nodev", "noexec"} <= built.options_of("/dev")[0]
    for point in ("/work", "/tmp"):
        assert {"rw", "nosuid", "nodev"} <= built.options_of(point)[0], point
    assert all("ro" in options for options in built.options_of("/usr")), built.options_of("/usr")


# ---- binds ------------------------------------------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize("readonly", [True, False], ids=["readonly", "writable"])
def test_a_bind_makes_every_submount_nosuid_nodev_and_readonly_if_asked(readonly: bool):
    """A recursive bind alone would leave the source's submounts as they are (writable, suid)."""
    with scratch() as root, scratch() as src:
        def prepare() -> None:
            mounts.mount_tmpfs(src, 1, flags=0)  # suid and dev allowed at the source
            os.mkdir(os.path.join(src, "sub"))
            mounts.mount_tmpfs(os.path.join(src, "sub"), 1, flags=0)

        spec = spec_for(root, "touch /opt/src/x /opt/src/sub/x 2>&1; cat /proc/self/mountinfo",
                        mounts=[Mount(src, "/opt/src", readonly=readonly)])
        built = ran(build(spec, prepare))
    found = built.options_of("/opt/src")
    assert len(found) == 2, built.stdout
    for options in found:
        assert {"nosuid", "nodev", "ro" if readonly else "rw"} <= options, found
    refused = built.stdout.count("Read-only file system")
    assert refused == (2 if readonly else 0), built.stdout


@pytest.mark.root
def test_a_source_mounted_noexec_stays_noexec():
    with scratch() as root, scratch() as src:
        def prepare() -> None:
            mounts.mount_tmpfs(src, 1, flags=libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
            with open(os.path.join(src, "run.sh"), "w") as f:
                f.write("#!/bin/sh\necho executed\n")
            os.chmod(os.path.join(src, "run.sh"), 0o755)

        spec = spec_for(root, "/opt/nx/run.sh 2>&1; cat /proc/self/mountinfo",
                        mounts=[Mount(src, "/opt/nx", readonly=True)])
        built = ran(build(spec, prepare))
    assert "executed" not in built.stdout
    assert "Permission denied" in built.stdout, built.stdout
    (options,) = built.options_of("/opt/nx")
    assert {"ro", "nosuid", "nodev", "noexec"} <= options, options


@pytest.mark.root
@pytest.mark.parametrize("planted", ["data", "via/data"], ids=["the-source", "a-folder-on-the-way"])
def test_a_runtime_source_swapped_for_a_symlink_to_a_host_secret_is_never_bound(planted: str):
    with scratch() as root, scratch() as host, scratch() as tree:
        with open(os.path.join(host, "data"), "w") as f:
            f.write("jnb-host-secret\n")
        os.makedirs(os.path.join(tree, "isolated"))
        if planted == "data":
            os.symlink(os.path.join(host, "data"), os.path.join(tree, "isolated", "data"))
        else:
            os.symlink(host, os.path.join(tree, "isolated", "via"))
        spec = spec_for(root, "cat /opt/rt/data",
                        mounts=[Mount(planted, "/opt/rt/data", beneath=os.path.join(tree, "isolated"))])
        built = build(spec)
    assert "jnb-host-secret" not in built.stdout
    assert built.code == sequence.SETUP_FAILED_EXIT, built
    assert built.setup_error.startswith(f"build root: runtime mount source '{planted}'"), built.messages


@pytest.mark.root
def test_a_runtime_source_that_is_fine_is_bound_from_what_was_resolved():
    with scratch() as root, scratch() as tree:
        os.makedirs(os.path.join(tree, "isolated", "lib"))
        with open(os.path.join(tree, "isolated", "lib", "v"), "w") as f:
            f.write("jnb-runtime\n")
        spec = spec_for(root, "cat /opt/rt/lib/v /opt/rt/v; touch /opt/rt/lib/w 2>&1",
                        mounts=[Mount("lib", "/opt/rt/lib", beneath=os.path.join(tree, "isolated")),
                                Mount("lib/v", "/opt/rt/v", beneath=os.path.join(tree, "isolated"))])
        built = ran(build(spec))
    assert built.stdout.startswith("jnb-runtime\njnb-runtime\n"), built.stdout
    assert "Read-only file system" in built.stdout


@pytest.mark.root
def test_masks_hide_a_folder_and_a_file_as_the_job_would_see_them():
    with scratch() as root, scratch() as src:
        os.makedirs(os.path.join(src, "keys"))
        for name in ("keys/id", "shadow"):
            with open(os.path.join(src, name), "w") as f:
                f.write("jnb-host-secret\n")
        spec = spec_for(root, "ls -A /opt/h/keys; cat /opt/h/shadow /opt/h/keys/id 2>&1; echo end",
                        mounts=[Mount(src, "/opt/h")], masks=["/opt/h/keys", "/opt/h/shadow", "/opt/h/absent"])
        built = ran(build(spec))
    assert "jnb-host-secret" not in built.stdout
    assert built.stdout.endswith("end\n"), built.stdout


# ---- uploads ----------------------------------------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize("path", ["d/link/x", "d/flink"], ids=["a-folder-link", "the-file-a-link"])
def test_an_upload_through_a_symlink_is_refused_and_writes_nothing_outside(path: str):
    with scratch() as root, scratch() as inside, scratch() as outside:
        os.symlink(outside, os.path.join(inside, "link"))
        os.symlink(os.path.join(outside, "target"), os.path.join(inside, "flink"))
        spec = spec_for(root, "true", mounts=[Mount(inside, "/work/d", readonly=False)],
                        uploads=[WorkFile(path, b"jnb-escaped\n")])
        built = build(spec)
        assert os.listdir(outside) == []
    assert built.code == sequence.SETUP_FAILED_EXIT, built
    assert built.setup_error.startswith(f"build root: "), built.messages
    assert path.split("/")[-1] in built.setup_error, built.messages


@pytest.mark.root
def test_the_init_refuses_a_dotdot_path_even_when_the_plan_has_one():
    """Python refuses '..' first; the init refuses it too (a record written by hand)."""
    with scratch() as root:
        escape = f"jnb-escape-{os.getpid()}"
        spec = spec_for(root, "true")
        with pytest.raises(rootfs.BadRoot, match=r"'\.\.'"):
            initplan.plan(spec_for(root, "true", uploads=[WorkFile(f"../../{escape}", b"x")]))
        record = rootfs.record(rootfs.WRITE, 0o644, UID, UID, f"work/../../{escape}", b"jnb-escaped\n")
        built = build(spec, extra=record)
    assert not os.path.exists(os.path.join(os.path.dirname(root), escape))
    assert built.code == sequence.SETUP_FAILED_EXIT, built
    assert built.setup_error.startswith(f"build root: path work/../../{escape}: '.', '..'"), built.messages


# ---- devices ----------------------------------------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize("kind", ["block", "fifo", "file"])
def test_a_device_that_is_not_a_character_device_is_refused(kind: str):
    with scratch() as root, scratch() as host:
        node = os.path.join(host, "jnbdev")
        if kind == "block":
            os.mknod(node, 0o600 | 0o060000, os.makedev(7, 250))
        elif kind == "fifo":
            os.mkfifo(node, 0o600)
        else:
            open(node, "w").close()
        built = build(spec_for(root, "ls -l /dev/jnbdev", devices=[node]))
    assert built.code == sequence.SETUP_FAILED_EXIT, built
    assert built.setup_error == f"build root: device {node} is not a character device", built.messages


@pytest.mark.root
def test_a_character_device_is_bound_under_its_name_usable_but_not_executable():
    with scratch() as root, scratch() as host:
        node = os.path.join(host, "jnbnull")
        os.mknod(node, 0o666 | 0o020000, os.makedev(1, 3))  # /dev/null's numbers
        os.chmod(node, 0o666)
        built = ran(build(spec_for(root, "echo x > /dev/jnbnull && echo wrote; cat /proc/self/mountinfo",
                                   devices=[node])))
    assert built.stdout.startswith("wrote\n"), built.stdout
    (options,) = built.options_of("/dev/jnbnull")
    assert {"nosuid", "noexec"} <= options and "nodev" not in options, options


@pytest.mark.root
@pytest.mark.parametrize("name", ["null", "pts", "shm", "ptmx", ".hidden"])
def test_a_device_with_a_taken_name_is_refused_before_the_init(name: str):
    with scratch() as root:
        with pytest.raises(sequence.SetupError, match=f"^build root: device /jnb/{name}: its name"):
            sequence.start_init(spec_for(root, "true", devices=[f"/jnb/{name}"]))


@pytest.mark.root
def test_the_same_device_name_twice_is_refused_by_the_init():
    with scratch() as root, scratch() as a, scratch() as b:
        for folder in (a, b):
            os.mknod(os.path.join(folder, "jnbnull"), 0o666 | 0o020000, os.makedev(1, 3))
        built = build(spec_for(root, "true", devices=[os.path.join(a, "jnbnull"), os.path.join(b, "jnbnull")]))
    assert built.code == sequence.SETUP_FAILED_EXIT, built
    assert built.setup_error == "build root: file dev/jnbnull: File exists", built.messages


def test_mountinfo_unescapes_spaces():
    assert mounts.unescape("/a\\040b") == "/a b"
    assert mounts.unescape("/plain") == "/plain"
