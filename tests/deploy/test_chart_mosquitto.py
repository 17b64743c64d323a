"""The chart's optional Mosquitto (`mosquitto.enabled`): it runs exactly the configuration
and ACL fleetwave ships (controller/fleetwave/mqtt/broker/, which tests/mqtt/ run against a
real Mosquitto), filled in as BrokerConfig fills them in: TLS only, no anonymous access,
client ids bound to user names, accounts from a Secret. No API server runs here, so the
rendered objects are compared and schema-checked, not deployed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetwave.mqtt.broker import BrokerConfig, BrokerFiles
from tests.deploy.conftest import CHART, Renderer
from tests.deploy.kube import Doc
from tests.deploy.test_chart import env_of, kinds, only
from tests.deploy.tools import ROOT

SHIPPED = ROOT / "controller" / "fleetwave" / "mqtt" / "broker"
VALUES = CHART / "ci" / "mosquitto-enabled-values.yaml"


@pytest.fixture(scope="module")
def docs(chart: Renderer) -> list[Doc]:
    return chart.render("-f", str(VALUES))


@pytest.mark.parametrize("name", ["mosquitto.conf", "acl"])
def test_the_chart_ships_the_same_templates(name: str) -> None:
    copy = CHART / "files" / "mosquitto" / name
    assert copy.read_bytes() == (SHIPPED / name).read_bytes(), \
        f"chart/files/mosquitto/{name} drifted: cp {SHIPPED.relative_to(ROOT)}/{name} " \
        f"chart/files/mosquitto/"


def shipped_config() -> BrokerConfig:
    """BrokerConfig with the inputs the chart gives (the password only satisfies the check:
    the chart's accounts come from the Secret)."""
    return BrokerConfig(port=8883, host="0.0.0.0", controller_user="fleetwave",
                        controller_password="unused", tls_cert_file="/mosquitto/tls/tls.crt",
                        tls_key_file="/mosquitto/tls/tls.key", run_as_user="",
                        log_to_file=False)


def test_config_and_acl_are_what_broker_config_renders(docs: list[Doc]) -> None:
    data = only(docs, "ConfigMap", "broker")["data"]
    files = BrokerFiles(directory=Path("/mosquitto"), config=Path("/mosquitto/config/x"),
                        acl=Path("/mosquitto/config/acl"),
                        password_file=Path("/mosquitto/passwd/passwd"),
                        persistence=Path("/mosquitto/data"), log=Path("/dev/null"))
    config = shipped_config()
    assert data["mosquitto.conf"].rstrip("\n") == config.render_config(files).rstrip("\n")
    assert data["acl"].rstrip("\n") == config.render_acl().rstrip("\n")
    conf = data["mosquitto.conf"].splitlines()
    for line in ("allow_anonymous false", "listener 8883 0.0.0.0", "use_username_as_clientid true",
                 "certfile /mosquitto/tls/tls.crt", "password_file /mosquitto/passwd/passwd"):
        assert line in conf
    assert not [line for line in conf if line.startswith("listener") and "8883" not in line]


def test_the_broker_runs_restricted_with_accounts_and_tls_from_secrets(docs: list[Doc]) -> None:
    deployment = only(docs, "Deployment", "broker")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["passwd"]["secret"]["secretName"] == "fleetwave-mosquitto-passwd"
    assert volumes["tls"]["secret"]["secretName"] == "fleetwave-mosquitto-tls"
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "fleetwave-mosquitto-data"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/mosquitto/config", "/mosquitto/passwd", "/mosquitto/tls", "/mosquitto/data"} <= mounts
    service = only(docs, "Service", "broker")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "mqtts", "port": 8883, "targetPort": "mqtts",
                                         "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_controller_uses_the_bundled_broker_over_tls(docs: list[Doc]) -> None:
    config = only(docs, "ConfigMap")["data"]
    assert config["FLEETWAVE_BROKER"] == "mqtts://fleetwave-mosquitto.fleetwave.svc:8883"
    volumes = {v["name"]: v for v in only(docs, "Deployment")["spec"]["template"]["spec"]
               ["volumes"]}
    assert volumes["broker-ca"]["secret"]["secretName"] == "fleetwave-mosquitto-tls"
    assert volumes["broker-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert env_of(only(docs, "Deployment"))["FLEETWAVE_BROKER_USERNAME"]["valueFrom"] == {
        "secretKeyRef": {"name": "fleetwave-broker", "key": "username"}}
    policy = only(docs, "NetworkPolicy")
    [broker_rule] = [r for r in policy["spec"]["egress"]
                     if {"port": 8883, "protocol": "TCP"} in r["ports"]]
    assert broker_rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] \
        == "broker"


def test_the_broker_policy_admits_mqtts_and_lets_nothing_out(docs: list[Doc]) -> None:
    policy = only(docs, "NetworkPolicy", "broker")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "mqtts", "protocol": "TCP"}]}]
    assert policy["spec"]["egress"] == []
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_off_by_default(chart: Renderer) -> None:
    assert not kinds(chart.render(), "Deployment", "broker")
