"""One simulated device: its reported state and how it answers commands.

It behaves like the agent of seeds 000/001 as the controller sees it: retained state on
connect and after every change, the whole status sequence for an update, idempotent handling
of redelivered commands (QoS 1 and retained commands arrive again), and, by configured rates,
the ways real devices misbehave. Decisions are drawn from a per-device random generator seeded
from the fleet seed and the uuid, so a run repeats.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from fleetwave.protocol import reports
from fleetwave.protocol.admission import Accepted, Executed, Refused, Repeated, admit
from fleetwave.protocol.messages import Command
from fleetwave.protocol.signing import TrustedKeys
from fleetwave.protocol.topics import Topics

log = structlog.get_logger(__name__)

Publish = Callable[[str, bytes, bool], Awaitable[None]]
"""(topic, payload, retain) -> queued for the broker, QoS 1."""


@dataclass(frozen=True)
class Behaviour:
    """Failure injection and pacing shared by every device of a fleet (rates are 0-1)."""

    speed: float = 1.0
    fail_rate: float = 0.0
    rollback_fail_rate: float = 0.0
    """Rollbacks fail separately: injected update failures should not also strand the
    devices that the controller puts back."""
    hang_rate: float = 0.0
    unhealthy_rate: float = 0.0
    offline_rate: float = 0.0
    duplicate_rate: float = 0.0
    garbage_rate: float = 0.0
    sha256_mismatch_rate: float = 0.0
    offline_duration: float = 60.0
    """Seconds (before `speed`) an injected outage lasts."""
    update_duration: float = 8.0
    """Seconds (before `speed`) from `update_started` to the final status."""
    artifact_hashes: dict[str, str] = field(default_factory=dict)
    """Artifact URL -> the sha256 its download really has; a command naming another fails."""
    require_digest: bool = False
    """Docker devices refuse an update that names no image digest."""
    no_restart_rate: float = 0.0
    """Share of `confirm_after_restart` updates reported succeeded without the restart (a
    device that ignores the flag): what the controller must not count as success."""


@dataclass
class DeviceProfile:
    uuid: str
    labels: dict[str, str]
    versions: dict[str, str]
    deployment_type: str
    ip: str
    legacy: bool = False
    """Built for the older protocol: its statuses carry no correlation_id."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class SimulatedDevice:
    def __init__(self, profile: DeviceProfile, behaviour: Behaviour, topics: Topics,
                 publish: Publish, rng: random.Random) -> None:
        self.profile = profile
        self.uuid = profile.uuid
        self.versions = dict(profile.versions)
        self.behaviour = behaviour
        self.topics = topics
        self._publish = publish
        self.rng = rng
        self.online = True
        self.crash_looping: set[str] = set()
        self.finished: dict[str, dict[str, Any]] = {}
        """correlation_id -> the final status sent for it (repeated when asked again)."""
        self.statuses: list[tuple[str, str | None]] = []
        """(type, correlation_id) of every status sent, for tests."""
        self.commands_seen = 0
        self.executed: dict[str, Executed] = {}
        """component -> the newest attempt started: what `admit` refuses replays against.
        Kept in memory: a simulated device forgets it when the simulator restarts."""
        self.refusals: collections.Counter[str] = collections.Counter()
        """Refused commands by reason."""
        self._task: asyncio.Task[None] | None = None
        self._task_cid: str | None = None
        self._offline_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self.resubscribe: Callable[[str], None] | None = None
        """Set by the fleet: ask the broker for this device's retained command again."""
        self.boots = 0
        """Simulated reboots so far: each gives the device a new `boot_id`."""

    @property
    def boot_id(self) -> str:
        return boot_id_of(self.uuid, self.boots)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run `coro` in the background, holding a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- reports ---

    def state_body(self) -> dict[str, Any]:
        containers = []
        if self.profile.deployment_type == "docker":
            containers = [{"name": name, "image": f"acme/{name}:{version}",
                           "running": name not in self.crash_looping}
                          for name, version in sorted(self.versions.items())]
        return reports.state_body(self.uuid, self.versions, _now_ms(), labels=self.profile.labels,
                                  deployment_type=self.profile.deployment_type,
                                  ip=self.profile.ip, containers=containers,
                                  boot_id=None if self.profile.legacy else self.boot_id)

    async def announce(self) -> None:
        """What a device does on (re)connect: retained state, then online."""
        if not self.online:
            return
        await self.publish_state()
        await self._publish(self.topics.online(self.uuid),
                            reports.encode(reports.online_body(True, _now_ms())), True)

    async def publish_state(self) -> None:
        await self._publish(self.topics.state(self.uuid), reports.encode(self.state_body()),
                            True)

    async def _status(self, type_: str, cid: str | None, **fields: Any) -> dict[str, Any]:
        body = reports.status_body(type_, None if self.profile.legacy else cid, _now_ms(),
                                   **fields)
        await self._send_status(body)
        self.statuses.append((type_, cid))
        return body

    async def _send_status(self, body: dict[str, Any]) -> None:
        payload = reports.encode(body)
        topic = self.topics.status(self.uuid)
        if self.rng.random() < self.behaviour.garbage_rate:
            await self._garbage()
        await self._publish(topic, payload, False)
        if self.rng.random() < self.behaviour.duplicate_rate:
            # sent again a little later: a duplicate that also arrives out of order
            delay = self.rng.uniform(0.2, 1.0) * self._step()
            asyncio.get_running_loop().call_later(
                delay, lambda: self.spawn(self._publish(topic, payload, False)))

    async def _garbage(self) -> None:
        kinds = [
            (self.topics.status(self.uuid), b"\xff\xfe not json {"),
            (self.topics.status(self.uuid), b'{"type": "update_exploded"}'),
            (self.topics.status(self.uuid), b'{"type": "update_progress", "percent": "lots"}'),
            (self.topics.state(self.uuid), b'{"uuid": "someone-else", "versions": {}}'),
            (self.topics.status(self.uuid), b'{"pad": "' + b"x" * 20000 + b'"}'),
        ]
        topic, payload = kinds[self.rng.randrange(len(kinds))]
        await self._publish(topic, payload, False)

    def _step(self) -> float:
        return self.behaviour.update_duration / 4 / max(self.behaviour.speed, 1e-6)

    # --- commands ---

    def on_payload(self, payload: bytes, trusted: TrustedKeys) -> None:
        """Every payload on this device's `update` topic: verified by `admit` (signature,
        device, expiry, release, downgrade) before anything changes; a refusal is reported
        as `update_failed` with its reason and cause, and changes nothing else."""
        if not self.online:
            return
        verdict = admit(payload, device=self.uuid, trusted=trusted, now=time.time(),
                        executed=self.executed, running=self.versions)
        if isinstance(verdict, Accepted):
            cause = self._unfit(verdict.command)
            if cause is None:
                self.executed[verdict.command.component] = verdict.executed
                self.on_command(verdict.command)
                return
            verdict = Refused("rejected", cause, verdict.command.correlation_id,
                              verdict.command.component)
        if isinstance(verdict, Repeated):
            self.on_command(verdict.command)
            return
        self.refusals[verdict.reason] += 1
        log.warning("simulator.command.refused", device=self.uuid, reason=verdict.reason,
                    cause=verdict.cause, correlation_id=verdict.correlation_id)
        self.spawn(self._send_status(reports.refusal_body(verdict, _now_ms())))

    def _unfit(self, command: Command) -> str | None:
        """What this device's own handler refuses (after `admit`): a docker update by tag."""
        if (self.behaviour.require_digest and command.action == "update"
                and self.profile.deployment_type == "docker" and not command.artifact_digest):
            return "docker update without artifact.digest: this device pulls by digest only"
        return None

    def on_command(self, command: Command) -> None:
        """Called on the event loop for every admitted command (live or retained)."""
        if not self.online:
            return
        self.commands_seen += 1
        cid = command.correlation_id
        if cid and cid in self.finished:
            self.spawn(self._send_status(dict(self.finished[cid])))
            return
        if command.action == "cancel":
            self.spawn(self._cancel(cid))
            return
        if self._task is not None and not self._task.done():
            if self._task_cid == cid:
                return  # the same command again (QoS 1 redelivery): already on it
            self._task.cancel()  # a new command supersedes the running one
        self._task_cid = cid
        self._task = asyncio.ensure_future(self._run_update(command))

    async def _cancel(self, cid: str) -> None:
        if self._task is not None and not self._task.done() and \
                (not cid or self._task_cid == cid):
            self._task.cancel()
            cid = cid or self._task_cid or ""
        body = await self._status("update_cancelled", cid)
        if cid:
            self.finished[cid] = body

    async def _run_update(self, command: Command) -> None:
        try:
            await self._update(command)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator.device.error", device=self.uuid)

    async def _finish(self, cid: str, type_: str, **fields: Any) -> None:
        body = await self._status(type_, cid, **fields)
        if cid:
            self.finished[cid] = body

    async def _update(self, command: Command) -> None:
        b = self.behaviour
        cid = command.correlation_id
        rollback = command.action == "rollback"
        ok_type, fail_type = (("rollback_succeeded", "rollback_failed") if rollback
                              else ("update_succeeded", "update_failed"))
        component = command.component
        current = self.versions.get(component)
        # one draw per decision, in a fixed order, so a seed replays the same run
        fails = self.rng.random() < (b.rollback_fail_rate if rollback else b.fail_rate)
        hangs = self.rng.random() < b.hang_rate and not rollback
        unhealthy = self.rng.random() < b.unhealthy_rate and not rollback
        goes_offline = self.rng.random() < b.offline_rate and not rollback
        sha_mismatch = self.rng.random() < b.sha256_mismatch_rate

        boot = None if self.profile.legacy else self.boot_id  # what a restart changes
        await self._status("update_command_received", cid, version=command.version,
                           boot_id=boot)
        if current == command.version and not command.force and not rollback:
            await self._finish(cid, ok_type, version=current, reason="already_at_version")
            return
        when = _parse_time(command.scheduled_time)
        if when is not None and when > time.time():
            await self._status("update_scheduled", cid, version=command.version,
                               scheduled_time=command.scheduled_time, boot_id=boot)
            await asyncio.sleep(when - time.time())
        if command.artifact_sha256 is not None:
            expected = b.artifact_hashes.get(command.artifact_url or "")
            if sha_mismatch or (expected is not None and expected != command.artifact_sha256):
                await self._finish(cid, fail_type, reason="checksum_mismatch",
                                   error="artifact sha256 does not match", exit_code=2)
                return
        await asyncio.sleep(self._step() * self.rng.uniform(0.2, 0.6))
        await self._status("update_started", cid, current_version=current,
                           target_version=command.version,
                           deployment_type=self.profile.deployment_type, boot_id=boot)
        if goes_offline:
            self.go_offline(b.offline_duration / max(b.speed, 1e-6))
            return
        for percent in (25, 50, 75, 100):
            await asyncio.sleep(self._step() * self.rng.uniform(0.5, 1.5))
            await self._status("update_progress", cid, percent=percent)
            if hangs and percent == 50:
                await asyncio.Event().wait()  # never finishes (until cancelled)
        if fails:
            await self._finish(cid, fail_type, reason="script_execution_failed",
                               error="update script exited with status 1", exit_code=1)
            await self.publish_state()
            return
        self.versions[component] = command.version
        if unhealthy:
            self.crash_looping.add(component)
        else:
            self.crash_looping.discard(component)
        # Drawn only for such commands, so seeded runs without them repeat as before.
        if command.confirm_after_restart and not rollback \
                and self.rng.random() >= b.no_restart_rate:
            await self.reboot()
        await self._finish(cid, ok_type, version=command.version)
        await self.publish_state()

    async def reboot(self) -> None:
        """A simulated restart onto the installed version: a new boot id, and the retained
        state a booting device publishes (before it reports the update's success)."""
        self.boots += 1
        await self.publish_state()

    # --- connectivity ---

    def go_offline(self, duration: float | None = None) -> None:
        """Stop answering and mark the device offline (retained online=false, as its last
        will would); with a duration, come back afterwards like a rebooted device."""
        if not self.online:
            return
        self.online = False
        if self._task is not None and not self._task.done() and \
                self._task is not asyncio.current_task():
            self._task.cancel()
        self.spawn(self.publish_offline())
        if duration is not None:
            self._offline_task = asyncio.ensure_future(self._come_back(duration))

    async def publish_offline(self) -> None:
        """Retained online=false, what the device's last will would publish."""
        await self._publish(self.topics.online(self.uuid),
                            reports.encode(reports.online_body(False, _now_ms())), True)

    async def _come_back(self, after: float) -> None:
        await asyncio.sleep(after)
        await self.go_online()

    async def go_online(self) -> None:
        """Back from an outage: announce, then read the retained command again (a rebooted
        device finishes or repeats what it was asked)."""
        if self.online:
            return
        self.online = True
        if self._offline_task is not None and self._offline_task is not asyncio.current_task():
            self._offline_task.cancel()
        await self.announce()
        if self.resubscribe is not None:
            self.resubscribe(self.uuid)

    async def close(self) -> None:
        for task in (self._task, self._offline_task, *self._background):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def boot_id_of(uuid: str, boots: int) -> str:
    """A simulated device's boot id after `boots` reboots: derived, so a seeded run repeats."""
    digest = hashlib.sha256(f"{uuid}/boot/{boots}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def artifact_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
