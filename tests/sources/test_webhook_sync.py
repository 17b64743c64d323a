"""A signed git push webhook makes a running `fleetwave run` sync its git source at once,
long before its poll interval; a forged one is refused and changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.support.git import BareRepo
from tests.support.processes import Controller, wait_until

pytestmark = pytest.mark.slow

SECRET = "webhook-secret"
ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec: {{component: agent, version: "1.0.6", selector: {{}}}}
"""


def push(controller: Controller, secret: str, after: str) -> int:
    body = json.dumps({"ref": "refs/heads/main", "after": after,
                       "repository": {"full_name": "acme/fleet"}}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        controller.url + "/api/v1/webhooks/git", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-GitHub-Event": "push",
                 "X-GitHub-Delivery": "d-1", "X-Hub-Signature-256": f"sha256={signature}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def names(controller: Controller) -> set[str]:
    return {r["name"] for r in controller.get("/api/v1/rollouts")["items"]}


def test_a_signed_push_syncs_at_once(
        git_repo: BareRepo, controller_factory: Callable[..., Controller]) -> None:
    git_repo.commit({"rollouts/first.yaml": ROLLOUT.format(name="first")}, "first")
    controller = controller_factory(git_repo.file_url, extra_args=(
        "--path", "rollouts", "--poll-interval", "3600", "--webhook-secret", SECRET))
    controller.start()
    wait_until(lambda: names(controller) == {"first"}, 30, controller.tail)
    git_repo.commit({"rollouts/second.yaml": ROLLOUT.format(name="second")}, "second")

    assert push(controller, "forged-secret", git_repo.head("main")) == 401
    assert names(controller) == {"first"}

    assert push(controller, SECRET, git_repo.head("main")) == 202
    wait_until(lambda: names(controller) == {"first", "second"}, 10,
               lambda: f"not synced after the webhook: {names(controller)}")
    second = controller.rollout("second")
    assert second["source"]["kind"] == "git"
    assert second["source"]["revision"] == git_repo.head("main")
