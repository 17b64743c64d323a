"""The OpenAPI 3.1 document of the HTTP API, served at `/api/v1/openapi.json`.

Written as data next to the server so users can generate clients, and so the
schemathesis tests fuzz exactly what we claim. The Rollout spec and status
reuse the resource schemas (OpenAPI 3.1 speaks JSON Schema 2020-12), so the
API, the CRD and the git files cannot drift apart.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from fleetwave import __version__
from fleetwave.resources.durations import PATTERN as DURATION_PATTERN
from fleetwave.resources.schema import PHASES, ROLLOUT_SPEC, ROLLOUT_STATUS
from fleetwave.resources.vocabulary import CONTROL_OPS, OPERATIONS
from fleetwave.updates.model import UpdateState

Schema = dict[str, Any]

STRING = {"type": "string"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string", "description": "A stable slug."},
                       "message": {"type": "string", "description": "What to do about it."}},
    }},
}

SOURCE: Schema = {
    "type": "object",
    "description": "Where the rollout comes from.",
    "properties": {
        "kind": {"type": "string", "description": "git, folder, kubernetes, api or policy."},
        "revision": {"type": ["string", "null"]},
        "path": {"type": ["string", "null"]},
    },
}

ROLLOUT: Schema = {
    "type": "object",
    "required": ["name", "spec", "status", "source"],
    "properties": {
        "name": STRING,
        "spec": copy.deepcopy(ROLLOUT_SPEC),
        "status": copy.deepcopy(ROLLOUT_STATUS),
        "source": SOURCE,
    },
}

UPDATE_RECORD: Schema = {
    "type": "object",
    "description": "One update attempt of one device; a timestamp per state reached.",
    "properties": {
        "id": STRING, "device": STRING, "rollout": {"type": ["string", "null"]},
        "component": STRING, "fromVersion": {"type": ["string", "null"]},
        "toVersion": STRING, "state": {"type": "string", "enum": [s.value for s in UpdateState]},
        "attempt": {"type": "integer"}, "correlationId": STRING,
        "action": {"type": "string", "enum": list(OPERATIONS),
                   "description": "update, rollback, or download (strategy.download: "
                                  "fetch and verify only)."},
        "release": {"type": "integer", "description": "What this attempt's signed commands "
                    "carry; devices refuse a lower one (DESIGN.md 9.1)."},
        "reason": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
        "exitCode": {"type": ["integer", "null"]}, "triggeredBy": STRING,
        "createdAt": {"type": ["string", "null"]},
        "acknowledgedAt": {"type": ["string", "null"]},
        "startedAt": {"type": ["string", "null"]},
        "completedAt": {"type": ["string", "null"]},
    },
    "additionalProperties": True,
}

DEVICE: Schema = {
    "type": "object",
    "description": "A device's reported state, merged labels and liveness.",
    "properties": {
        "uuid": STRING,
        "online": {"type": ["boolean", "null"]},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": True,
}

ROLLOUT_DEVICE: Schema = {
    "type": "object",
    "description": "A device's state within one rollout.",
    "properties": {"uuid": STRING, "step": {"type": ["integer", "null"]},
                   "state": {"type": ["string", "null"]}, "attempt": {"type": ["integer", "null"]},
                   "version": {"type": ["string", "null"]},
                   "action": {"type": "string", "enum": list(OPERATIONS),
                              "description": "What the device's newest record does."},
                   "reason": {"type": ["string", "null"]}},
    "additionalProperties": True,
}

EVENT: Schema = {"type": "object", "description": "A rollout transition in the audit trail.",
                 "additionalProperties": True}

UPDATE_REQUEST: Schema = {
    "type": "object",
    "description": "An ad-hoc update of one device; it becomes a one-device Rollout.",
    "required": ["component", "version"],
    "additionalProperties": False,
    "properties": {
        "component": {"type": "string", "minLength": 1, "maxLength": 253,
                      "pattern": r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$"},
        "version": {"type": "string", "minLength": 1, "maxLength": 253,
                    "pattern": r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$"},
        "force": {"type": "boolean", "default": False},
        "scheduled_time": {"type": ["string", "null"], "format": "date-time"},
    },
}

PROMOTE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"device": {"type": "string", "minLength": 1, "maxLength": 253,
                              "description": "Release this parked device only."}},
}

BEARER_DESCRIPTION = ("A token from --token-file (writes and reads), or from --read-token-file "
                      "(reads; needed only when the server has one).")

EMPTY_REQUEST: Schema = {"type": "object", "additionalProperties": False, "properties": {}}


def _items(schema: Schema, **extra: Schema) -> Schema:
    return {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": schema}, **extra}}


PAGE_PARAMS: list[dict[str, Any]] = [
    {"name": "limit", "in": "query", "required": False,
     "description": "Items per page.",
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    {"name": "cursor", "in": "query", "required": False,
     "description": "The `next` of the previous page, unchanged; leave out for the first.",
     "schema": {"type": "string", "maxLength": 1024}},
]


def _page(schema: Schema, *, total: bool = True) -> Schema:
    """A page of a long list: `items` as before paging, `next` the cursor of the next page."""
    extra: dict[str, Schema] = {"next": {"type": ["string", "null"],
                                         "description": "Pass as `cursor`; null on the last "
                                                        "page."}}
    if total:
        extra["total"] = {"type": "integer", "minimum": 0}
    page = _items(schema, **extra)
    page["required"] = ["items", "next"]
    return page


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


NAME = _path_param("name", "The rollout's name.")
UUID = _path_param("uuid", "The device's uuid.")
UPDATE_ID = _path_param("id", "The update record's id.")

WRITE_ERRORS = {
    "400": _error("A malformed body or parameter."),
    "401": _error("No bearer token."),
    "403": _error("A wrong token, or writes are disabled (no --token-file)."),
    "404": _error("No such rollout, device or update."),
    "409": _error("The operation conflicts with the rollout's state."),
    "413": _error("The body is larger than the server's bound."),
    "415": _error("The body is not application/json."),
}


def _write(summary: str, params: list[dict[str, Any]], ok: dict[str, Any],
           body: Schema | None = None, *, required: bool = False,
           ok_status: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params,
                          "security": [{"bearer": []}],
                          "responses": {ok_status: ok, **WRITE_ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": required,
                             "content": {"application/json": {"schema": body}}}
    return op


def _read(summary: str, params: list[dict[str, Any]], ok: dict[str, Any],
          *, not_found: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": ok, "400": _error("A malformed parameter."),
        "401": _error("No bearer token, on a server with --read-token-file."),
        "403": _error("A token from neither --read-token-file nor --token-file.")}
    if not_found:
        responses["404"] = _error("No such rollout or device.")
    return {"summary": summary, "parameters": params, "responses": responses}


@cache
def build_openapi() -> dict[str, Any]:
    """The whole document; cached, it is the same for the process's life."""
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness: the process serves HTTP.",
                             "responses": {"200": _json(ANY_OBJECT, "Alive.")}}},
        "/readyz": {"get": {"summary": "Readiness: store, broker and source are usable.",
                            "responses": {"200": _json(ANY_OBJECT, "Ready."),
                                          "503": _json(ANY_OBJECT, "Not ready, with reasons.")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {
            "description": "Prometheus text format.",
            "content": {"text/plain": {"schema": STRING}}}}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document.",
                                         "responses": {"200": _json(ANY_OBJECT, "OpenAPI 3.1.")}}},
        "/api/v1/rollouts": {"get": _read(
            "List rollouts.",
            [{"name": "phase", "in": "query", "required": False,
              "schema": {"type": "string", "enum": PHASES}}],
            _json(_items(_ref("Rollout")), "The rollouts."), not_found=False)},
        "/api/v1/rollouts/{name}": {
            "get": _read("One rollout.", [NAME], _json(_ref("Rollout"), "The rollout.")),
            "delete": _write("Delete a rollout created by the API or a policy.", [NAME],
                             _json({"type": "object", "properties": {"deleted": STRING}},
                                   "Deleted.")),
        },
        "/api/v1/rollouts/{name}/devices": {"get": _read(
            "Per-device state in this rollout, by uuid.", [NAME, *PAGE_PARAMS],
            _json(_page(_ref("RolloutDevice")), "A page of devices."))},
        "/api/v1/rollouts/{name}/events": {"get": _read(
            "The rollout's events, oldest first.",
            [NAME,
             {"name": "offset", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 0, "default": 0}},
             {"name": "limit", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
            _json(_items(_ref("Event"), total={"type": "integer"},
                         offset={"type": "integer"}, limit={"type": "integer"}),
                  "A page of events."))},
        "/api/v1/rollouts/{name}/devices/{uuid}/rollback": {"post": _write(
            "Put one device back on its previous version.", [NAME, UUID],
            _json(_ref("UpdateRecord"), "The rollback record."), EMPTY_REQUEST)},
        "/api/v1/devices": {"get": _read("List devices, by uuid.", PAGE_PARAMS,
                                         _json(_page(_ref("Device")), "A page of devices."),
                                         not_found=False)},
        "/api/v1/devices/{uuid}": {"get": _read("One device.", [UUID],
                                                _json(_ref("Device"), "The device."))},
        "/api/v1/devices/{uuid}/update": {"post": _write(
            "An ad-hoc update of one device, as a one-device Rollout (source.kind api).",
            [UUID], _json(_ref("Rollout"), "The rollout created."), _ref("UpdateRequest"),
            required=True, ok_status="201")},
        "/api/v1/devices/{uuid}/updates/{id}/cancel": {"post": _write(
            "Cancel an open update.", [UUID, UPDATE_ID],
            _json(_ref("UpdateRecord"), "The cancelled record."), EMPTY_REQUEST)},
        "/api/v1/devices/{uuid}/updates": {"get": _read(
            "The device's update records, newest first.",
            [UUID, {"name": "limit", "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                               "default": 100}}],
            _json(_items(_ref("UpdateRecord")), "The records."))},
        "/api/v1/updates": {"get": _read(
            "Open or stale updates across the fleet.",
            [{"name": "state", "in": "query", "required": False,
              "schema": {"type": "string", "enum": [s.value for s in UpdateState]}},
             {"name": "olderThan", "in": "query", "required": False,
              "description": "Only updates created longer ago than this, e.g. 30m.",
              "schema": {"type": "string", "pattern": DURATION_PATTERN}},
             *PAGE_PARAMS],
            _json(_page(_ref("UpdateRecord"), total=False), "A page of records, oldest first."),
            not_found=False)},
    }
    for op in CONTROL_OPS:
        body = PROMOTE_REQUEST if op == "promote" else EMPTY_REQUEST
        paths[f"/api/v1/rollouts/{{name}}/{op}"] = {"post": _write(
            f"{op.capitalize()} the rollout.", [NAME], _json(_ref("Rollout"), "The rollout."),
            body)}
    webhook_errors = {
        "400": _error("A malformed payload."),
        "401": _error("A missing or wrong signature."),
        "403": _error("The webhook has no secret configured."),
        "413": _error("The body is larger than the server's bound."),
    }
    paths["/api/v1/webhooks/registry"] = {"post": {
        "summary": "A registry push notification (HMAC-SHA256 signed).",
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": ANY_OBJECT}}},
        "responses": {"200": _json(_items(ANY_OBJECT), "One outcome per push."),
                      **webhook_errors}}}
    paths["/api/v1/webhooks/git"] = {"post": {
        "summary": "A git push notification (HMAC-SHA256 signed): sync now.",
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": ANY_OBJECT}}},
        "responses": {"202": _json(ANY_OBJECT, "Sync scheduled."), **webhook_errors}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "fleetwave", "version": __version__,
                 "description": "Rollouts of software versions to device fleets."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": BEARER_DESCRIPTION}},
            "schemas": {"Error": ERROR, "Rollout": ROLLOUT, "Device": DEVICE,
                        "RolloutDevice": ROLLOUT_DEVICE, "UpdateRecord": UPDATE_RECORD,
                        "Event": EVENT, "UpdateRequest": UPDATE_REQUEST},
        },
    }
