"""RuntimeService: the catalogue, the build pipeline, verification, and the runtime calls.

On disk, below `<root>/runtimes/` (root-owned; production jobs see none of it but the read-only
binds of a published runtime's `isolated/` tree):

    <name>                 -> .versions/<name>/<build id>   the published runtime (a symlink)
    .versions/<name>/<id>/ runtime.yml (rewritten), runtime.yml.original, isolated/, manifest.json
    .builds/<id>/staging/  the one folder a build may write, owned by the build's uid

and `<root>/state/runtimes/<name>.json` holds the published manifest's sha256 (private to the agent).

A build is the job type `runtime-build`, started only here (POST /v1/runtimes/{name}/build, admin):
validate -> setup (the setup script in the builder sandbox, into staging) -> cleanup (copy each
mount source into `isolated/`, rewrite runtime.yml) -> manifest -> test (the runtime's own test in
a production sandbox) -> publish (one rename of the symlink). Each phase is a `progress` event in
the build job's log; a failed phase ends the job with `reason` = that phase and leaves the
published version as it was. A half-built runtime is never reachable: only the symlink publishes.

Verification: a full hash after publish and at agent start; at a job start, one non-blocking read
of an inotify queue says whether the tree changed at all, and only then the stat fingerprint of
every entry is compared with the manifest. A runtime that fails either is refused (409).
"""


import asyncio
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobs import etcfiles
from . import manifest as mf
from ..auth import Principal
from .builder import BuildPlan, builder_spec
from ..errors import BadRequest, Conflict, NotFound
from ..contract import JobStatus, JobType
from ..jobs.service import JobService, RuntimeMounts
from ..jobs.verdict import Verdict
from ..models import BuildRequest, JobLimits, JobRecord, JobRequest
from ..paths import AgentPaths
from .pipeline import PhaseFailed, copy_to_isolated, mount_staging, remove_build_dir
from .spec import FILE_NAME, ParsedSpec, RuntimeSpecError, check_name, parse
from ..sandbox.cgroups import CgroupLimits
from ..sandbox.spec import Mount, SandboxSpec

DEFAULT_CATALOGUE = Path(__file__).resolve().parents[2] / "runtimes"
PHASES = ("validate", "setup", "cleanup", "manifest", "test", "publish")
NO_BRIDGE = ("this agent has no bridge network, and runtime {name!r} downloads from the package "
             "registries (build.network: bridge in its runtime.yml): it cannot be built here yet")
MAX_TEST_OUTPUT = 64 << 10


@dataclass
class Published:
    name: str
    version_dir: str
    spec: Any
    manifest: dict[str, Any]
    problem: str | None = None
    dirty: bool = False
    verified_at: float = 0.0
    size_bytes: int = 0
    files: int = 0


@dataclass
class BuildState:
    job_id: str
    name: str
    parsed: ParsedSpec
    owner: Principal
    build_dir: Path
    started: float = field(default_factory=time.monotonic)


