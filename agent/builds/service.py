"""RuntimeService: builds and tests runtimes, and removes them; the published ones live in
`published.py`.

A build is the job type `runtime-build`, started only here (POST /v1/runtimes/{name}/build, admin):
validate -> setup (the setup script in the builder sandbox, into staging) -> cleanup (copy each
mount source into `isolated/`, rewrite runtime.yml) -> manifest -> test (the runtime's own test in
a production sandbox) -> publish (one rename of the symlink). Each phase is a `progress` event in
the build job's log; a failed phase ends the job with `reason` = that phase and leaves the
published version as it was. Builds write only below `<root>/runtimes/.builds/<id>/staging/`.

The service talks to jobs through `JobRunner`, the few calls it needs of the job service.
"""


from __future__ import annotations

import asyncio
import os
import platform
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from . import manifest as mf
from ..auth import Principal
from ..contract import JobStatus
from ..errors import BadRequest, Conflict, NotFound
from ..fs import COMPONENT
from ..jobs import etcfiles
from ..jobs.service import BuildPipeline, BuildSpecMaker
from ..jobs.spec import RuntimeMounts
from ..jobs.verdict import Verdict
from ..models import BuildRequest, JobLimits, JobRecord, JobRequest
from ..paths import AgentPaths
from ..sandbox.cgroups import CgroupLimits
from ..sandbox.spec import SandboxSpec
from .builder import BuildPlan, builder_spec
from .pipeline import PhaseFailed, copy_to_isolated, mount_staging, remove_build_dir
from .published import PublishedRuntimes
from .spec import ParsedSpec, RuntimeSpec, RuntimeSpecError, check_name, parse

DEFAULT_CATALOGUE = Path(__file__).resolve().parents[2] / "runtimes"
PHASES = ("validate", "setup", "cleanup", "manifest", "test", "publish")
NO_BRIDGE = ("this agent has no bridge network, and runtime {name!r} downloads from the package "
             "registries (build.network: bridge in its runtime.yml): it cannot be built here yet")
MAX_TEST_OUTPUT = 64 << 10


class JobRunner(Protocol):
    """What the RuntimeService needs of the job service (JobService), and nothing more."""

    @property
    def has_network(self) -> bool:
        """Whether bridge networking is there (a build that downloads needs it)."""

    async def start_build(self, who: Principal, runtime: str, limits: JobLimits, network: str,
                          command: list[str], make_spec: BuildSpecMaker, pipeline: BuildPipeline,
                          first_event: dict[str, Any] | None = None) -> JobRecord: ...

    async def start(self, who: Principal, req: JobRequest,
                    runtime_mounts: RuntimeMounts | None = None) -> JobRecord: ...

    async def wait(self, job_id: str) -> JobRecord | None: ...

    async def events(self, who: Principal, job_id: str, after: int,
                     follow: bool) -> AsyncIterator[dict[str, Any]]: ...

    def append_event(self, job_id: str, event: dict[str, Any]) -> None: ...

    def runtime_users(self, name: str) -> int:
        """How many running production jobs mount runtime `name`."""


@dataclass
class BuildState:
    job_id: str
    name: str
    parsed: ParsedSpec
    owner: Principal
    build_dir: Path
    started: float = field(default_factory=time.monotonic)


