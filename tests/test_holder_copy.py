"""jnb-holder's /work copy (holder_copy.c) against Python's (workcopy.copy_work, fs.copy_tree):
the same tree, the same counts and the same note lines, for generated trees with everything a
hostile job can leave there; and a notebook cell, whose runner and inputs are uploads in /work, is
now held by jnb-holder, which copies its /work out in its own process."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from agentproc import AgentProcess, Api
from test_holder_c import COUNTER, _exe, _holder, _stop

from joblet_agent.eventfile import encode
from joblet_agent.sandbox import holderplan, workcopy

pytestmark = pytest.mark.root

ODD = [b"plain", b"\xff", b"\x80x", b"a\nb", b"q'uote", b'dq"', b"both'\"", b"back\\slash", b"\xc3\xa9t\xc3\xa9",
       b"\xe4\xb8\xad", b"\xf0\x9f\x98\x80", b"\x7fdel", b"\x01ctl", b"tab\there", b"\xed\xa0\x80sur", b"\xc2\xa0nbsp",
       b"\xe4\xb8", b"\xc0\xaf", b" space", b"Z", b"a", b"\xf4\x90\x80\x80", b"-dash", b"\xe2\x80\xa8ls"]


def _c(src: Path, dst: Path, limit: int, entries: int | None) -> bytes:
    done = subprocess.run([holderplan.BINARY, "--copy-test", os.fsencode(src), os.fsencode(dst), str(limit),
                           str(-1 if entries is None else entries)], capture_output=True, timeout=120, check=True)
    return done.stdout


def _python(src: Path, dst: Path, limit: int, entries: int | None) -> bytes:
    """workcopy.copy_work of `src` (a job root's `work`), as jnb-holder's copy test prints it:
    counts, then note events."""
    assert src.name == "work"
    files, size, notes = workcopy.copy_work(str(src.parent), str(dst), limit, entries)
    return f"{files} {size}\n".encode() + b"".join(encode(i + 1, workcopy.note_event(n)) for i, n in enumerate(notes))


def _tree(top: Path) -> list[tuple[bytes, str, int, str]] | None:
    """Every entry below `top`: path, kind, mode and content digest (None: no `top`)."""
    if not os.path.lexists(top):
        return None
    found = [(b"", "dir", stat.S_IMODE(os.lstat(top).st_mode), "")]
    for where, dirs, files in os.walk(os.fsencode(top)):
        for name in dirs + files:
            path = os.path.join(where, name)
            st = os.lstat(path)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
            digest = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest() if kind == "file" else ""
            found.append((os.path.relpath(path, os.fsencode(top)), kind, stat.S_IMODE(st.st_mode), digest))
    return sorted(found)


def _both(tmp: Path, src: Path, limit: int, entries: int | None, before=None) -> tuple[bytes, object]:
    """Copy `src` both ways into the same fresh folder (`before` prepares it); both must agree."""
    out = {}
    dst = tmp / "jnb-out" / "files" / "work"
    for how, copy in (("c", _c), ("py", _python)):
        if before:
            before(dst)
        out[how] = (copy(src, dst, limit, entries), _tree(dst))
        subprocess.run(["rm", "-rf", str(tmp / "jnb-out")], check=True)
    assert out["c"][0] == out["py"][0], (out["c"][0], out["py"][0])
    assert out["c"][1] == out["py"][1]
    return out["c"]


def _random_tree(rng: random.Random, top: Path, outside: Path) -> None:
    """Folders, files (empty, small, setuid, sparse), links, fifos, sockets, devices and hard links,
    with names of any bytes."""
    top.mkdir()
    dirs = [os.fsencode(top)]
    for _ in range(rng.randint(0, 40)):
        where = rng.choice(dirs)
        name = os.path.join(where, rng.choice(ODD) + (str(rng.randrange(4)).encode() if rng.random() < 0.5 else b""))
        if os.path.lexists(name):
            continue
        kind = rng.choice(["dir", "dir", "file", "file", "file", "link", "fifo", "sock", "dev", "sparse", "hard", "suid"])
        if kind == "dir":
            os.mkdir(name, rng.choice([0o755, 0o700, 0o2775, 0o000]))
            dirs.append(name)
        elif kind in ("file", "suid"):
            with open(name, "wb") as f:
                f.write(rng.randbytes(rng.choice([0, 1, 100, 5000, 70000])))
            os.chmod(name, rng.choice([0o644, 0o755, 0o600, 0o000]) | (0o6000 if kind == "suid" else 0))
        elif kind == "sparse":
            with open(name, "wb") as f:
                f.truncate(rng.choice([3 << 20, 1 << 40]))
        elif kind == "link":
            os.symlink(rng.choice([os.fsencode(outside), b"/etc/passwd", b"..", b"missing", b"."]), name)
        elif kind == "fifo":
            os.mkfifo(name)
        elif kind == "sock" and len(name) < 100:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(name)
        elif kind == "dev":
            os.mknod(name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        elif kind == "hard":
            os.link(outside / "secret", name)


def test_the_c_copy_keeps_what_python_keeps_of_generated_hostile_trees(tmp_path: Path):
    outside = tmp_path / "jnb-outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"root only")
    os.chmod(outside / "secret", 0o600)
    rng = random.Random(2024)
    for i in range(120):
        src = tmp_path / f"jnb-src{i}" / "work"
        src.parent.mkdir()
        _random_tree(rng, src, outside)
        limit = rng.choice([8 << 20, 8 << 20, 80000, 5000, 0])
        entries = rng.choice([None, None, 0, 1, 3, 10])
        _both(tmp_path, src, limit, entries)
        subprocess.run(["rm", "-rf", str(src.parent)], check=True)


def test_the_c_copy_bounds_depth_entries_and_bytes_as_python(tmp_path: Path):
    src = tmp_path / "jnb-deep" / "work"
    path = src
    for _ in range(70):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "f").write_bytes(b"deepest")
    (src / "d" / "x").write_bytes(b"x" * 10)
    out, tree = _both(tmp_path, src, 1 << 20, None)
    assert out.startswith(b"65 10\n") and b"deeper than 64 folders" in out
    wide = tmp_path / "jnb-wide" / "work"
    wide.mkdir(parents=True)
    for n in range(300):
        (wide / f"f{n:03}").write_bytes(b"y" * n)
    out, _ = _both(tmp_path, wide, 1000, None)
    assert b"over the job's disk limit" in out and b"more)" in out
    out, _ = _both(tmp_path, wide, 1 << 30, 50)
    assert out.startswith(b"50 ") and b"the rest: over 50 files and folders" in out
    empty = tmp_path / "jnb-empty" / "work"
    empty.mkdir(parents=True)
    assert _both(tmp_path, empty, 1 << 20, None) == (b"0 0\n", None)  # an empty /work makes no folder


def test_the_c_copy_reports_a_failure_as_python(tmp_path: Path):
    """An OSError stops both copies with the same note: a missing /work, a name that is taken."""
    _both(tmp_path, tmp_path / "jnb-missing" / "work", 1 << 20, None)
    src = tmp_path / "jnb-src" / "work"
    (src / "sub").mkdir(parents=True)
    (src / "a'b\xe9").write_bytes(b"1")
    (src / "sub" / "x").write_bytes(b"2")
    (src / "taken'\xe9").write_bytes(b"3")

    def taken(dst: Path) -> None:
        dst.mkdir(parents=True)
        (dst / "taken'\xe9").write_bytes(b"old")
    out, _ = _both(tmp_path, src, 1 << 20, None, before=taken)
    assert '[Errno 17] File exists: \\"taken\'\xe9\\"'.encode() in out and out.startswith(b"0 0\n"), out

    def file_in_the_way(dst: Path) -> None:
        dst.parent.mkdir(parents=True)
        dst.write_bytes(b"")
    _both(tmp_path, src, 1 << 20, None, before=file_in_the_way)


def test_the_c_copy_follows_nothing_and_blocks_on_nothing_while_the_tree_changes(tmp_path: Path):
    """The tree changes under the copy (files swapped for links to a secret, fifos with no writer,
    folders and back, a file that grows): the copy ends, keeps only regular files and folders,
    and never the secret's bytes or more than its limit."""
    secret = tmp_path / "jnb-secret"
    secret.write_bytes(b"SECRET" * 1000)
    src = tmp_path / "jnb-racing" / "work"
    src.mkdir(parents=True)
    for n in range(20):
        (src / f"f{n}").write_bytes(b"ok")
    stop = threading.Event()

    def churn() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            name = src / f"f{rng.randrange(20)}"
            tmp = src / "jnb-tmp"
            kind = rng.choice(["link", "fifo", "dir", "file", "grow"])
            try:
                if kind == "link":
                    tmp.symlink_to(secret)
                elif kind == "fifo":
                    os.mkfifo(tmp)
                elif kind == "dir":
                    tmp.mkdir()
                    (tmp / "in").symlink_to(secret)
                elif kind == "file":
                    tmp.write_bytes(b"ok")
                else:  # never blocks on a fifo swapped in meanwhile
                    fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW)
                    try:
                        os.write(fd, b"g" * 65536)
                    finally:
                        os.close(fd)
                    continue
                os.rename(tmp, name)
            except OSError:
                pass
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.unlink(missing_ok=True)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for i in range(40):
            dst = tmp_path / f"jnb-dst{i}"
            out = _c(src, dst, 200000, None)
            files, size = map(int, out.split(b"\n")[0].split())
            assert size <= 200000
            for kind in _tree(dst) or []:
                assert kind[1] in ("dir", "file"), kind
            for where, _, names in os.walk(dst):
                for name in names:
                    assert b"SECRET" not in Path(where, name).read_bytes()
    finally:
        stop.set()
        thread.join()


