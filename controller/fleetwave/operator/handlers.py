"""The kopf handlers: each replica's picture of the CRs, and control by annotation.

Every replica runs these handlers (kopf runs standalone; the Lease picks the
replica that plans, see `lease.py`), so they must not write to the objects:
kopf's own bookkeeping (the diff base it compares against, and handler
progress) is therefore kept in memory (`MemoryDiffBase`, `MemoryProgress`)
instead of in annotations and `status.kopf`. Two replicas writing kopf's
`last-handled-configuration` on the same object would hide changes from each
other. The cost: after a restart kopf treats every object as new and calls
the creation handlers again, which is harmless here because the handlers only
rebuild an in-memory mirror and control annotations are deduplicated against
a record on the object itself (`fleetwave.io/<op>-handled`), not against
kopf's memory. Handlers never raise, so kopf never needs to retry them
(retries would need a patch on the object to wake kopf up).

The handlers are registered in a registry of their own, so that two operators
can run in one process (the tests do) without sharing handlers.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from fleetwave import API_GROUP, API_VERSION
from fleetwave.api.ports import ControlOp
from fleetwave.operator.kube import Credentials
from fleetwave.operator.source import KubernetesSource

KINDS: dict[str, str] = {
    "Rollout": "rollouts",
    "RolloutPolicy": "rolloutpolicies",
    "DeviceInventory": "deviceinventories",
}
"""Kind -> plural of the custom resources the operator watches."""

CONTROL_ANNOTATIONS: dict[str, ControlOp] = {
    "fleetwave.io/promote": "promote",
    "fleetwave.io/abort": "abort",
    "fleetwave.io/rollback": "rollback",
    "fleetwave.io/promote-device": "promote",
}
"""Annotation -> control operation; any *new* value triggers it once.

`fleetwave.io/promote-device` carries a device uuid: that device's update may start now.
"""

HANDLED_SUFFIX = "-handled"
"""`fleetwave.io/promote-handled` records the value last acted on, so a restart does not replay."""

AnnotationHandler = Callable[[Mapping[str, Any], str], Awaitable[None]]


def handled_key(annotation: str) -> str:
    return annotation + HANDLED_SUFFIX


def _key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata", {})
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy as plain dicts: kopf's Body is a live view that later events change."""
    return copy.deepcopy({k: body[k] for k in body})


class MemoryDiffBase(kopf.DiffBaseStorage):
    """kopf's "last handled" essence per object, in this process only (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(_key(body))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._essences[_key(body)] = essence

    def forget(self, body: Mapping[str, Any]) -> None:
        self._essences.pop(_key(body), None)


class MemoryProgress(kopf.ProgressStorage):
    """kopf's per-handler progress, in this process only (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[tuple[str, str], kopf.ProgressRecord] = {}

    def fetch(self, *, key: Any, body: kopf.Body) -> kopf.ProgressRecord | None:
        return self._records.get((_key(body), str(key)))

    def store(self, *, key: Any, record: kopf.ProgressRecord, body: kopf.Body,
              patch: kopf.Patch) -> None:
        self._records[(_key(body), str(key))] = copy.deepcopy(record)

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.pop((_key(body), str(key)), None)

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return copy.deepcopy(essence)

    def forget(self, body: Mapping[str, Any]) -> None:
        prefix = _key(body)
        for record_key in [k for k in self._records if k[0] == prefix]:
            self._records.pop(record_key, None)


def operator_settings(*, identity: str) -> kopf.OperatorSettings:
    """kopf settings for a replica that only reads: no peering, no writes, no kopf events."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # the Lease decides who plans; see lease.py
    settings.peering.mandatory = False
    settings.scanning.disabled = True  # cluster-wide or fixed namespaces: no namespace listing
    settings.posting.enabled = False  # our own aggregated Events, from the leader only
    settings.persistence.diffbase_storage = MemoryDiffBase()
    settings.persistence.progress_storage = MemoryProgress()
    settings.posting.reporting_component = "fleetwave-operator"
    settings.posting.reporting_instance = identity[:128]
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10]
    return settings


def _upsert_handler(source: KubernetesSource, kind: str) -> Callable[..., Awaitable[None]]:
    async def upsert(body: kopf.Body, **_: Any) -> None:
        source.upsert(kind, plain(body))
    return upsert


def _remove_handler(source: KubernetesSource, kind: str, diffbase: kopf.DiffBaseStorage,
                    progress: kopf.ProgressStorage) -> Callable[..., Awaitable[None]]:
    async def remove(body: kopf.Body, name: str | None, namespace: str | None,
                     **_: Any) -> None:
        source.remove(kind, namespace or "", name or "")
        if isinstance(diffbase, MemoryDiffBase):
            diffbase.forget(body)
        if isinstance(progress, MemoryProgress):
            progress.forget(body)
    return remove


def _event_handler(source: KubernetesSource, kind: str,
                   remove: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    async def event(body: kopf.Body, type: str | None, name: str | None,
                    namespace: str | None, **_: Any) -> None:
        if type == "DELETED":
            await remove(body=body, name=name, namespace=namespace)
        elif kind == "Rollout":
            source.status_seen(plain(body))
    return event


def _annotation_handler(annotation: str,
                        on_annotation: AnnotationHandler) -> Callable[..., Awaitable[None]]:
    async def changed(body: kopf.Body, new: Any, **_: Any) -> None:
        if new:
            await on_annotation(plain(body), annotation)
    return changed


def build_registry(source: KubernetesSource, *, credentials: Credentials,
                   on_annotation: AnnotationHandler,
                   settings: kopf.OperatorSettings) -> kopf.OperatorRegistry:
    """Handlers for the three kinds, bound to one mirror and one annotation callback."""
    registry = kopf.OperatorRegistry()
    diffbase = settings.persistence.diffbase_storage
    progress = settings.persistence.progress_storage

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return await credentials()

    for kind, plural in KINDS.items():
        upsert = _upsert_handler(source, kind)
        remove = _remove_handler(source, kind, diffbase, progress)
        kopf.on.resume(API_GROUP, API_VERSION, plural, registry=registry,
                       id=f"{plural}-resume")(upsert)
        kopf.on.create(API_GROUP, API_VERSION, plural, registry=registry,
                       id=f"{plural}-create")(upsert)
        kopf.on.update(API_GROUP, API_VERSION, plural, registry=registry,
                       id=f"{plural}-update")(upsert)
        # optional=True: no finalizer, deleting a Rollout never waits for the operator. The
        # handler then only runs while another finalizer holds the object; a plain delete
        # is seen as the watch's DELETED event.
        kopf.on.delete(API_GROUP, API_VERSION, plural, registry=registry, optional=True,
                       id=f"{plural}-forget")(remove)
        kopf.on.event(API_GROUP, API_VERSION, plural, registry=registry,
                      id=f"{plural}-events")(_event_handler(source, kind, remove))

    for annotation in CONTROL_ANNOTATIONS:
        kopf.on.field(API_GROUP, API_VERSION, "rollouts", registry=registry,
                      field=["metadata", "annotations", annotation],
                      id=f"annotation-{annotation.split('/')[1]}")(
            _annotation_handler(annotation, on_annotation))
    return registry