class RuntimeService:
    def __init__(self, paths: AgentPaths, catalogue: Path | None = None,
                 extra_private: list[str] | tuple[str, ...] = ()) -> None:
        self.paths = paths
        self.catalogue = Path(catalogue) if catalogue else DEFAULT_CATALOGUE
        self.extra_private = list(extra_private)
        self.jobs: JobService | None = None
        self.watch = mf.TreeWatch()
        self.runtimes: dict[str, Published] = {}
        self.building: dict[str, BuildState] = {}

    @property
    def versions(self) -> Path:
        return self.paths.runtimes / ".versions"

    @property
    def builds(self) -> Path:
        return self.paths.runtimes / ".builds"

    @property
    def digests(self) -> Path:
        return self.paths.state / "runtimes"

    def attach(self, jobs: JobService) -> None:
        self.jobs = jobs

    # ---- start-up ----------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """At agent start: drop what unfinished builds left, verify every published runtime in
        full, and remove versions nothing publishes. Returns {name: "verified" | problem}."""
        for d in (self.versions, self.builds):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self.digests.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in self.builds.iterdir():
            remove_build_dir(entry)
        results = {}
        for link in sorted(self.paths.runtimes.iterdir()):
            if link.name.startswith(".") or not link.is_symlink():
                continue
            results[link.name] = self._load(link.name)
        self._collect_garbage()
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
        pub = Published(name, version_dir, parsed.spec, manifest, verified_at=time.time())
        entries = manifest["entries"].values()
        pub.size_bytes = sum(e.get("size", 0) for e in entries)
        pub.files = sum(1 for e in entries if e["type"] == "file")
        self.runtimes[name] = pub
        self.watch.watch(name, version_dir)
        return "verified"

    def _collect_garbage(self) -> None:
        """Remove versions that are neither published nor mounted by a running job."""
        current = {os.path.realpath(self.paths.runtimes / n) for n in self.runtimes}
        for name_dir in self.versions.iterdir():
            if self._users(name_dir.name):
                continue  # a running job may have an older version mounted: collected later
            for version in name_dir.iterdir():
                if str(version) not in current and version.name not in self._building_ids():
                    shutil.rmtree(version, ignore_errors=True)
            if not any(name_dir.iterdir()):
                name_dir.rmdir()

    def _building_ids(self) -> set[str]:
        return {b.job_id for b in self.building.values()}

    def _users(self, name: str) -> int:
        if self.jobs is None:
            return 0
        return sum(1 for live in self.jobs.live.values()
                   if live.record.runtime == name and live.record.type == JobType.STANDARD)

    # ---- queries -----------------------------------------------------------------------------

    def published(self) -> list[str]:
        return sorted(n for n, p in self.runtimes.items() if p.spec is not None)

    def _get(self, name: str) -> Published:
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

    def _check(self, pub: Published) -> None:
        """The per-job check: drain inotify; a changed tree gets the stat fingerprint check."""
        for name in self.watch.changed():
            if name in self.runtimes:
                self.runtimes[name].dirty = True
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
            pub = self._get(name)
        except NotFound as exc:
            raise BadRequest(f"unknown runtime: {exc.message}") from None
        self._check(pub)
        return self._mounts(pub.spec, pub.version_dir)

    @staticmethod
    def _mounts(spec: Any, version_dir: str) -> RuntimeMounts:
        """`spec` is a published (rewritten) runtime.yml: every source lies inside isolated/."""
        if any(not m.source.startswith("isolated/") for m in spec.mounts):
            raise Conflict(f"runtime {spec.name!r}: a mount source lies outside isolated/; rebuild it")
        mounts = [Mount(source=os.path.join(version_dir, m.source), target=m.target, readonly=True)
                  for m in spec.mounts]
        return RuntimeMounts(name=spec.name, mounts=mounts, env=dict(spec.environment),
                             script_command=list(spec.script.command), script_suffix=spec.script.suffix)

    def describe(self, pub: Published, full: bool = False) -> dict[str, Any]:
        if pub.spec is None:
            return {"name": pub.name, "status": "refused", "problem": pub.problem}
        s = pub.spec
        status = "refused" if pub.problem else ("changed" if pub.dirty else "verified")
        out: dict[str, Any] = {
            "name": s.name, "language": s.language, "version": s.version, "description": s.description,
            "status": status, "files": pub.files, "size_mb": round(pub.size_bytes / 1e6, 1),
            "built": os.path.basename(pub.version_dir),
        }
        if full:
            out.update({
                "architectures": s.architectures, "packages": s.packages,
                "mounts": [m.model_dump() for m in s.mounts], "environment": s.environment,
                "script": s.script.model_dump(), "test": s.test.model_dump(exclude_none=True),
                "build": s.build.model_dump(),
                "manifest": {"status": status, "problem": pub.problem, "entries": len(pub.manifest.get("entries", {})),
                             "verified_at": pub.verified_at},
            })
        return out

    def listing(self) -> list[dict[str, Any]]:
        for name in self.watch.changed():
            if name in self.runtimes:
                self.runtimes[name].dirty = True
        return [self.describe(p) for _, p in sorted(self.runtimes.items())]

    def info(self, name: str) -> dict[str, Any]:
        pub = self._get(name)
        try:
            self._check(pub)
        except Conflict:
            pass
        return self.describe(pub, full=True)

    def catalogue_names(self) -> list[str]:
        if not self.catalogue.is_dir():
            return []
        return sorted(p.parent.name for p in self.catalogue.glob("*/runtime.yml"))

    # ---- build -------------------------------------------------------------------------------

    def _definition(self, name: str, body: BuildRequest) -> tuple[str, dict[str, bytes]]:
        if body.spec is not None:
            files = {}
            for fname, text in body.files.items():
                if not FILE_NAME.match(fname) or fname == "runtime.yml":
                    raise BadRequest(f"files: {fname!r} must be a plain file name (no '/'), not runtime.yml")
                files[fname] = text.encode()
            return body.spec, files
        if body.files:
            raise BadRequest("files go with spec (a runtime.yml of your own)")
        folder = self.catalogue / name
        if not (folder / "runtime.yml").is_file():
            raise NotFound(f"no runtime {name!r} in this agent's catalogue ({self.catalogue}); "
                           f"it has: {', '.join(self.catalogue_names()) or 'nothing'}")
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
                 if p.is_file() and not p.is_symlink() and p.name != "runtime.yml" and FILE_NAME.match(p.name)}
        return (folder / "runtime.yml").read_text(), files

    async def build(self, who: Principal, name: str, body: BuildRequest) -> dict[str, Any]:
        who.require_admin()
        assert self.jobs is not None
        try:
            check_name(name)
        except RuntimeSpecError as exc:
            raise BadRequest(str(exc)) from None
        text, files = self._definition(name, body)
        try:
            parsed = parse(text)
        except RuntimeSpecError as exc:
            raise BadRequest(str(exc)) from None
        spec = parsed.spec
        if spec.name != name:
            raise BadRequest(f"runtime.yml line 1, name: {spec.name!r} does not match the runtime being built ({name!r})")
        if spec.build.setup not in files:
            raise BadRequest(f"runtime.yml, build.setup: the setup script {spec.build.setup!r} is missing"
                             + (" from files" if body.spec is not None else f" from {self.catalogue / name}"))
        arch = platform.machine()
        if arch not in spec.architectures:
            raise BadRequest(f"runtime.yml, architectures: {name} supports {', '.join(spec.architectures)}, "
                             f"this host is {arch}")
        if name in self.building:
            raise Conflict(f"runtime {name!r} is being built already (job {self.building[name].job_id})")
        if name in self.runtimes and self.runtimes[name].problem is None and not (body.force or body.spec):
            raise Conflict(f"runtime {name!r} is published already; build it again with --force (\"force\": true)")
        if spec.build.network != "none" and self.jobs.network is None:
            raise Conflict(NO_BRIDGE.format(name=name))
        files = {"runtime.yml": text.encode(), **files}
        limits = JobLimits(memory_mb=spec.build.memory_mb, timeout_s=spec.build.timeout_s,
                        disk_mb=spec.build.disk_mb, pids=4096)
        jobs = self.jobs
        state: dict[str, BuildState] = {}

        def make_spec(record: JobRecord, uid: int, cgroup_limits: CgroupLimits) -> SandboxSpec:
            gid = uid
            build_dir = self.builds / record.id
            staging = build_dir / "staging"
            self.builds.mkdir(mode=0o700, parents=True, exist_ok=True)
            build_dir.mkdir(mode=0o700)
            staging.mkdir(mode=0o700)
            mount_staging(staging, spec.build.install_mb, uid)
            st = BuildState(record.id, name, parsed, who, build_dir)
            state["build"] = st
            self.building[name] = st
            plan = BuildPlan(name=name, build_id=record.id, prefix=spec.prefix, staging=str(staging),
                             setup_name=spec.build.setup, files=files, packages=list(spec.packages),
                             disk_mb=spec.build.disk_mb, network=spec.build.network)
            self._progress(record.id, "setup", f"running {spec.build.setup} in the builder sandbox "
                                               f"(network {spec.build.network}, prefix {spec.prefix})")
            resolv = build_dir / "resolv.conf"
            resolv.write_text(etcfiles.etc_files(uid, gid, "joblet-builder", spec.build.network)["resolv.conf"])
            os.chmod(resolv, 0o644)
            return builder_spec(self.paths, plan, uid, gid, cgroup_limits, self.extra_private,
                                resolv_conf=str(resolv))

        async def pipeline(record: JobRecord, verdict: Verdict) -> Verdict:
            st = state.get("build")
            try:
                return await self._after_setup(record, verdict, st)
            finally:
                if st is not None:
                    self.building.pop(name, None)
                    await asyncio.to_thread(remove_build_dir, st.build_dir)

        first = self._event("validate", f"runtime.yml valid: {spec.language} {spec.version}, "
                                        f"{len(spec.mounts)} mount(s), packages: {', '.join(spec.packages) or 'none'}")
        record = await jobs.start_build(who, name, limits, spec.build.network,
                                        ["/bin/sh", "-eu", f"/work/{spec.build.setup}"], make_spec, pipeline,
                                        first_event=first)
        return {"id": record.id, "status": record.status.value, "type": record.type}

    def _event(self, phase: str, message: str) -> dict[str, Any]:
        return {"type": "progress", "phase": phase, "step": PHASES.index(phase) + 1, "steps": len(PHASES),
                "message": message}

    def _progress(self, job_id: str, phase: str, message: str) -> None:
        assert self.jobs is not None
        self.jobs.store.log(job_id).append(self._event(phase, message))

    async def _after_setup(self, record: JobRecord, verdict: Verdict, st: BuildState | None) -> Verdict:
        if verdict.status != JobStatus.COMPLETED or st is None:
            return verdict.failed(verdict.reason, f"phase setup failed: {verdict.message}; the published version "
                                                  f"(if any) is unchanged")
        spec = st.parsed.spec
        version_dir = self.versions / spec.name / record.id
        phase = "cleanup"
        try:
            report = await asyncio.to_thread(copy_to_isolated, st.parsed, str(st.build_dir / "staging"), version_dir)
            self._progress(record.id, "cleanup", f"isolated/: {report.summary()}; runtime.yml rewritten, "
                                                 "runtime.yml.original kept")
            phase = "manifest"
            manifest = await asyncio.to_thread(mf.write_manifest, str(version_dir))
            self._progress(record.id, "manifest", f"{len(manifest['entries'])} entries hashed (sha256)")
            phase = "test"
            await self._test_candidate(record, st, str(version_dir))
            phase = "publish"
            await asyncio.to_thread(mf.verify_full, str(version_dir), manifest)
            self._publish(spec.name, version_dir)
            self._progress(record.id, "publish", f"runtime {spec.name} published and verified")
        except (PhaseFailed, OSError, ValueError, mf.TreeError) as exc:
            phase = exc.phase if isinstance(exc, PhaseFailed) else phase
            await asyncio.to_thread(shutil.rmtree, version_dir, True)
            try:
                version_dir.parent.rmdir()
            except OSError:
                pass
            return verdict.failed(phase, f"phase {phase} failed: {exc}; the published version (if any) "
                                         f"is unchanged")
        return verdict

    async def _run_test(self, who: Principal, spec: Any, mounts: RuntimeMounts) -> dict[str, Any]:
        """The runtime's own test as a production job of `who`; waits for it and collects output."""
        assert self.jobs is not None
        t = spec.test
        req = JobRequest(command=t.command, script=t.script, runtime=spec.name,
                         limits=JobLimits(timeout_s=t.timeout_s))
        record = await self.jobs.start(who, req, runtime_mounts=mounts)
        await self.jobs.wait(record.id)
        record = self.jobs.store.records.get(record.id, record)
        out, err = [], []
        async for event in await self.jobs.events(who, record.id, 0, follow=False):
            if event["type"] == "stdout":
                out.append(event["data"])
            elif event["type"] == "stderr":
                err.append(event["data"])
        stdout, stderr = "".join(out)[-MAX_TEST_OUTPUT:], "".join(err)[-MAX_TEST_OUTPUT:]
        ok = record.status == JobStatus.COMPLETED
        problem = None if ok else (record.message or f"{record.status.value} ({record.reason})")
        if ok and t.expect and t.expect not in stdout:
            ok, problem = False, f"the test's output does not contain {t.expect!r}"
        return {"name": spec.name, "ok": ok, "job_id": record.id, "id": record.id,
                "status": "COMPLETED" if ok else "FAILED", "exit_code": record.exit_code,
                "reason": record.reason, "message": problem, "stdout": stdout, "stderr": stderr}

    async def _test_candidate(self, record: Any, st: BuildState, version_dir: str) -> None:
        spec = parse(Path(version_dir, "runtime.yml").read_text(), "rewritten runtime.yml").spec
        result = await self._run_test(st.owner, spec, self._mounts(spec, version_dir))
        log = self.jobs.store.log(record.id)  # type: ignore[union-attr]
        for kind in ("stdout", "stderr"):
            if result[kind]:
                text = "".join(f"[test] {line}\n" for line in result[kind].splitlines())
                log.append({"type": kind, "data": text})
        if not result["ok"]:
            raise PhaseFailed("test", f"test job {result['job_id']}: {result['message']}")
        self._progress(record.id, "test", f"test job {result['job_id']} passed in a production sandbox")

    def _publish(self, name: str, version_dir: Path) -> None:
        """One rename makes the new version the published one; the old stays until unused."""
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
        problem = self._load(name)
        if problem != "verified":
            raise PhaseFailed("publish", f"the published tree does not verify: {problem}")
        self._collect_garbage()

    # ---- test, remove ------------------------------------------------------------------------

    async def test(self, who: Principal, name: str) -> dict[str, Any]:
        pub = self._get(name)
        self._check(pub)
        return await self._run_test(who, pub.spec, self._mounts(pub.spec, pub.version_dir))

    def remove(self, who: Principal, name: str) -> None:
        who.require_admin()
        pub = self._get(name)
        if name in self.building:
            raise Conflict(f"runtime {name!r} is being built (job {self.building[name].job_id}); "
                           "wait for the build to end")
        users = self._users(name)
        if users:
            raise Conflict(f"runtime {name!r} is used by {users} running job(s); stop them first")
        (self.paths.runtimes / name).unlink(missing_ok=True)
        (self.digests / f"{name}.json").unlink(missing_ok=True)
        self.watch.forget(name)
        del self.runtimes[name]
        shutil.rmtree(self.versions / name, ignore_errors=True)
        if pub.version_dir and os.path.isdir(pub.version_dir):
            shutil.rmtree(pub.version_dir, ignore_errors=True)
