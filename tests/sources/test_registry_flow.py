"""A registry push through a running `fleetwave run`: a RolloutPolicy from the source turns
it into a Rollout of the new tag (kept by the controller, `source.kind: policy`), once only,
and never for an older tag, a bad signature or a push without the image digest. Devices
that only pull by digest (`simulate --require-digest`) install it."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

SECRET = "registry-secret"
DIGEST = "sha256:" + "9" * 64
POLICY = """\
apiVersion: fleetwave.io/v1alpha1
kind: RolloutPolicy
metadata: {name: app-auto}
spec:
  imagePattern: "acme/app:*"
  template:
    selector: {matchLabels: {env: production}}
    strategy: {steps: [{percent: 10}, {percent: 100}]}
"""


def registry_push(controller: Controller, tag: str, secret: str = SECRET,
                  digest: bool = True) -> tuple[int, Any]:
    """A Harbor push (which names the digest), or a Docker Hub one (which cannot)."""
    payload: dict[str, Any] = {
        "type": "PUSH_ARTIFACT", "occur_at": 1700000000, "operator": "ci",
        "event_data": {"resources": [{"digest": DIGEST, "tag": tag}],
                       "repository": {"repo_full_name": "acme/app"}}}
    if not digest:
        payload = {"push_data": {"tag": tag}, "repository": {"repo_name": "acme/app"},
                   "callback_url": f"https://registry.example/cb/{tag}"}
    body = json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        controller.url + "/api/v1/webhooks/registry", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "X-Hub-Signature-256": f"sha256={signature}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def policy_rollouts(controller: Controller) -> list[dict[str, Any]]:
    return [r for r in controller.get("/api/v1/rollouts")["items"]
            if r["source"]["kind"] == "policy"]


def test_a_push_becomes_a_rollout_once(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "policy.yaml").write_text(POLICY)
    controller = controller_factory(source, extra_args=("--webhook-secret", SECRET))
    controller.start()
    wait_until(lambda: controller.get("/readyz", ok_only=False) is not None, 10, "no API")

    status, _ = registry_push(controller, "2.0.1", secret="wrong")
    assert status == 401
    assert policy_rollouts(controller) == []
    status, body = registry_push(controller, "2.0.1", digest=False)
    assert status == 200 and [i.get("reason") for i in body["items"]] == ["NoDigest"], body
    assert policy_rollouts(controller) == []

    simulator_factory(20, "--speed", "40", "--seed", "5", "--require-digest")
    status, body = registry_push(controller, "2.0.1")
    assert status == 200, body
    created = wait_until(lambda: policy_rollouts(controller), 10, "no rollout created")
    assert [r["spec"]["version"] for r in created] == ["2.0.1"]
    assert created[0]["spec"]["component"] == "app"
    assert created[0]["spec"]["selector"] == {"matchLabels": {"env": "production"}}
    assert created[0]["spec"]["artifact"] == {"digest": DIGEST}

    status, body = registry_push(controller, "2.0.1")  # the same push, delivered again
    assert status == 409 and body["error"]["code"] == "replayed_delivery", body
    status, body = registry_push(controller, "1.9.0")  # older than what is desired
    assert status == 200 and not any(item.get("created") for item in body["items"]), body
    assert [r["spec"]["version"] for r in policy_rollouts(controller)] == ["2.0.1"]

    def first_wave_on_the_pushed_version() -> bool:
        return any(d["versions"].get("app") == "2.0.1" and d["deploymentType"] == "docker"
                   for d in controller.devices())

    # Docker devices refuse an update without the digest: they took this one.
    wait_until(first_wave_on_the_pushed_version, 60,
               lambda: f"devices: {controller.devices()}; log: {controller.tail()}")
