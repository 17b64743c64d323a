"""A fleet of simulated devices on a few MQTT connections: the test bed and the demo's fleet.

How devices map to connections: devices are grouped, `devices_per_connection` (default 200)
to one paho client, which subscribes to each of its devices' `update` topics. 10,000 devices
are then 50 connections and 50 network threads, which this machine holds easily; one
connection per device would need 10,000.

What that changes against real devices:
- An MQTT last will belongs to a connection. A connection that carries exactly one device
  (`devices_per_connection=1`) sets that device's will (retained `online=false`), as a real
  device does. Connections carrying several devices set none; instead an injected outage and
  `take_offline()` publish the retained `online=false` themselves and the device stops
  answering, and a clean `stop()` marks every device offline.
- The per-device ACL (user = uuid) cannot apply to a connection that speaks for 200 devices,
  so the simulator connects with one account allowed to act for every device
  (`BrokerConfig(simulator_user=...)`). The per-device ACL applies to real devices; its tests
  connect with real per-device accounts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import paho.mqtt.client as paho
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleetwave.mqtt.connection import ConnectionOptions, PahoConnection
from fleetwave.mqtt.settings import parse_broker_url
from fleetwave.protocol import reports
from fleetwave.protocol.signing import TrustedKeys
from fleetwave.protocol.topics import TopicKind, Topics
from fleetwave.simulator.device import Behaviour, DeviceProfile, SimulatedDevice

log = structlog.get_logger(__name__)

DEVICE_TYPES = ("rpi4", "rpi4", "rpi5", "jetson-nano", "x86-gateway")
ENVS = ("production", "production", "production", "staging", "dev")
REGIONS = {"eu-west": "Europe/Dublin", "eu-central": "Europe/Berlin",
           "us-east": "America/New_York", "us-west": "America/Los_Angeles",
           "ap-south": "Asia/Kolkata"}


@dataclass(frozen=True)
class SimulatorConfig:
    broker: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    devices: int = 100
    seed: int = 0
    speed: float = 1.0
    """Divides every duration: 10 makes an 8 s update take 0.8 s (scheduled times excepted)."""
    fail_rate: float = 0.0
    rollback_fail_rate: float = 0.0
    hang_rate: float = 0.0
    unhealthy_rate: float = 0.0
    offline_rate: float = 0.0
    legacy_rate: float = 0.0
    duplicate_rate: float = 0.0
    garbage_rate: float = 0.0
    sha256_mismatch_rate: float = 0.0
    no_restart_rate: float = 0.0
    offline_duration: float = 60.0
    update_duration: float = 8.0
    component_versions: Mapping[str, str] = field(
        default_factory=lambda: {"agent": "1.0.5", "nodered": "3.1.0"})
    artifact_hashes: Mapping[str, str] = field(default_factory=dict)
    devices_per_connection: int = 200
    topic_prefix: str = "iot/device"
    device_ids: Sequence[str] | None = None
    """Explicit uuids (otherwise derived from the seed)."""
    client_id_prefix: str = "fleetwave-sim"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    trust_keys: tuple[str, ...] = ()
    """Base64 Ed25519 public keys whose signatures the devices accept (`keys public`);
    at least one: a device acts on no command it cannot verify."""
    require_digest: bool = False
    """Docker devices refuse an update without `artifact.digest` (set for fleets updated
    from registry pushes: devices pull by digest, never by a mutable tag)."""


def build_profiles(config: SimulatorConfig) -> list[DeviceProfile]:
    """The fleet's devices, a pure function of the config (same seed, same fleet)."""
    rng = random.Random(config.seed)
    ids = list(config.device_ids) if config.device_ids is not None else [
        str(uuidlib.UUID(int=rng.getrandbits(128), version=4)) for _ in range(config.devices)]
    profiles = []
    regions = sorted(REGIONS)
    for index, device in enumerate(ids):
        region = rng.choice(regions)
        deployment = "docker" if rng.random() < 0.7 else "systemd"
        profiles.append(DeviceProfile(
            uuid=device,
            labels={"device_type": rng.choice(DEVICE_TYPES), "env": rng.choice(ENVS),
                    "region": region, "site": f"{region}-site-{rng.randrange(40):02d}",
                    "timezone": REGIONS[region]},
            versions=dict(config.component_versions),
            deployment_type=deployment,
            ip=f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}",
            legacy=rng.random() < config.legacy_rate))
    return profiles


