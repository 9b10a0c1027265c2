"""The host's public /etc material a job gets bound read-only (agent/jobs/etcfiles.py): each from
where its links lead now, though it is resolved once and reused while nothing on its way changed."""

from __future__ import annotations

import os
from pathlib import Path

from joblet_agent.jobs import etcfiles


def sources(paths: tuple[str, ...]) -> dict[str, str]:
    return {m.target: m.source for m in etcfiles.etc_binds(paths)}


def test_a_bind_follows_a_link_that_is_replaced_and_a_path_that_comes_or_goes(tmp_path: Path) -> None:
    zones = tmp_path / "zoneinfo"
    zones.mkdir()
    (zones / "UTC").write_text("utc")
    (zones / "Berlin").write_text("berlin")
    localtime, certs = tmp_path / "localtime", tmp_path / "certs"
    localtime.symlink_to(zones / "UTC")
    paths = (str(certs), str(localtime))

    assert sources(paths) == {str(localtime): str(zones / "UTC")}
    assert sources(paths) == {str(localtime): str(zones / "UTC")}  # reused: the same answer

    new = tmp_path / "localtime.new"  # as timedatectl does: a new link renamed over the old
    new.symlink_to(zones / "Berlin")
    os.replace(new, localtime)
    certs.mkdir()
    assert sources(paths) == {str(localtime): str(zones / "Berlin"), str(certs): str(certs)}

    localtime.unlink()
    assert sources(paths) == {str(certs): str(certs)}


def test_a_link_on_the_way_that_changes_is_followed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "ld.so.cache").write_text("a")
    (tmp_path / "b" / "ld.so.cache").write_text("b")
    middle, cache = tmp_path / "middle", tmp_path / "ld.so.cache"
    middle.symlink_to(tmp_path / "a" / "ld.so.cache")
    cache.symlink_to(middle)
    assert sources((str(cache),)) == {str(cache): str(tmp_path / "a" / "ld.so.cache")}
    middle.unlink()
    middle.symlink_to(tmp_path / "b" / "ld.so.cache")
    assert sources((str(cache),)) == {str(cache): str(tmp_path / "b" / "ld.so.cache")}


def test_each_call_gets_its_own_mounts() -> None:
    first = etcfiles.etc_binds()
    first.append(first[0])
    first[0].readonly = False
    again = etcfiles.etc_binds()
    assert len(again) == len(first) - 1 and all(m.readonly for m in again)
