"""A real JupyterHub for tests: DummyAuthenticator, single-user servers spawned as local processes
(SimpleLocalProcessSpawner, --allow-root in CI), configurable-http-proxy from npm, and a joblet
agent registered as the hub service `joblet`. Users log in through the hub's login form and get
tokens and servers through its REST API, as a person (or a course's script) would."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from agentproc import TEST_PREFIX, AgentProcess, Api, free_port
from waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
CHP = REPO / ".venv" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
PASSWORD = "jnb-dummy-password"
SERVICE = "joblet"
HUB_ADMIN = "jnb-hubadmin"

HUB_CONFIG = """
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{dir}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.JupyterHub.pid_file = "{dir}/hub.pid"
c.ConfigurableHTTPProxy.command = ["{chp}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = "{dir}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "{password}"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"{hub_admin}"}}  # a hub admin in no group
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/home/{{username}}"
c.Spawner.cmd = ["{python}", "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.shutdown_on_logout = True
c.JupyterHub.cleanup_servers = True
c.JupyterHub.load_groups = {groups!r}
c.JupyterHub.services = [{{"name": "{service}", "url": "{agent_url}", "api_token": "{service_token}",
                          "info": {{"joblet": True}}}},
                         {{"name": "jnb-test-admin", "api_token": "{admin_token}"}}]
c.JupyterHub.load_roles = [
    # what the README tells an admin to add: users and their servers may use the agent and find it
    # (list the hub's services with their URLs); a server's token gets only scopes its user holds
    {{"name": "user", "scopes": ["self", "access:services!service={service}",
                               "list:services!service={service}", "read:services!service={service}"]}},
    {{"name": "server", "scopes": ["users:activity!user", "access:servers!server",
                                 "access:services!service={service}",
                                 "list:services!service={service}", "read:services!service={service}"]}},
    {{"name": "jnb-joblet-service", "scopes": ["read:users:groups"], "services": ["{service}"]}},
    {{"name": "jnb-test-admin", "scopes": ["admin:users", "admin:servers", "tokens", "admin:groups"],
      "services": ["jnb-test-admin"]}},
]
"""


@dataclass
class HubProcess:
    """One JupyterHub (and its proxy and the servers it spawns) in a folder of its own."""

    groups: dict[str, Any]
    agent_url: str = ""  # the service's URL: set before start()
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=TEST_PREFIX + "hub-")))
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    service_token: str = field(default_factory=lambda: secrets.token_hex(32))
    admin_token: str = field(default_factory=lambda: secrets.token_hex(32))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The hub's own API (as JupyterHub gives it to services), not through the proxy."""
        return f"http://127.0.0.1:{self.hub_port}/hub/api"

    def start(self) -> "HubProcess":
        (self.dir / "home").mkdir(exist_ok=True)
        (self.dir / "jupyterhub_config.py").write_text(HUB_CONFIG.format(
            port=self.port, hub_port=self.hub_port, proxy_api_port=free_port(), dir=self.dir, chp=CHP,
            password=PASSWORD, python=sys.executable, groups=self.groups, service=SERVICE,
            agent_url=self.agent_url, service_token=self.service_token, admin_token=self.admin_token,
            hub_admin=HUB_ADMIN))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBLET_", "JUPYTERHUB_"))}
        log = open(self.dir / "hub.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"],
                                     cwd=self.dir, stdout=log, stderr=log, env=env, start_new_session=True)
        wait_until(self._answers, timeout=120, interval=0.2,
                   message=lambda: f"jupyterhub did not come up: {self.log()[-3000:]}")
        return self

    def _answers(self) -> bool:
        """The hub's API answers; a hub that exited fails at once, with its log."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"jupyterhub exited: {self.log()[-3000:]}")
        try:
            return requests.get(self.url + "/hub/api/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return (self.dir / "hub.log").read_text(errors="replace")

    def admin(self, method: str, path: str, **kw: Any) -> requests.Response:
        """A call with the test's admin service token."""
        return requests.request(method, self.api_url + path, timeout=60,
                                headers={"Authorization": f"token {self.admin_token}"}, **kw)

    def login(self, name: str) -> "HubUser":
        """Log in through the hub's login form (DummyAuthenticator), as a browser would."""
        session = requests.Session()
        page = session.get(self.url + "/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        form = {"username": name, "password": PASSWORD, **({"_xsrf": xsrf.group(1)} if xsrf else {})}
        resp = session.post(self.url + "/hub/login", data=form, timeout=60, allow_redirects=False)
        assert resp.status_code in (302, 303), f"login of {name} failed: {resp.status_code} {resp.text[:300]}"
        return HubUser(self, name, session)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the hub (it stops the proxy and, with cleanup_servers, the single-user servers)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        _kill_pidfile(self.dir / "proxy.pid")  # a proxy left by a hub that did not stop cleanly
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class HubUser:
    """A logged-in user: the browser's cookie session, used for the hub's REST API."""

    hub: HubProcess
    name: str
    session: requests.Session

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"X-XSRFToken": self.session.cookies.get("_xsrf", path="/hub/") or ""}
        return self.session.request(method, self.hub.url + "/hub/api" + path, headers=headers,
                                    timeout=kw.pop("timeout", 120), **kw)

    def new_token(self, note: str = "jnb-test") -> dict[str, Any]:
        """A token the user makes for themselves (as on the hub's token page)."""
        resp = self.api("POST", f"/users/{self.name}/tokens", json={"note": note})
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def start_server(self) -> str:
        """Start the user's single-user server and wait until the hub says it is ready."""
        resp = self.api("POST", f"/users/{self.name}/server")
        assert resp.status_code in (201, 202), resp.text
        server = wait_until(self._ready_server, timeout=180, interval=0.5,
                            message=lambda: f"the server of {self.name} did not start: {self.hub.log()[-3000:]}")
        return self.hub.url + server["url"]

    def _ready_server(self) -> dict[str, Any] | None:
        model = self.api("GET", f"/users/{self.name}").json()
        server = (model.get("servers") or {}).get("", {})
        return server if server.get("ready") else None

    def logout(self) -> None:
        self.session.get(self.hub.url + "/hub/logout", timeout=120)


