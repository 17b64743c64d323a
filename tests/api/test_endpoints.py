"""Every endpoint of DESIGN.md section 8 over real HTTP: shapes, status codes, errors."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from fleetwave.metrics import Metrics
from tests.api.conftest import AUTH, MAX_BODY, WEBHOOK_SECRET, WEBHOOK_TOKEN
from tests.api.fake_control import FakeControl

Client = TestClient[web.Request, web.Application]


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


# ---- reads ---------------------------------------------------------------------------------

async def test_list_rollouts(client: Client) -> None:
    resp = await client.get("/api/v1/rollouts")
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert {r["name"] for r in items} == {"agent-1-0-6", "nodered-3-1"}
    assert set(items[0]) == {"name", "spec", "status", "source"}


@pytest.mark.parametrize(("phase", "names"), [
    pytest.param("Completed", ["nodered-3-1"], id="completed"),
    pytest.param("Progressing", ["agent-1-0-6"], id="progressing"),
    pytest.param("Paused", [], id="none-paused"),
])
async def test_list_rollouts_phase_filter(client: Client, phase: str, names: list[str]) -> None:
    resp = await client.get("/api/v1/rollouts", params={"phase": phase})
    assert [r["name"] for r in (await resp.json())["items"]] == names


async def test_list_rollouts_unknown_phase_is_400(client: Client) -> None:
    err = await error_of(await client.get("/api/v1/rollouts?phase=Sleeping"), 400)
    assert "Progressing" in err["message"]


async def test_get_rollout_and_404(client: Client) -> None:
    resp = await client.get("/api/v1/rollouts/agent-1-0-6")
    assert (await resp.json())["spec"]["version"] == "1.0.6"
    err = await error_of(await client.get("/api/v1/rollouts/nope"), 404)
    assert err == {"code": "not_found", "message": "no rollout named nope"}


async def test_rollout_devices(client: Client) -> None:
    resp = await client.get("/api/v1/rollouts/agent-1-0-6/devices")
    assert [d["uuid"] for d in (await resp.json())["items"]] == ["dev-0", "dev-1", "dev-2"]
    await error_of(await client.get("/api/v1/rollouts/nope/devices"), 404)


@pytest.mark.parametrize(("query", "seqs", "offset", "limit"), [
    pytest.param("", list(range(25)), 0, 100, id="defaults"),
    pytest.param("?limit=10", list(range(10)), 0, 10, id="first-page"),
    pytest.param("?offset=20&limit=10", list(range(20, 25)), 20, 10, id="last-page"),
    pytest.param("?offset=30", [], 30, 100, id="past-the-end"),
])
async def test_rollout_events_paginated(client: Client, query: str, seqs: list[int],
                                        offset: int, limit: int) -> None:
    body = await (await client.get(f"/api/v1/rollouts/agent-1-0-6/events{query}")).json()
    assert [e["seq"] for e in body["items"]] == seqs
    assert (body["total"], body["offset"], body["limit"]) == (25, offset, limit)


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?offset=-1", "?limit=ten"])
async def test_rollout_events_bad_paging_is_400(client: Client, query: str) -> None:
    err = await error_of(await client.get(f"/api/v1/rollouts/agent-1-0-6/events{query}"), 400)
    assert err["code"] == "invalid_parameter"


async def test_devices(client: Client) -> None:
    items = (await (await client.get("/api/v1/devices")).json())["items"]
    assert [d["uuid"] for d in items] == ["dev-0", "dev-1", "dev-2"]
    device = await (await client.get("/api/v1/devices/dev-1")).json()
    assert device["versions"] == {"agent": "1.0.5"}
    err = await error_of(await client.get("/api/v1/devices/ghost"), 404)
    assert "ghost" in err["message"]


async def test_device_updates(client: Client) -> None:
    items = (await (await client.get("/api/v1/devices/dev-0/updates")).json())["items"]
    assert items[0]["correlationId"] == "c1"
    await error_of(await client.get("/api/v1/devices/ghost/updates"), 404)


async def test_updates_filters_reach_the_engine(client: Client, control: FakeControl) -> None:
    resp = await client.get("/api/v1/updates", params={"state": "pending", "olderThan": "30m"})
    assert [r["id"] for r in (await resp.json())["items"]] == ["u1"]
    assert control.calls[-1] == ("list_updates", {"state": "pending", "older_than": 1800.0})


@pytest.mark.parametrize("query", ["?state=sleeping", "?olderThan=30", "?olderThan=-5m",
                                   "?olderThan=4322818405594m0h"])
async def test_updates_bad_filters_are_400(client: Client, query: str) -> None:
    await error_of(await client.get(f"/api/v1/updates{query}"), 400)


# ---- probes, metrics, document -------------------------------------------------------------

async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert (resp.status, await resp.json()) == (200, {"status": "ok"})


async def test_readyz_ready_and_not_ready(client: Client, control: FakeControl) -> None:
    assert (await client.get("/readyz")).status == 200
    control.ready = (False, {"store": "ok", "broker": "connection refused"})
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["checks"]["broker"] == "connection refused"
    assert "broker: connection refused" in body["error"]["message"]


async def test_metrics_is_prometheus_text(client: Client, metrics: Metrics) -> None:
    metrics.devices_online.set(7)
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    assert families["fleetwave_devices_online"].samples[0].value == 7


def _is_dashboard(path: str) -> bool:
    """The dashboard's page, assets and its own bounded pages are not the API."""
    return path == "/" or path.startswith("/dashboard/")


