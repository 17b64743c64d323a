"""RolloutPolicy: turn "image acme/app:2.0.1 was pushed" into a Rollout, once, and only forward.

Pure: the webhook handler passes what it knows (policies, the push, the
versions desired per component, the rollouts that exist, the
deliveries already handled) and gets back what to create and why anything was
skipped. Registries redeliver and users re-push tags, so the decision is
idempotent: a delivery id or a `policy + repository:tag` seen once never
creates a second Rollout. Where the generated Rollout then lives is the
caller's choice: committed to git (`GitCommitter`, when `commitTo` is set) or
kept by the engine in a `PolicyRollouts` registry (`source.kind: policy`).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import re
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import semver
import yaml

from fleetwave import GROUP_VERSION
from fleetwave.resources.loading import load_text
from fleetwave.resources.model import Rollout, RolloutPolicy, SourceRef
from fleetwave.sources.pushes import ImagePush

ANNOTATION_POLICY = "fleetwave.io/policy"
ANNOTATION_IMAGE = "fleetwave.io/image"
ANNOTATION_DIGEST = "fleetwave.io/digest"

MAX_NAME = 63
"""Generated names are DNS labels, so they also work as Kubernetes object names."""


class SkipReason:
    """Why a push created nothing (CamelCase, stable: shown in API answers and events)."""

    NO_MATCH = "NoMatchingPolicy"
    DUPLICATE_DELIVERY = "DuplicateDelivery"
    ALREADY_CREATED = "AlreadyCreated"
    NOT_SEMVER = "NotSemver"
    NOT_NEWER = "NotNewer"
    INVALID_TEMPLATE = "InvalidTemplate"
    NO_DIGEST = "NoDigest"


@dataclass(frozen=True, slots=True)
class Skipped:
    policy: str | None
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class GeneratedRollout:
    """A Rollout a policy made for one pushed tag, with the document to store or commit."""

    policy: RolloutPolicy
    push: ImagePush
    rollout: Rollout
    document: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.rollout.name

    @property
    def yaml(self) -> str:
        return yaml.safe_dump(json.loads(json.dumps(self.document)), sort_keys=False)

    @property
    def commit_message(self) -> str:
        return (f"fleetwave: roll out {self.push.image} via policy {self.policy.name}\n\n"
                f"Rollout {self.name} sets {self.rollout.spec.component} to version "
                f"{self.rollout.spec.version}.")

    @property
    def seen_key(self) -> str:
        return image_key(self.policy.name, self.push)


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    push: ImagePush
    created: tuple[GeneratedRollout, ...] = ()
    skipped: tuple[Skipped, ...] = ()

    @property
    def seen_keys(self) -> tuple[str, ...]:
        """Keys to remember so that a redelivery creates nothing."""
        keys = [g.seen_key for g in self.created]
        if self.push.delivery_id:
            keys.append(delivery_key(self.push))
        return tuple(keys)


def delivery_key(push: ImagePush) -> str:
    return f"delivery:{push.delivery_id}"


def image_key(policy: str, push: ImagePush) -> str:
    return f"image:{policy}:{push.image}"


def matches(policy: RolloutPolicy, push: ImagePush) -> bool:
    """`imagePattern` glob against `repository:tag`, or `registry/repository:tag`."""
    if fnmatch.fnmatchcase(push.image, policy.image_pattern):
        return True
    return push.registry is not None and fnmatch.fnmatchcase(
        f"{push.registry}/{push.image}", policy.image_pattern)


def component_of(policy: RolloutPolicy, push: ImagePush) -> str:
    """The policy's component, else the template's, else the repository's last segment."""
    if policy.component:
        return policy.component
    from_template = policy.template.get("component")
    if isinstance(from_template, str) and from_template:
        return from_template
    return push.repository.rstrip("/").rsplit("/", 1)[-1]


def parse_semver(text: str) -> semver.Version | None:
    """`2.0.1`, `v2.0.1`, `2.0` (read as 2.0.0); None for anything else, like `latest`."""
    candidate = text[1:] if text[:1] in ("v", "V") else text
    try:
        return semver.Version.parse(candidate, optional_minor_and_patch=True)
    except (ValueError, TypeError):
        return None