# ---- with an agent ----------------------------------------------------------------------------

HOSTILE = r"""
import os, socket, subprocess
os.chdir("/work")
os.makedirs("out/sub", exist_ok=True)
open("out/r.txt", "w").write("result")
os.symlink("/etc/passwd", "link")
os.symlink("/", "rootlink")
os.mkfifo("fifo")
s = socket.socket(socket.AF_UNIX); s.bind("sock")
open("suid", "w").write("x"); os.chmod("suid", 0o6755)
with open("sparse", "wb") as f: f.truncate(1 << 40)
with open("sparse-small", "wb") as f: f.truncate(1 << 20)
for target in ("/etc/hostname", "/etc/passwd", "/tmp", "/usr/bin/true", "/proc/self/environ"):
    try: os.link(target, "hard" + target.replace("/", "_"))
    except OSError as e: print("no link to", target, e.errno)
d = "deep"
for _ in range(70): d += "/d"
os.makedirs(d)
for name in (b"\xff\xfe", b"a\nb", "é中😀".encode(), b"q'\"\\"):
    open(os.path.join(b"out", name), "wb").write(name)
print("done")
"""


def _artifacts(agent: AgentProcess, job_id: str):
    return _tree(agent.root / "state" / "jobs" / job_id / "work")


def _kept(agent: AgentProcess, api: Api, script: str):
    result = api.run(script=script)
    outcome = json.loads((agent.root / "state" / "jobs" / result.id / "outcome.json").read_text())
    notes = [e["data"] for e in result.events if e["type"] == "stderr" and "/work files" in e["data"]]
    return result, (outcome["kept_files"], outcome["kept_bytes"]), notes, _artifacts(agent, result.id)


def test_a_hostile_jobs_work_is_kept_by_jnb_holder_as_by_the_python_holder(api: Api, agent: AgentProcess):
    """The same hostile job held by jnb-holder and then, with the binary aside, by the Python
    holder: the same files, counts and notes; no link, fifo, socket or setuid bit survives."""
    c_run = _kept(agent, api, HOSTILE)
    aside = holderplan.BINARY + ".jnb-aside"
    os.rename(holderplan.BINARY, aside)
    try:
        py_run = _kept(agent, api, HOSTILE)
    finally:
        os.rename(aside, holderplan.BINARY)
    assert c_run[0].stdout.endswith("done\n"), c_run[0].explain()
    assert c_run[0].stdout == py_run[0].stdout
    assert c_run[1:] == py_run[1:]
    tree = c_run[3]
    assert tree and all(kind in ("dir", "file") and not mode & 0o6000 for _, kind, mode, _ in tree)
    assert (b"out/r.txt", "file", 0o644, hashlib.sha256(b"result").hexdigest()) in tree
    assert "deeper than 64 folders" in "".join(c_run[2]), c_run[2]
