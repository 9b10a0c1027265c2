"""A holder's hello is believed only from a process in the job's cgroup (cluster/holder_link.py);
`listed_in` answers that from the cgroup.procs files as their union would, reading no more of
them than it needs. Files here stand in for the kernel's (the same format: one pid a line)."""

from __future__ import annotations

from pathlib import Path

from joblet_agent.cluster.local import listed_in


def procs(tmp_path: Path, name: str, pids: list[int]) -> str:
    path = tmp_path / name
    path.write_text("".join(f"{p}\n" for p in pids))
    return str(path)


def test_a_pid_in_any_hierarchy_is_in_and_no_other_is(tmp_path: Path) -> None:
    cpu, memory = procs(tmp_path, "cpu", [12, 345]), procs(tmp_path, "memory", [7, 3456])
    gone = str(tmp_path / "pids")  # a hierarchy whose directory is gone
    assert listed_in([gone, cpu, memory], 3456)
    assert listed_in([cpu, memory], 345) and listed_in([cpu], 12)
    assert not listed_in([cpu, memory, gone], 34)   # a prefix of a listed pid is not it
    assert not listed_in([cpu, memory], 45)         # nor a suffix
    assert not listed_in([], 12) and not listed_in([gone], 12)


def test_a_long_list_is_read_whole(tmp_path: Path) -> None:
    many = procs(tmp_path, "cpu", list(range(100_000, 130_000)))  # more than one read's worth
    assert listed_in([many], 129_999) and not listed_in([many], 130_000)