def rollout_name(policy: str, tag: str) -> str:
    """`<policy>-<tag as a DNS label>`, shortened with a hash suffix when too long."""
    label = re.sub(r"[^a-z0-9-]+", "-", tag.lower()).strip("-") or "tag"
    name = re.sub(r"-{2,}", "-", f"{policy}-{label}")
    if len(name) <= MAX_NAME:
        return name
    suffix = hashlib.sha256(f"{policy}:{tag}".encode()).hexdigest()[:8]
    return name[: MAX_NAME - len(suffix) - 1].rstrip("-.") + "-" + suffix


def evaluate_push(
    policies: Iterable[RolloutPolicy] | Mapping[str, RolloutPolicy],
    push: ImagePush,
    desired_versions: Mapping[str, Iterable[str]],
    existing_rollouts: Mapping[str, Rollout] | Iterable[Rollout],
    seen_deliveries: Container[str],
) -> PolicyOutcome:
    """Decide which Rollouts a registry push creates.

    `desired_versions`: per component, the versions Rollouts declare; with
    `versionPolicy: semver` a tag must be newer than every one of them and than every
    existing Rollout's version for that component. Versions devices report are never
    compared: any device can claim `9999.0.0`, and that must not block every later push.
    Versions that are not semver cannot be compared and are ignored.
    """
    pols = list(policies.values()) if isinstance(policies, Mapping) else list(policies)
    rollouts = (list(existing_rollouts.values()) if isinstance(existing_rollouts, Mapping)
                else list(existing_rollouts))
    if push.delivery_id and delivery_key(push) in seen_deliveries:
        return PolicyOutcome(push, skipped=(Skipped(
            None, SkipReason.DUPLICATE_DELIVERY,
            f"delivery {push.delivery_id} was already handled"),))
    matching = [p for p in sorted(pols, key=lambda p: p.name) if matches(p, push)]
    if not matching:
        return PolicyOutcome(push, skipped=(Skipped(
            None, SkipReason.NO_MATCH, f"no RolloutPolicy's imagePattern matches {push.image}"),))
    names = {r.name for r in rollouts}
    created: list[GeneratedRollout] = []
    skipped: list[Skipped] = []
    for policy in matching:
        result = _evaluate_one(policy, push, desired_versions, rollouts, names, seen_deliveries)
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            created.append(result)
            names.add(result.name)
    return PolicyOutcome(push, tuple(created), tuple(skipped))


def _evaluate_one(policy: RolloutPolicy, push: ImagePush,
                  desired_versions: Mapping[str, Iterable[str]], rollouts: list[Rollout],
                  names: set[str], seen: Container[str]) -> GeneratedRollout | Skipped:
    name = rollout_name(policy.name, push.tag)
    if image_key(policy.name, push) in seen or name in names:
        return Skipped(policy.name, SkipReason.ALREADY_CREATED,
                       f"{push.image} already created Rollout {name}")
    component = component_of(policy, push)
    if policy.version_policy == "semver":
        tag = parse_semver(push.tag)
        if tag is None:
            return Skipped(policy.name, SkipReason.NOT_SEMVER,
                           f"tag {push.tag!r} is not a semantic version (like 1.2.3); "
                           "policy uses versionPolicy: semver")
        current = set(desired_versions.get(component, ()))
        current.update(r.spec.version for r in rollouts if r.spec.component == component)
        newest = max((v for v in (parse_semver(c) for c in current) if v is not None),
                     default=None)
        if newest is not None and tag <= newest:
            return Skipped(policy.name, SkipReason.NOT_NEWER,
                           f"tag {push.tag} is not newer than {newest} of {component}, "
                           "already desired")
    if not push.digest:
        return Skipped(policy.name, SkipReason.NO_DIGEST,
                       f"the push of {push.image} carries no image digest, and devices pull "
                       "by digest, never by a mutable tag; use a registry whose webhook "
                       "sends the digest (GHCR, Harbor, a distribution registry), or commit "
                       "a Rollout with spec.artifact.digest")
    return _generate(policy, push, name, component)


