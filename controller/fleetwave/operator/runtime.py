"""One operator replica: kopf, the Lease, status and Events around the shared engine.

`fleetwave operator` is `fleetwave run` with a different home for desired
state: the same engine, store, MQTT link and HTTP API, but Rollouts come from
custom resources and status goes back to them. `OperatorRuntime` is the part
that differs; it takes any engine with the `PlanningEngine` shape so that the
tests can drive the real kopf handlers against an emulated API server.

Every replica runs kopf (read-only, see `handlers.py`) and serves the API;
only the Lease holder runs the engine loop, writes status, posts Events and
acts on control annotations (see `lease.py` for how and the caveats).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf
import structlog

from fleetwave import GROUP_VERSION
from fleetwave.api.ports import JSON, Conflict, ControlError, ControlOp, Key, Page
from fleetwave.operator.events import EventRecorder
from fleetwave.operator.handlers import (
    CONTROL_ANNOTATIONS,
    KINDS,
    build_registry,
    handled_key,
    operator_settings,
)
from fleetwave.operator.kube import ApiError, Credentials, KubeClient, object_path
from fleetwave.operator.lease import LeaseElector
from fleetwave.operator.source import Invalid, KubernetesSource, ObjectRef
from fleetwave.operator.status import StatusWriter
from fleetwave.resources.model import Rollout
from fleetwave.resources.vocabulary import Phase
from fleetwave.runtime.leadership import Elector

log = structlog.get_logger("fleetwave.operator")

StatusSink = Callable[[str, Mapping[str, Any]], Awaitable[None]]
EventSink = Callable[[Mapping[str, Any]], None]


class PlanningEngine(Protocol):
    """What the operator needs of `fleetwave.runtime.engine.Engine`."""

    on_status: StatusSink | None
    on_event: EventSink | None

    def set_source(self, rollouts: Mapping[str, Rollout],
                   inventory: Mapping[str, Mapping[str, str]], revision: str | None) -> None: ...

    async def start(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    async def control(self, name: str, op: ControlOp, *, actor: str,
                      device: str | None = None) -> JSON: ...


def default_identity() -> str:
    """hostname (the pod name in Kubernetes) and pid: unique per replica and per restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    identity: str
    namespace: str | None = None
    """Watch one namespace; None watches all (cluster-wide)."""
    lease_name: str = "fleetwave-operator"
    lease_namespace: str = "default"
    lease_duration: float = 15.0
    """Seconds; a standby takes over this long after the leader's last renewal it saw."""
    lease_retry: float | None = None
    """Seconds between a standby's attempts; default a third of the duration."""
    status_interval: float = 2.0
    """Seconds between two status patches of one Rollout."""
    event_window: float = 600.0
    """Seconds within which a repeated Event is counted, not created again."""
    sync_retry: float = 2.0
    """Seconds between attempts of the initial listing of the custom resources."""


