"""Where the agent keeps things. Everything it creates lives under its root or a configured path,
and the builder excludes these real paths, not a folder name."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentPaths:
    root: Path
    jobs: Path          # the mount point of every running job's root, each in its own mount namespace
    runtimes: Path      # published runtimes and their builds (builds/published.py)
    state: Path
    job_state: Path     # records, event logs and /work artifacts of every job
    tokens: Path
    logs: Path
    config: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> "AgentPaths":
        real = Path(os.path.realpath(root))
        state = real / "state"
        return cls(root=real, jobs=real / "jobs", runtimes=real / "runtimes", state=state,
                   job_state=state / "jobs", tokens=state / "tokens.json", logs=real / "logs",
                   config=real / "config")

    def private(self) -> list[Path]:
        """Paths no sandbox may see: state, logs, config and other jobs."""
        return [self.jobs, self.state, self.logs, self.config]

    def cgroup_parent(self) -> str:
        """Each agent root gets its own cgroup parent, so agents on one host never collide."""
        return "jnb-" + hashlib.sha1(str(self.root).encode()).hexdigest()[:8]

    def stage_sockets(self) -> str:
        """Where the launcher's waiting stages bind their holder's socket ahead (sandbox/aheadsocket.py):
        private state, on the job folders' filesystem, which a rename into a job's folder needs."""
        return str(self.state / "stage-sockets")

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for path in (self.jobs, self.state, self.job_state, self.logs, self.config):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)
        self.runtimes.mkdir(mode=0o755, exist_ok=True)
