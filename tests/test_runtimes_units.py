"""Runtime definitions, the builder's host view and the manifest, without an agent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from joblet_agent.builds import manifest as mf
from joblet_agent.builds.builder import excluded_paths, host_view
from joblet_agent.paths import AgentPaths
from joblet_agent.builds.spec import RuntimeSpecError, check_name, parse, rewrite_isolated

CATALOGUE = Path(__file__).resolve().parent.parent / "runtimes"

GOOD = """\
name: demo
language: python
version: 3.11
architectures: [x86_64, aarch64]
mounts:
  - source: venv
    target: /opt/runtimes/demo/venv
script:
  command: [/opt/runtimes/demo/venv/bin/python3]
test:
  command: [python3, -c, "print(1)"]
"""


@pytest.mark.parametrize("name", sorted(p.name for p in CATALOGUE.iterdir() if (p / "runtime.yml").exists()))
def test_every_shipped_runtime_is_valid_and_named_after_its_folder(name):
    parsed = parse((CATALOGUE / name / "runtime.yml").read_text())
    assert parsed.spec.name == name
    assert (CATALOGUE / name / parsed.spec.build.setup).is_file()
    for m in parsed.spec.mounts:
        assert m.target.startswith(f"/opt/runtimes/{name}/")


def test_the_shipped_catalogue_has_the_four_runtimes():
    names = {p.name for p in CATALOGUE.iterdir() if (p / "runtime.yml").exists()}
    assert {"python-3.11", "python-3.11-ml", "openjdk-17", "node-24"} <= names


def test_version_numbers_are_read_as_text():
    assert parse(GOOD).spec.version == "3.11"


@pytest.mark.parametrize("change, field, line", [
    (("    target: /opt/runtimes/demo/venv", "    target: /usr/lib/evil"), "mounts", 5),
    (("  - source: venv", "  - source: ../../etc"), "mounts[0].source", 6),
    (("  - source: venv", "  - source: /etc"), "mounts[0].source", 6),
    (("    target: /opt/runtimes/demo/venv", "    target: /opt/runtimes/demo/venv\n    readonly: false"),
     "mounts[0].readonly", 8),
    (("name: demo", "name: ../demo"), "name", 1),
    (("name: demo", "name: a/b"), "name", 1),
    (("version: 3.11", "version: 3.11\ncolour: red"), "colour", 4),
    (("script:\n  command: [/opt/runtimes/demo/venv/bin/python3]\n", ""), "script", 1),
    (("architectures: [x86_64, aarch64]", "architectures: []"), "architectures", 4),
    (("version: 3.11", "version: 3.11\nenvironment: {JOB_ID: x}"), "environment", 4),
    (("version: 3.11", "version: 3.11\nbuild: {setup: ../setup.sh}"), "build.setup", 4),
    (("version: 3.11", "version: 3.11\nbuild: {network: host}"), "build.network", 4),
])
def test_errors_name_the_field_and_the_line(change, field, line):
    text = GOOD.replace(*change)
    with pytest.raises(RuntimeSpecError) as err:
        parse(text)
    message = str(err.value)
    assert f"line {line}, {field}" in message, message


def test_yaml_syntax_errors_name_the_line():
    with pytest.raises(RuntimeSpecError, match="line 4"):
        parse("name: demo\nlanguage: python\nmounts: [\n")


@pytest.mark.parametrize("name", ["..", "a/b", "../x", "A", "", ".hidden", "x" * 64, "a..b", "a\x00"])
def test_bad_names_are_refused(name):
    with pytest.raises(RuntimeSpecError):
        check_name(name)


def test_rewrite_puts_every_source_inside_isolated():
    parsed = parse(GOOD)
    rewritten = parse(rewrite_isolated(parsed))
    assert [m.source for m in rewritten.spec.mounts] == ["isolated/venv"]
    assert rewritten.spec.mounts[0].target == "/opt/runtimes/demo/venv"


def test_host_view_excludes_agent_paths_by_their_real_location(tmp_path):
    """An agent root anywhere (here: deep in a tree) is left out, its siblings are shown."""
    tree = tmp_path / "var"
    (tree / "lib" / "agent" / "state").mkdir(parents=True)
    (tree / "lib" / "other").mkdir()
    (tree / "cache").mkdir()
    (tree / "lib" / "file.txt").write_text("x")
    os.symlink(tree / "lib" / "agent", tree / "lib" / "sneaky")  # a link to the agent root
    paths = AgentPaths.at(tree / "lib" / "agent")
    view = host_view((str(tree),), excluded_paths(paths))
    shown = {m.source for m in view}
    assert str(tree / "cache") in shown and str(tree / "lib" / "other") in shown
    assert str(tree / "lib" / "file.txt") in shown
    assert not any(s.startswith(str(paths.root)) for s in shown), shown
    assert all(m.readonly for m in view)
    # a tree without agent paths is one bind
    assert host_view((str(tree / "cache"),), excluded_paths(paths)) == [view[0].__class__(
        source=str(tree / "cache"), target=str(tree / "cache"), readonly=True)]


@pytest.mark.root
def test_manifest_catches_content_mode_and_restored_mtime(tmp_path):
    version = tmp_path / "v"
    (version / "isolated" / "bin").mkdir(parents=True)
    tool = version / "isolated" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    (version / "runtime.yml").write_text("name: x\n")
    manifest = mf.write_manifest(str(version))
    mf.verify_full(str(version), manifest)
    mf.verify_stat(str(version), manifest)
    st = tool.stat()
    tool.write_text("#!/bin/sh\necho HI\n")
    os.utime(tool, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored: ctime still moves
    with pytest.raises(mf.TreeError, match="isolated/bin/tool"):
        mf.verify_stat(str(version), manifest)
    with pytest.raises(mf.TreeError, match="content"):
        mf.verify_full(str(version), manifest)


@pytest.mark.root
def test_manifest_refuses_setuid_files(tmp_path):
    version = tmp_path / "v"
    (version / "isolated").mkdir(parents=True)
    f = version / "isolated" / "su"
    f.write_text("x")
    os.chmod(f, 0o4755)
    with pytest.raises(mf.TreeError, match="setuid"):
        mf.write_manifest(str(version))


def test_copy_clean_strips_setuid_drops_fifos_and_keeps_links(tmp_path):
    src = tmp_path / "staging" / "tree"
    src.mkdir(parents=True)
    (src / "su").write_text("x")
    os.chmod(src / "su", 0o6755)
    os.mkfifo(src / "fifo")
    os.symlink("/etc/shadow", src / "shadow")
    (src / "data").write_text("d")
    os.chmod(src / "data", 0o666)
    os.utime(src / "data", ns=(1_600_000_000_000_000_000, 1_500_000_000_123_456_789))
    dst = tmp_path / "isolated"
    dst.mkdir()
    report = mf.CopyReport()
    s, d = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY), os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mf.copy_clean(s, "tree", d, report)
    finally:
        os.close(s)
        os.close(d)
    assert report.stripped == ["tree/su"] and report.dropped == ["tree/fifo"]
    assert (dst / "tree" / "su").stat().st_mode & 0o7777 == 0o755
    assert (dst / "tree" / "data").stat().st_mode & 0o7777 == 0o644
    assert (dst / "tree" / "data").stat().st_mtime_ns == 1_500_000_000_123_456_789  # .pyc stay valid
    assert os.readlink(dst / "tree" / "shadow") == "/etc/shadow"
    assert not (dst / "tree" / "fifo").exists()


def test_tree_watch_reports_changes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    watch = mf.TreeWatch()
    watch.watch("rt", str(tmp_path))
    assert watch.changed() == set()
    (tmp_path / "a" / "b" / "new").write_text("x")
    assert watch.changed() == {"rt"}
    assert watch.changed() == set()
    watch.close()


@pytest.mark.parametrize("leaf", ["link-to-root", "link-in-path", "fifo"])
def test_every_source_leaf_is_checked_after_the_copy(tmp_path, leaf):
    """The layer after the cleanup copy, on its own (the spec's refusal of nested sources, which
    stops the issue's attack first, is left out): a source that is a symlink, lies behind one, or
    is neither a folder nor a file fails the cleanup phase, so the build is never published
    (issue 13, item 2)."""
    from joblet_agent.builds.pipeline import PhaseFailed, check_sources
    from joblet_agent.builds.spec import MountEntry

    isolated = tmp_path / "isolated"
    (isolated / "a").mkdir(parents=True)
    (isolated / "real").mkdir()
    (isolated / "real" / "b").mkdir()
    source = "a/b"
    if leaf == "link-to-root":
        os.symlink("/", isolated / "a" / "b")
    elif leaf == "link-in-path":
        os.rmdir(isolated / "a")
        os.symlink("real", isolated / "a")
    else:
        os.mkfifo(isolated / "a" / "b")
    mount = MountEntry(source=source, target="/opt/runtimes/x/b")
    with pytest.raises(PhaseFailed, match=r"mounts\[0\]\.source 'a/b'"):
        check_sources([mount], isolated)
    os.makedirs(isolated / "ok")
    check_sources([MountEntry(source="ok", target="/opt/runtimes/x/ok")], isolated)  # a plain folder passes