async def test_openapi_document_lists_every_route(client: Client) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(r.method, r.resource.canonical) for r in client.app.router.routes()
              if r.method != "HEAD" and r.resource is not None
              and not _is_dashboard(r.resource.canonical)}
    assert served == documented


# ---- authentication ------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "status", "code"), [
    pytest.param({}, 401, "unauthorized", id="no-token"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "unauthorized", id="not-bearer"),
    pytest.param({"Authorization": "Bearer wrong"}, 403, "forbidden", id="wrong-token"),
])
async def test_writes_need_the_right_token(client: Client, control: FakeControl,
                                           headers: dict[str, str], status: int,
                                           code: str) -> None:
    resp = await client.post("/api/v1/rollouts/agent-1-0-6/pause", headers=headers)
    assert (await error_of(resp, status))["code"] == code
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert control.calls == []


async def test_any_configured_token_writes_and_is_the_actor(client: Client,
                                                            control: FakeControl) -> None:
    resp = await client.post("/api/v1/rollouts/agent-1-0-6/pause",
                             headers={"Authorization": "Bearer another-token"})
    assert resp.status == 200
    assert control.calls[-1][1]["actor"] == "api:token-1"


# ---- control -------------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "phase"), [
    ("pause", "Paused"), ("promote", "Progressing"), ("abort", "Aborted"),
    ("rollback", "RolledBack"),
])
async def test_control_ops(client: Client, control: FakeControl, op: str, phase: str) -> None:
    resp = await client.post(f"/api/v1/rollouts/agent-1-0-6/{op}", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["status"]["phase"] == phase
    assert control.calls[-1] == ("control", {"name": "agent-1-0-6", "op": op,
                                             "actor": "api:token-2", "device": None})


async def test_resume_after_pause_and_conflict(client: Client) -> None:
    err = await error_of(await client.post("/api/v1/rollouts/agent-1-0-6/resume",
                                           headers=AUTH), 409)
    assert err["code"] == "conflict"
    await client.post("/api/v1/rollouts/agent-1-0-6/pause", headers=AUTH)
    resp = await client.post("/api/v1/rollouts/agent-1-0-6/resume", headers=AUTH)
    assert (await resp.json())["status"]["phase"] == "Progressing"


async def test_promote_one_device(client: Client, control: FakeControl) -> None:
    resp = await client.post("/api/v1/rollouts/agent-1-0-6/promote", headers=AUTH,
                             json={"device": "dev-1"})
    assert resp.status == 200
    assert control.calls[-1][1]["device"] == "dev-1"


@pytest.mark.parametrize("body", [{"device": 5}, {"device": ""}, {"devise": "dev-1"}])
async def test_promote_bad_body_is_400(client: Client, body: dict[str, Any]) -> None:
    await error_of(await client.post("/api/v1/rollouts/agent-1-0-6/promote", headers=AUTH,
                                     json=body), 400)


async def test_control_unknown_rollout_is_404(client: Client) -> None:
    await error_of(await client.post("/api/v1/rollouts/nope/abort", headers=AUTH), 404)


async def test_rollback_one_device(client: Client, control: FakeControl) -> None:
    resp = await client.post("/api/v1/rollouts/agent-1-0-6/devices/dev-0/rollback",
                             headers=AUTH)
    assert (await resp.json())["device"] == "dev-0"
    assert control.calls[-1][0] == "rollback_device"
    await error_of(await client.post("/api/v1/rollouts/agent-1-0-6/devices/ghost/rollback",
                                     headers=AUTH), 404)


async def test_ad_hoc_update_then_delete(client: Client, control: FakeControl) -> None:
    resp = await client.post("/api/v1/devices/dev-1/update", headers=AUTH, json={
        "component": "agent", "version": "1.0.7", "force": True,
        "scheduled_time": "2026-12-01T02:00:00Z"})
    assert resp.status == 201
    rollout = await resp.json()
    assert rollout["source"]["kind"] == "api"
    assert resp.headers["Location"] == f"/api/v1/rollouts/{rollout['name']}"
    assert control.calls[-1][1] == {"uuid": "dev-1", "component": "agent", "version": "1.0.7",
                                    "force": True, "scheduled_time": "2026-12-01T02:00:00Z",
                                    "actor": "api:token-2"}
    assert (await client.get(resp.headers["Location"])).status == 200
    resp = await client.delete(f"/api/v1/rollouts/{rollout['name']}", headers=AUTH)
    assert (await resp.json()) == {"deleted": rollout["name"]}
    await error_of(await client.get(f"/api/v1/rollouts/{rollout['name']}"), 404)


async def test_location_header_is_escaped(client: Client, control: FakeControl) -> None:
    control.devices["a b\nc"] = {"uuid": "a b\nc"}
    resp = await client.post("/api/v1/devices/a%20b%0Ac/update", headers=AUTH,
                             json={"component": "agent", "version": "2"})
    assert resp.status == 201
    assert resp.headers["Location"] == "/api/v1/rollouts/a%20b%0Ac-agent-2"


async def test_delete_git_rollout_is_409_and_needs_token(client: Client) -> None:
    await error_of(await client.delete("/api/v1/rollouts/agent-1-0-6"), 401)
    await error_of(await client.delete("/api/v1/rollouts/agent-1-0-6", headers=AUTH), 409)


@pytest.mark.parametrize("body", [
    pytest.param({"version": "1.0.7"}, id="no-component"),
    pytest.param({"component": "agent"}, id="no-version"),
    pytest.param({"component": 1, "version": "1.0.7"}, id="component-not-string"),
    pytest.param({"component": "agent", "version": ""}, id="empty-version"),
    pytest.param({"component": "agent", "version": "1", "force": "yes"}, id="force-not-bool"),
    pytest.param({"component": "agent", "version": "1", "scheduled_time": "tomorrow"},
                 id="bad-time"),
    pytest.param({"component": "agent", "version": "1", "scheduled_time": "2026-12-01T02:00"},
                 id="naive-time"),
    pytest.param({"component": "agent", "version": "1", "colour": "blue"}, id="unknown-field"),
    pytest.param({"component": "a\nb", "version": "1"}, id="control-character"),
    pytest.param([1, 2], id="not-an-object"),
])
async def test_ad_hoc_update_bad_bodies_are_400(client: Client, control: FakeControl,
                                                body: Any) -> None:
    await error_of(await client.post("/api/v1/devices/dev-1/update", headers=AUTH, json=body),
                   400)
    assert control.calls == []


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[[[[" * 5000, b"\xff\xfe\x00"])
async def test_invalid_json_is_400(client: Client, raw: bytes) -> None:
    resp = await client.post("/api/v1/devices/dev-1/update", data=raw,
                             headers={**AUTH, "Content-Type": "application/json"})
    await error_of(resp, 400)


async def test_wrong_content_type_is_415(client: Client) -> None:
    resp = await client.post("/api/v1/devices/dev-1/update", data=b"component=agent",
                             headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert (await error_of(resp, 415))["code"] == "unsupported_media_type"


async def test_oversized_body_is_413(client: Client, control: FakeControl) -> None:
    body = json.dumps({"component": "agent", "version": "x" * (MAX_BODY + 10)})
    resp = await client.post("/api/v1/devices/dev-1/update", data=body,
                             headers={**AUTH, "Content-Type": "application/json"})
    err = await error_of(resp, 413)
    assert str(MAX_BODY) in err["message"]
    assert control.calls == []


async def test_cancel_update(client: Client) -> None:
    resp = await client.post("/api/v1/devices/dev-0/updates/u1/cancel", headers=AUTH)
    assert (await resp.json())["state"] == "cancelled"
    await error_of(await client.post("/api/v1/devices/dev-0/updates/u1/cancel", headers=AUTH),
                   409)
    await error_of(await client.post("/api/v1/devices/dev-0/updates/u9/cancel", headers=AUTH),
                   404)


# ---- routing errors ------------------------------------------------------------------------

async def test_unknown_path_is_json_404(client: Client) -> None:
    err = await error_of(await client.get("/api/v1/nothing"), 404)
    assert "openapi.json" in err["message"]


async def test_wrong_method_is_json_405(client: Client) -> None:
    resp = await client.put("/api/v1/rollouts/agent-1-0-6")
    assert (await error_of(resp, 405))["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_engine_bug_is_an_opaque_500(client: Client, control: FakeControl) -> None:
    async def broken() -> list[Any]:
        raise RuntimeError("secret internals")
    control.list_devices = broken  # type: ignore[method-assign]
    err = await error_of(await client.get("/api/v1/devices"), 500)
    assert "secret internals" not in err["message"]


# ---- webhooks (verification and parsing live in fleetwave.api.webhooks) -------------------

def signed(body: bytes, secret: bytes = WEBHOOK_SECRET, **extra: str) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json",
            **extra}


GIT_PUSH = json.dumps({"ref": "refs/heads/main", "after": "a" * 40,
                       "repository": {"full_name": "acme/rollouts"}}).encode()
DOCKER_HUB_PUSH = json.dumps({"repository": {"repo_name": "acme/app"},
                              "push_data": {"tag": "2.0.1"}}).encode()


async def test_git_webhook_signed_syncs(client: Client, control: FakeControl) -> None:
    resp = await client.post("/api/v1/webhooks/git", data=GIT_PUSH,
                             headers=signed(GIT_PUSH, **{"X-GitHub-Event": "push"}))
    assert resp.status == 202
    assert (await resp.json())["ref"] == "refs/heads/main"
    assert control.calls[-1] == ("git_push", {"ref": "refs/heads/main"})


async def test_git_webhook_ping_is_ignored(client: Client, control: FakeControl) -> None:
    body = b'{"zen": "hello"}'
    resp = await client.post("/api/v1/webhooks/git", data=body,
                             headers=signed(body, **{"X-GitHub-Event": "ping"}))
    assert (resp.status, (await resp.json())["accepted"]) == (200, False)
    assert control.calls == []


async def test_registry_webhook_with_token_reaches_policies(client: Client,
                                                           control: FakeControl) -> None:
    resp = await client.post("/api/v1/webhooks/registry", data=DOCKER_HUB_PUSH,
                             params={"token": WEBHOOK_TOKEN},
                             headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert (await resp.json())["items"] == [{"outcome": "ignored"}]
    name, args = control.calls[-1]
    assert name == "registry_pushes"
    assert [p.image for p in args["pushes"]] == ["acme/app:2.0.1"]


@pytest.mark.parametrize(("path", "body"), [("/api/v1/webhooks/git", GIT_PUSH),
                                            ("/api/v1/webhooks/registry", DOCKER_HUB_PUSH)])
@pytest.mark.parametrize("headers", [
    pytest.param({"Content-Type": "application/json"}, id="unsigned"),
    pytest.param({"X-Hub-Signature-256": "sha256=" + "0" * 64}, id="bad-signature"),
    pytest.param(signed(b'{"ref": "other"}'), id="signature-of-another-body"),
    pytest.param(signed(GIT_PUSH + DOCKER_HUB_PUSH, b"wrong-secret"), id="wrong-secret"),
])
async def test_webhook_bad_signature_is_401(client: Client, control: FakeControl, path: str,
                                            body: bytes, headers: dict[str, str]) -> None:
    assert (await error_of(await client.post(path, data=body, headers=headers),
                           401))["code"] == "unauthorized"
    assert control.calls == []


@pytest.mark.parametrize("path", ["/api/v1/webhooks/git", "/api/v1/webhooks/registry"])
@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"unknown": "shape"}'])
async def test_webhook_signed_but_malformed_is_400(client: Client, control: FakeControl,
                                                   path: str, body: bytes) -> None:
    err = await error_of(await client.post(path, data=body, headers=signed(body)), 400)
    assert err["code"] == "malformed_payload"
    assert control.calls == []


async def test_webhook_oversized_is_413(client: Client) -> None:
    body = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
    await error_of(await client.post("/api/v1/webhooks/registry", data=body,
                                     headers=signed(body)), 413)
