"""Several real `fleetwave run` replicas on one PostgreSQL and one Mosquitto, for the failover,
fencing and chaos tests: who leads (from each replica's /readyz), what the store holds, and
what the devices were sent (a bare paho subscriber on the command topics, and Mosquitto's
own log of who published what)."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetwave.store import open_store
from fleetwave.updates.model import UpdateRecord
from tests.support.broker import RunningBroker, start_broker
from tests.support.processes import Controller, wait_until

ROLLOUT = "fleet"
FAILOVER_BOUND = 15.0
"""DESIGN.md 9.3: another replica leads at most this long after the leader died."""


def answer(replica: Controller, path: str) -> dict[str, Any]:
    """The JSON body whatever the status (a 503 from /readyz still says why and the role);
    {} when the replica does not answer."""
    try:
        with urllib.request.urlopen(replica.url + path, timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        try:
            error_body: dict[str, Any] = json.loads(exc.read())
        except ValueError:
            return {}
        return error_body
    except OSError:
        return {}


def rollout_yaml(version: str, max_in_flight: int) -> str:
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {ROLLOUT}}}
spec:
  component: agent
  version: "{version}"
  selector: {{}}
  strategy: {{steps: [{{percent: 10}}, {{percent: 100}}], maxInFlight: {max_in_flight}}}
  health: {{ackTimeout: 120s, updateTimeout: 240s, stableFor: 0s}}
  failurePolicy: {{maxFailurePercent: 20, minSample: 50, retries: 0}}
"""


class Commands:
    """Every update command the broker delivered, per device: a bare paho subscriber."""

    def __init__(self, broker: RunningBroker) -> None:
        self.lock = threading.Lock()
        self.by_device: dict[str, set[str]] = collections.defaultdict(set)
        """device -> the correlation ids it was sent (the command carries no attempt)."""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-command-recorder",
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(*broker.simulator)
        client.on_message = self._on_message
        client.on_connect = lambda c, *a: c.subscribe("iot/device/+/agent/update", qos=1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600  # nothing missed across a broker restart
        client.connect(broker.host, broker.port, clean_start=False, properties=props)
        client.loop_start()
        self.client = client

    def _on_message(self, client: paho.Client, userdata: object,
                    msg: paho.MQTTMessage) -> None:
        if not msg.payload:
            return  # a cleared retained command
        body = json.loads(msg.payload)
        with self.lock:
            self.by_device[msg.topic.split("/")[2]].add(body["correlation_id"])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


_PUBLISH = re.compile(r"^(\d+): Received PUBLISH from (\S+) \(.*'([^']+)'")


def published_by(broker: RunningBroker, client_id: str, since: float) -> list[str]:
    """Topics of the commands `client_id` published, by Mosquitto's debug log, after `since`
    (epoch seconds)."""
    topics = []
    for line in broker.files.log.read_text(errors="replace").splitlines():
        match = _PUBLISH.match(line)
        if match and match[2] == client_id and float(match[1]) > since \
                and match[3].endswith("/agent/update"):
            topics.append(match[3])
    return topics


def debug_broker(directory: Path) -> RunningBroker:
    """The shipped configuration plus Mosquitto's debug log (who published what, when)."""
    broker = start_broker(directory)
    broker.stop()
    with broker.files.config.open("a") as config:
        config.write("\nlog_type debug\nlog_timestamp true\n")
    broker.start()
    return broker


def load_records(store_url: str) -> list[UpdateRecord]:
    async def load() -> list[UpdateRecord]:
        store = open_store(store_url)
        try:
            return await store.updates.of_rollout(ROLLOUT)
        finally:
            await store.close()
    return asyncio.run(load())


def device_versions(store_url: str) -> dict[str, str | None]:
    async def load() -> dict[str, str | None]:
        store = open_store(store_url)
        try:
            return {d.uuid: d.versions.get("agent") for d in await store.devices.all()}
        finally:
            await store.close()
    return asyncio.run(load())


@dataclass
class Replicas:
    """`fleetwave run` processes sharing the store and `--shared-group`, each with its own
    client id and port."""

    make: Callable[..., Controller]
    source: Path
    store: str
    count: int
    members: list[Controller] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.count):
            replica = self.make(self.source, store=self.store, extra_args=[
                "--shared-group", "fleetwave", "--client-id", f"fleetwave-{i}"])
            replica.extra_args = [*replica.extra_args, "--advertise-url", replica.url]
            replica.start()
            self.members.append(replica)

    def client_id(self, replica: Controller) -> str:
        return f"fleetwave-{self.members.index(replica)}"

    def role(self, replica: Controller) -> str | None:
        if replica.proc is None:
            return None
        role: str | None = answer(replica, "/readyz").get("role")
        return role

    def leaders(self) -> list[Controller]:
        return [r for r in self.members if self.role(r) == "leader"]

    def wait_leader(self, timeout: float, why: str) -> Controller:
        leaders = wait_until(self.leaders, timeout,
                             lambda: f"no leader {why}: " + "; ".join(
                                 f"{r.url}: {self.role(r)}" for r in self.members))
        assert len(leaders) == 1, [r.url for r in leaders]
        leader: Controller = leaders[0]
        return leader

    def phase(self) -> str | None:
        for replica in self.leaders():
            body = replica.get(f"/api/v1/rollouts/{ROLLOUT}", ok_only=False)
            if isinstance(body, dict) and "status" in body:
                phase: str | None = body["status"].get("phase")
                return phase
        return None

    def tails(self) -> str:
        return "\n".join(f"--- {r.url}\n{r.tail(15)}" for r in self.members)


