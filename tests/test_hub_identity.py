"""The agent takes a real JupyterHub's word for who calls: hub users own their jobs, the admin
group builds runtimes, group maxima and quotas hold, a revoked token stops working within the
cache time, and a hub that does not answer is a clear 503, never a hang."""

from __future__ import annotations

import os
import signal
import time

import pytest

from agentproc import Api
from hubproc import CACHE_S, TIMEOUT_S
from waiting import wait_until
from joblet_agent.errors import Unauthorized
from joblet_agent.hub import HubIdentity
from joblet_agent.hubconfig import HubConfig

pytestmark = pytest.mark.root


def _run(api: Api, **body):
    result = api.run(**{"command": ["sh", "-c", "echo hi"], **body})
    assert result.record["status"] == "COMPLETED", result.explain()
    return result


def test_hub_users_own_their_jobs_and_see_only_those(hubsetup):
    jobs = {name: _run(hubsetup.api(name)).id for name in ("s1", "s2", "t1")}
    s1 = hubsetup.api("s1")
    mine = [j["id"] for j in s1.call("GET", "/v1/jobs").json()]
    assert jobs["s1"] in mine and jobs["s2"] not in mine and jobs["t1"] not in mine
    assert s1.call("GET", f"/v1/jobs/{jobs['s1']}").json()["owner"] == "hub:s1"
    assert s1.call("GET", f"/v1/jobs/{jobs['s2']}").status_code == 404
    assert s1.call("DELETE", f"/v1/jobs/{jobs['s2']}").status_code == 404
    everyone = [j["id"] for j in hubsetup.api("t1").call("GET", "/v1/jobs").json()]
    assert set(jobs.values()) <= set(everyone)  # the teacher is an admin: all jobs
    for name, job_id in jobs.items():
        assert hubsetup.api(name).call("DELETE", f"/v1/jobs/{job_id}").status_code == 204


def test_whoami_names_the_hub_user_their_limits_and_quotas(hubsetup):
    me = hubsetup.api("s1").call("GET", "/v1/whoami").json()
    assert (me["id"], me["name"], me["role"], me["identity"]) == ("hub:s1", "s1", "user", "jupyterhub")
    assert me["groups"] == ["students"]
    assert me["max_limits"]["memory_mb"] == 256 and me["max_limits_from"]["memory_mb"] == "group students"
    assert me["default_limits"]["memory_mb"] == 256  # the agent's default of 1024 is above the group's
    assert me["default_limits"]["cpu_percent"] == 100  # unlimited by default: the group's maximum
    assert me["quotas"]["jobs"] == {"limit": 1, "from": "group students", "used": 0}
    assert me["quotas"]["kept_mb"]["limit"] == 512 and me["quotas"]["kept_mb"]["from"] == "jupyterhub.quotas"
    teacher = hubsetup.api("t1").call("GET", "/v1/whoami").json()
    assert (teacher["role"], teacher["max_limits"]["memory_mb"]) == ("admin", 1024)
    local = Api(hubsetup.agent.url, hubsetup.agent.user_token).call("GET", "/v1/whoami").json()
    assert local["identity"] == "token" and local["quotas"]["jobs"]["limit"] is None


def test_local_agent_tokens_keep_working_beside_hub_tokens(hubsetup):
    _run(Api(hubsetup.agent.url, hubsetup.agent.user_token))
    r = Api(hubsetup.agent.url, "jnb_" + "x" * 43).call("GET", "/v1/whoami")
    assert r.status_code == 401


def test_an_ask_above_the_group_maximum_is_refused_naming_the_group(hubsetup):
    r = hubsetup.api("s1").call("POST", "/v1/jobs", json={"command": ["true"], "limits": {"memory_mb": 512}})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "limits.memory_mb" in message and "group students" in message and "256" in message
    _run(hubsetup.api("t1"), limits={"memory_mb": 512})  # the teachers' group allows it


def test_a_student_at_the_job_quota_is_refused_until_a_job_ends(hubsetup):
    s1 = hubsetup.api("s1")
    first = s1.submit(command=["sleep", "60"])
    try:
        r = s1.call("POST", "/v1/jobs", json={"command": ["true"]})
        assert r.status_code == 409, r.text
        assert "quota jobs" in r.json()["error"]["message"] and "group students" in r.json()["error"]["message"]
    finally:
        s1.call("POST", f"/v1/jobs/{first}/stop")
        s1.events(first)
    _run(s1)


