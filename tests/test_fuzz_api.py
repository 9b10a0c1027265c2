"""schemathesis against the agent's own OpenAPI schema: a bounded number of generated requests per
operation, expecting no server error, no response outside the schema, and nothing left on disk for
refused requests.

Runs with a user token: generated requests can start real (sandboxed) jobs, never builds.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.root

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [("GET", "/v1/health"), ("GET", "/v1/whoami"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs"),
              ("GET", "/v1/jobs/{job_id}"), ("GET", "/v1/jobs/{job_id}/events"), ("POST", "/v1/jobs/{job_id}/stop"),
              ("DELETE", "/v1/jobs/{job_id}"), ("GET", "/v1/jobs/{job_id}/files/{path}"), ("GET", "/v1/runtimes"),
              ("GET", "/v1/runtimes/{name}"), ("POST", "/v1/runtimes/{name}/build"),
              ("POST", "/v1/runtimes/{name}/test"), ("DELETE", "/v1/runtimes/{name}"), ("GET", "/v1/limits")]


NO_INPUT = {("GET", "/v1/health"), ("GET", "/v1/whoami"), ("GET", "/v1/jobs"), ("GET", "/v1/runtimes"),
            ("GET", "/v1/limits")}
CASES = [(m, p, mode) for m, p in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if not (mode == GenerationMode.NEGATIVE and (m, p) in NO_INPUT)]  # nothing to make invalid there


@pytest.mark.parametrize("method, path, mode", CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_api_holds_to_its_schema(module_agent, method, path, mode):
    """schemathesis's pytest plugin does not load on pytest 9, so its strategies are driven here
    with hypothesis directly."""
    schema = schemathesis.openapi.from_url(module_agent.url + "/openapi.json")
    operation = schema[path][method]
    headers = {"Authorization": f"Bearer {module_agent.user_token}"}

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(max_examples=20, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def run(case):
        case.call_and_validate(base_url=module_agent.url, headers=headers, checks=CHECKS, timeout=60)

    run()


def test_refused_requests_created_nothing(module_agent):
    """Every job folder on disk belongs to a job the agent accepted and knows; once the accepted
    ones have ended (generated commands may still run: they are stopped), no job folder is left."""
    import requests

    headers = {"Authorization": f"Bearer {module_agent.admin_token}"}
    jobs = requests.get(module_agent.url + "/v1/jobs", headers=headers, timeout=30).json()
    known = {j["id"] for j in jobs}
    on_disk = {p.name for p in (module_agent.root / "state" / "jobs").iterdir()}
    assert on_disk <= known, on_disk - known
    for job in jobs:
        if job["status"] in ("PENDING", "RUNNING"):
            requests.post(f"{module_agent.url}/v1/jobs/{job['id']}/stop", headers=headers, timeout=30)
            requests.get(f"{module_agent.url}/v1/jobs/{job['id']}/events", params={"follow": "true"},
                         headers=headers, timeout=120).content  # returns once the job has ended
    assert not list((module_agent.root / "jobs").iterdir())  # removed before a job's exit event