def kill_leader(replicas: Replicas, why: str) -> Controller:
    """SIGKILL the leader, check another leads within the bound, restart the dead one (as a
    supervisor would: same client id, so its session's queued status comes back)."""
    leader = replicas.wait_leader(30, why)
    leader.kill()
    successor = replicas.wait_leader(FAILOVER_BOUND, f"within {FAILOVER_BOUND}s after {why}")
    assert successor is not leader
    leader.start()
    return successor


def succeeded(store_url: str) -> int:
    return sum(1 for r in load_records(store_url) if r.state.value == "succeeded")


def check_outcome(store_url: str, commands: Commands, devices: int, version: str) -> None:
    """The contract after a rollout through failures: every device on `version` with exactly
    one record, succeeded; no duplicate attempt; one correlation id per attempt."""
    by_device: dict[str, list[UpdateRecord]] = collections.defaultdict(list)
    for record in load_records(store_url):
        by_device[record.device].append(record)
    assert len(by_device) == devices
    extra = {d: [(r.attempt, r.action, r.state.value, r.reason, r.error, r.generation,
                  r.triggered_by, r.created_at, r.sent_at, r.completed_at, r.rolled_back_at)
                 for r in rs] for d, rs in by_device.items() if len(rs) != 1}
    assert extra == {}, (f"{len(extra)} devices with more than one record: "
                         f"{list(extra.items())[:4]}")
    not_ok = {d: rs[0].state.value for d, rs in by_device.items()
              if rs[0].state.value != "succeeded"}
    assert not_ok == {}, f"not succeeded: {collections.Counter(not_ok.values())}"
    versions = device_versions(store_url)
    assert collections.Counter(versions.values()) == {version: devices}
    with commands.lock:
        sent = {d: set(c) for d, c in commands.by_device.items()}
    # retries are off: one attempt per device, so one correlation id, the record's own
    expected = {d: {rs[0].correlation_id} for d, rs in by_device.items()}
    wrong = {d: c for d, c in sent.items() if c != expected.get(d)}
    assert wrong == {}, f"devices sent another correlation id: {list(wrong.items())[:5]}"
    assert set(sent) == set(expected)


@pytest.fixture
def recorder(broker: RunningBroker) -> Iterator[Commands]:
    commands = Commands(broker)
    try:
        yield commands
    finally:
        commands.close()