def test_kept_bytes_quota_refuses_new_jobs_until_old_ones_are_deleted(hubsetup):
    s2 = hubsetup.api("s2")  # users.s2.quotas.kept_mb is 0
    kept = _run(s2, command=["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"])
    r = s2.call("POST", "/v1/jobs", json={"command": ["true"]})
    assert r.status_code == 409 and "quota kept_mb" in r.json()["error"]["message"], r.text
    assert "user s2" in r.json()["error"]["message"]
    assert s2.call("DELETE", f"/v1/jobs/{kept.id}").status_code == 204
    _run(s2)
    for job in s2.call("GET", "/v1/jobs").json():
        s2.call("DELETE", f"/v1/jobs/{job['id']}")


def test_sessions_count_against_the_users_session_quota(hubsetup):
    s1 = hubsetup.api("s1")  # jupyterhub.quotas.sessions is 2
    r = s1.call("POST", "/v1/sessions", json={"limits": {"memory_mb": 512}})
    assert r.status_code == 400 and "group students" in r.json()["error"]["message"], r.text
    started = []
    try:
        for _ in range(2):
            r = s1.call("POST", "/v1/sessions", json={})
            assert r.status_code == 201, r.text
            started.append(r.json()["id"])
        assert s1.call("GET", "/v1/whoami").json()["quotas"]["sessions"]["used"] == 2
        r = s1.call("POST", "/v1/sessions", json={})
        assert r.status_code == 409 and "quota sessions" in r.json()["error"]["message"], r.text
    finally:
        for session_id in started:
            s1.call("DELETE", f"/v1/sessions/{session_id}")


def test_a_student_cannot_build_a_runtime(hubsetup):
    r = hubsetup.api("s1").call("POST", "/v1/runtimes/python-3.11/build", json={})
    assert r.status_code == 403, r.text
    assert "JupyterHub user s1" in r.json()["error"]["message"] and "admin_group" in r.json()["error"]["message"]


def test_a_service_token_is_not_a_user(hubsetup):
    r = Api(hubsetup.agent.url, hubsetup.hub.service_token).call("GET", "/v1/whoami")
    assert r.status_code == 401 and "service" in r.json()["error"]["message"]


def test_a_token_without_access_to_the_service_is_refused(hubsetup):
    narrow = hubsetup.users["s1"].api("POST", "/users/s1/tokens", json={"scopes": ["read:users:name!user=s1"]})
    assert narrow.status_code in (200, 201), narrow.text
    r = Api(hubsetup.agent.url, narrow.json()["token"]).call("GET", "/v1/whoami")
    assert r.status_code == 401 and "access:services!service=joblet" in r.json()["error"]["message"]


def test_a_revoked_token_stops_working_within_the_cache_time(hubsetup):
    user = hubsetup.users["s1"]
    made = user.new_token("revoke-me")
    api = Api(hubsetup.agent.url, made["token"])
    assert api.call("GET", "/v1/whoami").status_code == 200  # now in the agent's cache
    assert user.api("DELETE", f"/users/s1/tokens/{made['id']}").status_code == 204
    time.sleep(CACHE_S)  # the cached answer was taken before the revocation: it has expired now
    r = api.call("GET", "/v1/whoami")
    assert r.status_code == 401 and "does not know this token" in r.json()["error"]["message"]


def test_junk_tokens_do_not_grow_the_cache_and_it_stays_bounded(hubsetup):
    config = HubConfig(api_url=hubsetup.hub.api_url, service_name="joblet", cache_entries=16, timeout_s=TIMEOUT_S)
    identity = HubIdentity(config, hubsetup.hub.service_token)
    for i in range(20):
        with pytest.raises(Unauthorized):
            identity.lookup(f"junk-{i}")
    assert identity.cached() == 0  # a failed lookup is never remembered
    user = hubsetup.users["t1"]
    for i in range(20):
        assert identity.lookup(user.new_token(f"many-{i}")["token"]).name == "t1"
    assert identity.cached() == 16


def test_a_hub_that_hangs_gives_a_503_that_says_so_not_a_hang(hubsetup):
    """A stopped (SIGSTOP) hub accepts connections and never answers: the agent gives up after
    its timeout with a 503, and local tokens go on working meanwhile."""
    fresh = hubsetup.users["s2"].new_token("while-down")["token"]  # never seen: not cached
    pid = hubsetup.hub.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        r = Api(hubsetup.agent.url, fresh).call("GET", "/v1/whoami", timeout=TIMEOUT_S * 10)
        assert r.status_code == 503, r.text
        message = r.json()["error"]["message"]
        assert "JupyterHub" in message and "not answering" in message and f"within {TIMEOUT_S} s" in message
        assert Api(hubsetup.agent.url, hubsetup.agent.user_token).call("GET", "/v1/whoami").status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: Api(hubsetup.agent.url, fresh).call("GET", "/v1/whoami").status_code == 200,
               message="the hub answers again after SIGCONT")
