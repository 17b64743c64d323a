"""manifests/: plain YAML for `kubectl apply -k manifests/`, checked against the
Kubernetes 1.33 OpenAPI schemas (kubernetes-validate, strict) since no API server
runs here, plus the properties a reviewer would check by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import read_yaml_docs
from tests.deploy.kube import Doc, custom_resource_validators, name_of, validate
from tests.deploy.tools import ROOT
from tests.deploy.workload import workload_problems

MANIFESTS = ROOT / "manifests"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
MANIFEST_FILES = sorted(p for p in MANIFESTS.rglob("*.yaml") if p != KUSTOMIZATION)


def all_docs() -> list[Doc]:
    return [doc for path in MANIFEST_FILES for doc in read_yaml_docs(path)]


def of_kind(kind: str) -> list[Doc]:
    return [d for d in all_docs() if d["kind"] == kind]


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_is_valid_for_kubernetes_1_33(path: Path, crds: list[Doc]) -> None:
    custom = custom_resource_validators(crds)
    docs = read_yaml_docs(path)
    assert docs, f"{path} holds no object"
    errors = {name_of(d): validate(d, custom) for d in docs}
    assert not {k: v for k, v in errors.items() if v}


def test_kustomization_lists_every_manifest_file() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = sorted(kustomization["resources"])
    on_disk = sorted(str(p.relative_to(MANIFESTS)) for p in MANIFEST_FILES)
    assert listed == on_disk
    assert kustomization["namespace"] == "fleetwave"


def test_namespaced_objects_live_in_the_fleetwave_namespace() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for doc in all_docs():
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == "fleetwave", name_of(doc)


def test_the_deployment_runs_the_operator_restricted_and_probed() -> None:
    [deployment] = of_kind("Deployment")
    assert workload_problems(deployment) == []
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["operator"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "fleetwave"
    # SQLite on a ReadWriteOnce claim: one replica, and the old pod stops before the new one.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    [pvc] = of_kind("PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_the_service_selects_the_pods_and_names_its_port_http() -> None:
    [service] = of_kind("Service")
    [deployment] = of_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                         "protocol": "TCP"}]


def test_the_configmap_makes_the_api_reachable_from_the_kubelet() -> None:
    [configmap] = of_kind("ConfigMap")
    data = configmap["data"]
    assert data["FLEETWAVE_LISTEN"] == "0.0.0.0:8080"
    assert data["FLEETWAVE_STORE"] == "sqlite:////data/fleetwave.db"
    assert data["FLEETWAVE_BROKER"].startswith(("mqtt://", "mqtts://"))
    assert not any("PASSWORD" in k or "TOKEN=" in k for k in data), "secrets belong in the Secret"


def test_the_secret_is_a_template_of_placeholders() -> None:
    [secret] = of_kind("Secret")
    assert "data" not in secret
    assert set(secret["stringData"]) >= {"broker-username", "broker-password", "api-tokens",
                                         "git-token", "git-ssh-privatekey", "git-known-hosts"}
    for value in secret["stringData"].values():
        assert value.strip() in ("", "REPLACE-ME") or value.strip().startswith("REPLACE-ME")


EXPECTED_CLUSTER_RULES = [
    {"apiGroups": ["fleetwave.io"],
     "resources": ["rollouts", "rolloutpolicies", "deviceinventories"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["fleetwave.io"],
     "resources": ["rollouts/status", "rolloutpolicies/status", "deviceinventories/status"],
     "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]
EXPECTED_LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update"]},
]


def test_rbac_grants_only_what_the_operator_uses() -> None:
    [cluster_role] = of_kind("ClusterRole")
    [role] = of_kind("Role")
    assert cluster_role["rules"] == EXPECTED_CLUSTER_RULES
    assert role["rules"] == EXPECTED_LEASE_RULES
    for binding, target in ((of_kind("ClusterRoleBinding")[0], cluster_role),
                            (of_kind("RoleBinding")[0], role)):
        assert binding["roleRef"]["name"] == target["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fleetwave",
                                        "namespace": "fleetwave"}]
    verbs = {v for doc in (cluster_role, role) for rule in doc["rules"] for v in rule["verbs"]}
    assert not verbs & {"*", "delete", "deletecollection", "escalate", "bind", "impersonate"}
