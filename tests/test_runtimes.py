"""Runtimes against a real agent: build python-3.11 in the builder sandbox, run jobs on it, the
isolated/ rewrite, tampering, refusals, a failed build, a hostile setup script, and (when the
agent has the bridge network) the runtimes that download from the package registries."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import uuid
from pathlib import Path

import pytest

from agentproc import AgentProcess, Api, running_agent

CATALOGUE = Path(__file__).resolve().parent.parent / "runtimes"
pytestmark = pytest.mark.root

PHASES = ["validate", "setup", "cleanup", "manifest", "test", "publish"]


@pytest.fixture(scope="module")
def admin(module_agent: AgentProcess) -> Api:
    return module_agent.api(module_agent.admin_token)


@pytest.fixture(scope="module")
def user(module_agent: AgentProcess) -> Api:
    return module_agent.api()


def build(admin: Api, name: str, timeout: float = 1800, **body) -> tuple[dict, list[dict]]:
    r = admin.call("POST", f"/v1/runtimes/{name}/build", json=body)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    events = admin.events(job_id, timeout=timeout)
    record = admin.call("GET", f"/v1/jobs/{job_id}").json()
    return record, events


def progress(events: list[dict]) -> list[str]:
    return [e["phase"] for e in events if e["type"] == "progress"]


def text(events: list[dict], kind: str = "stdout") -> str:
    return "".join(e["data"] for e in events if e["type"] == kind)


@pytest.fixture(scope="module")
def python311(admin: Api) -> dict:
    record, events = build(admin, "python-3.11", timeout=600)
    assert record["status"] == "COMPLETED", (record, events)
    return {"record": record, "events": events}


def version_dir(agent: AgentProcess, name: str) -> Path:
    return Path(os.path.realpath(agent.root / "runtimes" / name))


# ---- python-3.11: the build, a job on it -------------------------------------------------------


def test_build_reports_every_phase_in_order(python311):
    record, events = python311["record"], python311["events"]
    assert record["type"] == "runtime-build" and record["runtime"] == "python-3.11"
    assert progress(events) == PHASES
    steps = [(e["step"], e["steps"]) for e in events if e["type"] == "progress"]
    assert steps == [(i, 6) for i in range(1, 7)]
    assert events[-1] == {**events[-1], "type": "exit", "status": "COMPLETED", "reason": "exit"}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "[test] python 3.11" in text(events)


def test_a_job_runs_on_the_runtime_and_sees_only_base_and_isolated(python311, user, module_agent):
    probe = f"""
import json, os, sys
mounts = [l.split() for l in open("/proc/self/mountinfo")]
rt = [m for m in mounts if m[4].startswith("/opt")]
try:
    open("/opt/runtimes/python-3.11/venv/evil", "w")
    wrote = True
except OSError:
    wrote = False
print(json.dumps({{"prefix": sys.prefix, "version": list(sys.version_info[:2]),
                  "opt": sorted(os.listdir("/opt")), "rt": [(m[3], m[4], m[5]) for m in rt],
                  "agent_root": os.path.exists({str(module_agent.root)!r}), "wrote": wrote,
                  "dist": [p for p in sys.path if "dist-packages" in p]}}))
