"""One controller process: store, MQTT link, source, engine and HTTP API, wired once.

`fleetwave run` and `fleetwave demo` call `run_controller`; the operator wires
the same engine with a Kubernetes source instead of a folder or git one.
Shutdown on SIGTERM/SIGINT is orderly: stop taking work, finish the pass in
hand, keep the persistent MQTT session, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from fleetwave.api.auth import TokenSet
from fleetwave.api.notify import Notifier
from fleetwave.api.server import build_app, serve
from fleetwave.api.webhooks import WebhookSecrets
from fleetwave.dashboard.live import LiveFeed
from fleetwave.metrics import Metrics, build_metrics
from fleetwave.mqtt.link import MqttLink, NotStored
from fleetwave.mqtt.settings import MqttSettings
from fleetwave.protocol.messages import DeviceMessage
from fleetwave.protocol.new_devices import NewDeviceGate
from fleetwave.protocol.signing import SigningKey
from fleetwave.resources.model import Rollout, RolloutPolicy
from fleetwave.runtime.checks import AddressPolicy, CheckRunner
from fleetwave.runtime.engine import Engine, EngineHooks, Observed
from fleetwave.runtime.keys import controller_key
from fleetwave.runtime.leadership import Elector, LeaderOnlyPublisher, keep_up, lead_while_elected
from fleetwave.runtime.settings import Settings
from fleetwave.sources.base import Source, SourceSnapshot
from fleetwave.sources.credentials import redact_url
from fleetwave.sources.folder import FolderSource
from fleetwave.sources.policies import PolicyRollouts
from fleetwave.sources.registry import RegistryPushHandler
from fleetwave.sources.reverts import previous_version, propose_revert
from fleetwave.store import Store, StoreError, open_store
from fleetwave.store.errors import StoreFull
from fleetwave.updates.model import UpdateRecord

if TYPE_CHECKING:
    from fleetwave.sources.git import GitCommitter

log = structlog.get_logger("fleetwave.controller")


def mqtt_settings(settings: Settings) -> MqttSettings:
    return MqttSettings(
        url=settings.broker, username=settings.broker_username,
        password=settings.broker_password, client_id=settings.broker_client_id,
        topic_prefix=settings.topic_prefix, shared_group=settings.shared_group,
        ca_file=settings.broker_ca_file,
    )


def build_source(settings: Settings, metrics: Metrics) -> Source:
    if settings.source_is_git:
        # pygit2 (~11 MiB resident) only in a process that has a git source
        from fleetwave.sources.git import GitCredentials, GitSource

        credentials = GitCredentials(token_file=settings.git_token_file,
                                     ssh_key_file=settings.git_ssh_key_file,
                                     known_hosts_file=settings.git_known_hosts_file)
        return GitSource(settings.source, branch=settings.branch, path=settings.path,
                         poll_interval=settings.poll_interval,
                         workdir=str(Path(settings.workdir) / "git"),
                         credentials=credentials, metrics=metrics)
    return FolderSource(settings.source, poll_interval=min(settings.poll_interval, 2.0),
                        metrics=metrics)


@dataclass
class ControllerCore:
    """The parts every controller process has, whatever its source of desired state:
    metrics, store, MQTT link, engine, API tokens and notifier. `run` and `operator`
    both build it with `controller_core`, so they cannot drift apart."""

    settings: Settings
    metrics: Metrics
    store: Store
    link: MqttLink
    engine: Engine
    tokens: TokenSet
    notifier: Notifier | None
    live: LiveFeed
    """The dashboard's stream of the engine's events and status changes."""
    read_tokens: TokenSet = field(default_factory=TokenSet.disabled)
    elector: Elector | None = None
    """Set with replicas on one PostgreSQL (`--leader-election`): only the leader plans."""
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set with `fatal`: an error no retry mends (a full disk); the process stops with it."""
    fatal: StoreError | None = None

    def readiness(self) -> dict[str, str]:
        """Why the broker or the store is unreachable, in the operator's words."""
        checks: dict[str, str] = {}
        if not self.link.connected and self.link.last_error:
            checks["broker"] = f"unreachable: {redact_url(self.settings.broker)}: " \
                               f"{self.link.last_error}"
        if self.store.unreachable:
            checks["store"] = f"unreachable: {self.store.unreachable}"
        return checks


