"""A real JupyterLab 4 or Notebook 7 server for the browser suite (no browser here).

Each server has its own temporary config, data, runtime, settings and workspace folders (nothing of
the machine's Jupyter or IPython setup is read), a random token, a free loopback port, and a root
folder where tests copy their notebooks. Kernels inherit the server's environment, which carries
the agent's `JOBLET_URL` / `JOBLET_TOKEN` / `JOBLET_ADMIN_TOKEN`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

PREFIX = "jnb-browser-"
APPS = ("lab", "notebook")

# Settings every test wants: no news or update pop-up over the page, and every cell rendered
# (Lab's windowed notebook leaves off-screen cells out of the DOM, where no person sees them either,
# but a test that scrolls would then depend on the window size).
SETTING_OVERRIDES: dict[str, Any] = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    # a kernel's first completion (Jedi warming up) can take over the default 1 s on a busy machine
    "@jupyterlab/completer-extension:manager": {"providerTimeout": 8000},
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class JupyterServer:
    """One server process (`app` is "lab" or "notebook") and the folders it owns."""

    app: str
    env_extra: dict[str, str]
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=PREFIX)))
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        """Where the notebooks a test opens live (the server's root_dir)."""
        return self.base / "root"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def notebook_url(self, name: str) -> str:
        path = "lab/tree" if self.app == "lab" else "notebooks"
        return f"{self.url}/{path}/{name}?token={self.token}"

    def _env(self) -> dict[str, str]:
        dirs = {name: self.base / name for name in ("config", "data", "runtime", "settings",
                                                     "workspaces", "ipython", "xdg")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        # A page busy rendering a large output on a loaded machine can leave a websocket ping
        # unanswered for the server's default 90 s; the server then drops the kernel connection and
        # the page never learns that its cell ended. Half an hour is the harness's patience.
        (dirs["config"] / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"tornado_settings": {"ws_ping_timeout": 1_800_000}}}))
        labconfig = dirs["config"] / "labconfig"
        labconfig.mkdir(exist_ok=True)
        (labconfig / "default_setting_overrides.json").write_text(json.dumps(SETTING_OVERRIDES))
        env = dict(os.environ)
        env.update({
            "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]), "IPYTHONDIR": str(dirs["ipython"]),
            "XDG_CONFIG_HOME": str(dirs["xdg"]), "JUPYTER_PLATFORM_DIRS": "1",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        })
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 90) -> "JupyterServer":
        self.root.mkdir(parents=True, exist_ok=True)
        module = "jupyterlab" if self.app == "lab" else "notebook"
        expose = "LabApp" if self.app == "lab" else "JupyterNotebookApp"
        cmd = [sys.executable, "-m", module, "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               f"--{expose}.expose_app_in_browser=True", "--ServerApp.allow_root=True"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=self._env(), cwd=self.root, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                r = requests.get(f"{self.url}/api/status", params={"token": self.token}, timeout=2)
                if r.status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"jupyter {self.app} did not answer in {timeout}s")

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """A call to the server's REST API (contents, sessions, kernels) with the token."""
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def shutdown_kernels(self) -> None:
        """Every kernel of this server ends (a test's notebook must not keep running into the next)."""
        try:
            for kernel in self.api("GET", "/api/kernels").json():
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (requests.RequestException, ValueError):
            pass

    def stop(self) -> None:
        """The server ends with its kernels; its folders are removed."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.shutdown_kernels()
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what it started
                    self.proc.wait()
            self.proc = None
        shutil.rmtree(self.base, ignore_errors=True)
