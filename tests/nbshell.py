"""The notebook-side tests' IPython shell (the `nb` and `nb_shell` fixtures of conftest.py hold
one) and what they share: a cell's captured output, waiting for a job's end, a PNG-writing script."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from joblet_nb.core.client import JobletClient
from joblet_nb.core.records import JobRecord
from waiting import wait_until


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


def wait_ended(client: JobletClient, job_id: str) -> JobRecord:
    return wait_until(lambda: (r := client.get_job(job_id)).finished and r)


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
