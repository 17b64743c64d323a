"""A 410 Gone on a watch: kopf lists again and carries on; the engine misses nothing.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator
(a real HTTP server on 127.0.0.1, extended in `apiserver.py` to answer a
chosen watch with an ERROR event of code 410, as an API server does when the
resourceVersion is too old) stands in at the HTTP boundary; it does not
emulate schema validation, defaulting or RBAC.
"""

from __future__ import annotations

from typing import Any

from tests.operator.apiserver import ApiServer
from tests.operator.conftest import ROLLOUTS, eventually, kubectl, rollout
from tests.operator.doubles import RecordingEngine

CLUSTER_ROLLOUTS = "/apis/fleetwave.io/v1alpha1/rollouts"


def _kopf(apiserver: ApiServer, *, watch: bool) -> list[Any]:
    return [r for r in apiserver if r.method == "GET" and r.url.path == CLUSTER_ROLLOUTS
            and ("watch" in r.params) == watch
            and r.headers.get("User-Agent", "").startswith("kopf")]


async def test_watch_gone_relists_and_continues(apiserver: ApiServer, operators: Any) -> None:
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="fleet"), rollout("before"),
                  "application/json")
    apiserver.gone["rollouts"] = 1
    engine = RecordingEngine()
    op = await operators(engine)
    await eventually(lambda: op.runtime.leading and "before" in engine.rollouts)
    await eventually(lambda: len(_kopf(apiserver, watch=True)) >= 2, message="second watch")
    assert apiserver.gone["rollouts"] == 0
    assert len(_kopf(apiserver, watch=False)) >= 2  # listed again after the 410
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="fleet"), rollout("after"),
                  "application/json")
    await eventually(lambda: "after" in engine.rollouts, message="rollout after the 410")
    assert set(engine.rollouts) == {"before", "after"}
