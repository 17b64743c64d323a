"""RolloutPolicy decisions: from a registry webhook to a generated Rollout, once, forward only."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from fleetwave.api.webhooks import BadSignature, WebhookSecrets, verify_registry_webhook
from fleetwave.resources.loading import load_text
from fleetwave.resources.model import Rollout, RolloutPolicy
from fleetwave.sources.policies import (
    ANNOTATION_IMAGE,
    PolicyRollouts,
    SkipReason,
    evaluate_push,
    rollout_name,
)
from fleetwave.sources.pushes import ImagePush
from tests.sources.documents import policy, rollout
from tests.sources.test_webhooks import distribution, docker_hub, github_package, harbor

DIGEST = "sha256:" + "e" * 64


def pushed(repository: str, tag: str, **kw: str) -> ImagePush:
    """A push as a registry that sends the digest reports it (devices pull by digest)."""
    return ImagePush(repository, tag, digest=DIGEST, **kw)


def load_policy(text: str) -> RolloutPolicy:
    [doc] = load_text(text, "policies/app.yaml").documents
    assert isinstance(doc.resource, RolloutPolicy)
    return doc.resource


def load_rollout(text: str) -> Rollout:
    [doc] = load_text(text, "r.yaml").documents
    assert isinstance(doc.resource, Rollout)
    return doc.resource


APP_AUTO = load_policy(policy("app-auto", "acme/app:*"))
ANY_TAG = load_policy(policy("app-any", "acme/app:*", version_policy="any"))
PUSH = ImagePush("acme/app", "2.0.1", "sha256:" + "a" * 64, "delivery-1")


class TestMatching:
    def test_match_creates_a_rollout_from_the_template(self) -> None:
        outcome = evaluate_push([APP_AUTO], PUSH, {"app": {"2.0.0"}}, {}, set())
        [generated] = outcome.created
        ro = generated.rollout
        assert ro.name == "app-auto-2-0-1"
        assert (ro.spec.component, ro.spec.version) == ("app", "2.0.1")
        assert ro.spec.selector.match_labels == {"device_type": "rpi4"}
        assert [s.percent for s in ro.spec.strategy.steps] == [10, 100]
        assert ro.source.kind == "policy"
        assert ro.annotations[ANNOTATION_IMAGE] == "acme/app:2.0.1"
        assert generated.commit_message.splitlines()[0] == \
            "fleetwave: roll out acme/app:2.0.1 via policy app-auto"
        # The YAML round-trips into the same Rollout, as git will read it back.
        assert load_rollout(generated.yaml).spec == ro.spec
        assert outcome.skipped == ()

    def test_no_match(self) -> None:
        outcome = evaluate_push([APP_AUTO], pushed("acme/other", "2.0.1"), {}, {}, set())
        assert outcome.created == ()
        assert [s.reason for s in outcome.skipped] == [SkipReason.NO_MATCH]

    def test_pattern_may_name_the_registry(self) -> None:
        ghcr = load_policy(policy("ghcr", "ghcr.io/acme/*:*"))
        push = pushed("acme/app", "1.0.0", registry="ghcr.io")
        assert evaluate_push([ghcr], push, {}, {}, set()).created
        assert not evaluate_push([ghcr], pushed("acme/app", "1.0.0"), {}, {}, set()).created

    def test_component_defaults_to_last_path_segment_unless_set(self) -> None:
        named = load_policy(policy("p", "reg/team/acme/*:*").replace(
            "  versionPolicy", "  component: web\n  versionPolicy"))
        push = pushed("reg/team/acme/frontend", "1.0.0")
        unnamed = load_policy(policy("q", "reg/team/acme/*:*"))
        assert evaluate_push([unnamed], push, {}, {}, set()).created[0].rollout.spec.component \
            == "frontend"
        assert evaluate_push([named], push, {}, {}, set()).created[0].rollout.spec.component \
            == "web"


class TestVersionPolicy:
    @pytest.mark.parametrize(("tag", "running", "desired", "reason"), [
        pytest.param("2.0.0", {"2.0.0"}, None, SkipReason.NOT_NEWER, id="same-as-running"),
        pytest.param("1.9.9", {"2.0.0"}, None, SkipReason.NOT_NEWER, id="older-than-running"),
        pytest.param("2.0.1", {"1.0.0"}, "3.0.0", SkipReason.NOT_NEWER, id="older-than-desired"),
        pytest.param("latest", set(), None, SkipReason.NOT_SEMVER, id="not-semver"),
        pytest.param("2.0.1", {"2.0.0", "weird"}, None, None, id="newer-non-semver-ignored"),
        pytest.param("v2.1", {"2.0.9"}, None, None, id="v-prefix-and-partial"),
        pytest.param("2.0.0", {"2.0.0-rc.1"}, None, None, id="release-after-rc"),
    ])
    def test_semver(self, tag: str, running: set[str], desired: str | None,
                    reason: str | None) -> None:
        existing = [load_rollout(rollout("hand", desired, "app"))] if desired else []
        outcome = evaluate_push([APP_AUTO], pushed("acme/app", tag), {"app": running},
                                existing, set())
        if reason is None:
            assert [g.rollout.spec.version for g in outcome.created] == [tag]
        else:
            assert outcome.created == ()
            assert [s.reason for s in outcome.skipped] == [reason]

    def test_any_accepts_older_and_non_semver(self) -> None:
        for tag in ("1.0.0", "latest"):
            outcome = evaluate_push([ANY_TAG], pushed("acme/app", tag), {"app": {"9.0.0"}},
                                    {}, set())
            assert len(outcome.created) == 1

    def test_invalid_template_is_skipped_with_a_reason(self) -> None:
        bad = RolloutPolicy("bad", "acme/*:*", template={
            "selector": {"matchLabels": {"a": "b"}}, "strategy": {"steps": [{"percent": 50}]}})
        outcome = evaluate_push([bad], PUSH, {}, {}, set())
        assert outcome.created == ()
        [skip] = outcome.skipped
        assert skip.reason == SkipReason.INVALID_TEMPLATE and "steps" in skip.message


class TestIdempotence:
    def test_same_delivery_twice_creates_once(self) -> None:
        registry = PolicyRollouts()
        first = evaluate_push([APP_AUTO], PUSH, {}, registry.rollouts, registry.seen)
        assert len(registry.record(first)) == 1
        again = evaluate_push([APP_AUTO], PUSH, {}, registry.rollouts, registry.seen)
        assert again.created == ()
        assert [s.reason for s in again.skipped] == [SkipReason.DUPLICATE_DELIVERY]

    def test_same_image_with_a_new_delivery_id_creates_once(self) -> None:
        registry = PolicyRollouts()
        registry.record(evaluate_push([ANY_TAG], PUSH, {}, registry.rollouts, registry.seen))
        registry.remove("app-any-2-0-1")  # even after the Rollout was deleted
        repush = pushed("acme/app", "2.0.1", delivery_id="delivery-2")
        outcome = evaluate_push([ANY_TAG], repush, {}, registry.rollouts, registry.seen)
        assert outcome.created == ()
        assert [s.reason for s in outcome.skipped] == [SkipReason.ALREADY_CREATED]

    def test_an_existing_rollout_of_that_name_blocks(self) -> None:
        existing = [load_rollout(rollout("app-any-2-0-1", "2.0.1", "app"))]
        outcome = evaluate_push([ANY_TAG], PUSH, {}, existing, set())
        assert [s.reason for s in outcome.skipped] == [SkipReason.ALREADY_CREATED]

    def test_registry_round_trips_through_json(self) -> None:
        registry = PolicyRollouts()
        registry.record(evaluate_push([APP_AUTO], PUSH, {}, {}, set()))
        restored = PolicyRollouts.from_json(registry.to_json())
        assert list(restored) == ["app-auto-2-0-1"]
        ro = restored.get("app-auto-2-0-1")
        assert ro is not None and ro.spec.version == "2.0.1" and ro.source.kind == "policy"
        again = evaluate_push([APP_AUTO], PUSH, {}, restored.rollouts, restored.seen)
        assert again.created == ()

    def test_commit_to_rollouts_are_not_kept_in_memory(self) -> None:
        committed = load_policy(policy("app-git", "acme/app:*", commit_to="rollouts/gen"))
        registry = PolicyRollouts()
        outcome = evaluate_push([committed], PUSH, {}, {}, set())
        assert registry.record(outcome) == [] and len(registry) == 0
        assert evaluate_push([committed], PUSH, {}, {}, registry.seen).created == ()

    def test_seen_keys_are_bounded(self) -> None:
        registry = PolicyRollouts(max_seen=3)
        for i in range(10):
            registry.mark_seen(f"delivery:{i}")
        assert "delivery:9" in registry.seen and "delivery:0" not in registry.seen


def _sign(body: bytes) -> str:
    return "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()


class TestRegistryWebhookToRollout:
    """Per format: match, no match, an older tag, the same delivery twice, a bad signature."""

    SECRETS = WebhookSecrets.of("hook-secret")

    @pytest.mark.parametrize(("build", "headers"), [
        pytest.param(github_package, {"X-GitHub-Event": "registry_package",
                                      "X-GitHub-Delivery": "gh-1"}, id="github-packages"),
        pytest.param(harbor, {}, id="harbor"),
        pytest.param(distribution, {}, id="cncf-distribution"),
    ])
    def test_flow(self, build: Callable[[str], dict[str, Any]], headers: dict[str, str]) -> None:
        registry = PolicyRollouts()
        running = {"app": {"2.0.0"}}

        def deliver(payload: dict[str, Any], sig: str | None = None) -> list[Rollout]:
            body = json.dumps(payload).encode()
            hdrs = {**headers, "X-Hub-Signature-256": sig or _sign(body)}
            created = []
            for push in verify_registry_webhook(hdrs, body, self.SECRETS):
                outcome = evaluate_push([APP_AUTO], push, running, registry.rollouts,
                                        registry.seen)
                created += registry.record(outcome)
            return created

        # A bad signature: refused with 401 and nothing is created.
        with pytest.raises(BadSignature):
            deliver(build("2.0.1"), sig="sha256=" + "0" * 64)
        assert len(registry) == 0
        # A match creates one Rollout; the same delivery again creates nothing.
        assert [r.name for r in deliver(build("2.0.1"))] == ["app-auto-2-0-1"]
        assert deliver(build("2.0.1")) == []
        # An older tag than the one now desired creates nothing.
        assert deliver(build("2.0.0")) == []
        # No match: another repository.
        other = json.loads(json.dumps(build("9.0.0")).replace("acme/app", "acme/other")
                           .replace('"app"', '"other"'))
        assert deliver(other) == []
        assert list(registry) == ["app-auto-2-0-1"]


    def test_a_push_without_a_digest_creates_nothing(self) -> None:
        """Docker Hub's webhook names the tag only; devices never pull by a mutable tag."""
        body = json.dumps(docker_hub("2.0.1")).encode()
        [push] = verify_registry_webhook({"X-Hub-Signature-256": _sign(body)}, body,
                                         self.SECRETS)
        outcome = evaluate_push([APP_AUTO], push, {}, {}, set())
        assert outcome.created == ()
        [skipped] = outcome.skipped
        assert skipped.reason == SkipReason.NO_DIGEST
        assert "spec.artifact.digest" in skipped.message

    def test_the_rollout_carries_the_pushed_digest(self) -> None:
        [generated] = evaluate_push([APP_AUTO], PUSH, {}, {}, set()).created
        assert generated.rollout.spec.artifact is not None
        assert generated.rollout.spec.artifact.digest == PUSH.digest
        assert generated.document["spec"]["artifact"] == {"digest": PUSH.digest}


def test_generated_names_are_dns_labels() -> None:
    assert rollout_name("app-auto", "V2.0.1_beta+build.7") == "app-auto-v2-0-1-beta-build-7"
    long = rollout_name("a" * 60, "1.2.3")
    assert len(long) <= 63 and long != rollout_name("a" * 60, "1.2.4")
