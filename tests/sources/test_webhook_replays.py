"""Replayed webhook deliveries are refused by a running `fleetwave run`, even after a restart.

A real controller with a git source (a bare repository on disk) and a real SQLite store:
the delivery ids it has handled live in the store, so a stop and a start in between do
not let the same delivery act twice. Our own signature scheme also signs a timestamp,
and a delivery outside the window is refused before anything happens. Each refusal
answers with its reason and counts in `fleetwave_api_requests_refused_total`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from fleetwave.api.webhooks import sign_delivery
from tests.metrics.scrape import scrape
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


def deliver(controller: Controller, after: str, headers: dict[str, str],
            sign: Callable[[bytes], dict[str, str]]) -> tuple[int, Any]:
    body = json.dumps({"ref": "refs/heads/main", "after": after,
                       "repository": {"full_name": "acme/fleet"}}).encode()
    request = urllib.request.Request(
        controller.url + "/api/v1/webhooks/git", data=body, method="POST",
        headers={"Content-Type": "application/json", **headers, **sign(body)})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def github(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"}


def ours(at: float) -> Callable[[bytes], dict[str, str]]:
    def sign(body: bytes) -> dict[str, str]:
        return {"X-Fleetwave-Timestamp": str(int(at)),
                "X-Fleetwave-Signature": sign_delivery(SECRET.encode(), body, int(at))}
    return sign


def refused(controller: Controller, reason: str) -> float | None:
    return scrape(controller.url).value("fleetwave_api_requests_refused_total", reason=reason)


def names(controller: Controller) -> set[str]:
    return {r["name"] for r in controller.get("/api/v1/rollouts")["items"]}


def test_a_delivery_acts_once_across_a_restart(
        git_repo: BareRepo, controller_factory: Callable[..., Controller]) -> None:
    git_repo.commit({"rollouts/first.yaml": ROLLOUT.format(name="first")}, "first")
    controller = controller_factory(git_repo.file_url, extra_args=(
        "--path", "rollouts", "--poll-interval", "3600", "--webhook-secret", SECRET))
    controller.start()
    wait_until(lambda: names(controller) == {"first"}, 30, controller.tail)
    git_repo.commit({"rollouts/second.yaml": ROLLOUT.format(name="second")}, "second")
    head = git_repo.head("main")

    gh = {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    assert deliver(controller, head, gh, github)[0] == 202
    wait_until(lambda: names(controller) == {"first", "second"}, 10, controller.tail)
    status, body = deliver(controller, head, gh, github)
    assert (status, body["error"]["code"]) == (409, "replayed_delivery")

    controller.stop()
    controller.start()  # same store
    wait_until(lambda: names(controller) == {"first", "second"}, 30, controller.tail)
    # The start-up sync is done and the poll interval is an hour: only a webhook syncs now.
    git_repo.commit({"rollouts/third.yaml": ROLLOUT.format(name="third")}, "third")

    # GitHub signs no timestamp: its delivery id, remembered in the store, is the guard.
    status, body = deliver(controller, git_repo.head("main"), gh, github)
    assert (status, body["error"]["code"]) == (409, "replayed_delivery"), body
    assert refused(controller, "replayed_delivery") == 1  # counted since this start

    # Our own scheme: a captured delivery replayed after the window is refused by its
    # signed timestamp, whatever its id.
    mine = {"X-Fleetwave-Delivery": "fw-1"}
    status, body = deliver(controller, git_repo.head("main"), mine, ours(time.time() - 600))
    assert (status, body["error"]["code"]) == (401, "stale_timestamp"), body
    assert "window is 300 s" in body["error"]["message"]
    assert refused(controller, "stale_timestamp") == 1
    assert "third" not in names(controller)

    # A fresh, signed delivery acts, once.
    assert deliver(controller, git_repo.head("main"), mine, ours(time.time()))[0] == 202
    wait_until(lambda: "third" in names(controller), 10, controller.tail)
    status, body = deliver(controller, git_repo.head("main"), mine, ours(time.time()))
    assert (status, body["error"]["code"]) == (409, "replayed_delivery")
    assert refused(controller, "replayed_delivery") == 2