"""
    res = user.run(script=probe, runtime="python-3.11")
    assert res.record["status"] == "COMPLETED", res.explain()
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["prefix"] == "/opt/runtimes/python-3.11/venv" and seen["version"] == [3, 11]
    assert seen["opt"] == ["runtimes"] and not seen["agent_root"] and not seen["wrote"]
    assert seen["dist"] == []
    (root, point, options), = seen["rt"]
    assert point == "/opt/runtimes/python-3.11/venv"
    assert {"ro", "nosuid", "nodev"} <= set(options.split(","))
    assert root.endswith("/isolated/venv")  # the bind's source inside the host filesystem


def test_runtime_list_info_and_test(python311, user):
    listed = user.call("GET", "/v1/runtimes").json()
    entry = next(r for r in listed if r["name"] == "python-3.11")
    assert entry["status"] == "verified" and entry["language"] == "python" and entry["version"] == "3.11"
    info = user.call("GET", "/v1/runtimes/python-3.11").json()
    assert info["manifest"]["status"] == "verified" and info["script"]["suffix"] == ".py"
    assert all(m["source"].startswith("isolated/") for m in info["mounts"])
    tested = user.call("POST", "/v1/runtimes/python-3.11/test", timeout=300).json()
    assert tested["ok"] is True and tested["status"] == "COMPLETED" and "python 3.11" in tested["stdout"]
    assert user.call("GET", f"/v1/jobs/{tested['job_id']}").json()["type"] == "standard"


def test_the_isolated_rewrite_keeps_every_source_inside_isolated(python311, module_agent):
    import yaml

    version = version_dir(module_agent, "python-3.11")
    assert version.parent.parent == module_agent.root / "runtimes" / ".versions"
    published = yaml.safe_load((version / "runtime.yml").read_text())
    original = (version / "runtime.yml.original").read_text()
    assert original == (CATALOGUE / "python-3.11" / "runtime.yml").read_text()
    for m in published["mounts"]:
        assert m["source"].startswith("isolated/") and m["readonly"] is True
        real = os.path.realpath(version / m["source"])
        assert real.startswith(str(version / "isolated") + "/"), real
    # nothing in isolated/ is owned by the build user, writable by others, setuid, or special
    for dirpath, dirnames, filenames in os.walk(version / "isolated"):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                continue
            assert st.st_uid == 0 and not st.st_mode & (stat.S_ISUID | stat.S_ISGID | 0o022)
            assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
    manifest = json.loads((version / "manifest.json").read_text())
    assert "isolated/venv/pyvenv.cfg" in manifest["entries"]


def test_a_script_job_without_the_runtime_still_uses_base_python(python311, user):
    res = user.run(script="import sys; print(sys.prefix)")
    assert res.record["status"] == "COMPLETED" and res.stdout.strip() == "/usr"


# ---- who may do what, and names -------------------------------------------------------------------


def test_a_user_cannot_build_or_remove(python311, user):
    r = user.call("POST", "/v1/runtimes/python-3.11/build", json={"force": True})
    assert r.status_code == 403 and "admin token" in r.json()["error"]["message"]
    r = user.call("POST", "/v1/runtimes/evil/build", json={"spec": "name: evil\n", "files": {}})
    assert r.status_code == 403
    r = user.call("DELETE", "/v1/runtimes/python-3.11")
    assert r.status_code == 403
    assert user.call("GET", "/v1/runtimes/python-3.11").status_code == 200


def test_no_job_request_selects_the_builder(user):
    for body in ({"command": ["true"], "type": "runtime-build"}, {"command": ["true"], "job_type": "runtime-build"},
                 {"command": ["true"], "env": {"JOB_TYPE": "runtime-build"}}):
        r = user.call("POST", "/v1/jobs", json=body)
        assert r.status_code == 400, r.text


@pytest.mark.parametrize("name", ["..", "a..b", "UPPER", ".hidden", "x" * 70, "a%2Fb", "%2e%2e"])
def test_bad_names_are_refused_everywhere(admin, name):
    for method, path in (("POST", f"/v1/runtimes/{name}/build"), ("POST", f"/v1/runtimes/{name}/test"),
                         ("DELETE", f"/v1/runtimes/{name}"), ("GET", f"/v1/runtimes/{name}")):
        r = admin.call(method, path, json={} if method == "POST" else None)
        assert r.status_code in (400, 404), (method, path, r.status_code, r.text)
    r = admin.call("POST", "/v1/jobs", json={"command": ["true"], "runtime": name})
    assert r.status_code == 400


def test_building_what_the_catalogue_lacks_is_404(admin):
    r = admin.call("POST", "/v1/runtimes/no-such-runtime/build", json={})
    assert r.status_code == 404 and "catalogue" in r.json()["error"]["message"]


def test_an_invalid_spec_is_refused_with_field_and_line(admin):
    spec = (CATALOGUE / "python-3.11" / "runtime.yml").read_text().replace("name: python-3.11", "name: bad-spec")
    spec = spec.replace("    readonly: true", "    readonly: false")
    r = admin.call("POST", "/v1/runtimes/bad-spec/build", json={"spec": spec, "files": {"setup.sh": "true\n"}})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "mounts[0].readonly" in message and "line 18" in message, message


NESTED_SPEC = """\
name: nested
language: shell
version: "1"
architectures: [x86_64, aarch64]
build: {setup: setup.sh, network: none, timeout_s: 60}
mounts:
  - {source: a, target: /opt/runtimes/nested/a}
  - {source: a/b, target: /opt/runtimes/nested/b}
