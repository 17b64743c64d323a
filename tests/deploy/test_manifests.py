"""manifests/: plain YAML for `kubectl apply -k manifests/`, checked against the
Kubernetes 1.33 OpenAPI schemas (kubernetes-validate, strict) since no API server
runs here, plus the properties a reviewer would check by hand. `kubectl kustomize`
(offline, no server needed) renders what `apply -k` would send."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import read_yaml_docs
from tests.deploy.kube import Doc, custom_resource_validators, load_docs, name_of, validate
from tests.deploy.tools import ROOT, find_tool, run_tool
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


PLACEHOLDER = re.compile(r"REPLACE[-_ ]?ME|CHANGE[-_ ]?ME|<[a-z-]*(token|password|secret)[a-z-]*>",
                         re.IGNORECASE)
"""What a placeholder secret looks like; nothing applied may carry one."""


def kustomized() -> tuple[str, list[Doc]]:
    result = run_tool([find_tool("kubectl"), "kustomize", MANIFESTS])
    assert result.returncode == 0, result.stderr
    return result.stdout, load_docs(result.stdout)


def test_kustomize_renders_valid_objects(crds: list[Doc]) -> None:
    _, docs = kustomized()
    custom = custom_resource_validators(crds)
    errors = {name_of(d): validate(d, custom) for d in docs}
    assert not {k: v for k, v in errors.items() if v}
    assert {d["kind"] for d in docs} >= {"Deployment", "Role", "RoleBinding", "NetworkPolicy"}


def test_apply_k_sends_no_secret_no_placeholder_no_plain_mqtt_no_cluster_role() -> None:
    text, docs = kustomized()
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are the operator's to create"
    assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text)
    assert "mqtt://" not in text, "the broker is reached over TLS (mqtts://)"
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_deployment_requires_broker_credentials_and_tls() -> None:
    [deployment] = of_kind("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    for name, key in (("FLEETWAVE_BROKER_USERNAME", "username"),
                      ("FLEETWAVE_BROKER_PASSWORD", "password")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "fleetwave-broker", "key": key}, "required: not optional"
    [configmap] = of_kind("ConfigMap")
    assert configmap["data"]["FLEETWAVE_BROKER"].startswith("mqtts://")
    ca_file = Path(configmap["data"]["FLEETWAVE_BROKER_CA_FILE"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    ca_volume = volumes[mounts[str(ca_file.parent)]]["secret"]
    assert ca_volume["secretName"] == "fleetwave-broker"
    assert "optional" not in ca_volume
    assert ca_volume["items"] == [{"key": "ca.crt", "path": ca_file.name}]


def test_the_operator_watches_its_own_namespace() -> None:
    [deployment] = of_kind("Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLEETWAVE_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "FLEETWAVE_ALL_NAMESPACES" not in env


def test_the_network_policy_admits_only_the_api_port() -> None:
    [policy] = of_kind("NetworkPolicy")
    [deployment] = of_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 8883, 443, 6443}


EXPECTED_NAMESPACED_RULES = [
    {"apiGroups": ["fleetwave.io"],
     "resources": ["rollouts", "rolloutpolicies", "deviceinventories"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["fleetwave.io"],
     "resources": ["rollouts/status", "rolloutpolicies/status", "deviceinventories/status"],
     "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]
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


def test_rbac_grants_only_what_the_operator_uses_in_its_namespace() -> None:
    assert not of_kind("ClusterRole") and not of_kind("ClusterRoleBinding")
    roles = {r["metadata"]["name"]: r for r in of_kind("Role")}
    assert roles["fleetwave"]["rules"] == EXPECTED_NAMESPACED_RULES
    assert roles["fleetwave-leader-election"]["rules"] == EXPECTED_LEASE_RULES
    bindings = of_kind("RoleBinding")
    assert sorted(b["roleRef"]["name"] for b in bindings) == sorted(roles)
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fleetwave",
                                        "namespace": "fleetwave"}]
    verbs = {v for doc in roles.values() for rule in doc["rules"] for v in rule["verbs"]}
    assert not verbs & {"*", "delete", "deletecollection", "escalate", "bind", "impersonate"}