@contextlib.asynccontextmanager
async def controller_core(settings: Settings, hooks: EngineHooks | None = None, *,
                          metrics: Metrics | None = None, replica: bool = False
                          ) -> AsyncIterator[ControllerCore]:
    """Open the store (migrating it), connect the link; close both in reverse order.
    `replica`: a `fleetwave run` that elects its leader through the store when
    `--leader-election` says so (the operator elects through its Kubernetes Lease)."""
    metrics = metrics or build_metrics()
    tokens = TokenSet.from_file(settings.token_file) if settings.token_file else TokenSet.disabled()
    read_tokens = (TokenSet.from_file(settings.read_token_file) if settings.read_token_file
                   else TokenSet.disabled())
    store: Store = open_store(settings.store)
    try:
        def signing_key() -> SigningKey:
            return controller_key(settings.signing_key, sqlite_path=store.path,
                                  postgres=store.backend == "postgresql")

        # A PostgreSQL replica without the shared key is refused before it touches the
        # database; a SQLite key is created beside the file once the store has opened it.
        key = signing_key() if store.path is None else None
        await store.migrate()
        key = key or signing_key()
        log.info("controller.signing_key", keyid=key.public.keyid, public_key=key.public.base64)
        notifier = (Notifier(settings.notify_url, settings.notify_secret,
                             settings.notify_events, metrics) if settings.notify_url else None)
        observed = Observed(store, metrics,
                            new_devices=NewDeviceGate(settings.max_new_devices_per_minute))

        async def on_messages(batch: list[DeviceMessage]) -> None:
            await stored_with_retry(observed.on_device_messages, batch)

        link = MqttLink(mqtt_settings(settings), metrics, on_messages, signing_key=key)
        elector = replica_elector(settings, store, metrics) if replica else None
        publisher = LeaderOnlyPublisher(link, elector) if elector is not None else link
        checks = CheckRunner(
            policy=AddressPolicy.of(settings.health_check_allow, settings.health_check_deny),
            metrics=metrics)
        live = LiveFeed(metrics)

        def on_event(event: Mapping[str, Any]) -> None:
            live.on_event(event)
            if notifier is not None:
                notifier.publish(event)

        engine = Engine(store, publisher, metrics, resync_interval=settings.resync_interval,
                        observed=observed, checks=checks, hooks=replace(
                            hooks or EngineHooks(), broker_connected=lambda: link.connected,
                            on_event=on_event, on_status=live.on_status))
        await link.start()
        try:
            core = ControllerCore(settings, metrics, store, link, engine, tokens, notifier,
                                  live, read_tokens, elector)

            def stop_on_full(error: StoreFull) -> None:
                core.fatal = core.fatal or error
                core.failed.set()

            store.on_full = stop_on_full
            yield core
        finally:
            await link.stop()  # the persistent session stays on the broker
            try:
                async with asyncio.timeout(10):
                    await observed.ingest.reports.flush()
            except TimeoutError:  # retained on the broker: the next start receives them
                log.warning("ingest.reports_unstored_at_stop",
                            devices=observed.ingest.reports.pending)
            if notifier is not None:
                await notifier.close()
    finally:
        await store.close()


