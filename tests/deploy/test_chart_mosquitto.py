"""The chart's optional Mosquitto (`mosquitto.enabled`): it runs exactly the configuration
and ACL fleetwave ships (controller/fleetwave/mqtt/broker/, which tests/mqtt/ run against a
real Mosquitto), filled in as BrokerConfig fills them in: TLS only, no anonymous access,
client ids bound to user names, accounts from a Secret. No API server runs here, so the
rendered objects are compared and schema-checked, not deployed; the rendered mosquitto.conf
and acl themselves are run by the real Mosquitto."""

from __future__ import annotations

import os
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetwave.mqtt.broker import (
    BrokerConfig,
    BrokerFiles,
    MosquittoProcess,
    free_port,
    write_password_file,
)
from tests.deploy.conftest import CHART, Renderer
from tests.deploy.kube import Doc
from tests.deploy.test_chart import env_of, kinds, only
from tests.deploy.tools import ROOT, run_tool

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


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), made with openssl."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    result = run_tool(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                       "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                       "-days", "1", "-subj", "/CN=fleetwave-mosquitto",
                       "-addext", "subjectAltName=IP:127.0.0.1"])
    assert result.returncode == 0, result.stderr
    return cert, key


def connect(port: int, user: str, password: str, client_id: str, ca: Path | None,
            received: list[bytes] | None = None) -> tuple[paho.Client, list[str]]:
    """A paho client over TLS (ca) or plain TCP (None); returns it and its CONNACK/disconnect
    log, once the CONNACK (or the failure) is in."""
    log: list[str] = []
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=MQTTProtocolVersion.MQTTv5, reconnect_on_failure=False)
    c.username_pw_set(user, password)
    if ca is not None:
        c.tls_set(ca_certs=str(ca))

    def on_connect(cl: paho.Client, u: object, f: paho.ConnectFlags, rc: paho.ReasonCode,
                   p: object) -> None:
        log.append(f"connack:{rc}:{f.session_present}")
        done.set()

    def on_disconnect(cl: paho.Client, u: object, f: object, rc: paho.ReasonCode,
                      p: object) -> None:
        log.append(f"disconnect:{rc}")
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    if received is not None:
        c.on_message = lambda cl, u, msg: received.append(msg.payload)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    try:
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
    except (OSError, ssl.SSLError) as exc:
        log.append(f"refused:{exc}")
        return c, log
    c.loop_start()
    assert done.wait(10), "no CONNACK"
    return c, log


def test_the_rendered_broker_runs_on_mosquitto_tls_only_with_bound_client_ids(
        chart: Renderer, tmp_path: Path) -> None:
    """The chart's own mosquitto.conf and acl, run by the real Mosquitto 2.0.11 with the paths
    under /mosquitto/ moved into a temporary directory (and, when the tests run as root,
    `user root`, as BrokerConfig does, so Mosquitto can read the root-owned files)."""
    port = free_port()
    docs = chart.render("-f", str(VALUES), "--set", f"mosquitto.service.port={port}")
    data = only(docs, "ConfigMap", "broker")["data"]
    root = tmp_path / "mosquitto"
    for sub in ("config", "passwd", "tls", "data"):
        (root / sub).mkdir(parents=True)
    make_certificate(root / "tls")
    conf = data["mosquitto.conf"].replace("/mosquitto/", f"{root}/")
    conf = conf.replace("0.0.0.0", "127.0.0.1")
    if os.geteuid() == 0:
        conf += "\nuser root\n"
    (root / "config" / "mosquitto.conf").write_text(conf)
    (root / "config" / "acl").write_text(data["acl"])
    write_password_file(root / "passwd" / "passwd", {"fleetwave": "controller-pw",
                                                    "device-a": "device-pw"})
    files = BrokerFiles(directory=root, config=root / "config" / "mosquitto.conf",
                        acl=root / "config" / "acl", password_file=root / "passwd" / "passwd",
                        persistence=root / "data", log=root / "mosquitto.log")
    ca = root / "tls" / "tls.crt"
    clients: list[paho.Client] = []
    with MosquittoProcess(files, port):
        _, plain = connect(port, "fleetwave", "controller-pw", "fleetwave-controller", None)
        assert not [e for e in plain if e.startswith("connack:Success")], \
            f"plain MQTT accepted: {plain}"
        received: list[bytes] = []
        controller, controller_log = connect(port, "fleetwave", "controller-pw",
                                             "fleetwave-controller", ca, received)
        clients.append(controller)
        assert controller_log == ["connack:Success:False"]
        subscribed = threading.Event()
        controller.on_subscribe = lambda *args: subscribed.set()
        controller.subscribe("iot/device/+/agent/status", qos=1)
        assert subscribed.wait(10)
        device, device_log = connect(port, "device-a", "device-pw", "fleetwave-controller", ca)
        clients.append(device)
        assert device_log == ["connack:Success:False"], "the device got a session of its own"
        device.publish("iot/device/device-a/agent/status", b"own-status", qos=1) \
            .wait_for_publish(10)
        for _ in range(100):  # a bound on a hang only
            if received:
                break
            time.sleep(0.05)
        assert received == [b"own-status"]
        assert controller_log == ["connack:Success:False"], "the controller was never kicked"
        for client in clients:
            client.disconnect()
            client.loop_stop()