script: {command: [/bin/sh], suffix: .sh}
test: {command: [/bin/sh, -c, "ls /opt/runtimes/nested/b/etc/hostname"]}
"""


def test_nested_sources_are_refused_before_any_build(admin, user):
    """The issue's attack: sources `a` and `a/b`, and a setup script that makes `a/b` a link to
    the host's root. The spec is refused as it comes (400, no job), saying which source lies in
    which; no runtime is published, so no job can see the host through it (issue 13, item 2)."""
    setup = 'mkdir -p "$RUNTIME_PREFIX/a" && ln -s / "$RUNTIME_PREFIX/a/b"\n'
    r = admin.call("POST", "/v1/runtimes/nested/build", json={"spec": NESTED_SPEC, "files": {"setup.sh": setup}})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "mounts[1].source 'a/b' lies inside mounts[0].source 'a'" in message, message
    assert user.call("GET", "/v1/runtimes/nested").status_code == 404
    assert not any(j["runtime"] == "nested" for j in admin.call("GET", "/v1/jobs").json())


def test_a_published_runtime_is_not_rebuilt_without_force(python311, admin):
    r = admin.call("POST", "/v1/runtimes/python-3.11/build", json={})
    assert r.status_code == 409 and "--force" in r.json()["error"]["message"]


# ---- failures leave the old version -------------------------------------------------------------


def _variant(name: str, setup: str, test_script: str | None = None) -> dict:
    spec = (CATALOGUE / "python-3.11" / "runtime.yml").read_text().replace("python-3.11/", f"{name}/")
    spec = spec.replace("name: python-3.11", f"name: {name}")
    if test_script is not None:
        head, _, _ = spec.partition("test:\n")
        spec = head + "test:\n  command: [/bin/sh, -c, " + json.dumps(test_script) + "]\n"
    return {"spec": spec, "files": {"setup.sh": setup}}


def test_a_failed_build_leaves_the_previous_version_working(python311, admin, user, module_agent):
    before = version_dir(module_agent, "python-3.11")
    good_setup = (CATALOGUE / "python-3.11" / "setup.sh").read_text()
    # setup fails
    record, events = build(admin, "python-3.11", **_variant("python-3.11", "echo boom >&2; exit 3\n"))
    assert record["status"] == "FAILED" and record["reason"] == "exit" and record["exit_code"] == 3
    assert "phase setup failed" in events[-1]["message"] and progress(events) == ["validate", "setup"]
    # the setup works but the runtime's own test fails: the candidate is never published
    record, events = build(admin, "python-3.11", **_variant("python-3.11", good_setup, "echo nope; exit 1"))
    assert record["status"] == "FAILED" and record["reason"] == "test", (record, events)
    assert "phase test failed" in events[-1]["message"]
    assert progress(events) == ["validate", "setup", "cleanup", "manifest"]
    # the setup leaves no mount source: cleanup fails
    record, events = build(admin, "python-3.11", **_variant("python-3.11", "echo nothing\n"))
    assert record["status"] == "FAILED" and record["reason"] == "cleanup" and "venv" in events[-1]["message"]
    assert version_dir(module_agent, "python-3.11") == before
    assert sorted(p.name for p in before.parent.iterdir()) == [before.name]  # no half-built version left
    assert list((module_agent.root / "runtimes" / ".builds").iterdir()) == []
    res = user.run(script="import sys; print(sys.prefix)", runtime="python-3.11")
    assert res.record["status"] == "COMPLETED" and "/opt/runtimes/python-3.11/venv" in res.stdout


def test_a_setup_script_cannot_fill_the_host_disk(admin, module_agent):
    """The install prefix is a tmpfs of build.install_mb: writing past it fails in the builder."""
    name = "fills-its-prefix"
    variant = _variant(name, 'head -c 64M /dev/zero > "$RUNTIME_PREFIX/fill" && echo WROTE-ALL\n')
    variant["spec"] = variant["spec"].replace("build:\n", "build:\n  install_mb: 16\n", 1)
    record, events = build(admin, name, **variant)
    log = "".join(e.get("data", "") for e in events)
    assert record["status"] == "FAILED" and "WROTE-ALL" not in log, (record, log)
    assert "No space left" in log, log
    assert list((module_agent.root / "runtimes" / ".builds").iterdir()) == []
    assert not [ln for ln in open("/proc/self/mountinfo") if str(module_agent.root) in ln]


# ---- tampering ----------------------------------------------------------------------------------


def test_tampering_after_publish_is_caught_and_a_rebuild_heals(admin, user, module_agent):
    name = "tamper-me"
    setup = (CATALOGUE / "python-3.11" / "setup.sh").read_text()
    record, _ = build(admin, name, **_variant(name, setup))
    assert record["status"] == "COMPLETED"
    ok = user.run(command=["python3", "-c", "print(1)"], runtime=name)
    assert ok.record["status"] == "COMPLETED"
    cfg = version_dir(module_agent, name) / "isolated" / "venv" / "pyvenv.cfg"
    st = cfg.stat()
    cfg.write_text(cfg.read_text() + "include-system-site-packages = true\n")
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))  # hide the mtime: ctime still tells
    r = user.call("POST", "/v1/jobs", json={"command": ["true"], "runtime": name})
    assert r.status_code == 409, r.text
    message = r.json()["error"]["message"]
    assert "failed verification" in message and "pyvenv.cfg" in message and "--force" in message
    assert user.call("POST", f"/v1/runtimes/{name}/test").status_code == 409
    assert user.call("GET", f"/v1/runtimes/{name}").json()["status"] == "refused"
    record, _ = build(admin, name, force=True, **_variant(name, setup))
    assert record["status"] == "COMPLETED"
    assert user.run(command=["true"], runtime=name).record["status"] == "COMPLETED"


def test_an_added_setuid_file_is_caught(admin, user, module_agent):
    name = "tamper-suid"
    record, _ = build(admin, name, **_variant(name, (CATALOGUE / "python-3.11" / "setup.sh").read_text()))
    assert record["status"] == "COMPLETED"
    planted = version_dir(module_agent, name) / "isolated" / "venv" / "bin" / "rootshell"
    planted.write_bytes(Path("/bin/sh").read_bytes())
    os.chmod(planted, 0o4755)
    r = user.call("POST", "/v1/jobs", json={"command": ["true"], "runtime": name})
    assert r.status_code == 409 and "rootshell" in r.json()["error"]["message"]


def test_tampering_while_the_agent_is_down_is_caught_at_start(admin):
    name = "tamper-offline"
    with running_agent() as agent:
        a = agent.api(agent.admin_token)
        record, _ = build(a, name, **_variant(name, (CATALOGUE / "python-3.11" / "setup.sh").read_text()))
        assert record["status"] == "COMPLETED"
        agent.stop()
        agent.start()
        assert a.call("GET", f"/v1/runtimes/{name}").json()["status"] == "verified"
        agent.stop()
        manifest = version_dir(agent, name) / "manifest.json"
        data = json.loads(manifest.read_text())
        target = version_dir(agent, name) / "isolated" / "venv" / "pyvenv.cfg"
        target.write_text("home = /tmp\n")
        data["entries"]["isolated/venv/pyvenv.cfg"]["sha256"] = "0" * 64  # forged alongside
        manifest.write_text(json.dumps(data))
        agent.start()
        assert a.call("GET", f"/v1/runtimes/{name}").json()["status"] == "refused"
        r = agent.api().call("POST", "/v1/jobs", json={"command": ["true"], "runtime": name})
        assert r.status_code == 409 and "manifest" in r.json()["error"]["message"]


def test_remove_is_admin_only_and_removes(admin, user, module_agent):
    name = "remove-me"
    record, _ = build(admin, name, **_variant(name, (CATALOGUE / "python-3.11" / "setup.sh").read_text()))
    assert record["status"] == "COMPLETED"
    assert user.call("DELETE", f"/v1/runtimes/{name}").status_code == 403
    assert admin.call("DELETE", f"/v1/runtimes/{name}").status_code == 204
    assert not (module_agent.root / "runtimes" / name).exists()
    assert not (module_agent.root / "runtimes" / ".versions" / name).exists()
    assert admin.call("GET", f"/v1/runtimes/{name}").status_code == 404
    assert user.call("POST", "/v1/jobs", json={"command": ["true"], "runtime": name}).status_code == 400
    assert admin.call("DELETE", f"/v1/runtimes/{name}").status_code == 404


# ---- a hostile setup script ---------------------------------------------------------------------

HOSTILE = r"""
# Every attempt is harmless if it succeeded by mistake: opened for append without writing,
# created and deleted at once, special files only in its own staging folder.
set +e
try() { if sh -c "$2" >/dev/null 2>&1; then echo "HOSTILE-OK $1"; else echo "HOSTILE-BLOCKED $1"; fi; }
for d in /usr/bin /usr/lib /etc /var/lib /var/tmp /home /root /opt /bin /lib; do
    try "write $d" "touch $d/jnb-hostile-$JOB_ID && rm -f $d/jnb-hostile-$JOB_ID"