async def stored_with_retry(deliver: Callable[[list[DeviceMessage]], Awaitable[None]],
                            batch: list[DeviceMessage]) -> None:
    """Hand a batch to the store, retrying while the database is unreachable (a PostgreSQL
    restart): ingest pauses, the broker keeps the rest, nothing is dropped."""
    delay = 0.5
    while True:
        try:
            await deliver(batch)
            return
        except StoreFull:
            # the process stops with this one error (`ControllerCore.fatal`); the batch
            # stays unacknowledged on the broker for the next start
            raise NotStored from None
        except StoreError as exc:
            if not exc.retry:
                raise
            log.warning("ingest.store_unavailable", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def replica_elector(settings: Settings, store: Store, metrics: Metrics) -> Elector | None:
    """The elector of a `fleetwave run` replica, when leader election is on."""
    if not settings.elects_leader:
        return None
    address = settings.advertise_url or f"http://{settings.listen}"
    return Elector(store, metrics, ttl=settings.lease_ttl, address=address)


def engine_tasks(core: ControllerCore, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The engine's loop: always, or with replicas only while leading (DESIGN.md 9.3)."""
    engine, elector = core.engine, core.elector
    if elector is None:
        return [asyncio.create_task(engine.run(stop), name="engine")]
    return [
        asyncio.create_task(elector.run(stop), name="elector"),
        asyncio.create_task(lead_while_elected(elector, stop, start=engine.start,
                                               run=engine.run), name="engine"),
        asyncio.create_task(keep_up(elector, stop, read_back=engine.read_back,
                                    reload=engine.start, wake=engine.wake), name="keep-up"),
    ]


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


async def run_controller(settings: Settings, *, stop: asyncio.Event | None = None,
                         ready: Callable[[Engine], Awaitable[None]] | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    metrics = build_metrics()
    source = build_source(settings, metrics)
    latest: list[SourceSnapshot] = []
    committer = git_committer(settings)
    hooks = EngineHooks(
        git_sync=_trigger(source),
        registry_handler=lambda engine: registry_handler(
            engine, source, committer, lambda: latest[0] if latest else None),
        on_rolled_back=(revert_proposer(committer, settings.branch)
                        if committer is not None and settings.propose_reverts else None))
    async with controller_core(settings, hooks, metrics=metrics, replica=True) as core:
        engine = core.engine

        async def on_snapshot(snapshot: SourceSnapshot) -> None:
            latest[:] = [snapshot]
            engine.set_source(snapshot.rollouts, snapshot.inventories, snapshot.revision)
            for problem in snapshot.problems:
                log.warning("source.invalid_file", problem=str(problem))
            if snapshot.error:
                log.warning("source.sync_failed", error=snapshot.error)

        await engine.start()
        secrets = WebhookSecrets.of(settings.webhook_secret)
        app = build_app(engine, core.metrics, core.tokens, webhook_secrets=secrets,
                        read_tokens=core.read_tokens, deliveries=core.store.deliveries,
                        live=core.live, leadership=core.elector, checks=core.readiness)
        runner = await serve(app, settings.listen)
        tasks = [
            asyncio.create_task(source.run(on_snapshot, stop), name="source"),
            *engine_tasks(core, stop),
        ]
        log.info("controller.started", listen=settings.listen, source=redact_url(settings.source),
                 store=redact_url(settings.store))
        try:
            if ready is not None:
                await ready(engine)
            done, _ = await asyncio.wait([asyncio.create_task(stop.wait(), name="stop"),
                                          asyncio.create_task(core.failed.wait(), name="stop"),
                                          *tasks],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.get_name() != "stop" and task.exception():
                    log.error("controller.task_failed", task=task.get_name(),
                              error=str(task.exception()))
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
        if core.fatal is not None:
            raise core.fatal
    log.info("controller.stopped")


def git_committer(settings: Settings) -> GitCommitter | None:
    """Writes to the git source (policy rollouts with commitTo, revert proposals)."""
    if not settings.source_is_git:
        return None
    from fleetwave.sources.git import GitCommitter, GitCredentials

    return GitCommitter(
        settings.source, branch=settings.branch,
        workdir=str(Path(settings.workdir) / "git-commit"),
        credentials=GitCredentials(token_file=settings.git_token_file,
                                   ssh_key_file=settings.git_ssh_key_file,
                                   known_hosts_file=settings.git_known_hosts_file))


def revert_proposer(committer: GitCommitter, base_branch: str
                    ) -> Callable[[Rollout, list[UpdateRecord]], Awaitable[None]]:
    async def propose(rollout: Rollout, records: list[UpdateRecord]) -> None:
        version = previous_version(records)
        if version is not None:
            await propose_revert(committer, rollout, version, base_branch=base_branch)
    return propose


def registry_handler(engine: Engine, source: Source, committer: GitCommitter | None,
                     snapshot: Callable[[], SourceSnapshot | None]) -> RegistryPushHandler:
    """RolloutPolicies from the source turn registry pushes into Rollouts: committed to git
    when the policy says `commitTo` (and the source is git), else kept by the engine."""

    def policies() -> dict[str, RolloutPolicy]:
        current = snapshot()
        return dict(current.policies) if current is not None else {}

    return RegistryPushHandler(
        policies=policies, versions=engine.desired_versions,
        rollouts=engine.known_rollouts,
        registry=PolicyRollouts(), on_rollout=engine.add_policy_rollout,
        committer=committer, source=source)


def _trigger(source: Source) -> Callable[[], Awaitable[None]]:
    async def trigger() -> None:
        source.trigger()
    return trigger
