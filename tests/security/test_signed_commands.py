"""Signed commands end to end (DESIGN.md 9.1), with real processes on a real Mosquitto.

`fleetwave keys generate` makes the key, `fleetwave keys public` prints what devices trust,
`fleetwave run` signs with it and `fleetwave simulate` verifies. A test MQTT client reads
every command from the broker; another, holding the controller's broker account (the
attacker the signatures are for), publishes forged and replayed commands to a running
device's retained update topic.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwave.protocol.admission import parse_time
from fleetwave.protocol.signing import SigningKey, TrustedKeys
from fleetwave.protocol.topics import TopicKind, Topics
from fleetwave.runtime.keys import load_key_file
from tests.metrics.scrape import scrape
from tests.support.broker import RunningBroker
from tests.support.commands import BrokerClient, forge
from tests.support.processes import FLEETWAVE, Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

T = Topics()
DEVICES = ("dev-a", "dev-b", "dev-c")


def rollout(*, devices: str = "{}", failure: str = "", steps: str = "[{percent: 100}]") -> str:
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: agent-rollout}}
spec:
  component: agent
  version: "1.0.6"
  selector: {devices}
  strategy: {{steps: {steps}, maxInFlight: 100}}
  health: {{ackTimeout: 20s, updateTimeout: 30s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 10, minSample: 5, retries: 0, {failure}}}
"""


