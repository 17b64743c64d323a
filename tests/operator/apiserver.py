"""An emulated Kubernetes API server for the operator tests, on kmock's KubernetesEmulator.

No real API server can run on this machine, so kmock's emulator (a real HTTP
server on 127.0.0.1 with discovery, list, watch, create, patch and delete)
stands in at the HTTP boundary. On top of it this adds what the operator's
correctness depends on and the emulator leaves out: `resourceVersion`,
`uid`, `generation` and `creationTimestamp` kept like an API server does,
`metadata.resourceVersion` in a patch as a precondition (409 Conflict), the
status subresource (a patch to `/status` changes only `status`; a patch to
the object ignores `status`), and a 410 Gone on a chosen watch. It does not
emulate schema validation, defaulting or RBAC.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import kmock
from kmock._internal import enums, k8s, rendering

from fleetwave.resources.crds import KIND_INFO

GONE = {"type": "ERROR", "object": {
    "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
    "code": 410, "reason": "Expired",
    "message": "too old resource version: 1 (42)"}}


@attrs.define(kw_only=True)
class ApiServer(k8s.KubernetesEmulator):
    """KubernetesEmulator plus resourceVersions, preconditions, /status and 410 injection."""

    revision: int = attrs.field(default=100, init=False)
    conflicts: list[rendering.Request] = attrs.field(factory=list, init=False)
    """Requests answered 409 because their resourceVersion precondition failed."""
    gone: dict[str, int] = attrs.field(factory=dict, init=False)
    """plural -> how many of its next watch requests answer 410 Gone."""

    def register_crds(self) -> None:
        self.resources.load_bundled()
        for kind, info in KIND_INFO.items():
            self.resources[f"fleetwave.io/v1alpha1/{info.plural}"] = kmock.ResourceInfo(
                kind=kind, namespaced=True, singular=kind.lower(),
                shortnames=set(info.short_names),
                subresources={"status"},
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"})

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    async def _handle(self, request: rendering.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == enums.action.CREATE:
                self._admit_create(request)
            elif request.action == enums.action.UPDATE and request.name is not None:
                self._admit_patch(request)
        return await super()._handle(request)

    def _admit_create(self, request: rendering.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_revision()
        meta["generation"] = 1
        meta["creationTimestamp"] = datetime.datetime.now(tz=datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        if self._has_status(request):
            request.data.pop("status", None)

    def _admit_patch(self, request: rendering.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # the emulator answers 404
        current = self.objects[key].raw
        meta = current.get("metadata", {})
        data = request.data
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != meta.get("resourceVersion"):
            self.conflicts.append(request)
            raise k8s.KubernetesError(
                status=409, reason="Conflict",
                message=f"Operation cannot be fulfilled on {request.resource.plural} "
                        f"\"{request.name}\": the object has been modified; please apply "
                        f"your changes to the latest version and try again")
        if request.subresource == "status":
            status = data.get("status")
            data.clear()
            if status is not None:
                data["status"] = status
            data["metadata"] = {"resourceVersion": self._next_revision()}
            return
        if self._has_status(request):
            data.pop("status", None)
        data.setdefault("metadata", {})
        data["metadata"]["resourceVersion"] = self._next_revision()
        if "spec" in data and _merged(current.get("spec"), data["spec"]) != current.get("spec"):
            data["metadata"]["generation"] = int(meta.get("generation") or 1) + 1

    def _has_status(self, request: rendering.Request) -> bool:
        resource = request.resource
        if resource is None:
            return False
        for known in self.resources:
            if known == resource:
                return "status" in self.resources[known].subresources
        return False

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        plural = request.resource.plural if request.resource is not None else None
        if plural is not None and self.gone.get(plural, 0) > 0:
            self.gone[plural] -= 1
            yield b""
            yield GONE
            return
        async for item in super()._serve_watch(request):
            yield item


def _merged(old: Any, patch: Any) -> Any:
    """What a JSON merge patch makes of `old` (to tell whether the spec really changed)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out
