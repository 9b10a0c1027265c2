"""What a runtime build does with files: the staging tmpfs the setup script installs into, and the
cleanup phase that turns what it left into a self-contained `isolated/` tree.

Everything here runs as root over a folder an untrusted setup script wrote, so paths are walked
from directory descriptors without following symlinks (runc's lesson).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import manifest as mf
from .spec import MountEntry, ParsedSpec, parse, rewrite_isolated
from ..sandbox import libc, mounts
from ..fs import CopyReport, UnsafePath, open_dir_beneath, open_source, remove_tree


class PhaseFailed(Exception):
    """A phase after the setup script failed; `phase` names it (it becomes the job's reason)."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


def mount_staging(staging: Path, size_mb: int, uid: int) -> None:
    """The folder a build installs into is a tmpfs of `build.install_mb`, owned by the build's uid:
    a setup script can fill it, never the host's disk (its pages also count against the build's
    memory limit). It lives until the cleanup phase has copied what the runtime needs out of it."""
    inodes = max(4096, size_mb * mounts.INODES_PER_MB)
    libc.mount("tmpfs", str(staging), "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               f"size={size_mb}m,nr_inodes={inodes},mode=0700,uid={uid},gid={uid}")


def remove_build_dir(build_dir: Path) -> None:
    """Unmount the build's staging tmpfs (if still there), then remove its folder."""
    for point, _ in reversed(mounts.mounts_under(str(build_dir))):
        try:
            libc.umount2(point, libc.MNT_DETACH)
        except OSError:
            pass
    remove_tree(str(build_dir))


def check_sources(mounts: list[MountEntry], isolated: Path) -> None:
    """After the copy: every mount source resolves beneath `isolated/` with no symlink on the way
    (openat2) to a folder or a regular file, as production jobs will open it."""
    for i, m in enumerate(mounts):
        try:
            os.close(open_source(str(isolated), m.source))
        except (OSError, UnsafePath) as exc:
            raise PhaseFailed("cleanup", f"mounts[{i}].source {m.source!r} is not a plain folder or file in "
                                         f"isolated/ after the copy: {exc}") from None


def copy_to_isolated(parsed: ParsedSpec, staging: str, version_dir: Path) -> CopyReport:
    """The cleanup phase: copy each mount source the setup script left in `staging` into
    `version_dir/isolated/` (no symlink followed, special bits and files dropped), keep
    runtime.yml.original, and write runtime.yml rewritten so that every source lies in isolated/."""
    spec = parsed.spec
    version_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    version_dir.mkdir(mode=0o755)
    isolated = version_dir / "isolated"
    isolated.mkdir(mode=0o755)
    report = CopyReport()
    done: list[str] = []
    for i, m in enumerate(spec.mounts):
        if any(m.source == d or m.source.startswith(d + "/") for d in done):
            continue
        parent, _, leaf = m.source.rpartition("/")
        try:
            src_fd = open_dir_beneath(staging, parent)
        except FileNotFoundError:
            raise PhaseFailed("cleanup", f"mounts[{i}].source {m.source!r}: the setup script left no "
                                         f"{spec.prefix}/{parent}") from None
        except NotADirectoryError:
            raise PhaseFailed("cleanup", f"mounts[{i}].source {m.source!r}: a component is a symlink "
                                         "or not a folder") from None
        try:
            try:
                kind = os.stat(leaf, dir_fd=src_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                raise PhaseFailed("cleanup", f"mounts[{i}].source {m.source!r}: the setup script left "
                                             f"no {spec.prefix}/{m.source}") from None
            if not (stat.S_ISDIR(kind) or stat.S_ISREG(kind)):
                raise PhaseFailed("cleanup", f"mounts[{i}].source {m.source!r} must be a folder or a "
                                             "file, not a symlink or a special file")
            dst_parent = isolated
            for part in [p for p in parent.split("/") if p]:
                dst_parent = dst_parent / part
                dst_parent.mkdir(mode=0o755, exist_ok=True)
            dst_fd = os.open(dst_parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                mf.copy_clean(src_fd, leaf, dst_fd, report, m.source.rpartition("/")[0])
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        done.append(m.source)
    check_sources(spec.mounts, isolated)
    (version_dir / "runtime.yml.original").write_text(parsed.text)
    rewritten = rewrite_isolated(parsed)
    check = parse(rewritten, "rewritten runtime.yml")
    outside = [m.source for m in check.spec.mounts if not m.source.startswith("isolated/")]
    if outside:
        raise PhaseFailed("cleanup", f"mount sources outside isolated/: {outside}")
    (version_dir / "runtime.yml").write_text(rewritten)
    for p in (version_dir / "runtime.yml", version_dir / "runtime.yml.original"):
        os.chmod(p, 0o644)
    return report
