"""The `jupyterhub:` section of the agent's config: validated at load, resolved per hub user."""

from __future__ import annotations

import pytest

from joblet_agent.config import AgentConfig, load_config
from agentproc import free_port
from joblet_agent.errors import BadRequest, CannotIsolate, Conflict, Unavailable
from joblet_agent.hub import HubIdentity
from joblet_agent.hubconfig import HubConfig
from joblet_agent.policy import for_hub_user

HUB = {"api_url": "http://127.0.0.1:8081/hub/api/", "service_name": "joblet"}


def test_a_group_maximum_above_the_agents_own_is_refused_at_load(tmp_path):
    path = tmp_path / "agent.yml"
    path.write_text("max_limits: {memory_mb: 2048}\njupyterhub:\n  api_url: http://hub/hub/api\n"
                    "  service_name: joblet\n  groups: {staff: {max_limits: {memory_mb: 4096}}}\n")
    with pytest.raises(CannotIsolate, match=r"jupyterhub.groups.staff.max_limits.memory_mb \(4096\) is above"):
        load_config(path)


def test_unknown_fields_and_a_cache_beyond_a_minute_are_refused():
    with pytest.raises(ValueError, match="extra"):
        HubConfig(**HUB, groups={"students": {"max_limit": {}}})
    with pytest.raises(ValueError, match="cache_s"):
        HubConfig(**HUB, cache_s=120)
    assert HubConfig(**HUB).api_url == "http://127.0.0.1:8081/hub/api"


def test_a_user_in_two_groups_gets_the_more_generous_limit_of_each_and_their_own_rules_win():
    hub = HubConfig(**HUB, quotas={"jobs": 4, "kept_mb": 100},
                    groups={"students": {"max_limits": {"memory_mb": 1024, "cpu_percent": 400},
                                         "quotas": {"jobs": 2}},
                            "gpu": {"max_limits": {"memory_mb": 4096, "cpu_percent": 100}}},
                    users={"ann": {"quotas": {"kept_mb": 1}}})
    policy = for_hub_user(hub, "ann", ["students", "gpu", "unconfigured"])
    assert policy.caps == {"memory_mb": 4096, "cpu_percent": 400}
    assert policy.caps_from == {"memory_mb": "group gpu", "cpu_percent": "group students"}
    assert policy.quotas == {"jobs": 2, "kept_mb": 1}
    assert policy.quotas_from == {"jobs": "group students", "kept_mb": "user ann"}
    assert for_hub_user(hub, "bob", []).quotas == {"jobs": 4, "kept_mb": 100}


def test_caps_refuse_asks_and_lower_defaults():
    hub = HubConfig(**HUB, groups={"students": {"max_limits": {"memory_mb": 256, "io_bps": 1000, "timeout_s": 60}}})
    policy = for_hub_user(hub, "s", ["students"])
    defaults = AgentConfig().defaults.model_dump()
    clamped = policy.clamp({}, defaults)
    assert (clamped["memory_mb"], clamped["io_bps"], clamped["timeout_s"]) == (256, 1000, 60.0)
    with pytest.raises(BadRequest, match="group students"):
        policy.clamp({"io_bps": 0}, {**defaults, "io_bps": 0})  # 0 is "no limit": above any cap
    with pytest.raises(BadRequest, match=r"jupyterhub.groups.students.max_limits"):
        policy.clamp({"memory_mb": 257}, {**defaults, "memory_mb": 257})
    assert policy.clamp({"memory_mb": 128}, {**defaults, "memory_mb": 128})["memory_mb"] == 128


def test_quota_checks_name_the_rule_and_the_remedy():
    policy = for_hub_user(HubConfig(**HUB, quotas={"jobs": 1, "kept_mb": 1}), "s", [])
    policy.check("jobs", 0)
    with pytest.raises(Conflict, match=r"quota jobs: you hold 1 of 1 \(jupyterhub.quotas\); wait"):
        policy.check("jobs", 1)
    policy.check("kept_mb", 1 << 20, asked=0)
    with pytest.raises(Conflict, match="delete finished jobs"):
        policy.check("kept_mb", (1 << 20) + 1, asked=0)
    policy.check("sessions", 99)  # no quota set: no limit


def test_an_unreachable_hub_is_a_clear_error_at_once():
    config = HubConfig(api_url=f"http://127.0.0.1:{free_port()}/hub/api", service_name="joblet")
    with pytest.raises(Unavailable, match="is not answering: it cannot be reached"):
        HubIdentity(config, None).lookup("any-token")
