"""deploy/kubernetes/: validated offline against the Kubernetes schemas (kubernetes-validate,
strict: an unknown field is an error), and checked for what a schema cannot see: the references
between the objects, and the agent's config inside the ConfigMap."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from joblet_agent.config import AgentConfig

MANIFESTS = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())  # appArmorProfile exists since 1.30


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_the_strict_schema(version):
    docs = documents()
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                                         "DaemonSet", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misspelt_field():
    """The check above can fail: a typo in the agent's security context is refused."""
    daemonset = copy.deepcopy(one("DaemonSet"))
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)


def test_the_agent_config_in_the_configmap_is_a_valid_agent_config():
    text = one("ConfigMap", "joblet-agent-config")["data"]["agent.yml"]
    config = AgentConfig.model_validate(yaml.safe_load(text))
    assert config.tls and config.listen.startswith("0.0.0.0:") and config.executor == "local"


def test_references_between_objects_resolve():
    namespace = one("Namespace")["metadata"]["name"]
    for doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]
    pod = one("DaemonSet")["spec"]["template"]
    one("ServiceAccount", pod["spec"]["serviceAccountName"])
    assert one("Service")["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    container = pod["spec"]["containers"][0]
    assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
    one("ConfigMap", volumes["config"]["configMap"]["name"])
    binding = one("RoleBinding")
    one("Role", binding["roleRef"]["name"])
    for subject in binding["subjects"]:
        one("ServiceAccount", subject["name"])
    port = one("Service")["spec"]["ports"][0]["targetPort"]
    assert port in {p["name"] for p in container["ports"]}


def test_the_agent_holds_no_kubernetes_credential_and_clients_only_read_endpoints():
    pod = one("DaemonSet")["spec"]["template"]["spec"]
    agent_sa = one("ServiceAccount", pod["serviceAccountName"])
    assert pod["automountServiceAccountToken"] is False and agent_sa["automountServiceAccountToken"] is False
    bound = [s["name"] for d in documents() if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
             for s in d["subjects"]]
    assert pod["serviceAccountName"] not in bound
    assert not [d for d in documents() if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for rule in one("Role")["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
    assert not (pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"))