def _generate(policy: RolloutPolicy, push: ImagePush, name: str,
              component: str) -> GeneratedRollout | Skipped:
    annotations = {ANNOTATION_POLICY: policy.name, ANNOTATION_IMAGE: push.image}
    if push.digest:
        annotations[ANNOTATION_DIGEST] = push.digest
    spec = copy.deepcopy(dict(policy.template))
    spec["component"] = component
    spec["version"] = push.tag
    # What devices pull: the pushed digest, not the tag (which can be pushed again).
    artifact = dict(spec.get("artifact") or {})
    artifact["digest"] = push.digest
    spec["artifact"] = artifact
    document: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": "Rollout",
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }
    where = policy.source.path or f"RolloutPolicy/{policy.name}"
    ref = SourceRef(kind="policy", revision=policy.source.revision, path=where)
    loaded = load_text(yaml.safe_dump(document, sort_keys=False), where, ref)
    if not loaded.ok or not loaded.documents:
        first = loaded.errors[0] if loaded.errors else None
        detail = f"{first.field}: {first.message}" if first else "no document"
        return Skipped(policy.name, SkipReason.INVALID_TEMPLATE,
                       f"the template of RolloutPolicy {policy.name} gives an invalid Rollout "
                       f"({detail}); fix spec.template")
    rollout = loaded.documents[0].resource
    assert isinstance(rollout, Rollout)
    return GeneratedRollout(policy, push, rollout, document)


class PolicyRollouts:
    """The engine's registry of policy-generated Rollouts that are not committed to git.

    Also remembers which deliveries and images were handled, bounded to the most
    recent `max_seen`, so a redelivery after a restart still creates nothing
    (persist with `to_json`, restore with `from_json`).
    """

    def __init__(self, *, max_seen: int = 10_000) -> None:
        self.max_seen = max_seen
        self._documents: dict[str, dict[str, Any]] = {}
        self._rollouts: dict[str, Rollout] = {}
        self._seen: dict[str, None] = {}

    @property
    def rollouts(self) -> Mapping[str, Rollout]:
        return dict(self._rollouts)

    @property
    def seen(self) -> Container[str]:
        return frozenset(self._seen)

    def __contains__(self, name: object) -> bool:
        return name in self._rollouts

    def __len__(self) -> int:
        return len(self._rollouts)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._rollouts))

    def get(self, name: str) -> Rollout | None:
        return self._rollouts.get(name)

    def record(self, outcome: PolicyOutcome) -> list[Rollout]:
        """Remember the outcome; keep the Rollouts whose policy has no `commitTo`."""
        for key in outcome.seen_keys:
            self.mark_seen(key)
        kept = []
        for generated in outcome.created:
            if generated.policy.commit_to is None:
                self.add(generated)
                kept.append(generated.rollout)
        return kept

    def add(self, generated: GeneratedRollout) -> None:
        self._documents[generated.name] = json.loads(json.dumps(generated.document))
        self._rollouts[generated.name] = generated.rollout
        self.mark_seen(generated.seen_key)

    def mark_seen(self, key: str) -> None:
        self._seen.pop(key, None)
        self._seen[key] = None
        while len(self._seen) > self.max_seen:
            del self._seen[next(iter(self._seen))]

    def remove(self, name: str) -> Rollout | None:
        """Forget a Rollout (deleted through the API); its push stays seen."""
        self._documents.pop(name, None)
        return self._rollouts.pop(name, None)

    def to_json(self) -> str:
        return json.dumps({"version": 1,
                           "rollouts": [self._documents[n] for n in sorted(self._documents)],
                           "seen": list(self._seen)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, max_seen: int = 10_000) -> PolicyRollouts:
        """Restore; a document that no longer validates (schema changed) is dropped."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("policy rollouts state is not a JSON object")
        registry = cls(max_seen=max_seen)
        for key in data.get("seen", []):
            registry.mark_seen(str(key))
        for document in data.get("rollouts", []):
            annotations = document.get("metadata", {}).get("annotations", {})
            ref = SourceRef(kind="policy", path=f"RolloutPolicy/"
                            f"{annotations.get(ANNOTATION_POLICY, '?')}")
            loaded = load_text(yaml.safe_dump(document, sort_keys=False), ref.path or "", ref)
            for doc in loaded.documents:
                if isinstance(doc.resource, Rollout):
                    registry._documents[doc.resource.name] = dict(document)
                    registry._rollouts[doc.resource.name] = doc.resource
        return registry