def keys(*args: str) -> str:
    result = subprocess.run([*FLEETWAVE, "keys", *args], capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    """The test's key, made by `fleetwave keys generate` where the test processes look for
    it; devices trust what `fleetwave keys public` prints (its plain-text form)."""
    private = tmp_path / "signing-key.pem"
    keys("generate", "--out", str(private))
    (tmp_path / "trusted-key.json").write_text(keys("public", str(private)))
    return private


def phase(controller: Controller) -> str | None:
    found = controller.get("/api/v1/rollouts/agent-rollout", ok_only=False)
    return (found.get("status") or {}).get("phase") if isinstance(found, dict) else None


def commands(client: BrokerClient) -> list[tuple[str, dict[str, Any]]]:
    """(device, command) of every non-empty message on an update topic, in arrival order."""
    out = []
    for topic, payload in client.received(lambda t, p: bool(p)):
        parsed = T.parse(topic)
        assert parsed is not None and parsed[0] is TopicKind.UPDATE
        out.append((parsed[1], json.loads(payload)))
    return out


def test_every_command_run_publishes_verifies_with_the_printed_public_key(
        tmp_path: Path, broker: RunningBroker, signing_key: Path,
        controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    """Updates, then rollbacks and cancels (the failure budget rolls the wave back)."""
    printed = json.loads(keys("public", str(signing_key), "-o", "json"))
    assert printed["keyid"] == load_key_file(signing_key).public.keyid
    trusted = TrustedKeys.from_base64([printed["publicKey"]])
    reader = BrokerClient(broker, broker.simulator, "command-reader", T.filter(TopicKind.UPDATE))
    try:
        source = tmp_path / "rollouts"
        source.mkdir()
        (source / "agent.yaml").write_text(rollout(
            failure="action: rollback", steps="[{percent: 50}, {percent: 100}]"))
        simulator_factory(40, "--speed", "40", "--seed", "3", "--fail-rate", "0.3")
        controller = controller_factory(source)
        controller.start()
        wait_until(lambda: phase(controller) == "RolledBack", 120,
                   lambda: f"not rolled back: {phase(controller)}\n{controller.tail()}")
        wait_until(lambda: {c["action"] for _, c in commands(reader)} >= {"update", "rollback"},
                   30, lambda: f"commands seen: {[c['action'] for _, c in commands(reader)]}")
        seen = commands(reader)
    finally:
        reader.close()
    releases: dict[str, int] = {}
    for device, command in seen:
        sent = command["timestamp"] / 1000
        assert trusted.verify(command) == printed["keyid"], command
        assert command["device"] == device
        assert isinstance(command["release"], int)
        expires = parse_time(command["expires_at"])
        assert expires is not None and expires.timestamp() > sent, command
        # A re-publish of one attempt keeps its release; a new attempt gets a higher one.
        assert releases.setdefault(command["correlation_id"], command["release"]) == \
            command["release"]
    for device in {d for d, _ in seen}:
        attempts = [c for d, c in seen if d == device and c["action"] != "cancel"]
        order = list(dict.fromkeys(c["correlation_id"] for c in attempts))
        assert [releases[cid] for cid in order] == sorted({releases[cid] for cid in order})


@pytest.fixture
def updated_fleet(tmp_path: Path, broker: RunningBroker, signing_key: Path,
                  controller_factory: Callable[..., Controller],
                  simulator_factory: Callable[..., Simulator]
                  ) -> Iterator[tuple[Controller, list[tuple[str, dict[str, Any]]]]]:
    """Three devices the controller took from 1.0.5 to 1.0.6, and the commands it sent."""
    del signing_key  # made before the processes start, which then use it
    reader = BrokerClient(broker, broker.simulator, "command-reader", T.filter(TopicKind.UPDATE))
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "agent.yaml").write_text(rollout())
    ids = [arg for d in DEVICES for arg in ("--device-id", d)]
    simulator_factory(len(DEVICES), "--speed", "40", "--devices-per-connection", "1", *ids)
    controller = controller_factory(source)
    controller.start()
    try:
        wait_until(lambda: phase(controller) == "Completed", 60,
                   lambda: f"not completed: {phase(controller)}\n{controller.tail()}")
        wait_until(lambda: {d for d, _ in commands(reader)} == set(DEVICES), 10,
                   "not every device's command was seen")
        yield controller, commands(reader)
    finally:
        reader.close()


def test_forged_expired_misdirected_replayed_and_downgrading_commands_are_refused(
        broker: RunningBroker, signing_key: Path,
        updated_fleet: tuple[Controller, list[tuple[str, dict[str, Any]]]]) -> None:
    controller, genuine = updated_fleet
    key = load_key_file(signing_key)
    [(_, for_a)] = [(d, c) for d, c in genuine if d == "dev-a" and c["action"] == "update"][:1]
    [(_, for_b)] = [(d, c) for d, c in genuine if d == "dev-b" and c["action"] == "update"][:1]
    executed = for_a["release"]
    attacks = [
        ("another-key", forge(SigningKey.generate(), "dev-a", release=executed + 1,
                              version="1.0.7", cid="another-key"),
         "another-key", "rejected", "untrusted key"),
        ("expired", forge(key, "dev-a", release=executed + 2, version="1.0.7", cid="expired",
                          expires_in=-60), "expired", "rejected", "expired at"),
        # dev-b's own genuine command, copied onto dev-a's topic.
        ("another-device", json.dumps(for_b).encode(), for_b["correlation_id"], "rejected",
         "is for device 'dev-b'"),
        ("replayed", forge(key, "dev-a", release=executed - 1, version="1.0.7",
                           cid="replayed"), "replayed", "rejected", "replayed command"),
        ("downgrade", forge(key, "dev-a", release=executed + 3, version="1.0.5",
                            cid="downgrade"), "downgrade", "downgrade",
         "lower than the running 1.0.6"),
    ]
    status = BrokerClient(broker, broker.controller, "status-reader", T.status("dev-a"))
    attacker = BrokerClient(broker, broker.controller, "attacker")
    try:
        for name, payload, cid, reason, cause in attacks:
            attacker.publish(T.update("dev-a"), payload, retain=True)

            def reported(cid: str = cid) -> list[dict[str, Any]]:
                return [b for b in (json.loads(p) for _, p in status.received())
                        if b.get("correlation_id") == cid]

            [refusal] = wait_until(reported, 20, f"{name}: no status for {cid}")
            assert (refusal["type"], refusal["reason"]) == ("update_failed", reason), name
            assert cause in refusal["error"], (name, refusal)
            assert [b["type"] for b in reported()] == ["update_failed"], name
    finally:
        attacker.close()
        status.close()
    # Nothing ran: every device's retained state still shows what the controller put there.
    state = BrokerClient(broker, broker.controller, "state-reader", T.filter(TopicKind.STATE))
    try:
        def versions() -> dict[str, str]:
            return {json.loads(p)["uuid"]: json.loads(p)["versions"]["agent"]
                    for _, p in state.received()}

        assert wait_until(lambda: len(versions()) == len(DEVICES) and versions(), 10,
                          "no retained state") == dict.fromkeys(DEVICES, "1.0.6")
    finally:
        state.close()
    metrics = scrape(controller.url)
    assert metrics.value("fleetwave_commands_refused_total", reason="rejected") == 4
    assert metrics.value("fleetwave_commands_refused_total", reason="downgrade") == 1


def test_devices_that_do_not_trust_the_key_refuse_and_the_controller_records_why(
        tmp_path: Path, signing_key: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    """The fleet trusts another key (a rotation done in the wrong order): nothing runs,
    every update is recorded failed with the device's reason and cause, and counted."""
    del signing_key  # the controller signs with it; the devices do not trust it
    stranger = SigningKey.generate().public
    (tmp_path / "trusted-key.json").write_text(
        json.dumps({"keyid": stranger.keyid, "publicKey": stranger.base64}))
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "agent.yaml").write_text(rollout())  # 3 devices: below minSample, no pause
    ids = [arg for d in DEVICES for arg in ("--device-id", d)]
    simulator_factory(len(DEVICES), "--speed", "40", *ids)
    controller = controller_factory(source)
    controller.start()

    def updates() -> list[dict[str, Any]]:
        # A device the controller has not heard of yet answers 404: no updates so far.
        return [u for d in DEVICES
                for u in (controller.get(f"/api/v1/devices/{d}/updates", ok_only=False)
                          or {}).get("items", [])]

    wait_until(lambda: len([u for u in updates() if u["state"] == "failed"]) == len(DEVICES),
               60, lambda: f"updates: {updates()}\n{controller.tail()}")
    for update in updates():
        assert (update["state"], update["reason"]) == ("failed", "rejected"), update
        assert "untrusted key" in update["error"], update
    assert {d["uuid"]: d["versions"]["agent"] for d in controller.devices()} == \
        dict.fromkeys(DEVICES, "1.0.5")
    assert scrape(controller.url).value("fleetwave_commands_refused_total",
                                        reason="rejected") == len(DEVICES)
