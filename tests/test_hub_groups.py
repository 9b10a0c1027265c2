"""Group membership from a hub that leaves `groups` out of a token's own `GET /user` answer (as hubs
do whose identify scopes lack read:users:groups): the agent asks `GET /users/<name>` with its
service token. The hub is the real one of `hubsetup`, behind a loopback proxy that strips `groups`
from `/user` answers and passes everything else through; a user whose groups cannot be learnt is
refused with the remedy, never let in as if in no group (which would lift the students' maximum)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from agentproc import Api, running_agent
from hubproc import AGENT_CONFIG, CACHE_S, HUB_ADMIN, TIMEOUT_S, HubSetup
from joblet_agent.errors import Unavailable
from joblet_agent.hub import HubIdentity
from joblet_agent.hubconfig import HubConfig

pytestmark = pytest.mark.root


class GroupHidingHub:
    """A loopback proxy to the hub's API that drops `groups` from `/user` and records each call."""

    def __init__(self, hub_api_url: str) -> None:
        upstream = hub_api_url.split("/hub/api")[0]
        self.asked: list[tuple[str, str]] = []   # (path, token)
        self.stripped = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                token = self.headers.get("Authorization", "").removeprefix("token ")
                proxy.asked.append((self.path, token))
                resp = requests.get(upstream + self.path, headers={"Authorization": f"token {token}"},
                                    timeout=30, allow_redirects=False)
                body = resp.content
                if self.path == "/hub/api/user" and resp.status_code == 200:
                    model = resp.json()
                    if model.pop("groups", None) is not None:
                        proxy.stripped += 1
                    body = json.dumps(model).encode()
                self.send_response(resp.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api_url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def hiding(hubsetup: HubSetup) -> Iterator[GroupHidingHub]:
    proxy = GroupHidingHub(hubsetup.hub.api_url)
    try:
        yield proxy
    finally:
        proxy.close()


def _config(api_url: str) -> str:
    return AGENT_CONFIG.format(api_url=api_url, cache_s=CACHE_S, timeout_s=TIMEOUT_S)


def test_groups_the_hub_leaves_out_are_asked_with_the_agents_service_token(hubsetup, hiding):
    service = hubsetup.hub.service_token
    with running_agent(_config(hiding.api_url), env={"JUPYTERHUB_API_TOKEN": service}) as agent:
        student = Api(agent.url, hubsetup.tokens["s1"]).call("GET", "/v1/whoami").json()
        teacher = Api(agent.url, hubsetup.tokens["t1"]).call("GET", "/v1/whoami").json()
    assert hiding.stripped == 2, hiding.asked  # the agent really got /user answers without groups
    assert ("/hub/api/users/s1", service) in hiding.asked and ("/hub/api/users/t1", service) in hiding.asked
    assert (student["groups"], student["role"]) == (["students"], "user"), student
    assert student["max_limits"]["memory_mb"] == 256 and student["max_limits_from"]["memory_mb"] == "group students"
    assert (teacher["groups"], teacher["role"]) == (["teachers"], "admin"), teacher  # admin_group


def test_without_a_service_token_a_user_whose_groups_are_hidden_is_refused_not_ungrouped(hubsetup, hiding):
    with running_agent(_config(hiding.api_url)) as agent:
        r = Api(agent.url, hubsetup.tokens["s1"]).call("GET", "/v1/whoami")
        local = Api(agent.url, agent.user_token).call("GET", "/v1/whoami")
    assert r.status_code == 503, r.text
    message = r.json()["error"]["message"]
    assert "which groups s1 is in" in message and "JUPYTERHUB_API_TOKEN" in message, message
    assert local.status_code == 200, "local agent tokens keep working"


def test_a_service_token_that_cannot_read_groups_is_refused_naming_the_scope(hubsetup, hiding):
    """s2's own token stands for a service token without read:users:groups: the hub will not show
    it s1. The user is refused, with the scope to grant; nothing is cached."""
    config = HubConfig(api_url=hiding.api_url, service_name="joblet", admin_group="teachers", timeout_s=TIMEOUT_S)
    identity = HubIdentity(config, hubsetup.tokens["s2"])
    with pytest.raises(Unavailable, match="read:users:groups"):
        identity.authenticate(hubsetup.tokens["s1"])
    assert identity.cached() == 0


def test_where_groups_decide_nothing_a_hidden_group_list_is_no_obstacle(hubsetup, hiding):
    config = HubConfig(api_url=hiding.api_url, service_name="joblet", timeout_s=TIMEOUT_S)
    principal = HubIdentity(config, None).authenticate(hubsetup.tokens["s1"])
    assert (principal.id, principal.groups, principal.role) == ("hub:s1", (), "user")
    assert not any(path.startswith("/hub/api/users/") for path, _ in hiding.asked)


def test_a_hub_admin_is_an_agent_admin_outside_the_admin_group(hubsetup):
    """The hub's own admin flag (Authenticator.admin_users) gives the admin role, no group needed."""
    token = hubsetup.hub.login(HUB_ADMIN).new_token()["token"]
    me = Api(hubsetup.agent.url, token).call("GET", "/v1/whoami").json()
    assert (me["name"], me["groups"], me["role"]) == (HUB_ADMIN, [], "admin"), me
    student = Api(hubsetup.agent.url, hubsetup.tokens["s1"]).submit(command=["true"])
    assert Api(hubsetup.agent.url, token).call("GET", f"/v1/jobs/{student}").status_code == 200
    Api(hubsetup.agent.url, hubsetup.tokens["s1"]).events(student)
    assert Api(hubsetup.agent.url, hubsetup.tokens["s1"]).call("DELETE", f"/v1/jobs/{student}").status_code == 204


def test_the_limits_a_students_panel_shows_are_the_groups(hubsetup):
    """`GET /v1/limits`, which `%joblet ui` sliders start from (issue 15), answers for the caller:
    a student sees the students' maximum as both default and top, a teacher the teachers'."""
    student = Api(hubsetup.agent.url, hubsetup.tokens["s1"]).call("GET", "/v1/limits").json()
    teacher = Api(hubsetup.agent.url, hubsetup.tokens["t1"]).call("GET", "/v1/limits").json()
    assert student["defaults"]["memory_mb"] == 256 and student["maximum"]["memory_mb"] == 256, student
    assert student["maximum"]["cpu_percent"] == 100, student
    assert teacher["maximum"]["memory_mb"] == 1024, teacher
