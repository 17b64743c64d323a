"""`fleetwave simulate`: a fleet of simulated devices for trying fleetwave out and for tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import click

from fleetwave.simulator.fleet import SimulatorConfig, run_fleet


def _rate(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("a rate is between 0 and 1 (e.g. 0.05 for 5 %)")
    return value


def _components(ctx: click.Context, param: click.Parameter,
                value: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value:
        name, sep, version = item.partition("=")
        if not sep or not name or not version:
            raise click.BadParameter(f"expected COMPONENT=VERSION, got {item!r}")
        out[name] = version
    return out or {"agent": "1.0.5", "nodered": "3.1.0"}


def _artifacts(ctx: click.Context, param: click.Parameter,
               value: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value:
        url, sep, sha = item.rpartition("=")
        if not sep or not url or len(sha) != 64:
            raise click.BadParameter(f"expected URL=SHA256, got {item!r}")
        out[url] = sha.lower()
    return out


def _trusted(texts: tuple[str, ...], files: tuple[str, ...]) -> tuple[str, ...]:
    """Every trusted key as base64, checked; devices verify every command against them."""
    from fleetwave.cli.keys import read_public_keys
    from fleetwave.protocol.signing import PublicKey, SignatureError

    keys: list[str] = []
    for text in texts:
        try:
            keys.append(PublicKey.from_base64(text).base64)
        except SignatureError as exc:
            raise click.BadParameter(str(exc), param_hint="--trust-key") from None
    for path in files:
        keys.extend(k.base64 for k in read_public_keys(path))
    if not keys:
        raise click.UsageError("give the controller's public key with --trust-key or "
                               "--trust-key-file (`fleetwave keys public FILE`): simulated "
                               "devices act only on commands they can verify")
    return tuple(keys)


F = TypeVar("F", bound=Callable[..., Any])


def _rate_option(name: str, help: str) -> Callable[[F], F]:
    return click.option(name, type=float, default=0.0, show_default=True, callback=_rate,
                        help=help)


@click.command("simulate")
@click.option("--broker", envvar="FLEETWAVE_BROKER", default="mqtt://127.0.0.1:1883",
              show_default=True, help="mqtt://host:port or mqtts://host:port.")
@click.option("--broker-username", envvar="FLEETWAVE_BROKER_USERNAME",
              help="Account that acts for every simulated device [env FLEETWAVE_BROKER_USERNAME].")
@click.option("--broker-password", envvar="FLEETWAVE_BROKER_PASSWORD",
              help="[env FLEETWAVE_BROKER_PASSWORD]")
@click.option("--devices", type=click.IntRange(1), default=100, show_default=True)
@click.option("--devices-per-connection", type=click.IntRange(1), default=200,
              show_default=True,
              help="Devices sharing one MQTT connection. With 1, each device has its own "
                   "connection and last will; with more, the will cannot name one device, so "
                   "offline devices publish a retained online=false themselves.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Same seed, same devices and same failures.")
@click.option("--speed", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Divides update durations (10 = ten times faster).")
@_rate_option("--fail-rate", help="Share of updates that fail.")
@_rate_option("--rollback-fail-rate", help="Share of rollbacks that fail.")
@_rate_option("--hang-rate", help="Share of updates that never finish.")
@_rate_option("--unhealthy-rate",
              help="Share of updates that succeed, then crash-loop on the new version.")
@_rate_option("--offline-rate", help="Share of updates during which the device "
              "goes offline for --offline-duration.")
@click.option("--offline-duration", type=float, default=60.0, show_default=True,
              help="Seconds (before --speed) an injected outage lasts.")
@_rate_option("--legacy-rate", help="Share of devices on the older protocol (no correlation ids).")
@_rate_option("--duplicate-rate",
              help="Share of status messages sent twice (the copy arrives out of order).")
@_rate_option("--garbage-rate", help="Share of status messages preceded by a malformed message.")
@_rate_option("--sha256-mismatch-rate", help="Share of updates whose artifact fails its checksum.")
@_rate_option("--no-restart-rate", help="Share of confirmAfterRestart updates reported "
              "succeeded without the restart the command asks for.")
@click.option("--component-version", "components", multiple=True, callback=_components,
              metavar="COMPONENT=VERSION",
              help="Starting version of a component (repeatable; default agent=1.0.5 "
                   "nodered=3.1.0).")
@click.option("--artifact", "artifacts", multiple=True, callback=_artifacts,
              metavar="URL=SHA256", help="Known artifact checksum (repeatable).")
@click.option("--topic-prefix", envvar="FLEETWAVE_TOPIC_PREFIX", default="iot/device",
              show_default=True)
@click.option("--trust-key", "trust_keys", multiple=True, metavar="BASE64",
              help="Public key whose signed commands the devices accept (repeatable; "
                   "`fleetwave keys public`).")
@click.option("--trust-key-file", "trust_key_files", multiple=True,
              type=click.Path(dir_okay=False),
              help="File holding `fleetwave keys public` output (repeatable).")
@click.option("--require-digest", is_flag=True, default=False,
              help="Docker devices refuse an update without artifact.digest (fleets "
                   "updated from registry pushes).")
@click.option("--device-id", "device_ids", multiple=True, metavar="UUID",
              help="Use these device ids (repeatable) instead of generated ones, e.g. to "
                   "give test devices names a health-check endpoint knows.")
def simulate(broker: str, broker_username: str | None, broker_password: str | None,
             devices: int, devices_per_connection: int, seed: int, speed: float,
             fail_rate: float, rollback_fail_rate: float, hang_rate: float,
             unhealthy_rate: float, offline_rate: float,
             offline_duration: float, legacy_rate: float, duplicate_rate: float,
             garbage_rate: float, sha256_mismatch_rate: float, no_restart_rate: float,
             components: dict[str, str],
             artifacts: dict[str, str], topic_prefix: str, trust_keys: tuple[str, ...],
             trust_key_files: tuple[str, ...], require_digest: bool,
             device_ids: tuple[str, ...]) -> None:
    """Run a fleet of simulated devices until interrupted.

    Each device publishes its retained state and online flag, and answers update, cancel
    and rollback commands with the whole status sequence. Devices are grouped onto MQTT
    connections (--devices-per-connection, 200 by default: 10,000 devices use 50
    connections); the account given acts for all of them, so the broker's per-device ACL
    applies to real devices, not to the simulator.
    """
    keys = _trusted(trust_keys, trust_key_files)
    config = SimulatorConfig(
        broker=broker, username=broker_username, password=broker_password, devices=devices,
        seed=seed, speed=speed, fail_rate=fail_rate,
        rollback_fail_rate=rollback_fail_rate, hang_rate=hang_rate,
        unhealthy_rate=unhealthy_rate, offline_rate=offline_rate, legacy_rate=legacy_rate,
        duplicate_rate=duplicate_rate, garbage_rate=garbage_rate,
        sha256_mismatch_rate=sha256_mismatch_rate, no_restart_rate=no_restart_rate,
        offline_duration=offline_duration,
        component_versions=components, artifact_hashes=artifacts,
        devices_per_connection=devices_per_connection, topic_prefix=topic_prefix,
        device_ids=list(device_ids) or None, trust_keys=keys, require_digest=require_digest)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_fleet(config, stop)

    asyncio.run(main())