class RuntimeService:
    def __init__(self, paths: AgentPaths, published: PublishedRuntimes, jobs: JobRunner,
                 catalogue: Path | None = None, extra_private: list[str] | tuple[str, ...] = ()) -> None:
        self.paths = paths
        self.published = published
        self.jobs = jobs
        self.catalogue = Path(catalogue) if catalogue else DEFAULT_CATALOGUE
        self.extra_private = list(extra_private)
        self.building: dict[str, BuildState] = {}

    @property
    def builds(self) -> Path:
        return self.paths.runtimes / ".builds"

    # ---- start-up ----------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """At agent start: drop what unfinished builds left, verify every published runtime in
        full, and remove versions nothing publishes. Returns {name: "verified" | problem}."""
        self.builds.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.builds, 0o700)
        for entry in self.builds.iterdir():
            remove_build_dir(entry)
        results = self.published.load_all()
        self._collect_garbage()
        return results

    def _collect_garbage(self) -> None:
        self.published.collect_garbage(lambda name: self.jobs.runtime_users(name) > 0,
                                       {b.job_id for b in self.building.values()})

    # ---- queries (the published runtimes answer) ---------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        return self.published.listing()

    def info(self, name: str) -> dict[str, Any]:
        return self.published.info(name)

    def catalogue_names(self) -> list[str]:
        if not self.catalogue.is_dir():
            return []
        return sorted(p.parent.name for p in self.catalogue.glob("*/runtime.yml"))

    # ---- build -------------------------------------------------------------------------------

    def _definition(self, name: str, body: BuildRequest) -> tuple[str, dict[str, bytes]]:
        if body.spec is not None:
            files = {}
            for fname, text in body.files.items():
                if not COMPONENT.match(fname) or fname == "runtime.yml":
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
                 if p.is_file() and not p.is_symlink() and p.name != "runtime.yml" and COMPONENT.match(p.name)}
        return (folder / "runtime.yml").read_text(), files

    async def build(self, who: Principal, name: str, body: BuildRequest) -> dict[str, Any]:
        """Start a build job (admin); its log tells the phases, its end says how it went."""
        who.require_admin()
        parsed, files = self._validated(name, body)
        spec = parsed.spec
        limits = JobLimits(memory_mb=spec.build.memory_mb, timeout_s=spec.build.timeout_s,
                           disk_mb=spec.build.disk_mb, pids=4096)
        first = self._event("validate", f"runtime.yml valid: {spec.language} {spec.version}, "
                                        f"{len(spec.mounts)} mount(s), packages: {', '.join(spec.packages) or 'none'}")
        record = await self.jobs.start_build(who, name, limits, spec.build.network,
                                             ["/bin/sh", "-eu", f"/work/{spec.build.setup}"],
                                             partial(self._builder_spec, parsed, files, who), self._after_builder,
                                             first_event=first)
        return {"id": record.id, "status": record.status.value, "type": record.type.value}

    def _validated(self, name: str, body: BuildRequest) -> tuple[ParsedSpec, dict[str, bytes]]:
        """The definition to build and its files (runtime.yml first), or a 4xx saying what is wrong."""
        try:
            check_name(name)
            text, files = self._definition(name, body)
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
        current = self.published.runtimes.get(name)
        if current is not None and current.problem is None and not (body.force or body.spec):
            raise Conflict(f"runtime {name!r} is published already; build it again with --force (\"force\": true)")
        if spec.build.network != "none" and not self.jobs.has_network:
            raise Conflict(NO_BRIDGE.format(name=name))
        return parsed, {"runtime.yml": text.encode(), **files}

    def _builder_spec(self, parsed: ParsedSpec, files: dict[str, bytes], who: Principal, record: JobRecord,
                      uid: int, cgroup_limits: CgroupLimits) -> SandboxSpec:
        """The build's staging tmpfs, its resolver list, and the builder sandbox around them."""
        spec, build_dir = parsed.spec, self.builds / record.id
        staging = build_dir / "staging"
        self.builds.mkdir(mode=0o700, parents=True, exist_ok=True)
        build_dir.mkdir(mode=0o700)
        staging.mkdir(mode=0o700)
        mount_staging(staging, spec.build.install_mb, uid)
        self.building[spec.name] = BuildState(record.id, spec.name, parsed, who, build_dir)
        plan = BuildPlan(name=spec.name, build_id=record.id, prefix=spec.prefix, staging=str(staging),
                         setup_name=spec.build.setup, files=files, packages=list(spec.packages),
                         disk_mb=spec.build.disk_mb, network=spec.build.network)
        self._progress(record.id, "setup", f"running {spec.build.setup} in the builder sandbox "
                                           f"(network {spec.build.network}, prefix {spec.prefix})")
        resolv = build_dir / "resolv.conf"
        resolv.write_text(etcfiles.etc_files(uid, uid, "joblet-builder", spec.build.network)["resolv.conf"])
        os.chmod(resolv, 0o644)
        return builder_spec(self.paths, plan, uid, uid, cgroup_limits, self.extra_private, resolv_conf=str(resolv))

    async def _after_builder(self, record: JobRecord, verdict: Verdict) -> Verdict:
        """The phases after the setup script; the build's folder goes whatever happens."""
        st = next((b for b in self.building.values() if b.job_id == record.id), None)
        try:
            return await self._after_setup(record, verdict, st)
        finally:
            if st is not None:
                self.building.pop(st.name, None)
                await asyncio.to_thread(remove_build_dir, st.build_dir)

    def _event(self, phase: str, message: str) -> dict[str, Any]:
        return {"type": "progress", "phase": phase, "step": PHASES.index(phase) + 1, "steps": len(PHASES),
                "message": message}

    def _progress(self, job_id: str, phase: str, message: str) -> None:
        self.jobs.append_event(job_id, self._event(phase, message))

    async def _after_setup(self, record: JobRecord, verdict: Verdict, st: BuildState | None) -> Verdict:
        if verdict.status != JobStatus.COMPLETED or st is None:
            return verdict.failed(verdict.reason, f"phase setup failed: {verdict.message}; the published version "
                                                  f"(if any) is unchanged")
        spec = st.parsed.spec
        version_dir = self.published.versions / spec.name / record.id
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
            problem = self.published.publish(spec.name, version_dir)
            if problem != "verified":
                raise PhaseFailed("publish", f"the published tree does not verify: {problem}")
            self._collect_garbage()
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

    async def _run_test(self, who: Principal, spec: RuntimeSpec, mounts: RuntimeMounts) -> dict[str, Any]:
        """The runtime's own test as a production job of `who`; waits for it and collects output."""
        t = spec.test
        req = JobRequest(command=t.command, script=t.script, runtime=spec.name,
                         limits=JobLimits(timeout_s=t.timeout_s))
        record = await self.jobs.start(who, req, runtime_mounts=mounts)
        record = await self.jobs.wait(record.id) or record
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
                "status": (JobStatus.COMPLETED if ok else JobStatus.FAILED).value, "exit_code": record.exit_code,
                "reason": record.reason, "message": problem, "stdout": stdout, "stderr": stderr}

    async def _test_candidate(self, record: JobRecord, st: BuildState, version_dir: str) -> None:
        spec = parse(Path(version_dir, "runtime.yml").read_text(), "rewritten runtime.yml").spec
        result = await self._run_test(st.owner, spec, self.published.mounts(spec, version_dir))
        for kind in ("stdout", "stderr"):
            if result[kind]:
                text = "".join(f"[test] {line}\n" for line in result[kind].splitlines())
                self.jobs.append_event(record.id, {"type": kind, "data": text})
        if not result["ok"]:
            raise PhaseFailed("test", f"test job {result['job_id']}: {result['message']}")
        self._progress(record.id, "test", f"test job {result['job_id']} passed in a production sandbox")

    # ---- test, remove ------------------------------------------------------------------------

    async def test(self, who: Principal, name: str) -> dict[str, Any]:
        pub = self.published.get(name)
        self.published.check(pub)
        assert pub.spec is not None  # check() refuses a runtime that has none
        return await self._run_test(who, pub.spec, self.published.mounts(pub.spec, pub.version_dir))

    def remove(self, who: Principal, name: str) -> None:
        who.require_admin()
        self.published.get(name)
        if name in self.building:
            raise Conflict(f"runtime {name!r} is being built (job {self.building[name].job_id}); "
                           "wait for the build to end")
        users = self.jobs.runtime_users(name)
        if users:
            raise Conflict(f"runtime {name!r} is used by {users} running job(s); stop them first")
        self.published.unpublish(name)
