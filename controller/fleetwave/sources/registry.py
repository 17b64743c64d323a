"""The effects of a registry push: decide (pure), then commit to git or keep in the registry.

`RegistryPushHandler` is what the engine plugs in as its `registry_handler`:
it reads the current policies and versions through callables (so it never
holds stale state), asks `evaluate_push`, commits `commitTo` Rollouts with the
`GitCommitter` and triggers the git source so they come back from git, keeps
the others in `PolicyRollouts` and hands them to the engine. A push is marked
seen only after its effects succeeded, so a redelivery retries a failed commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from fleetwave.resources.model import Rollout, RolloutPolicy
from fleetwave.sources.base import Source, SourceError
from fleetwave.sources.policies import PolicyRollouts, evaluate_push
from fleetwave.sources.pushes import ImagePush

if TYPE_CHECKING:  # pygit2 is loaded only by a process with a git source
    from fleetwave.sources.git import GitCommitter

log = structlog.get_logger("fleetwave.sources.registry")


class RegistryPushHandler:
    """Turns verified `ImagePush`es into Rollouts; returns one JSON item per decision."""

    def __init__(
        self,
        *,
        policies: Callable[[], Mapping[str, RolloutPolicy]],
        versions: Callable[[], Mapping[str, Iterable[str]]],
        rollouts: Callable[[], Mapping[str, Rollout]],
        registry: PolicyRollouts,
        on_rollout: Callable[[Rollout], None],
        committer: GitCommitter | None = None,
        source: Source | None = None,
    ) -> None:
        self._policies = policies
        self._versions = versions
        self._rollouts = rollouts
        self.registry = registry
        self._on_rollout = on_rollout
        self._committer = committer
        self._source = source

    async def __call__(self, pushes: Sequence[ImagePush]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for push in pushes:
            existing = {**self._rollouts(), **self.registry.rollouts}
            outcome = evaluate_push(self._policies(), push, self._versions(), existing,
                                    self.registry.seen)
            failed = False
            for skip in outcome.skipped:
                items.append({"image": push.image, "policy": skip.policy, "created": False,
                              "reason": skip.reason, "message": skip.message})
            for generated in outcome.created:
                item: dict[str, Any] = {"image": push.image, "policy": generated.policy.name,
                                        "created": True, "rollout": generated.name}
                if generated.policy.commit_to is not None and self._committer is not None:
                    try:
                        result = await self._committer.commit(generated)
                    except SourceError as exc:
                        failed = True
                        item.update(created=False, reason="CommitFailed", message=str(exc))
                        log.warning("policy.commit_failed", image=push.image, error=str(exc))
                    else:
                        item.update(committed=result.revision, path=result.path)
                        if self._source is not None:
                            self._source.trigger()
                else:
                    # No git to commit to: the store keeps it (`source.kind: policy`).
                    self.registry.add(generated)
                    self._on_rollout(generated.rollout)
                items.append(item)
                log.info("policy.rollout", **item)
            if not failed:
                for key in outcome.seen_keys:
                    self.registry.mark_seen(key)
        return items