done
try "append /etc/passwd" ": >> /etc/passwd"
try "read /etc/shadow" "grep -q root /etc/shadow"
try "read /etc/gshadow" "grep -q root /etc/gshadow"
try "see agent root" "ls -d @ROOT@"
try "see agent jobs" "ls @ROOT@/jobs"
try "read agent tokens" "cat @ROOT@/state/tokens.json"
try "see agent config" "ls @ROOT@/config"
try "see agent logs" "ls @ROOT@/logs"
try "see agent state" "ls @ROOT@/state"
try "see other runtimes" "ls @ROOT@/runtimes"
try "see client config" "ls @ROOT@/client-config"
try "read root ssh" "ls /root/.ssh/"
try "read the agent's paths from PID 1's command line" "tr '\\0' ' ' < /proc/1/task/1/cmdline | grep -q -e joblet_agent -e @ROOT@"
try "mknod device" "mknod $RUNTIME_PREFIX/tree/mem c 1 1"
try "chown root" "chown 0:0 $RUNTIME_PREFIX"
try "mount" "mount -t tmpfs none /tmp"
echo "uid $(id -u) tmp-entries $(ls -A /tmp | wc -l)"
awk '$5 == "/" || $5 == "/usr" || $5 == "/etc" || $5 == "/var" || $5 == "/root" {print "MOUNT", $5, $6}' /proc/self/mountinfo
# things left for later jobs: a setuid copy of a shell, a fifo, links to secrets
mkdir -p "$RUNTIME_PREFIX/tree"
cp /bin/dash "$RUNTIME_PREFIX/tree/rootsh" && chmod 4755 "$RUNTIME_PREFIX/tree/rootsh"
cp /bin/dash "$RUNTIME_PREFIX/tree/groupsh" && chmod 2755 "$RUNTIME_PREFIX/tree/groupsh"
mkfifo "$RUNTIME_PREFIX/tree/fifo"
ln -s /etc/shadow "$RUNTIME_PREFIX/tree/shadow"
ln -s @ROOT@/state/tokens.json "$RUNTIME_PREFIX/tree/tokens"
echo "kept" > "$RUNTIME_PREFIX/tree/data"
chmod 666 "$RUNTIME_PREFIX/tree/data"
exit 0
"""

HOSTILE_SPEC = """\
name: hostile
language: shell
version: "1"
architectures: [x86_64, aarch64]
build: {setup: setup.sh, network: none, timeout_s: 120, memory_mb: 256, disk_mb: 32}
mounts:
  - source: tree
    target: /opt/runtimes/hostile/tree
