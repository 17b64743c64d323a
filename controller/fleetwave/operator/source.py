"""The Kubernetes home of Rollouts: an in-memory mirror of the custom resources.

kopf tells us about each object one at a time; the engine wants the whole
desired state at once (`Engine.set_source`), like a git commit or a folder.
This mirror turns one into the other. Each CR is validated with the same
schema and checks as `fleetwave validate`, so the cluster and git agree on
what is valid; an invalid CR is kept aside with its problems (they become a
status condition and a Warning event) and never reaches the engine.

Rollout names are the engine's keys, so a Rollout name must be unique across
the watched namespaces: a second Rollout with a name already taken in
another namespace is reported as invalid (`DuplicateName`) instead of one
silently shadowing the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from fleetwave import GROUP_VERSION
from fleetwave.resources.inventory import merge_inventories
from fleetwave.resources.loading import Problem, load_text
from fleetwave.resources.model import DeviceInventory, Rollout, RolloutPolicy, SourceRef
from fleetwave.resources.names import name_keeper

Key = tuple[str, str]
"""(namespace, name) of one custom resource."""


class DesiredStateSink(Protocol):
    """What the mirror feeds: the engine's `set_source`."""

    def set_source(self, rollouts: Mapping[str, Rollout],
                   inventory: Mapping[str, Mapping[str, str]], revision: str | None) -> None: ...


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Enough of a Rollout CR to patch its status and name it in an Event."""

    namespace: str
    name: str
    uid: str | None
    generation: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    """The status as last seen on the watch: what the cluster already shows."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """A CR the schema rejects, and why; `field` is the first problem's field path."""

    ref: ObjectRef
    kind: str
    problems: tuple[Problem, ...]

    @property
    def field(self) -> str:
        return self.problems[0].field if self.problems else ""

    @property
    def message(self) -> str:
        return "; ".join(f"{p.field}: {p.message}" if p.field else p.message
                         for p in self.problems)[:1000]


def _ref(body: Mapping[str, Any]) -> ObjectRef:
    meta = body.get("metadata", {})
    return ObjectRef(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name")),
                     uid=meta.get("uid"), generation=int(meta.get("generation") or 1),
                     annotations=dict(meta.get("annotations") or {}),
                     status=dict(body.get("status") or {}))


def _document(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The CR as a user wrote it: server-managed metadata and status left out."""
    meta = body.get("metadata", {})
    clean_meta: dict[str, Any] = {"name": meta.get("name")}
    for key in ("namespace", "labels", "annotations", "generation"):
        if meta.get(key) is not None:
            clean_meta[key] = meta[key]
    return {"apiVersion": body.get("apiVersion", GROUP_VERSION), "kind": kind,
            "metadata": clean_meta, "spec": body.get("spec")}


class KubernetesSource:
    """Mirror of Rollout, RolloutPolicy and DeviceInventory CRs, pushed to the engine whole."""

    def __init__(self, sink: DesiredStateSink, *,
                 on_invalid: Callable[[Invalid], None] | None = None) -> None:
        self.sink = sink
        self.on_invalid = on_invalid
        self.rollouts: dict[Key, Rollout] = {}
        self.refs: dict[Key, ObjectRef] = {}
        self.policies: dict[Key, RolloutPolicy] = {}
        self.inventories: dict[Key, DeviceInventory] = {}
        self.invalid: dict[tuple[str, Key], Invalid] = {}
        self.revision: str | None = None
        self.synced = False

    # -- changes from kopf ------------------------------------------------------------

    def upsert(self, kind: str, body: Mapping[str, Any]) -> Invalid | None:
        """A CR was created, changed or seen on start; returns its problems if invalid."""
        ref = _ref(body)
        key = (ref.namespace, ref.name)
        meta = body.get("metadata", {})
        revision = meta.get("resourceVersion")
        source = SourceRef(kind="kubernetes", revision=revision,
                           path=f"{ref.namespace}/{ref.name}")
        text = yaml.safe_dump(_document(kind, body), sort_keys=False)
        result = load_text(text, f"{kind}/{ref.namespace}/{ref.name}", source)
        problems = tuple(p for p in result.problems if p.severity == "error")
        if kind == "Rollout":
            self.refs[key] = ref
            owner = self._name_owner(ref.name)
            if not problems and owner is not None and name_keeper([owner, key], owner) != key:
                problems = (Problem(f"{kind}/{ref.namespace}/{ref.name}", None, None,
                                    "metadata.name",
                                    f"a Rollout named {ref.name!r} already exists in namespace "
                                    f"{owner[0]!r}; Rollout names must be unique across the "
                                    f"watched namespaces", name="DuplicateName"),)
        self._drop(kind, key, keep_ref=True)
        if problems or not result.documents:
            invalid = Invalid(ref, kind, problems)
            self.invalid[(kind, key)] = invalid
            self.revision = revision or self.revision
            self.publish()
            if self.on_invalid is not None:
                self.on_invalid(invalid)
            return invalid
        resource = result.documents[0].resource
        src = dataclasses.replace(source, line=None)
        if isinstance(resource, Rollout):
            self.rollouts[key] = dataclasses.replace(resource, source=src,
                                                     generation=ref.generation,
                                                     namespace=ref.namespace or None)
        elif isinstance(resource, RolloutPolicy):
            self.policies[key] = dataclasses.replace(resource, source=src)
        elif isinstance(resource, DeviceInventory):
            self.inventories[key] = dataclasses.replace(resource, source=src)
        self.revision = revision or self.revision
        self.publish()
        return None

    def remove(self, kind: str, namespace: str, name: str) -> None:
        """A CR was deleted: the engine stops the rollout (devices keep what they run)."""
        self._drop(kind, (namespace, name), keep_ref=False)
        self.publish()

    def status_seen(self, body: Mapping[str, Any]) -> None:
        """Remember the status the cluster shows, so the writer sends only differences."""
        ref = _ref(body)
        key = (ref.namespace, ref.name)
        if key in self.refs:
            self.refs[key] = ref

    def _drop(self, kind: str, key: Key, *, keep_ref: bool) -> None:
        self.invalid.pop((kind, key), None)
        if kind == "Rollout":
            self.rollouts.pop(key, None)
            if not keep_ref:
                self.refs.pop(key, None)
        elif kind == "RolloutPolicy":
            self.policies.pop(key, None)
        elif kind == "DeviceInventory":
            self.inventories.pop(key, None)

    def _name_owner(self, name: str) -> Key | None:
        """The (namespace, name) whose valid Rollout holds this engine name, if any."""
        for key in self.rollouts:
            if key[1] == name:
                return key
        return None

    # -- what the engine sees ---------------------------------------------------------------

    def snapshot(self) -> tuple[dict[str, Rollout], dict[str, dict[str, str]]]:
        rollouts = {r.name: r for _, r in sorted(self.rollouts.items())}
        inventory = merge_inventories(inv.labels for _, inv in sorted(self.inventories.items()))
        return rollouts, inventory

    def publish(self) -> None:
        if not self.synced:
            return
        rollouts, inventory = self.snapshot()
        self.sink.set_source(rollouts, inventory, self.revision)

    def mark_synced(self) -> None:
        """kopf has listed every resource once: the engine may plan on a complete picture."""
        if not self.synced:
            self.synced = True
            self.publish()

    def ref(self, name: str) -> ObjectRef | None:
        """The Rollout CR behind an engine rollout name (valid ones first)."""
        owner = self._name_owner(name)
        if owner is not None:
            return self.refs.get(owner)
        for key, ref in self.refs.items():
            if key[1] == name:
                return ref
        return None
