"""chart/: `helm lint --strict` and `helm template` (Helm 3 from scripts/lib/tools.sh) for
every values file under chart/ci/, each rendered object checked against the Kubernetes
1.33 OpenAPI schemas, our CRD schemas, or the Prometheus Operator fields the chart uses.
No API server runs here, so this is the closest to `helm install` the tests can get."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import CHART, CI_VALUES, NAMESPACE, RELEASE, REQUIRED, Renderer
from tests.deploy.kube import Doc, custom_resource_validators, name_of, validate
from tests.deploy.test_manifests import (
    EXPECTED_CLUSTER_RULES,
    EXPECTED_LEASE_RULES,
    EXPECTED_NAMESPACED_RULES,
    PLACEHOLDER,
)
from tests.deploy.tools import ROOT, run_tool
from tests.deploy.workload import workload_problems

CI_IDS = [p.stem for p in CI_VALUES]
REQUIRED_CI = {"default-values", "standalone-sqlite-values", "operator-postgres-values",
               "monitoring-enabled-values", "mosquitto-enabled-values", "cluster-wide-values"}


def kinds(docs: list[Doc], kind: str, component: str = "controller") -> list[Doc]:
    """Objects of a kind; those labelled with another component (the bundled broker) are
    left out unless asked for."""
    return [d for d in docs if d["kind"] == kind
            and d["metadata"].get("labels", {}).get("app.kubernetes.io/component",
                                                    component) == component]


def only(docs: list[Doc], kind: str, component: str = "controller") -> Doc:
    [doc] = kinds(docs, kind, component)
    return doc


def test_the_ci_values_files_cover_the_main_setups() -> None:
    assert set(CI_IDS) >= REQUIRED_CI


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_helm_lint_strict(values: Path, helm: tuple[Path, dict[str, str]]) -> None:
    binary, env = helm
    result = run_tool([binary, "lint", "--strict", CHART, "--namespace", NAMESPACE, "-f", values],
                      env=env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_objects_are_valid(values: Path, chart: Renderer, crds: list[Doc]) -> None:
    docs = chart.render("-f", str(values))
    custom = custom_resource_validators(crds)
    errors = {name_of(d): validate(d, custom) for d in docs}
    assert not {k: v for k, v in errors.items() if v}


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_deployment_is_restricted_and_probed(values: Path, chart: Renderer) -> None:
    docs = chart.render("-f", str(values))
    deployment = only(docs, "Deployment")
    assert workload_problems(deployment) == []
    labels = deployment["metadata"]["labels"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "helm.sh/chart"):
        assert key in labels
    service = only(docs, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_every_object_carries_the_standard_labels(values: Path, chart: Renderer) -> None:
    for doc in chart.render("-f", str(values)):
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, name_of(doc)
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", name_of(doc)


def env_of(deployment: Doc) -> dict[str, dict[str, object]]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_default_is_one_operator_on_sqlite_with_minimal_rbac(chart: Renderer) -> None:
    docs = chart.render()
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["operator"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not kinds(docs, "ClusterRole") and not kinds(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["name"]: r for r in kinds(docs, "Role")}
    assert roles["fleetwave"]["rules"] == EXPECTED_NAMESPACED_RULES
    assert roles["fleetwave-leader-election"]["rules"] == EXPECTED_LEASE_RULES
    assert sorted(b["roleRef"]["name"] for b in kinds(docs, "RoleBinding")) == sorted(roles)
    env = env_of(deployment)
    assert env["FLEETWAVE_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "FLEETWAVE_ALL_NAMESPACES" not in env
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = only(docs, "PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    config = only(docs, "ConfigMap")["data"]
    assert config["FLEETWAVE_STORE"] == "sqlite:////data/fleetwave.db"
    assert config["FLEETWAVE_LISTEN"] == "0.0.0.0:8080"
    assert config["FLEETWAVE_LEADER_ELECTION"] == "true"
    assert not kinds(docs, "Secret"), "the chart creates no Secret: it points at existing ones"
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com")]
    assert not [d for d in docs if d["metadata"].get("labels", {}).get("grafana_dashboard")]


def test_standalone_runs_git_source_without_kubernetes_api(chart: Renderer) -> None:
    docs = chart.render("-f", str(CHART / "ci" / "standalone-sqlite-values.yaml"))
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["run"]
    assert pod["automountServiceAccountToken"] is False
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "Role", "ClusterRoleBinding",
                                                 "RoleBinding", "CustomResourceDefinition")]
    config = only(docs, "ConfigMap")["data"]
    assert config["FLEETWAVE_SOURCE"] == "ssh://git@git.example.com/fleet/rollouts.git"
    assert config["FLEETWAVE_BRANCH"] == "production"
    assert config["FLEETWAVE_PATH"] == "/rollouts"
    assert config["FLEETWAVE_BROKER_CA_FILE"] == "/etc/fleetwave/broker-ca/ca.crt"
    assert config["FLEETWAVE_GIT_SSH_KEY_FILE"].startswith("/etc/fleetwave/git/")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "fleetwave-sqlite"
    assert volumes["git-credentials"]["secret"]["secretName"] == "fleetwave-git"
    assert not kinds(docs, "PersistentVolumeClaim"), "an existing claim is used, none created"
    env = env_of(deployment)
    assert env["FLEETWAVE_BROKER_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "fleetwave-broker", "key": "password"}}


def test_operator_on_postgres_scales_out_with_leader_election(chart: Renderer) -> None:
    docs = chart.render("-f", str(CHART / "ci" / "operator-postgres-values.yaml"))
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = env_of(deployment)
    assert env["FLEETWAVE_STORE"]["valueFrom"] == {
        "secretKeyRef": {"name": "fleetwave-postgres", "key": "url"}}
    assert "FLEETWAVE_STORE" not in only(docs, "ConfigMap")["data"]
    assert only(docs, "ConfigMap")["data"]["FLEETWAVE_LEASE_NAME"] == "fleetwave-planner"
    assert not kinds(docs, "PersistentVolumeClaim")
    # Every replica signs with the one key from the Secret, readable by its group only.
    key_file = only(docs, "ConfigMap")["data"]["FLEETWAVE_SIGNING_KEY"]
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                if v["name"] == "signing-key"]
    assert volume["secret"]["secretName"] == "fleetwave-signing-key"
    assert volume["secret"]["defaultMode"] == 0o440
    [mount] = [m for m in deployment["spec"]["template"]["spec"]["containers"][0]
               ["volumeMounts"] if m["name"] == "signing-key"]
    assert key_file == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    leader = only([d for d in docs if d["metadata"]["name"].endswith("-leader-election")], "Role")
    assert leader["rules"] == EXPECTED_LEASE_RULES
    crds = kinds(docs, "CustomResourceDefinition")
    assert crds and all("annotations" not in c["metadata"] for c in crds)


def test_monitoring_objects_carry_the_shipped_rules_and_dashboard(chart: Renderer) -> None:
    docs = chart.render("-f", str(CHART / "ci" / "monitoring-enabled-values.yaml"))
    monitor = only(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = only(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()

    rule = only(docs, "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "examples" / "grafana" / "alerts.yaml").read_text())
    assert rule["spec"] == {"groups": shipped["groups"]}

    [dashboard] = [d for d in kinds(docs, "ConfigMap")
                   if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "fleetwave"}
    shipped_dashboard = (ROOT / "examples" / "grafana" / "fleetwave-dashboard.json").read_text()
    assert json.loads(dashboard["data"]["fleetwave.json"]) == json.loads(shipped_dashboard)


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--set", "mode=cluster"], "mode", id="unknown-mode"),
    pytest.param(["--set", "store.type=mysql"], "store.type", id="unknown-store"),
    pytest.param(["--set", "brokr.url=mqtt://x:1883"], "brokr", id="misspelt-value"),
    pytest.param(["--set", "broker.url=http://x"], "broker.url", id="broker-not-mqtt"),
    pytest.param(["--set", "replicaCount=2"], "store.type=postgres", id="replicas-on-sqlite"),
    pytest.param(["--set", "replicaCount=2", "--set", "store.type=postgres",
                  "--set", "store.postgres.existingSecret=pg",
                  "--set", "leaderElection.enabled=false"], "leaderElection",
                 id="replicas-no-leader"),
    pytest.param(["--set", "store.type=postgres"], "existingSecret", id="postgres-without-secret"),
    pytest.param(["--set", "store.type=postgres", "--set", "store.postgres.existingSecret=pg"],
                 "signingKey.existingSecret", id="postgres-without-signing-key"),
    pytest.param(["--set", "mode=standalone"], "source.url", id="standalone-without-source"),
    pytest.param(["--set", "broker.url=mqtt://x:1883"], "broker.allowPlaintext",
                 id="plain-mqtt-refused"),
    pytest.param(["--set", "mosquitto.enabled=true"], "mosquitto.tls.existingSecret",
                 id="mosquitto-without-tls"),
    pytest.param(["--set", "mosquitto.enabled=true", "--set", "mosquitto.tls.existingSecret=t"],
                 "mosquitto.passwordFile.existingSecret", id="mosquitto-without-accounts"),
    pytest.param(["--set", "mosquitto.enabled=true", "--set", "mosquitto.tls.existingSecret=t",
                  "--set", "mosquitto.passwordFile.existingSecret=p", "--set", "replicaCount=2",
                  "--set", "store.type=postgres", "--set", "store.postgres.existingSecret=pg",
                  "--set", "signingKey.existingSecret=key"],
                 "own broker account", id="mosquitto-with-replicas"),
])
def test_bad_values_fail_with_a_message_naming_the_value(
        args: list[str], message: str, chart: Renderer) -> None:
    result = chart.run(*REQUIRED, *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--set", "broker.url=mqtts://b:8883"], "broker.existingSecret is required",
                 id="no-broker-account"),
    pytest.param(["--set", "broker.existingSecret=fleetwave-broker"], "broker.url is required",
                 id="no-broker"),
])
def test_missing_required_values_fail_with_a_required_message(
        args: list[str], message: str, chart: Renderer) -> None:
    result = chart.run(*args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_plain_mqtt_only_when_allowed(chart: Renderer) -> None:
    docs = chart.render("--set", "broker.url=mqtt://lab-broker:1883",
                        "--set", "broker.allowPlaintext=true")
    assert only(docs, "ConfigMap")["data"]["FLEETWAVE_BROKER"] == "mqtt://lab-broker:1883"
    policy = only(docs, "NetworkPolicy")
    assert {"port": 1883, "protocol": "TCP"} in [p for r in policy["spec"]["egress"]
                                                 for p in r["ports"]]


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_no_plain_mqtt_no_placeholder_no_secret(values: Path, chart: Renderer) -> None:
    result = chart.run("-f", str(values))
    assert result.returncode == 0, result.stderr
    assert "mqtt://" not in result.stdout
    assert not PLACEHOLDER.search(result.stdout), PLACEHOLDER.search(result.stdout)
    assert not [d for d in chart.render("-f", str(values)) if d["kind"] == "Secret"]


def test_cluster_wide_asks_for_a_cluster_role(chart: Renderer) -> None:
    docs = chart.render("-f", str(CHART / "ci" / "cluster-wide-values.yaml"))
    assert only(docs, "ClusterRole")["rules"] == EXPECTED_CLUSTER_RULES
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "fleetwave"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fleetwave",
                                    "namespace": NAMESPACE}]
    env = env_of(only(docs, "Deployment"))
    assert env["FLEETWAVE_ALL_NAMESPACES"]["value"] == "true"
    assert "FLEETWAVE_NAMESPACE" not in env
    # Only the leader-election Role stays namespaced.
    assert [r["metadata"]["name"] for r in kinds(docs, "Role")] == ["fleetwave-leader-election"]


def test_the_network_policy_admits_only_the_api_port_and_needed_egress(chart: Renderer) -> None:
    docs = chart.render()
    policy = only(docs, "NetworkPolicy")
    deployment = only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    ports = {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}
    assert ports == {53, 8883, 443, 6443}, "DNS, the broker, the Kubernetes API"
    standalone = chart.render("-f", str(CHART / "ci" / "standalone-sqlite-values.yaml"))
    ports = {p["port"] for r in only(standalone, "NetworkPolicy")["spec"]["egress"]
             for p in r["ports"]}
    assert ports == {53, 8883, 443, 22}, "DNS, the broker, git over HTTPS and SSH"
    postgres = chart.render("-f", str(CHART / "ci" / "operator-postgres-values.yaml"))
    ports = {p["port"] for r in only(postgres, "NetworkPolicy")["spec"]["egress"]
             for p in r["ports"]}
    assert 5432 in ports
    assert not kinds(chart.render("--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_network_policy_takes_peers_and_extra_egress(chart: Renderer) -> None:
    docs = chart.render("-f", str(CHART / "ci" / "cluster-wide-values.yaml"))
    spec = only(docs, "NetworkPolicy")["spec"]
    assert spec["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    api = [r for r in spec["egress"] if {"port": 6443, "protocol": "TCP"} in r["ports"]]
    assert api[0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert spec["egress"][-1] == {"ports": [{"port": 1880, "protocol": "TCP"}]}


def test_values_schema_is_valid_json_schema() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(values)) == []