def _now_iso() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class OperatorRuntime:
    """kopf handlers, the leader Lease, the status writer and the Event recorder of one replica."""

    def __init__(self, engine: PlanningEngine, credentials: Credentials,
                 options: OperatorOptions, *, store_lease: Elector | None = None) -> None:
        self.engine = engine
        self.store_lease = store_lease
        """With PostgreSQL: the store's epoch lease, held beside the Kubernetes Lease, so a
        leader that lost its Lease while paused is refused by the store itself."""
        self.credentials = credentials
        self.options = options
        self.client = KubeClient(credentials)
        self.source = KubernetesSource(engine, on_invalid=self._report_invalid)
        self.status = StatusWriter(self.client, self.source.ref,
                                   min_interval=options.status_interval)
        self.events = EventRecorder(self.client, self.source.ref, instance=options.identity,
                                    window=options.event_window)
        self.elector = LeaseElector(self.client, name=options.lease_name,
                                    namespace=options.lease_namespace,
                                    identity=options.identity, duration=options.lease_duration,
                                    retry_interval=options.lease_retry)
        earlier_status = engine.on_status  # the dashboard's feed, when wired

        async def on_status(name: str, status: Mapping[str, Any]) -> None:
            if earlier_status is not None:
                await earlier_status(name, status)
            await self.status.on_status(name, status)

        engine.on_status = on_status
        previous = engine.on_event

        def on_event(event: Mapping[str, Any]) -> None:
            if previous is not None:
                previous(event)
            self.events.record(event)

        engine.on_event = on_event
        self.settings = operator_settings(identity=options.identity)
        self.registry = build_registry(self.source, credentials=credentials,
                                       on_annotation=self.on_annotation,
                                       settings=self.settings)
        self.kopf_ready = asyncio.Event()
        self._term: asyncio.Event | None = None
        self._leading_task: asyncio.Task[None] | None = None
        self._handled: dict[tuple[str, str, str], str] = {}

    @property
    def leading(self) -> bool:
        return self.elector.leading

    # -- the replica's life ----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """kopf, the status writer, the Event poster and the Lease campaign, until `stop`."""
        kwargs: dict[str, Any] = ({"namespaces": [self.options.namespace]}
                                  if self.options.namespace else {"clusterwide": True})
        tasks = [
            asyncio.create_task(kopf.operator(
                registry=self.registry, settings=self.settings, standalone=True,
                stop_flag=stop, ready_flag=self.kopf_ready,
                memo=kopf.Memo(), **kwargs), name="kopf"),
            asyncio.create_task(self.status.run(stop), name="status"),
            asyncio.create_task(self.events.run(stop), name="events"),
            asyncio.create_task(self._campaign(stop), name="lease"),
        ]
        try:
            done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *tasks],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task in tasks and not task.cancelled() and task.exception() is not None:
                    log.error("operator.task_failed", task=task.get_name(),
                              error=repr(task.exception()))
        finally:
            stop.set()  # kopf ended (SIGTERM reaches it first) or a task failed: stop it all
            lease = tasks[-1]
            with contextlib.suppress(asyncio.TimeoutError):
                # The Lease task releases the Lease on its way out: give it a moment.
                await asyncio.wait_for(asyncio.gather(lease, return_exceptions=True), 5.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_leading()
            await self.client.close()

    async def _campaign(self, stop: asyncio.Event) -> None:
        await self.initial_sync(stop)
        if not stop.is_set():
            await self.elector.run(stop, on_started=self._start_leading,
                                   on_stopped=self._stop_leading)

    async def initial_sync(self, stop: asyncio.Event) -> None:
        """List every CR once before anyone may plan: a partial picture would delete rollouts."""
        namespace = self.options.namespace
        while not stop.is_set():
            try:
                for kind, plural in KINDS.items():
                    listing = await self.client.get(
                        object_path(GROUP_VERSION, plural, namespace))
                    for item in listing.get("items", []):
                        self.source.upsert(kind, {**item, "kind": kind})
                self.source.mark_synced()
                return
            except (TimeoutError, ApiError, OSError) as exc:
                log.warning("operator.sync_failed", error=str(exc))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.sync_retry)

    async def _start_leading(self) -> None:
        self.status.activate()
        self.events.activate()
        self._term = asyncio.Event()
        self._leading_task = asyncio.create_task(self._lead(self._term), name="engine")

    async def _lead(self, term: asyncio.Event) -> None:
        """Load what the store remembers (another leader wrote it), catch up, then plan."""
        if self.store_lease is not None:
            fence = asyncio.create_task(self._hold_store_lease(term), name="store-lease")
            try:
                await self._plan(term)
            finally:
                term.set()
                await asyncio.gather(fence, return_exceptions=True)
        else:
            await self._plan(term)

    async def _hold_store_lease(self, term: asyncio.Event) -> None:
        """The store's lease for as long as this term lasts; losing it ends the term."""
        assert self.store_lease is not None
        self.store_lease.on_change(lambda leading: None if leading else term.set())
        await self.store_lease.run(term)

    async def _plan(self, term: asyncio.Event) -> None:
        lease = self.store_lease
        while lease is not None and not lease.is_leader and not term.is_set():
            # The previous leader's store lease runs out at most its ttl after its last renew.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(term.wait(), 0.2)
        if term.is_set():
            return
        await self.engine.start()
        for invalid in list(self.source.invalid.values()):
            self._report_invalid(invalid)
        for ref in list(self.source.refs.values()):
            for annotation in CONTROL_ANNOTATIONS:
                if ref.annotations.get(annotation):
                    await self._apply_annotation(ref, annotation)
        if not term.is_set():
            await self.engine.run(term)

    async def _stop_leading(self) -> None:
        """Stop planning *now*: set the term's stop flag and cancel the pass in hand."""
        self.status.deactivate()
        self.events.deactivate()
        if self._term is not None:
            self._term.set()
        task, self._leading_task = self._leading_task, None
        if task is not None:
            task.cancel()
            results = await asyncio.gather(task, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("operator.engine_failed", error=repr(result))

    # -- control annotations --------------------------------------------------------

    async def on_annotation(self, body: Mapping[str, Any], annotation: str) -> None:
        """kopf saw a new value: act on the leader; a standby leaves it for its takeover."""
        if not self.leading:
            return
        meta = body.get("metadata", {})
        ref = ObjectRef(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name")),
                        uid=meta.get("uid"), generation=int(meta.get("generation") or 1),
                        annotations=dict(meta.get("annotations") or {}))
        await self._apply_annotation(ref, annotation)

    async def _apply_annotation(self, ref: ObjectRef, annotation: str) -> None:
        """Once per new value: record it on the object first, then call the engine.

        Recording first makes it at-most-once: a crash between the two loses the
        operation (set a new value to retry) instead of promoting twice.
        """
        value = ref.annotations.get(annotation)
        if not value or ref.annotations.get(handled_key(annotation)) == value:
            return
        seen = (ref.namespace, ref.name, annotation)
        if self._handled.get(seen) == value:
            return
        self._handled[seen] = value
        try:
            await self.client.merge_patch(
                object_path(GROUP_VERSION, KINDS["Rollout"], ref.namespace, ref.name),
                {"metadata": {"annotations": {handled_key(annotation): value}}})
        except ApiError as exc:
            self._handled.pop(seen, None)
            log.warning("operator.annotation_record_failed", rollout=ref.name,
                        annotation=annotation, error=str(exc))
            return
        op = CONTROL_ANNOTATIONS[annotation]
        device = value if annotation.endswith("-device") else None
        try:
            await self.engine.control(ref.name, op, actor=f"kubernetes:{annotation}",
                                      device=device)
            log.info("operator.control", rollout=ref.name, op=op, device=device)
        except ControlError as exc:
            self.events.emit(ref, "Warning", "ControlRejected",
                             f"{annotation}={value}: {exc.message}")

    # -- invalid resources ----------------------------------------------------------

    def _report_invalid(self, invalid: Invalid) -> None:
        """An invalid Rollout: Failed, with a condition and a Warning event naming the field."""
        if not self.leading or invalid.kind != "Rollout":
            if invalid.kind != "Rollout":
                log.warning("operator.invalid_resource", kind=invalid.kind,
                            name=invalid.ref.name, namespace=invalid.ref.namespace,
                            problems=invalid.message)
            return
        ref = invalid.ref
        reason = "DuplicateName" if any(p.name == "DuplicateName"
                                        for p in invalid.problems) else "InvalidSpec"
        since = _now_iso()
        for condition in ref.status.get("conditions") or []:
            if (condition.get("type") == "Ready" and condition.get("status") == "False"
                    and condition.get("reason") == reason):
                since = condition.get("lastTransitionTime") or since
        status = {
            "phase": Phase.FAILED, "observedGeneration": ref.generation,
            "message": invalid.message,
            "conditions": [{"type": "Ready", "status": "False", "reason": reason,
                            "message": invalid.message, "lastTransitionTime": since,
                            "observedGeneration": ref.generation}],
        }
        self.status.submit_ref(ref, status)
        self.events.emit(ref, "Warning", reason, invalid.message)


class LeaderGuard:
    """The API's ControlPlane on any replica: reads from the local engine, writes on the leader.

    A write on a standby would make it plan (`control` runs a pass); it is refused
    with 409 instead, naming the leader, so a client retries through the Service.
    """

    def __init__(self, engine: Any, runtime: OperatorRuntime) -> None:
        self.engine = engine
        self.runtime = runtime

    def _leader_only(self) -> None:
        if not self.runtime.leading:
            holder = self.runtime.elector.holder or "unknown"
            raise Conflict(f"this replica is a standby; the leader is {holder}: retry")

    def list_rollouts(self, phase: str | None = None) -> list[JSON]:
        result: list[JSON] = self.engine.list_rollouts(phase)
        return result

    def get_rollout(self, name: str) -> JSON | None:
        result: JSON | None = self.engine.get_rollout(name)
        return result

    async def rollout_devices(self, name: str, after: Key | None = None,
                              limit: int = 100) -> Page:
        result: Page = await self.engine.rollout_devices(name, after, limit)
        return result

    async def rollout_events(self, name: str, offset: int, limit: int) -> tuple[list[JSON], int]:
        result: tuple[list[JSON], int] = await self.engine.rollout_events(name, offset, limit)
        return result

    async def control(self, name: str, op: ControlOp, *, actor: str,
                      device: str | None = None) -> JSON:
        self._leader_only()
        result: JSON = await self.engine.control(name, op, actor=actor, device=device)
        return result

    async def rollback_device(self, name: str, uuid: str, *, actor: str) -> JSON:
        self._leader_only()
        result: JSON = await self.engine.rollback_device(name, uuid, actor=actor)
        return result

    async def delete_rollout(self, name: str, *, actor: str) -> None:
        self._leader_only()
        await self.engine.delete_rollout(name, actor=actor)

    async def list_devices(self, after: Key | None = None, limit: int = 100) -> Page:
        result: Page = await self.engine.list_devices(after, limit)
        return result

    async def get_device(self, uuid: str) -> JSON | None:
        result: JSON | None = await self.engine.get_device(uuid)
        return result

    async def device_updates(self, uuid: str, limit: int = 100) -> list[JSON]:
        result: list[JSON] = await self.engine.device_updates(uuid, limit)
        return result

    async def ad_hoc_update(self, uuid: str, component: str, version: str, *, force: bool,
                            scheduled_time: str | None, actor: str) -> JSON:
        self._leader_only()
        result: JSON = await self.engine.ad_hoc_update(uuid, component, version, force=force,
                                                       scheduled_time=scheduled_time,
                                                       actor=actor)
        return result

    async def cancel_update(self, uuid: str, update_id: str, *, actor: str) -> JSON:
        self._leader_only()
        result: JSON = await self.engine.cancel_update(uuid, update_id, actor=actor)
        return result

    async def list_updates(self, state: str | None, older_than: float | None,
                           after: Key | None = None, limit: int = 100) -> Page:
        result: Page = await self.engine.list_updates(state, older_than, after, limit)
        return result

    async def registry_pushes(self, pushes: Sequence[Any]) -> list[JSON]:
        self._leader_only()
        result: list[JSON] = await self.engine.registry_pushes(pushes)
        return result

    async def git_push(self, ref: str | None) -> None:
        return None  # no git source in operator mode: desired state is in the cluster

    def readiness(self) -> tuple[bool, Mapping[str, str]]:
        """A standby is ready once it has listed the CRs: it serves reads and may take over."""
        if self.runtime.leading:
            ready, reasons = self.engine.readiness()
            return bool(ready), {**reasons, "lease": "leader"}
        synced = self.runtime.source.synced
        return synced, {"source": "ok" if synced else "not synced yet",
                        "lease": f"standby (leader: {self.runtime.elector.holder or 'none'})"}


def kubernetes_credentials(settings: kopf.OperatorSettings | None = None) -> Credentials:
    """The service account in a pod, else the kubeconfig; read again at each (re)login."""
    settings = settings or kopf.OperatorSettings()

    async def credentials() -> kopf.ConnectionInfo:
        info = kopf.login_with_service_account(settings=settings)
        if info is None:
            info = kopf.login_with_kubeconfig(settings=settings)
        if info is None:
            raise kopf.LoginError("no service account and no kubeconfig: cannot reach Kubernetes")
        return info

    return credentials


def pod_namespace() -> str:
    """The namespace this pod runs in (from its service account), else `default`."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"
