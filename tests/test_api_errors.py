"""Bad input to every call gets a clear 4xx naming what is wrong, and creates nothing."""

from __future__ import annotations

import base64
import os

import pytest
import requests

from agentproc import Api, create_token

pytestmark = pytest.mark.root

B64 = base64.b64encode(b"x").decode()


def _error(r: requests.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]["message"]


def test_health_needs_no_token_and_names_the_cgroup_version(agent):
    body = requests.get(agent.url + "/v1/health", timeout=10).json()
    assert body["status"] == "ok" and body["cgroup"] in ("v1", "v2")


def test_limits_states_the_defaults_and_maximums_a_job_really_gets(api):
    body = api.call("GET", "/v1/limits").json()
    assert body["defaults"]["pids"] == 512 and body["defaults"]["cpu_percent"] is None
    assert body["maximum"]["pids"] == 4096 and body["maximum"]["memory_mb"] >= 64
    job = api.run(command=["true"])
    assert job.record["limits"]["pids"] == body["defaults"]["pids"]
    assert job.record["limits"]["memory_mb"] == body["defaults"]["memory_mb"]


def test_health_tells_anyone_no_path_of_the_host(agent):
    text = requests.get(agent.url + "/v1/health", timeout=10).text
    for path in {str(agent.root), os.path.realpath(agent.root)}:
        assert path not in text, f"/v1/health names the agent's root: {text}"


@pytest.mark.parametrize("call", [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/runtimes"), ("GET", "/v1/limits"),
                                  ("GET", "/v1/jobs/0123456789abcdef"), ("POST", "/v1/runtimes/x/build")])
def test_every_call_but_health_needs_a_token(agent, call):
    r = requests.request(call[0], agent.url + call[1], timeout=10)
    assert "Authorization" in _error(r, 401)
    r = requests.request(call[0], agent.url + call[1], headers={"Authorization": "Bearer jnb_wrong"}, timeout=10)
    assert "unknown token" in _error(r, 401)


@pytest.mark.parametrize("name", ["JOB_TYPE", "JOB_ID", "JOBLET_ANYTHING", "joblet_lower", "job_type"])
def test_reserved_env_names_are_refused_by_name(api, name):
    r = api.call("POST", "/v1/jobs", json={"command": ["true"], "env": {name: "runtime-build"}})
    assert name in _error(r, 400)


@pytest.mark.parametrize("field", ["type", "job_type", "JOB_TYPE", "builder"])
def test_no_field_selects_the_job_type(api, field):
    r = api.call("POST", "/v1/jobs", json={"command": ["true"], field: "runtime-build"})
    assert "unknown field" in _error(r, 400)


@pytest.mark.parametrize("body, words", [
    ({}, "exactly one of"),
    ({"command": ["true"], "script": "x"}, "exactly one of"),
    ({"command": []}, "command"),
    ({"command": ["true"], "limits": {"memory_mb": 1}}, "memory_mb"),
    ({"command": ["true"], "limits": {"cpu_percent": 0}}, "cpu_percent"),
    ({"command": ["true"], "limits": {"pids": 10 ** 9}}, "pids"),
    ({"command": ["true"], "limits": {"timeout_s": -1}}, "timeout_s"),
    ({"command": ["true"], "limits": {"memory_mb": 1 << 20}}, "above this agent's maximum"),
    ({"command": ["true"], "limits": {"pids": 60000}}, "above this agent's maximum"),
    ({"command": ["true"], "limits": {"bogus": 1}}, "unknown field"),
    ({"command": ["true"], "network": "host"}, "network"),
    ({"command": ["true"], "runtime": "../etc"}, "runtime"),
    ({"command": ["true"], "runtime": "no-such-runtime"}, "unknown runtime"),
    ({"command": ["true"], "env": {"A-B": "x"}}, "A-B"),
    ({"command": ["true"], "uploads": [{"path": "/etc/passwd", "content_b64": B64}]}, "relative"),
    ({"command": ["true"], "uploads": [{"path": "a/../../x", "content_b64": B64}]}, ".."),
    ({"command": ["true"], "uploads": [{"path": "x", "content_b64": "%%%"}]}, "base64"),
    ({"command": ["true"], "uploads": [{"path": "x", "content_b64": B64, "mode": 0o4755}]}, "mode"),
    ({"command": ["true"], "outputs": ["x"]}, "script"),
    ({"script": "x", "outputs": ["not a name"]}, "variable name"),
])
def test_bad_job_requests_get_400_saying_what_is_wrong(agent, api, body, words):
    before = set((agent.root / "state" / "jobs").iterdir())
    message = _error(api.call("POST", "/v1/jobs", json=body), 400)
    assert words in message, message
    assert set((agent.root / "state" / "jobs").iterdir()) == before, "a refused request created state"


def test_malformed_json_gets_400(api):
    r = api.call("POST", "/v1/jobs", data="{not json", headers={"Content-Type": "application/json"})
    _error(r, 400)


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("GET", "/events"), ("POST", "/stop"), ("DELETE", ""),
                                            ("GET", "/files/x")])
def test_unknown_and_malformed_job_ids(api, method, suffix):
    assert "no job" in _error(api.call(method, f"/v1/jobs/0123456789abcdef{suffix}"), 404)
    _error(api.call(method, f"/v1/jobs/NOT-AN-ID{suffix}"), 400)


def test_a_user_cannot_see_or_touch_another_users_job(agent, api):
    other = Api(agent.url, create_token(agent.root, "user", "someone-else"))
    job = api.run(command=["true"])
    for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/stop"), ("DELETE", ""), ("GET", "/files/x")):
        _error(other.call(method, f"/v1/jobs/{job.id}{suffix}"), 404)
    assert job.id not in [j["id"] for j in other.call("GET", "/v1/jobs").json()]
    admin = Api(agent.url, agent.admin_token)
    assert job.id in [j["id"] for j in admin.call("GET", "/v1/jobs").json()]


def test_running_jobs_cannot_be_deleted_or_downloaded(api):
    job_id = api.submit(command=["sleep", "30"])
    try:
        assert "stop it first" in _error(api.call("DELETE", f"/v1/jobs/{job_id}"), 409)
        assert "still running" in _error(api.call("GET", f"/v1/jobs/{job_id}/files/x"), 409)
    finally:
        api.call("POST", f"/v1/jobs/{job_id}/stop")
        api.events(job_id)


def test_bad_event_cursor_and_download_paths(api):
    job = api.run(command=["sh", "-c", "echo x > f"])
    _error(api.call("GET", f"/v1/jobs/{job.id}/events", params={"after": -1}), 400)
    assert _error(api.call("GET", f"/v1/jobs/{job.id}/files/nope"), 404)
    r = api.call("GET", f"/v1/jobs/{job.id}/files/%2Fetc%2Fpasswd")
    assert r.status_code in (400, 404) and b"root:" not in r.content


def test_runtime_calls_for_unknown_runtimes(api, admin_api):
    assert api.call("GET", "/v1/runtimes").status_code == 200
    _error(api.call("GET", "/v1/runtimes/nope"), 404)
    assert "admin" in _error(api.call("POST", "/v1/runtimes/nope/build"), 403)
    assert "admin" in _error(api.call("DELETE", "/v1/runtimes/nope"), 403)


def test_unknown_paths_get_a_json_404(api):
    assert "no such call" in _error(api.call("GET", "/v1/nothing-here"), 404)


def test_openapi_schema_is_served(agent):
    schema = requests.get(agent.url + "/openapi.json", timeout=10).json()
    assert "/v1/jobs" in schema["paths"] and "/v1/jobs/{job_id}/events" in schema["paths"]
