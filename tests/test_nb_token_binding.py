"""Tokens go only to the agent they belong to (issue 13, items 10 and 11).

The attack: a notebook user points `JOBLET_URL` at another agent (a colleague's, a hostile one)
and gives a token for it; the local agent's client config (`client.json`, `admin-token`) is still
on disk. The other agent here is a recorder on loopback that answers 401 to everything and keeps
every Authorization header it was sent: it must never see the local agent's tokens. And a token is
never sent over plain http to another machine: a transport adapter stands in for the network
there (nothing leaves this host), and it must never be handed a request carrying the token.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from joblet_nb.core.client import JobletClient
from joblet_nb.core.errors import AuthError


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def _answer(self) -> None:
        Recorder.seen.append(self.headers.get("Authorization", ""))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"error": {"code": "unauthorized", "message": "unknown token"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_agent() -> Iterator[str]:
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local_config(agent, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The client config the local agent wrote, as the notebook user has it."""
    for name in ("JOBLET_URL", "JOBLET_TOKEN", "JOBLET_ADMIN_TOKEN", "JOBLET_CERT"):
        monkeypatch.delenv(name, raising=False)
    folder = Path(agent.root) / "client-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder))
    client = json.loads((folder / "joblet" / "client.json").read_text())
    return {"token": client["token"], "admin": (folder / "joblet" / "admin-token").read_text().strip()}


@pytest.mark.root
def test_the_local_admin_token_is_not_sent_to_another_agent(other_agent: str, local_config: dict[str, str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBLET_URL", other_agent)
    monkeypatch.setenv("JOBLET_TOKEN", "jnb_a-token-for-the-other-agent")
    client = JobletClient.from_settings()
    with pytest.raises(AuthError) as refused:
        client.build_runtime("python-3.11")
    assert "admin-token" in str(refused.value) and "is for" in str(refused.value), refused.value
    assert not any(local_config["admin"] in h for h in Recorder.seen), "the local admin token was sent away"


@pytest.mark.root
def test_the_runtime_build_magic_does_not_send_it_either(nb, other_agent: str,
                                                         local_config: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBLET_URL", other_agent)
    monkeypatch.setenv("JOBLET_TOKEN", "jnb_a-token-for-the-other-agent")
    for name in ("url", "token_file", "admin_token_file"):
        nb.shell.run_line_magic("config", f"JobletMagics.{name} = ''")
    cell = nb.run("%joblet runtime build python-3.11")
    assert cell.error is not None and "admin token" in str(cell.error), cell
    assert not any(local_config["admin"] in h for h in Recorder.seen), "the local admin token was sent away"


@pytest.mark.root
def test_the_local_user_token_is_not_sent_to_another_agent(other_agent: str, local_config: dict[str, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBLET_URL", other_agent)
    client = JobletClient.from_settings()
    with pytest.raises(AuthError) as refused:
        client.list_jobs()
    assert "holds a token for" in str(refused.value), refused.value
    assert not any(local_config["token"] in h for h in Recorder.seen), "the local user token was sent away"


@pytest.mark.root
def test_an_auth_error_names_the_token_source(other_agent: str, local_config: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBLET_URL", other_agent)
    monkeypatch.setenv("JOBLET_TOKEN", "jnb_a-token-for-the-other-agent")
    monkeypatch.setenv("JOBLET_ADMIN_TOKEN", "jnb_an-admin-token-for-the-other-agent")
    client = JobletClient.from_settings()
    with pytest.raises(AuthError) as user:
        client.list_jobs()
    assert "came from JOBLET_TOKEN" in str(user.value), user.value
    with pytest.raises(AuthError) as admin:
        client.build_runtime("python-3.11")
    assert "came from JOBLET_ADMIN_TOKEN" in str(admin.value), admin.value


@pytest.mark.root
def test_the_local_agent_still_gets_its_own_tokens(agent, local_config: dict[str, str]) -> None:
    client = JobletClient.from_settings()
    assert client.url == agent.url and client.whoami().role == "user"
    assert client.with_token(client.admin_token, client.admin_source).whoami().role == "admin"


class Wire(requests.adapters.BaseAdapter):
    """Stands in for the network: records what would have been sent, sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.sent.append(request)
        raise requests.exceptions.ConnectionError("no network in this test")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("url", ["http://192.0.2.10:7755", "http://agent.example:7755", "http://[2001:db8::1]:7755"])
def test_a_token_is_never_sent_over_plain_http_beyond_loopback(url: str) -> None:
    client = JobletClient(url, "jnb_secret-user-token")
    wire = Wire()
    client.session.mount("http://", wire)
    with pytest.raises(AuthError) as refused:
        client.list_jobs()
    assert "plain http" in str(refused.value) and "https://" in str(refused.value)
    assert not wire.sent, "the token was handed to the network over plain http"


@pytest.mark.parametrize("url", ["http://127.0.0.1:7755", "http://localhost:7755", "http://[::1]:7755"])
def test_loopback_over_http_is_still_fine(url: str) -> None:
    client = JobletClient(url, "jnb_token")
    wire = Wire()
    client.session.mount("http://", wire)
    with pytest.raises(Exception):
        client.list_jobs()
    assert len(wire.sent) == 1 and wire.sent[0].headers["Authorization"] == "Bearer jnb_token"
