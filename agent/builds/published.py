"""The published runtimes: what production jobs may mount, verified before they do.

On disk, below `<root>/runtimes/` (root-owned; production jobs see none of it but the read-only
binds of a published runtime's `isolated/` tree):

    <name>                 -> .versions/<name>/<build id>   the published runtime (a symlink)
    .versions/<name>/<id>/ runtime.yml (rewritten), runtime.yml.original, isolated/, manifest.json

and `<root>/state/runtimes/<name>.json` holds the published manifest's sha256 (private to the agent).
Only the symlink publishes, so a half-built runtime is never reachable.

Verification: a full hash after publish and at agent start; at a job start, one non-blocking read
of an inotify queue says whether the tree changed at all, and only then the stat fingerprint of
every entry is compared with the manifest. A runtime that fails either is refused (409).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import manifest as mf
from ..errors import BadRequest, Conflict, NotFound
from ..jobs.spec import RuntimeMounts
from ..paths import AgentPaths
from ..sandbox.spec import Mount
from .spec import RuntimeSpec, RuntimeSpecError, check_name, parse


@dataclass
class Published:
    name: str
    version_dir: str
    spec: RuntimeSpec | None
    manifest: dict[str, Any]
    problem: str | None = None
    dirty: bool = False
    verified_at: float = 0.0
    size_bytes: int = 0
    files: int = 0
    digest: str = ""           # the manifest's sha256, as recorded at publish


class PublishedRuntimes:
    def __init__(self, paths: AgentPaths) -> None:
        self.paths = paths
        self.watch = mf.TreeWatch()
        self.runtimes: dict[str, Published] = {}

    @property
    def versions(self) -> Path:
        return self.paths.runtimes / ".versions"

    @property
    def digests(self) -> Path:
        return self.paths.state / "runtimes"

    def load_all(self) -> dict[str, str]:
        """At agent start: verify every published runtime in full. {name: "verified" | problem}."""
        self.versions.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.versions, 0o700)
        self.digests.mkdir(mode=0o700, parents=True, exist_ok=True)
        results = {}
        for link in sorted(self.paths.runtimes.iterdir()):
            if link.name.startswith(".") or not link.is_symlink():
                continue
            results[link.name] = self._load(link.name)
        return results

    def _load(self, name: str) -> str:
        """(Re)load a published runtime and verify it in full."""
        link = self.paths.runtimes / name
        try:
            check_name(name)
            version_dir = os.path.realpath(link)
            if not version_dir.startswith(str(self.versions) + "/"):
                raise mf.TreeError(f"{link} does not point into {self.versions}")
            parsed = parse(Path(version_dir, "runtime.yml").read_text(), f"{name}/runtime.yml")
            manifest = mf.load_manifest(version_dir)
            recorded = json.loads((self.digests / f"{name}.json").read_text()).get("manifest_sha256")
            if recorded != mf.manifest_digest(version_dir):
                raise mf.TreeError("manifest.json does not match the digest the agent recorded at publish")
            mf.verify_full(version_dir, manifest)
        except (OSError, ValueError, RuntimeSpecError, mf.TreeError) as exc:
            problem = str(exc)
            self.runtimes[name] = Published(name, os.path.realpath(link), None, {}, problem=problem)
            return problem
        pub = Published(name, version_dir, parsed.spec, manifest, verified_at=time.time(), digest=recorded)
        entries = manifest["entries"].values()
        pub.size_bytes = sum(e.get("size", 0) for e in entries)
        pub.files = sum(1 for e in entries if e["type"] == "file")
        self.runtimes[name] = pub
        self.watch.watch(name, version_dir)
        return "verified"

    def publish(self, name: str, version_dir: Path) -> str:
        """One rename makes the new version the published one (the old stays until unused); then
        it is loaded and verified in full. Returns "verified" or the problem."""
        self.digests.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest_tmp = self.digests / f".{name}.json.tmp"
        digest_tmp.write_text(json.dumps({"version": version_dir.name,
                                          "manifest_sha256": mf.manifest_digest(str(version_dir))}))
        link = self.paths.runtimes / name
        tmp = self.paths.runtimes / f".{name}.{version_dir.name}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(version_dir, self.paths.runtimes), tmp)
        os.replace(digest_tmp, self.digests / f"{name}.json")
        os.replace(tmp, link)
        return self._load(name)

    def unpublish(self, name: str) -> None:
        """Remove a runtime: its link, its digest, and every version of it."""
        pub = self.runtimes.pop(name)
        (self.paths.runtimes / name).unlink(missing_ok=True)
        (self.digests / f"{name}.json").unlink(missing_ok=True)
        self.watch.forget(name)
        shutil.rmtree(self.versions / name, ignore_errors=True)
        if pub.version_dir and os.path.isdir(pub.version_dir):
            shutil.rmtree(pub.version_dir, ignore_errors=True)

    def collect_garbage(self, in_use: Callable[[str], bool], building: set[str]) -> None:
        """Remove versions that are neither published, nor being built, nor possibly mounted by a
        running job (`in_use(name)`: a job may have an older version mounted; collected later)."""
        current = {os.path.realpath(self.paths.runtimes / n) for n in self.runtimes}
        for name_dir in self.versions.iterdir():
            if in_use(name_dir.name):
                continue
            for version in name_dir.iterdir():
                if str(version) not in current and version.name not in building:
                    shutil.rmtree(version, ignore_errors=True)
            if not any(name_dir.iterdir()):
                name_dir.rmdir()

    # ---- queries -----------------------------------------------------------------------------

    def published(self) -> list[str]:
        return sorted(n for n, p in self.runtimes.items() if p.spec is not None)

    def get(self, name: str) -> Published:
        try:
            check_name(name)
        except RuntimeSpecError as exc:
            raise BadRequest(str(exc)) from None
        pub = self.runtimes.get(name)
        if pub is None:
            known = self.published()
            raise NotFound(f"no runtime {name!r} is published on this agent (published: "
                           f"{', '.join(known) or 'none'}); an admin builds it with %joblet runtime build {name}")
        return pub

    def check(self, pub: Published) -> None:
        """The per-job check: drain inotify; a changed tree gets the stat fingerprint check."""
        self._mark_changed()
        if pub.dirty and pub.problem is None:
            try:
                mf.verify_stat(pub.version_dir, pub.manifest)
                pub.dirty = False
            except (OSError, mf.TreeError) as exc:
                pub.problem = str(exc)
        if pub.problem is not None:
            raise Conflict(f"runtime {pub.name!r} failed verification and is refused: {pub.problem}. "
                           f"An admin rebuilds it with %joblet runtime build {pub.name} --force")

    def resolve(self, name: str) -> RuntimeMounts:
        """A verified published runtime's mounts for a production job (JobService calls this)."""
        try:
            pub = self.get(name)
        except NotFound as exc:
            raise BadRequest(f"unknown runtime: {exc.message}") from None
        self.check(pub)
        assert pub.spec is not None  # a runtime without a spec has a problem, which check() refused
        found = self.mounts(pub.spec, pub.version_dir)
        found.manifest_sha256 = pub.digest
        return found

    @staticmethod
    def mounts(spec: RuntimeSpec, version_dir: str) -> RuntimeMounts:
        """`spec` is a published (rewritten) runtime.yml: every source lies inside isolated/, and is
        bound from a descriptor opened beneath it with no symlink on the way (rootfs.bind, init_root.c)."""
        if any(not m.source.startswith("isolated/") for m in spec.mounts):
            raise Conflict(f"runtime {spec.name!r}: a mount source lies outside isolated/; rebuild it")
        isolated = os.path.join(version_dir, "isolated")
        mounts = [Mount(source=m.source.removeprefix("isolated/"), target=m.target, readonly=True, beneath=isolated)
                  for m in spec.mounts]
        return RuntimeMounts(name=spec.name, mounts=mounts, env=dict(spec.environment),
                             script_command=list(spec.script.command), script_suffix=spec.script.suffix,
                             version_dir=version_dir)

    def describe(self, pub: Published, full: bool = False) -> dict[str, Any]:
        if pub.spec is None:
            return {"name": pub.name, "status": "refused", "problem": pub.problem}
        s = pub.spec
        status = "refused" if pub.problem else ("changed" if pub.dirty else "verified")
        out: dict[str, Any] = {
            "name": s.name, "language": s.language, "version": s.version, "description": s.description,
            "status": status, "files": pub.files, "size_mb": round(pub.size_bytes / 1e6, 1),
            "built": os.path.basename(pub.version_dir), "built_at": _built_at(pub.version_dir),
            "packages": s.packages,
        }
        if full:
            out.update({
                "architectures": s.architectures,
                "mounts": [m.model_dump() for m in s.mounts], "environment": s.environment,
                "script": s.script.model_dump(), "test": s.test.model_dump(exclude_none=True),
                "build": s.build.model_dump(),
                "manifest": {"status": status, "problem": pub.problem, "entries": len(pub.manifest.get("entries", {})),
                             "verified_at": pub.verified_at},
            })
        return out

    def listing(self) -> list[dict[str, Any]]:
        self._mark_changed()
        return [self.describe(p) for _, p in sorted(self.runtimes.items())]

    def info(self, name: str) -> dict[str, Any]:
        pub = self.get(name)
        try:
            self.check(pub)
        except Conflict:
            pass
        return self.describe(pub, full=True)

    def _mark_changed(self) -> None:
        """Drain the inotify queue: every tree it names gets the stat check before its next use."""
        for name in self.watch.changed():
            if name in self.runtimes:
                self.runtimes[name].dirty = True


def _built_at(version_dir: str) -> float | None:
    """When a published runtime was built (its version folder is written once, at publish)."""
    try:
        return os.stat(version_dir).st_mtime
    except OSError:
        return None
