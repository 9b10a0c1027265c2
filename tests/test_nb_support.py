"""Fixtures and helpers of the notebook-side tests (no tests here).

Every test talks to the real agent of `conftest.agent`; nothing of the agent is mocked. The
IPython shell is configured through `%config` (URL and token files), so the tests never depend
on the environment or on a `~/.config/joblet` of the machine.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from joblet_nb.core.client import TERMINAL, JobletClient


@dataclass
class Cell:
    """What one `run_cell` left: its exception, stdout, stderr and rich displays."""

    error: BaseException | None
    stdout: str
    stderr: str
    outputs: list[Any]

    def texts(self) -> str:
        return "\n".join(o.data.get("text/plain", "") for o in self.outputs)

    def htmls(self) -> str:
        return "\n".join(o.data.get("text/html", "") for o in self.outputs)


class NbShell:
    """An InteractiveShell with `joblet_nb` loaded and pointed at the test agent."""

    def __init__(self, shell: InteractiveShell, agent: Any, token_dir: Path):
        self.shell = shell
        self.agent = agent
        self.token_dir = token_dir
        self.user_token_file = token_dir / "user-token"
        self.admin_token_file = token_dir / "admin-token"

    @property
    def magics(self) -> Any:
        import joblet_nb

        return joblet_nb._magics

    def configure(self) -> None:
        self.shell.run_line_magic("config", f"JobletMagics.url = {self.agent.url!r}")
        self.shell.run_line_magic("config", f"JobletMagics.token_file = {str(self.user_token_file)!r}")
        self.shell.run_line_magic(
            "config", f"JobletMagics.admin_token_file = {str(self.admin_token_file)!r}")

    def reset(self) -> None:
        """Session defaults back to none, so tests do not leak into each other."""
        m = self.magics
        m.default_runtime = ""
        m.default_limits = {}
        m.default_network = ""
        m.nodes = {}
        m.raise_on_error = True
        m.stream_output = True
        m.skip_runtimes.clear()
        m.background.clear()
        self.configure()

    def run(self, source: str) -> Cell:
        with capture_output() as cap:
            result = self.shell.run_cell(source)
        return Cell(result.error_in_exec or result.error_before_exec, cap.stdout, cap.stderr,
                    list(cap.outputs))

    def client(self) -> JobletClient:
        return JobletClient(self.agent.url, self.agent.user_token, self.agent.admin_token)


@pytest.fixture(scope="session")
def nb_shell(agent: Any, tmp_path_factory: pytest.TempPathFactory) -> NbShell:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "joblet_nb")
    token_dir = tmp_path_factory.mktemp("jnb-tokens")
    nb = NbShell(shell, agent, token_dir)
    nb.user_token_file.write_text(agent.user_token + "\n")
    nb.admin_token_file.write_text(agent.admin_token + "\n")
    os.chmod(nb.user_token_file, 0o600)
    os.chmod(nb.admin_token_file, 0o600)
    nb.configure()
    return nb


@pytest.fixture
def nb(nb_shell: NbShell) -> Iterator[NbShell]:
    nb_shell.reset()
    yield nb_shell
    nb_shell.reset()


@pytest.fixture
def client(agent: Any) -> JobletClient:
    return JobletClient(agent.url, agent.user_token, agent.admin_token)


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy (a generous bound that only guards against hangs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


def wait_ended(client: JobletClient, job_id: str) -> dict[str, Any]:
    return wait_for(lambda: (r := client.get_job(job_id))["status"] in TERMINAL and r)


def host_processes_with(marker: str) -> list[str]:
    """Host processes whose command line contains `marker` (the job's, seen from the host)."""
    found = []
    me = os.getpid()
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        pid = int(path.split("/")[2])
        if pid == me:
            continue
        try:
            with open(path, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


PNG_SCRIPT = '''
import struct, zlib
def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
raw = b"".join(b"\\x00" + bytes((200, 30, 30)) * 4 for _ in range(4))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
open("dot.png", "wb").write(png)
print("wrote", len(png))
'''
