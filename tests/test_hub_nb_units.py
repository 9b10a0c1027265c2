"""The notebook side in a hub-spawned server, without a hub: where the token and the agent come
from, which hub service is the agent, and how `%joblet info` words the agent's account."""

from __future__ import annotations

import pytest

from joblet_nb.core.account import describe
from joblet_nb.core.config import resolve
from joblet_nb.core.hub import HubDiscoveryError, _pick, hub_env

HUB_ENV = {"JUPYTERHUB_API_TOKEN": "hub-token-of-this-server", "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api/",
           "JUPYTERHUB_USER": "ann"}


@pytest.fixture
def in_a_hub_server(monkeypatch, tmp_path):
    for name in ("JOBLET_URL", "JOBLET_TOKEN", "JOBLET_ADMIN_TOKEN", "JOBLET_CERT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in HUB_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "joblet").mkdir()
    (tmp_path / "joblet" / "client.json").write_text('{"url": "http://127.0.0.1:9", "token": "jnb_local"}')
    return monkeypatch


def test_hub_env_needs_both_the_token_and_the_api_url():
    assert hub_env(HUB_ENV).api_url == "http://127.0.0.1:8081/hub/api"
    assert hub_env({"JUPYTERHUB_API_TOKEN": "t"}) is None
    assert hub_env({}) is None


def test_in_a_hub_server_the_hub_token_goes_to_joblet_url(in_a_hub_server):
    in_a_hub_server.setenv("JOBLET_URL", "http://agent.example:7755/")
    s = resolve()
    assert (s.url, s.token, s.admin_token) == ("http://agent.example:7755", "hub-token-of-this-server",
                                               "hub-token-of-this-server")
    assert "JupyterHub" in s.source  # not the machine's client.json


def test_an_agent_token_in_the_environment_wins_over_the_hub(in_a_hub_server):
    in_a_hub_server.setenv("JOBLET_TOKEN", "jnb_mine")
    s = resolve()
    assert (s.token, s.url) == ("jnb_mine", "http://127.0.0.1:9")


def test_the_agent_service_is_found_by_name_or_marker():
    services = [{"name": "grader", "url": "http://g"}, {"name": "jobs", "url": "http://a/", "info": {"joblet": True}}]
    assert _pick(services, "") == "http://a"
    assert _pick([{"name": "joblet", "url": "http://j"}], "") == "http://j"
    assert _pick(services, "grader") == "http://g"
    with pytest.raises(HubDiscoveryError, match="services: grader"):
        _pick(services[:1], "")
    with pytest.raises(HubDiscoveryError, match="read:services"):
        _pick([{"name": "joblet"}], "")


def test_info_words_a_hub_identity_its_limits_and_quotas():
    rows = describe({"id": "hub:ann", "name": "ann", "role": "user", "identity": "jupyterhub", "groups": ["students"],
                     "max_limits": {"memory_mb": 256, "cpu_percent": 100, "pids": 4096, "io_bps": 1 << 40},
                     "max_limits_from": {"memory_mb": "group students", "cpu_percent": "agent max_limits",
                                         "pids": "agent max_limits", "io_bps": "agent max_limits"},
                     "default_limits": {"memory_mb": 256, "io_bps": 0},
                     "quotas": {"jobs": {"limit": 1, "used": 0, "from": "group students"},
                                "sessions": {"limit": None, "used": None},
                                "kept_mb": {"limit": 512, "used": 1.5, "from": "jupyterhub.quotas"}}})
    assert rows["you are"] == "identified by JupyterHub as ann (role user; groups: students)"
    assert rows["your maximum limits"] == "memory 256 MB (group students), cpu 100%, pids 4096, io 1 TiB/s"
    assert rows["limits when a cell sets none"] == "memory 256 MB"
    assert rows["your quotas"] == ("jobs at once: 0 of 1 (group students); kept: 1.5 of 512 MB "
                                   "(jupyterhub.quotas)")
    local = describe({"id": "ab12cd34", "name": "tester", "role": "user"})
    assert local == {"you are": "tester (role user, id ab12cd34; an agent token)"}