script: {command: [/bin/sh], suffix: .sh}
test:
  command: [/bin/sh, -c, "ls -l /opt/runtimes/hostile/tree"]
"""


@pytest.fixture(scope="module")
def hostile(admin: Api, module_agent: AgentProcess) -> dict:
    setup = HOSTILE.replace("@ROOT@", str(module_agent.root))
    record, events = build(admin, "hostile", spec=HOSTILE_SPEC, files={"setup.sh": setup})
    return {"record": record, "events": events, "out": text(events)}


def test_hostile_setup_cannot_touch_the_host_or_the_agent(hostile):
    out = hostile["out"]
    assert hostile["record"]["status"] == "COMPLETED", hostile
    attempts = [ln for ln in out.splitlines() if ln.startswith("HOSTILE-")]
    assert len(attempts) >= 25, out
    succeeded = [ln for ln in attempts if ln.startswith("HOSTILE-OK")]
    assert succeeded == [], out
    uid = int(next(ln for ln in out.splitlines() if ln.startswith("uid ")).split()[1])
    assert uid >= 10000
    assert " tmp-entries 0" in out  # a private, empty /tmp
    for d in ("/usr/bin", "/etc", "/var/tmp", "/root", "/opt", "/home"):
        assert not any(p.name.startswith("jnb-hostile-") for p in Path(d).iterdir())
    mounts = [ln.split() for ln in out.splitlines() if ln.startswith("MOUNT ")]
    assert {m[1] for m in mounts} >= {"/", "/usr", "/etc", "/var", "/root"}, out
    for _, point, options in mounts:
        assert "ro" in options.split(","), (point, options)
        assert point == "/" or {"nosuid", "nodev"} <= set(options.split(",")), (point, options)


UNIX_SEND = r"""
set +e
python3 - "$HOST_SOCKET" <<'PY'
import socket, sys
for kind, name in ((socket.SOCK_DGRAM, "dgram"), (socket.SOCK_RAW, "raw"), (socket.SOCK_STREAM, "stream")):
    try:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
        a.sendto(b"from a setup script", sys.argv[1])
        print("HOSTILE-OK socketpair", name)
    except OSError as exc:
        print("HOSTILE-BLOCKED socketpair", name, exc.strerror)
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"from a setup script", sys.argv[1])
    print("HOSTILE-OK socket")
