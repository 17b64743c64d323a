"""The operator confined to one namespace (the deployments' default: FLEETWAVE_NAMESPACE from
the pod, a Role and no ClusterRole). It must see only that namespace's Rollouts and send no
request a namespaced Role could not allow.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator (a real
HTTP server on 127.0.0.1, see `apiserver.py`) stands in at the HTTP boundary; it does not
emulate RBAC, so the test checks the scope of every request the operator sends instead.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from fleetwave.cli.operator import watched_namespace
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import ROLLOUTS, eventually, kubectl, rollout
from tests.operator.doubles import RecordingEngine

DISCOVERY = re.compile(r"^/api(/v1)?/?$|^/apis(/[^/]+){0,2}/?$")
"""/api, /api/v1, /apis, /apis/GROUP, /apis/GROUP/VERSION: open to every authenticated
client (not /api/v1/namespaces, which lists namespaces)."""
NAMESPACED = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/")


async def test_a_namespaced_operator_sees_and_asks_for_its_namespace_only(
        apiserver: ApiServer, operators: Any) -> None:
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="fleet"), rollout("mine"),
                  "application/json")
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="elsewhere"),
                  rollout("theirs", "elsewhere"), "application/json")
    engine = RecordingEngine()
    op = await operators(engine, namespace="fleet")
    await eventually(lambda: op.runtime.leading and "mine" in engine.rollouts)
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="elsewhere"),
                  rollout("later", "elsewhere"), "application/json")
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="fleet"), rollout("mine-later"),
                  "application/json")
    await eventually(lambda: "mine-later" in engine.rollouts, message="a later Rollout")
    assert set(engine.rollouts) == {"mine", "mine-later"}

    # Everything but the test's own `kubectl` calls (the emulator's client, kmock/…).
    sent_by_operator = [r for r in apiserver
                        if not r.headers.get("User-Agent", "").startswith("kmock/")]
    assert any(r.headers.get("User-Agent", "").startswith("kopf/") for r in sent_by_operator)
    scopes = set()
    for request in sent_by_operator:
        path = request.url.path
        if DISCOVERY.match(path):
            continue
        match = NAMESPACED.match(path)
        assert match, f"{request.method} {path}: a cluster-wide request a Role cannot allow"
        scopes.add(match["ns"])
    # The Rollouts' namespace, and the Lease's (the tests' fixture keeps it in fleetwave;
    # deployed, --lease-namespace defaults to the watched namespace).
    assert scopes <= {"fleet", "fleetwave"} and "fleet" in scopes


@pytest.mark.parametrize(("namespace", "all_namespaces", "expected"), [
    pytest.param("fleet", False, "fleet", id="given"),
    pytest.param(None, True, None, id="all-namespaces"),
    pytest.param(None, False, "pod", id="default-is-the-pods"),
])
def test_the_cli_watches_one_namespace_unless_told(
        namespace: str | None, all_namespaces: bool, expected: str | None) -> None:
    assert watched_namespace(namespace, all_namespaces, pod=lambda: "pod") == expected