CACHE_S = 3
TIMEOUT_S = 5  # generous: a loaded CI machine must not turn a slow hub answer into a 503
GROUPS = {"students": {"users": ["s1", "s2"]}, "teachers": {"users": ["t1"]}}

AGENT_CONFIG = """
jupyterhub:
  api_url: {api_url}
  service_name: joblet
  admin_group: teachers
  require_access_scope: true
  cache_s: {cache_s}
  timeout_s: {timeout_s}
  cache_entries: 16
  quotas: {{jobs: 3, sessions: 2, kept_mb: 512}}
  groups:
    students:
      max_limits: {{memory_mb: 256, cpu_percent: 100}}
      quotas: {{jobs: 1}}
    teachers:
      max_limits: {{memory_mb: 1024}}
  users:
    s2:
      quotas: {{kept_mb: 0}}
"""


@dataclass
class HubSetup:
    agent: AgentProcess
    hub: HubProcess
    users: dict[str, HubUser] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, name: str) -> Api:
        """The agent's API with the user's own hub token."""
        return Api(self.agent.url, self.tokens[name])


def _kill_pidfile(path: Path) -> None:
    """SIGTERM to the proxy a pid file names, if that pid is still a configurable-http-proxy."""
    try:
        pid = int(path.read_text().strip())
        fd = os.pidfd_open(pid)
    except (OSError, ValueError):
        return
    try:
        if b"configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
            signal.pidfd_send_signal(fd, signal.SIGTERM)
    except OSError:
        pass
    finally:
        os.close(fd)