except OSError as exc:
    print("HOSTILE-BLOCKED socket", exc.strerror)
PY
mkdir -p "$RUNTIME_PREFIX/tree"
"""


def test_a_setup_script_cannot_send_to_a_host_unix_socket(admin):
    """A datagram socket of the host under /var (the builder sees /var read-only, and read-only
    stops neither connect nor sendto on a socket): socket(AF_UNIX) is refused in builds, and so
    must be the socketpair that gives an unnamed datagram socket all the same (issue 13, item 7)."""
    path = f"/var/tmp/jnb-test-{uuid.uuid4().hex[:12]}.sock"
    host = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    host.bind(path)
    os.chmod(path, 0o666)  # as /dev/log is: anyone may write
    host.setblocking(False)
    try:
        setup = UNIX_SEND.replace("$HOST_SOCKET", path)
        record, events = build(admin, "unixsend", spec=HOSTILE_SPEC.replace("hostile", "unixsend"),
                               files={"setup.sh": setup})
        out = text(events)
        assert record["status"] == "COMPLETED", (record, out, text(events, "stderr"))
        assert out.count("HOSTILE-BLOCKED") == 4 and "HOSTILE-OK" not in out, out  # stream: EISCONN
        with pytest.raises(BlockingIOError):
            print("the host socket received:", host.recv(64))
    finally:
        host.close()
        os.unlink(path)
        admin.call("DELETE", "/v1/runtimes/unixsend")


def test_what_the_hostile_build_left_is_harmless(hostile, user, module_agent):
    assert hostile["record"]["status"] == "COMPLETED"
    cleanup = next(e for e in hostile["events"] if e["type"] == "progress" and e["phase"] == "cleanup")
    assert "stripped setuid/setgid from 2" in cleanup["message"] and "dropped 1 special" in cleanup["message"]
    tree = version_dir(module_agent, "hostile") / "isolated" / "tree"
    assert sorted(p.name for p in tree.iterdir()) == ["data", "groupsh", "rootsh", "shadow", "tokens"]
    assert stat.S_IMODE((tree / "rootsh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tree / "groupsh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tree / "data").stat().st_mode) == 0o644
    probe = ("id -u; /opt/runtimes/hostile/tree/rootsh -c 'id -u'; "
             "cat /opt/runtimes/hostile/tree/shadow || echo no-shadow; "
             "cat /opt/runtimes/hostile/tree/tokens || echo no-tokens; "
             "echo x > /opt/runtimes/hostile/tree/data || echo read-only")
    res = user.run(command=["/bin/sh", "-c", probe], runtime="hostile")
    lines = res.stdout.split()
    assert lines[0] == lines[1] != "0", res.explain()
    assert "no-shadow" in lines and "no-tokens" in lines and "read-only" in lines


# ---- the runtimes that download (bridge network) ------------------------------------------------


def _build_or_skip(admin: Api, name: str) -> tuple[dict, list[dict]]:
    r = admin.call("POST", f"/v1/runtimes/{name}/build", json={"force": True})
    if r.status_code == 409 and "no bridge network" in r.text:
        pytest.skip(f"the agent reports no bridge network, which {name} needs to download: {r.json()['error']['message']}")
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    events = admin.events(job_id, timeout=1800)
    record = admin.call("GET", f"/v1/jobs/{job_id}").json()
    assert record["status"] == "COMPLETED", (record, text(events, "stderr")[-3000:])
    assert progress(events) == PHASES
    return record, events


@pytest.mark.slow
def test_python_ml_builds_and_runs_pandas(admin, user):
    _build_or_skip(admin, "python-3.11-ml")
    script = ("import numpy as np, pandas as pd\n"
              "df = pd.DataFrame({'g': ['a', 'b'] * 50, 'v': np.arange(100)})\n"
              "total = df.groupby('g')['v'].sum().to_dict()\n"
              "print(total)\n")
    res = user.run(script=script, runtime="python-3.11-ml", outputs=["total"])
    assert res.record["status"] == "COMPLETED", res.explain()
    assert res.stdout.strip() == "{'a': 2450, 'b': 2500}"
    outputs = next(e for e in res.events if e["type"] == "outputs")
    assert outputs["values"]["total"] == {"a": 2450, "b": 2500}
    shown = user.run(script="import matplotlib.pyplot as plt\nimport pandas as pd\nplt.plot([1, 3, 2])\n"
                             "plt.show()\npd.DataFrame({'x': [1, 2]})\n", runtime="python-3.11-ml")
    assert shown.record["status"] == "COMPLETED", shown.explain()
    result = next(e for e in shown.events if e["type"] == "result")
    assert "<table" in result["data"]["text/html"] and "x" in result["data"]["text/plain"]
    figure = next(e for e in shown.events if e["type"] == "display")
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG")


@pytest.mark.slow
def test_openjdk_builds_and_runs_a_single_file_program(admin, user):
    _build_or_skip(admin, "openjdk-17")
    program = ("import java.util.*;\n"
               "public class Main {\n"
               "  public static void main(String[] args) {\n"
               "    List<Integer> xs = List.of(3, 1, 2);\n"
               "    System.out.println(xs.stream().sorted().toList() + \" \" + System.getProperty(\"java.version\"));\n"
               "  }\n}\n")
    res = user.run(script=program, runtime="openjdk-17")
    assert res.record["status"] == "COMPLETED", res.explain()
    assert res.stdout.startswith("[1, 2, 3] 17.")


@pytest.mark.slow
def test_node_builds_and_runs_a_script(admin, user):
    _build_or_skip(admin, "node-24")
    res = user.run(script="const xs = [1, 2, 3]; console.log(xs.reduce((a, b) => a + b, 0), process.version);",
                   runtime="node-24")
    assert res.record["status"] == "COMPLETED", res.explain()
    total, version = res.stdout.split()
    assert total == "6" and version.startswith("v24.")


# ---- the builder hides the agent wherever its root lives ----------------------------------------

VIEW_SPEC = HOSTILE_SPEC.replace("name: hostile", "name: view").replace("/hostile/", "/view/")


@pytest.mark.parametrize("parent", ["/opt", "/var/tmp", "/root"])
def test_the_builder_hides_an_agent_root_wherever_it_lives(parent):
    import tempfile

    sibling = Path(tempfile.mkdtemp(prefix="jnb-visible-", dir=parent))
    (sibling / "seen").write_text("x")
    os.chmod(sibling, 0o777)  # even a world-writable host folder stays read-only in the builder
    try:
        with running_agent(parent=parent) as agent:
            root = agent.root
            setup = (f"ls -d {root} && echo ROOT-VISIBLE; ls {root}/state && echo STATE-VISIBLE\n"
                     f"cat {sibling}/seen && echo SIBLING-VISIBLE\n"
                     f"touch {sibling}/new 2>/dev/null && echo SIBLING-WRITABLE\n"
                     "mkdir -p $RUNTIME_PREFIX/tree && echo ok > $RUNTIME_PREFIX/tree/f\n")
            record, events = build(agent.api(agent.admin_token), "view", spec=VIEW_SPEC, files={"setup.sh": setup})
            out = text(events)
            assert record["status"] == "COMPLETED", (record, events)
            assert "SIBLING-VISIBLE" in out and "SIBLING-WRITABLE" not in out, out
            assert "ROOT-VISIBLE" not in out and "STATE-VISIBLE" not in out, out
    finally:
        shutil.rmtree(sibling, ignore_errors=True)