class _Group:
    """One MQTT connection carrying several devices."""

    def __init__(self, fleet: SimulatedFleet, index: int, profiles: list[DeviceProfile],
                 behaviour: Behaviour) -> None:
        self.fleet = fleet
        cfg = fleet.config
        devices = [SimulatedDevice(p, behaviour, fleet.topics, self.publish,
                                   random.Random(f"{cfg.seed}:{p.uuid}")) for p in profiles]
        self.devices = {d.uuid: d for d in devices}
        address = parse_broker_url(cfg.broker)
        will_topic = None
        will_payload = b""
        if len(devices) == 1:
            will_topic = fleet.topics.online(devices[0].uuid)
            will_payload = reports.encode(reports.online_body(False))
        self.conn = PahoConnection(
            ConnectionOptions(
                host=address.host, port=address.port,
                client_id=f"{cfg.client_id_prefix}-{cfg.seed}-{index}",
                username=cfg.username if cfg.username is not None else address.username,
                password=cfg.password if cfg.password is not None else address.password,
                tls=address.tls, ca_file=cfg.ca_file, cert_file=cfg.cert_file,
                key_file=cfg.key_file, clean_start=True, session_expiry=0, keepalive=30,
                reconnect_min=0.2, reconnect_max=10.0, will_topic=will_topic,
                will_payload=will_payload),
            on_message=self._on_message, on_connect=self._on_connect,
            on_connected_change=self._on_connected_change,
            rng=random.Random(f"{cfg.seed}:{index}"))
        for device in devices:
            device.resubscribe = self._resubscribe

    async def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        await self.conn.publish(topic, payload, retain=retain)
        self.fleet.published += 1

    def _on_connect(self, client: paho.Client, session_present: bool) -> list[int]:
        topics = self.fleet.topics
        opts = SubscribeOptions(qos=1)
        ids = list(self.devices)
        mids = []
        for start in range(0, len(ids), 100):
            _, mid = client.subscribe([(topics.update(d), opts) for d in ids[start:start + 100]])
            if mid is not None:
                mids.append(mid)
        return mids

    def _on_connected_change(self, connected: bool) -> None:
        if connected:
            for device in self.devices.values():
                device.spawn(device.announce())

    def _resubscribe(self, device: str) -> None:
        topic = self.fleet.topics.update(device)
        self.conn.client.unsubscribe(topic)
        self.conn.client.subscribe(topic, options=SubscribeOptions(qos=1))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # network thread: one hop per command (commands are rare next to status)
        loop = self.fleet.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, msg.topic, bytes(msg.payload))

    def _dispatch(self, topic: str, payload: bytes) -> None:
        parsed = self.fleet.topics.parse(topic)
        if parsed is None or parsed[0] is not TopicKind.UPDATE:
            return
        device = self.devices.get(parsed[1])
        if device is None or not payload:  # empty: the controller cleared the command
            return
        self.fleet.commands_received += 1
        device.on_payload(payload, self.fleet.trusted)


class SimulatedFleet:
    """`async with SimulatedFleet(config) as fleet:` connects every device, publishes their
    retained state and online flags, and answers commands until the block ends."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.topics = Topics(config.topic_prefix)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.published = 0
        self.commands_received = 0
        self.trusted = TrustedKeys.from_base64(config.trust_keys)
        behaviour = Behaviour(
            speed=config.speed, fail_rate=config.fail_rate,
            rollback_fail_rate=config.rollback_fail_rate, hang_rate=config.hang_rate,
            unhealthy_rate=config.unhealthy_rate, offline_rate=config.offline_rate,
            duplicate_rate=config.duplicate_rate, garbage_rate=config.garbage_rate,
            sha256_mismatch_rate=config.sha256_mismatch_rate,
            offline_duration=config.offline_duration, update_duration=config.update_duration,
            artifact_hashes=dict(config.artifact_hashes), require_digest=config.require_digest,
            no_restart_rate=config.no_restart_rate)
        self.devices: dict[str, SimulatedDevice] = {}
        self._groups: list[_Group] = []
        per = max(1, config.devices_per_connection)
        profiles = build_profiles(config)
        for index in range(0, len(profiles), per):
            group = _Group(self, index // per, profiles[index:index + per], behaviour)
            self.devices.update(group.devices)
            self._groups.append(group)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for group in self._groups:
            await group.conn.start()

    async def wait_ready(self) -> None:
        """Until every connection is up and has announced its devices (bound it with
        `asyncio.timeout`)."""
        for group in self._groups:
            await group.conn.wait_connected()
        await self.flush()

    async def flush(self) -> None:
        """Until the broker acknowledged everything the devices published so far."""
        await asyncio.sleep(0)
        for group in self._groups:
            await group.conn.flush()

    async def stop(self) -> None:
        """Mark every device offline (as their wills would), then disconnect."""
        for device in self.devices.values():
            await device.close()
        for device in self.devices.values():
            if device.online:
                device.online = False
                await device.publish_offline()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.flush()
        for group in self._groups:
            await group.conn.stop(flush_timeout=1.0)

    # --- accessors ---

    @property
    def connections(self) -> int:
        return len(self._groups)

    def versions(self, component: str = "agent") -> dict[str, str | None]:
        """Device uuid -> the version of `component` it runs now."""
        return {u: d.versions.get(component) for u, d in self.devices.items()}

    def counts(self, component: str = "agent") -> dict[str | None, int]:
        """Version -> number of devices running it."""
        return dict(collections.Counter(d.versions.get(component)
                                        for d in self.devices.values()))

    def refusals(self) -> dict[str, int]:
        """Refused commands by reason (`rejected`, `downgrade`), over every device."""
        total: collections.Counter[str] = collections.Counter()
        for device in self.devices.values():
            total.update(device.refusals)
        return dict(total)

    def online_count(self) -> int:
        return sum(1 for d in self.devices.values() if d.online)

    def take_offline(self, device: str, duration: float | None = None) -> None:
        """The device goes silent (retained online=false); back after `duration` seconds if
        given, else when `bring_online` is called."""
        self.devices[device].go_offline(duration)

    async def bring_online(self, device: str) -> None:
        await self.devices[device].go_online()


async def run_fleet(config: SimulatorConfig, stop: asyncio.Event,
                    report_every: float = 10.0) -> None:
    """The `fleetwave simulate` main loop: run until `stop` is set, logging counts."""
    started = time.monotonic()
    async with SimulatedFleet(config) as fleet:
        log.info("simulator.started", devices=len(fleet.devices), connections=fleet.connections,
                 broker=config.broker)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), report_every)
            log.info("simulator.fleet", online=fleet.online_count(),
                     versions=fleet.counts(), commands=fleet.commands_received,
                     refused=fleet.refusals(),
                     published=fleet.published, uptime=round(time.monotonic() - started))
