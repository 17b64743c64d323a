"""The simulated fleet speaks the protocol end to end with the controller's link."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import pytest

from fleetwave.metrics import Metrics
from fleetwave.mqtt import MqttLink
from fleetwave.protocol.admission import format_time
from fleetwave.protocol.messages import Command, Online, ReportedState, Status, StatusType
from fleetwave.protocol.signing import SigningKey
from fleetwave.simulator import SimulatedFleet, SimulatorConfig, build_profiles
from fleetwave.updates.model import next_release
from tests.mqtt.conftest import LINK_KEY, Collector, settings_for
from tests.support.broker import RunningBroker
from tests.support.commands import BrokerClient, forge

FULL = ["update_command_received", "update_started", "update_progress", "update_progress",
        "update_progress", "update_progress", "update_succeeded"]


def fleet_config(broker: RunningBroker, **kw: object) -> SimulatorConfig:
    user, password = broker.simulator
    base = SimulatorConfig(broker=broker.url, username=user, password=password, devices=5,
                           seed=7, speed=200.0, devices_per_connection=2,
                           trust_keys=(LINK_KEY.public.base64,))
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def command(cid: str, version: str = "1.0.6", **kw: object) -> Command:
    fields: dict[str, object] = {"action": "update", "component": "agent", "version": version,
                                 "correlation_id": cid, "timestamp": 1}
    fields.update(kw)
    return Command(**fields)  # type: ignore[arg-type]


_RELEASES: dict[str, int] = {}


async def send(link: MqttLink, device: str, cid: str, version: str = "1.0.6",
               **kw: object) -> None:
    """Publish as the controller does: for `device`, one release per attempt (per cid),
    expiring in five minutes, signed by the link."""
    release = _RELEASES.setdefault(
        cid, next_release(time.time(), max(_RELEASES.values(), default=None)))
    await link.publish_command(device, command(cid, version, device=device, release=release,
                                               expires_at=format_time(time.time() + 300), **kw))


def sequence(collector: Collector, device: str, cid: str | None) -> list[str]:
    return [m.type.value for m in collector.messages
            if isinstance(m, Status) and m.device == device and m.correlation_id == cid]


def finals(collector: Collector, cid: str) -> list[Status]:
    return [m for m in collector.messages if isinstance(m, Status) and m.correlation_id == cid
            and m.type in (StatusType.SUCCEEDED, StatusType.FAILED, StatusType.CANCELLED,
                           StatusType.ROLLBACK_SUCCEEDED, StatusType.ROLLBACK_FAILED)]


@pytest.fixture
async def running(broker: RunningBroker, metrics: Metrics,
                  request: pytest.FixtureRequest) -> AsyncIterator[tuple[MqttLink, Collector,
                                                                         SimulatedFleet]]:
    overrides = getattr(request, "param", {})
    collector = Collector()
    async with MqttLink(settings_for(broker), metrics, collector,
                        signing_key=LINK_KEY) as link:
        async with asyncio.timeout(5):
            await link.wait_connected()
        async with SimulatedFleet(fleet_config(broker, **overrides)) as fleet:
            async with asyncio.timeout(10):
                await fleet.wait_ready()
            yield link, collector, fleet


def test_profiles_repeat_with_the_seed() -> None:
    a = build_profiles(SimulatorConfig(devices=50, seed=3))
    b = build_profiles(SimulatorConfig(devices=50, seed=3))
    c = build_profiles(SimulatorConfig(devices=50, seed=4))
    assert a == b
    assert [p.uuid for p in a] != [p.uuid for p in c]
    assert {"device_type", "env", "region", "site", "timezone"} <= set(a[0].labels)


async def test_command_round_trip(running: tuple[MqttLink, Collector, SimulatedFleet]) -> None:
    link, collector, fleet = running
    device = next(iter(fleet.devices))
    # on connect: retained state and online
    await collector.wait_for(lambda m: any(isinstance(x, ReportedState) and x.device == device
                                           for x in m)
                             and any(isinstance(x, Online) and x.online for x in m))
    await send(link, device, "rt-1")
    await collector.wait_for(lambda m: "update_succeeded" in sequence(collector, device, "rt-1"))
    assert sequence(collector, device, "rt-1") == FULL
    started = next(m for m in collector.messages if isinstance(m, Status)
                   and m.type is StatusType.STARTED and m.correlation_id == "rt-1")
    assert (started.current_version, started.target_version) == ("1.0.5", "1.0.6")
    await collector.wait_for(lambda m: any(isinstance(x, ReportedState) and x.device == device
                                           and x.versions.get("agent") == "1.0.6" for x in m))
    assert fleet.versions()[device] == "1.0.6"
    assert fleet.counts() == {"1.0.5": 4, "1.0.6": 1}

    # the same command again (a redelivered retained command): the final status repeats
    before = len(finals(collector, "rt-1"))
    await send(link, device, "rt-1")
    await collector.wait_for(lambda m: len(finals(collector, "rt-1")) == before + 1)
    assert sequence(collector, device, "rt-1").count("update_started") == 1

    # already at the version: acknowledged and succeeded, nothing installed
    await send(link, device, "rt-2")
    await collector.wait_for(lambda m: "update_succeeded" in sequence(collector, device, "rt-2"))
    assert sequence(collector, device, "rt-2") == ["update_command_received",
                                                   "update_succeeded"]
    # ... unless forced
    await send(link, device, "rt-3", force=True)
    await collector.wait_for(lambda m: "update_succeeded" in sequence(collector, device, "rt-3"))
    assert sequence(collector, device, "rt-3") == FULL

    # rollback to the old version
    await send(link, device, "rt-4", version="1.0.5", action="rollback")
    await collector.wait_for(lambda m: "rollback_succeeded" in sequence(collector, device,
                                                                         "rt-4"))
    assert fleet.versions()[device] == "1.0.5"
    await link.clear_command(device)


async def test_scheduled_update_and_cancel(
        running: tuple[MqttLink, Collector, SimulatedFleet]) -> None:
    link, collector, fleet = running
    device = list(fleet.devices)[1]
    await send(link, device, "later", scheduled_time="2999-01-01T02:00:00Z")
    await collector.wait_for(lambda m: "update_scheduled" in sequence(collector, device,
                                                                       "later"))
    await send(link, device, "later", action="cancel")
    await collector.wait_for(lambda m: "update_cancelled" in sequence(collector, device,
                                                                       "later"))
    assert "update_started" not in sequence(collector, device, "later")
    assert fleet.versions()[device] == "1.0.5"


@pytest.mark.parametrize("running,expected,reason", [
    pytest.param({"fail_rate": 1.0}, "update_failed", "script_execution_failed", id="fail"),
    pytest.param({"sha256_mismatch_rate": 1.0}, "update_failed", "checksum_mismatch",
                 id="sha256-mismatch"),
], indirect=["running"])
async def test_failure_injection(running: tuple[MqttLink, Collector, SimulatedFleet],
                                 expected: str, reason: str) -> None:
    link, collector, fleet = running
    device = next(iter(fleet.devices))
    await send(link, device, "f-1", artifact_url="https://a/x.tgz",
               artifact_sha256="0" * 64)
    await collector.wait_for(lambda m: expected in sequence(collector, device, "f-1"))
    final = finals(collector, "f-1")[0]
    assert final.reason == reason
    assert fleet.versions()[device] == "1.0.5"


@pytest.mark.parametrize("running", [{"artifact_hashes": {"https://a/x.tgz": "a" * 64}}],
                         indirect=True)
async def test_known_artifact_hash_is_checked(
        running: tuple[MqttLink, Collector, SimulatedFleet]) -> None:
    link, collector, fleet = running
    good, bad = list(fleet.devices)[:2]
    await send(link, good, "ok", artifact_url="https://a/x.tgz",
               artifact_sha256="a" * 64)
    await send(link, bad, "bad", artifact_url="https://a/x.tgz",
               artifact_sha256="b" * 64)
    await collector.wait_for(lambda m: finals(collector, "ok") and finals(collector, "bad"))
    assert finals(collector, "ok")[0].type is StatusType.SUCCEEDED
    assert finals(collector, "bad")[0].reason == "checksum_mismatch"


@pytest.mark.parametrize("running", [{"legacy_rate": 1.0, "unhealthy_rate": 1.0}],
                         indirect=True)
async def test_legacy_devices_send_no_correlation_id(
        running: tuple[MqttLink, Collector, SimulatedFleet]) -> None:
    link, collector, fleet = running
    device = next(iter(fleet.devices))
    await send(link, device, "legacy")
    await collector.wait_for(lambda m: "update_succeeded" in sequence(collector, device, None))
    assert sequence(collector, device, None) == FULL
    # unhealthy after the update: its container crash-loops on the new version
    await collector.wait_for(lambda m: any(
        isinstance(x, ReportedState) and x.device == device and x.versions["agent"] == "1.0.6"
        for x in m))
    state = [x for x in collector.messages if isinstance(x, ReportedState)
             and x.device == device][-1]
    if fleet.devices[device].profile.deployment_type == "docker":
        assert not next(c for c in state.containers if c.name == "agent").running
    assert "agent" in fleet.devices[device].crash_looping


@pytest.mark.parametrize("running", [{"hang_rate": 1.0}], indirect=True)
async def test_hanging_update_never_finishes(
        running: tuple[MqttLink, Collector, SimulatedFleet]) -> None:
    link, collector, fleet = running
    device = next(iter(fleet.devices))
    await send(link, device, "hang")
    await collector.wait_for(lambda m: sequence(collector, device, "hang").count(
        "update_progress") == 2)
    await asyncio.sleep(0.5)  # many times the whole update at this speed
    assert finals(collector, "hang") == []


@pytest.mark.parametrize("running", [{"garbage_rate": 1.0, "duplicate_rate": 1.0}],
                         indirect=True)
async def test_garbage_and_duplicates_are_survived(
        running: tuple[MqttLink, Collector, SimulatedFleet], metrics: Metrics) -> None:
    link, collector, fleet = running
    device = next(iter(fleet.devices))
    await send(link, device, "noisy")
    await collector.wait_for(lambda m: sequence(collector, device, "noisy").count(
        "update_succeeded") == 2)
    assert sorted(sequence(collector, device, "noisy")) == sorted(FULL * 2)
    total = sum(metrics.registry.get_sample_value("fleetwave_mqtt_messages_dropped_total",
                                                  {"reason": r}) or 0
                for r in ("too_large", "invalid_json", "invalid_schema", "uuid_mismatch"))
    assert total >= len(FULL)


async def test_offline_and_back(running: tuple[MqttLink, Collector, SimulatedFleet]) -> None:
    link, collector, fleet = running
    device = next(iter(fleet.devices))
    fleet.take_offline(device)
    await collector.wait_for(lambda m: any(isinstance(x, Online) and x.device == device
                                           and not x.online for x in m))
    await send(link, device, "off")
    await asyncio.sleep(0.3)
    assert sequence(collector, device, "off") == []  # silent while offline
    await fleet.bring_online(device)
    # back: announces itself and picks up the retained command
    await collector.wait_for(lambda m: "update_succeeded" in sequence(collector, device, "off"))
    assert fleet.online_count() == len(fleet.devices)


OTHER_KEY = SigningKey.generate()

ATTACKS = [
    pytest.param(lambda d, r: forge(OTHER_KEY, d, release=r + 1, version="1.0.7"),
                 "rejected", "untrusted key", id="signed-by-another-key"),
    pytest.param(lambda d, r: forge(None, d, release=r + 1, version="1.0.7"),
                 "rejected", "unsigned", id="unsigned"),
    pytest.param(lambda d, r: forge(LINK_KEY, d, release=r + 1, version="1.0.7",
                                    expires_in=-60), "rejected", "expired", id="expired"),
    pytest.param(lambda d, r: forge(LINK_KEY, "another-device", release=r + 1,
                                    version="1.0.7"), "rejected", "for device",
                 id="for-another-device"),
    pytest.param(lambda d, r: forge(LINK_KEY, d, release=r - 1, version="1.0.7"),
                 "rejected", "replayed", id="replayed-older-release"),
    pytest.param(lambda d, r: forge(LINK_KEY, d, release=r + 1, version="1.0.5"),
                 "downgrade", "lower than the running 1.0.6", id="unmarked-downgrade"),
]


@pytest.mark.parametrize(("attack", "reason", "cause"), ATTACKS)
async def test_a_refused_command_is_reported_and_changes_nothing(
        running: tuple[MqttLink, Collector, SimulatedFleet], broker: RunningBroker,
        attack: Callable[[str, int], bytes], reason: str, cause: str) -> None:
    """Published retained on the device's topic by someone holding the controller's broker
    account, after one genuine update: refused, reported with its reason, nothing runs."""
    link, collector, fleet = running
    device = next(iter(fleet.devices))
    await send(link, device, "genuine")
    await collector.wait_for(lambda m: bool(finals(collector, "genuine")))
    release = _RELEASES["genuine"]
    attacker = BrokerClient(broker, broker.controller, "attacker")
    try:
        attacker.publish(fleet.topics.update(device), attack(device, release))
        await collector.wait_for(lambda m: bool(finals(collector, "forged")))
    finally:
        attacker.close()
    [refusal] = finals(collector, "forged")
    assert (refusal.type, refusal.reason) == (StatusType.FAILED, reason)
    assert cause in (refusal.error or "")
    assert fleet.versions()[device] == "1.0.6"
    assert fleet.refusals() == {reason: 1}
    assert sequence(collector, device, "forged") == ["update_failed"]


@pytest.mark.parametrize("running", [{"artifact_hashes": {"https://a/x.tgz": "a" * 64}}],
                         indirect=True)
async def test_a_download_fetches_ahead_and_the_install_then_uses_it(
        running: tuple[MqttLink, Collector, SimulatedFleet]) -> None:
    link, collector, fleet = running
    ahead, bad, plain = list(fleet.devices)[:3]
    artifact = {"artifact_url": "https://a/x.tgz", "artifact_sha256": "a" * 64}
    await send(link, ahead, "dl-1", action="download", **artifact)
    await send(link, bad, "dl-2", action="download", artifact_url="https://a/x.tgz",
               artifact_sha256="b" * 64)
    await collector.wait_for(lambda m: "download_succeeded" in sequence(collector, ahead, "dl-1")
                             and "download_failed" in sequence(collector, bad, "dl-2"))
    assert sequence(collector, ahead, "dl-1") == ["update_command_received",
                                                  "download_succeeded"]
    [failed] = [m for m in collector.messages if isinstance(m, Status)
                and m.correlation_id == "dl-2" and m.type is StatusType.DOWNLOAD_FAILED]
    assert failed.reason == "checksum"
    assert fleet.versions()[ahead] == "1.0.5"  # downloaded, not installed
    assert fleet.devices[ahead].fetches == {"downloaded": 1}
    await send(link, ahead, "in-1", **artifact)  # the install, a new attempt (release)
    await send(link, plain, "in-2", **artifact)
    await collector.wait_for(lambda m: finals(collector, "in-1") and finals(collector, "in-2"))
    assert finals(collector, "in-1")[0].type is StatusType.SUCCEEDED
    assert fleet.devices[ahead].fetches == {"downloaded": 1, "cached": 1}
    assert fleet.devices[plain].fetches == {"fetched": 1}
    assert fleet.fetches() == {"downloaded": 1, "cached": 1, "fetched": 1}
