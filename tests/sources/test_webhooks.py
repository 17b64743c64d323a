"""Webhook verification and parsing: every provider's format, every refusal with its status."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from fleetwave.api.webhooks import (
    DISTRIBUTION_MEDIA_TYPE,
    BadSignature,
    GitPush,
    Ignored,
    ImagePush,
    MalformedPayload,
    PayloadTooLarge,
    ReplayedDelivery,
    StaleTimestamp,
    WebhookError,
    WebhookSecrets,
    delivery_key,
    sign_delivery,
    verify_git_webhook,
    verify_registry_webhook,
)

SECRET = "hook-secret"
SECRETS = WebhookSecrets.of(SECRET, tokens=["shared-token"])


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def ours(body: bytes, at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    """Our own scheme: a signed timestamp (X-Fleetwave-Timestamp) with the body."""
    stamp = int(time.time() if at is None else at)
    return {"X-Fleetwave-Timestamp": str(stamp),
            "X-Fleetwave-Signature": sign_delivery(secret.encode(), body, stamp)}


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# -- registry payloads, as each registry sends them -------------------------------------

def docker_hub(tag: str = "2.0.1", repo: str = "acme/app") -> dict[str, Any]:
    return {"callback_url": f"https://registry.hub.docker.com/u/{repo}/hook/{tag}abc/",
            "push_data": {"pushed_at": 1700000000, "pusher": "ci", "tag": tag},
            "repository": {"repo_name": repo, "namespace": repo.split("/", maxsplit=1)[0],
                           "name": repo.rsplit("/", maxsplit=1)[-1], "status": "Active"}}


def github_package(tag: str = "2.0.1") -> dict[str, Any]:
    return {"action": "published",
            "registry_package": {
                "name": "app", "namespace": "acme", "package_type": "CONTAINER",
                "owner": {"login": "acme"},
                "package_version": {
                    "version": "sha256:" + "a" * 64,
                    "container_metadata": {"tag": {"name": tag, "digest": "sha256:" + "a" * 64}},
                    "package_url": f"ghcr.io/acme/app:{tag}"}}}


def harbor(tag: str = "2.0.1") -> dict[str, Any]:
    return {"type": "PUSH_ARTIFACT", "occur_at": 1700000000, "operator": "ci",
            "event_data": {"resources": [{"digest": "sha256:" + "b" * 64, "tag": tag,
                                          "resource_url": f"harbor.example.com/acme/app:{tag}"}],
                           "repository": {"name": "app", "namespace": "acme",
                                          "repo_full_name": "acme/app", "repo_type": "private"}}}


def distribution(tag: str = "2.0.1") -> dict[str, Any]:
    return {"events": [
        {"id": "evt-1", "timestamp": "2026-01-01T00:00:00Z", "action": "push",
         "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + "c" * 64, "repository": "acme/app", "tag": tag},
         "request": {"host": "registry.example.com:5000", "method": "PUT"}},
        {"id": "evt-2", "action": "pull", "target": {"repository": "acme/app", "tag": tag}},
        {"id": "evt-3", "action": "push", "target": {"repository": "acme/app",
                                                     "digest": "sha256:" + "d" * 64}},
    ]}


REGISTRY_FORMATS = [
    pytest.param(docker_hub(), {}, ImagePush(
        "acme/app", "2.0.1", None,
        "https://registry.hub.docker.com/u/acme/app/hook/2.0.1abc/", "docker.io"),
        id="docker-hub"),
    pytest.param(github_package(), {"X-GitHub-Event": "registry_package",
                                    "X-GitHub-Delivery": "gh-77"},
                 ImagePush("acme/app", "2.0.1", "sha256:" + "a" * 64, "gh-77", "ghcr.io"),
                 id="github-packages"),
    pytest.param(harbor(), {}, ImagePush(
        "acme/app", "2.0.1", "sha256:" + "b" * 64,
        f"harbor:1700000000:acme/app:2.0.1:sha256:{'b' * 64}", "harbor.example.com"),
        id="harbor"),
    pytest.param(distribution(), {"Content-Type": DISTRIBUTION_MEDIA_TYPE}, ImagePush(
        "acme/app", "2.0.1", "sha256:" + "c" * 64, "evt-1", "registry.example.com:5000"),
        id="cncf-distribution"),
]


class TestRegistryFormats:
    @pytest.mark.parametrize(("payload", "headers", "expected"), REGISTRY_FORMATS)
    def test_signed_push_is_parsed(self, payload: dict[str, Any], headers: dict[str, str],
                                   expected: ImagePush) -> None:
        body = body_of(payload)
        signed = {**headers, "X-Hub-Signature-256": "sha256=" + sign(body)}
        assert verify_registry_webhook(signed, body, SECRETS) == [expected]

    @pytest.mark.parametrize(("payload", "headers", "expected"), REGISTRY_FORMATS)
    def test_bad_signature_is_401(self, payload: dict[str, Any], headers: dict[str, str],
                                  expected: ImagePush) -> None:
        body = body_of(payload)
        forged = {**headers, "X-Hub-Signature-256": "sha256=" + sign(body, "other-secret")}
        with pytest.raises(BadSignature) as err:
            verify_registry_webhook(forged, body, SECRETS)
        assert err.value.status == 401

    @pytest.mark.parametrize("auth", [
        pytest.param({"Authorization": "Bearer shared-token"}, id="bearer"),
        pytest.param({"authorization": "shared-token"}, id="harbor-raw-header"),
        pytest.param({"X-Fleetwave-Token": "shared-token"}, id="fleetwave-token"),
        pytest.param({"X-Hub-Signature-256": "SIGN"}, id="bare-hex-signature"),
        pytest.param("ours", id="fleetwave-timestamped-signature"),
    ])
    def test_token_and_generic_signature(self, auth: dict[str, str] | str) -> None:
        body = body_of(harbor())
        headers = (ours(body) if auth == "ours" else
                   {k: v.replace("SIGN", sign(body)) for k, v in auth.items()})
        assert [p.tag for p in verify_registry_webhook(headers, body, SECRETS)] == ["2.0.1"]

    def test_docker_hub_token_in_query(self) -> None:
        body = body_of(docker_hub())
        assert verify_registry_webhook({}, body, SECRETS, query={"token": "shared-token"})
        with pytest.raises(BadSignature):
            verify_registry_webhook({}, body, SECRETS, query={"token": "guess"})

    def test_no_credentials_at_all_is_401(self) -> None:
        with pytest.raises(BadSignature):
            verify_registry_webhook({}, body_of(docker_hub()), SECRETS)

    def test_unconfigured_secret_trusts_nobody(self) -> None:
        body = body_of(docker_hub())
        with pytest.raises(BadSignature) as err:
            verify_registry_webhook({"X-Hub-Signature-256": "sha256=" + sign(body)}, body,
                                    WebhookSecrets())
        assert "no secret configured" in str(err.value)

    @pytest.mark.parametrize("body", [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(b'{"hello": "world"}', id="unknown-format"),
        pytest.param(body_of({"push_data": {"tag": "1.0.0"}, "repository": {}}),
                     id="docker-hub-without-repository"),
        pytest.param(body_of({"type": "PUSH_ARTIFACT", "event_data": {"resources": "x"}}),
                     id="harbor-without-repository"),
        pytest.param(body_of({"events": [{"action": "push", "target": {"tag": "1"}}]}),
                     id="distribution-without-repository"),
    ])
    def test_malformed_is_400(self, body: bytes) -> None:
        with pytest.raises(MalformedPayload) as err:
            verify_registry_webhook(ours(body), body, SECRETS)
        assert err.value.status == 400

    def test_oversized_is_413_before_anything_is_checked(self) -> None:
        body = b" " * 2048
        with pytest.raises(PayloadTooLarge) as err:
            verify_registry_webhook({}, body, SECRETS, max_body=1024)
        assert err.value.status == 413
        with pytest.raises(PayloadTooLarge):
            verify_registry_webhook({}, b" " * (1024 * 1024 + 1), SECRETS)

    @pytest.mark.parametrize("payload", [
        pytest.param({"type": "PULL_ARTIFACT", "event_data": {}}, id="harbor-pull"),
        pytest.param({"action": "updated", "package": {"name": "app", "package_version": {
            "version": "sha256:" + "e" * 64}}}, id="github-untagged"),
        pytest.param({"events": [{"action": "pull", "target": {"repository": "a"}}]},
                     id="distribution-pull"),
    ])
    def test_notifications_that_are_not_tag_pushes_give_nothing(
            self, payload: dict[str, Any]) -> None:
        body = body_of(payload)
        assert verify_registry_webhook(ours(body), body, SECRETS) == []

    def test_errors_carry_a_status_and_code(self) -> None:
        assert issubclass(BadSignature, WebhookError)
        assert (BadSignature.code, MalformedPayload.code, PayloadTooLarge.code) == \
            ("Unauthorized", "MalformedPayload", "PayloadTooLarge")
        assert "hook-secret" not in repr(SECRETS)


# -- replays: signed timestamps and delivery ids ------------------------------------------

class TestReplays:
    NOW = 1_800_000_000.0

    @pytest.mark.parametrize("skew", [-301, 301, -10**6])
    def test_a_timestamp_outside_the_window_is_refused(self, skew: int) -> None:
        body = body_of(harbor())
        with pytest.raises(StaleTimestamp) as err:
            verify_registry_webhook(ours(body, self.NOW + skew), body, SECRETS, now=self.NOW)
        assert err.value.status == 401 and "window is 300 s" in str(err.value)

    @pytest.mark.parametrize("skew", [-300, 0, 300])
    def test_a_timestamp_inside_the_window_passes(self, skew: int) -> None:
        body = body_of(GITHUB_PUSH)
        headers = {"X-GitHub-Event": "push", **ours(body, self.NOW + skew)}
        assert isinstance(verify_git_webhook(headers, body, SECRETS, now=self.NOW), GitPush)

    @pytest.mark.parametrize("stamp", [None, "", "soon", "-5", "1" * 20])
    def test_our_signature_without_a_readable_timestamp_is_refused(
            self, stamp: str | None) -> None:
        body = body_of(harbor())
        headers = {"X-Fleetwave-Signature": "sha256=" + sign(body)}
        if stamp is not None:
            headers["X-Fleetwave-Timestamp"] = stamp
        with pytest.raises(StaleTimestamp):
            verify_registry_webhook(headers, body, SECRETS, now=self.NOW)

    def test_a_moved_timestamp_breaks_the_signature(self) -> None:
        body = body_of(harbor())
        headers = ours(body, self.NOW - 3600)  # captured an hour ago...
        headers["X-Fleetwave-Timestamp"] = str(int(self.NOW))  # ...and made to look fresh
        with pytest.raises(BadSignature):
            verify_registry_webhook(headers, body, SECRETS, now=self.NOW)

    def test_delivery_keys_per_sender(self) -> None:
        github = delivery_key("git", {"X-GitHub-Delivery": "d-1"})
        assert github is not None and github[1] == 7 * 86400
        assert github == delivery_key("git", {"x-github-delivery": "d-1"})
        assert github[0] != delivery_key("registry", {"X-GitHub-Delivery": "d-1"})
        ours_key = delivery_key("git", {"X-Fleetwave-Delivery": "x" * 10_000,
                                        "X-Fleetwave-Signature": "sha256=…"})
        assert ours_key is not None and ours_key[1] == 600 and len(ours_key[0]) < 64
        pushes = [ImagePush("acme/app", "1", delivery_id="e2"),
                  ImagePush("acme/app", "2", delivery_id="e1")]
        assert delivery_key("registry", {}, pushes) == delivery_key("registry", {},
                                                                   pushes[::-1])
        assert delivery_key("registry", {}, [ImagePush("acme/app", "1")]) is None
        assert ReplayedDelivery.status == 409


# -- git push payloads -------------------------------------------------------------------

GITHUB_PUSH = {"ref": "refs/heads/main", "before": "1" * 40, "after": "2" * 40,
               "repository": {"full_name": "acme/fleet", "clone_url": "https://x/acme/fleet"}}
GITLAB_PUSH = {"object_kind": "push", "ref": "refs/heads/main", "before": "1" * 40,
               "after": "3" * 40, "project": {"path_with_namespace": "acme/fleet"}}
GITEA_PUSH = {"ref": "refs/heads/main", "before": "1" * 40, "after": "4" * 40,
              "repository": {"full_name": "acme/fleet"}}


def _github(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1",
            "X-Hub-Signature-256": "sha256=" + sign(body, secret)}


def _gitlab(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret}


def _gitea(body: bytes, secret: str = SECRET) -> dict[str, str]:
    # Gitea sends GitHub's headers too; its own signature is bare hex.
    return {"X-Gitea-Event": "push", "X-GitHub-Event": "push", "X-Gitea-Delivery": "g-1",
            "X-Gitea-Signature": sign(body, secret)}


GIT_PROVIDERS = [
    pytest.param(GITHUB_PUSH, _github, GitPush("refs/heads/main", "2" * 40, "acme/fleet",
                                               "github", "d-1"), id="github"),
    pytest.param(GITLAB_PUSH, _gitlab, GitPush("refs/heads/main", "3" * 40, "acme/fleet",
                                               "gitlab", None), id="gitlab"),
    pytest.param(GITEA_PUSH, _gitea, GitPush("refs/heads/main", "4" * 40, "acme/fleet",
                                             "gitea", "g-1"), id="gitea"),
]


class TestGitPushes:
    @pytest.mark.parametrize(("payload", "headers", "expected"), GIT_PROVIDERS)
    def test_valid(self, payload: dict[str, Any], headers: Any, expected: GitPush) -> None:
        body = body_of(payload)
        push = verify_git_webhook(headers(body), body, SECRETS)
        assert push == expected
        assert isinstance(push, GitPush) and push.branch == "main"

    @pytest.mark.parametrize(("payload", "headers", "expected"), GIT_PROVIDERS)
    def test_bad_signature(self, payload: dict[str, Any], headers: Any,
                           expected: GitPush) -> None:
        body = body_of(payload)
        with pytest.raises(BadSignature) as err:
            verify_git_webhook(headers(body, "wrong"), body, SECRETS)
        assert err.value.status == 401

    def test_signature_over_other_bytes_is_refused(self) -> None:
        body = body_of(GITHUB_PUSH)
        headers = _github(body)
        with pytest.raises(BadSignature):
            verify_git_webhook(headers, body.replace(b"main", b"evil"), SECRETS)

    def test_ping_is_ignored_not_refused(self) -> None:
        body = b'{"zen": "Keep it logically awesome."}'
        result = verify_git_webhook({"X-GitHub-Event": "ping",
                                     "X-Hub-Signature-256": "sha256=" + sign(body)}, body, SECRETS)
        assert isinstance(result, Ignored) and result.event == "ping"

    def test_branch_deletion_is_ignored(self) -> None:
        body = body_of({**GITHUB_PUSH, "after": "0" * 40})
        assert isinstance(verify_git_webhook(_github(body), body, SECRETS), Ignored)

    def test_tag_push_has_no_branch(self) -> None:
        body = body_of({**GITHUB_PUSH, "ref": "refs/tags/v1"})
        push = verify_git_webhook(_github(body), body, SECRETS)
        assert isinstance(push, GitPush) and push.branch is None

    def test_malformed_and_oversized(self) -> None:
        body = b'{"ref": 1}'
        with pytest.raises(MalformedPayload):
            verify_git_webhook(_github(body), body, SECRETS)
        with pytest.raises(PayloadTooLarge):
            verify_git_webhook(_github(b"x" * 100), b"x" * 100, SECRETS, max_body=10)
