"""The JSON Schemas of Rollout, RolloutPolicy and DeviceInventory, written once.

They are the single source for validating files from git or a folder, for the
CRDs' `openAPIV3Schema` (and so `kubectl explain`), and for the docs. Keep them
to the structural subset Kubernetes accepts: every object has `type`, no
`$ref`, no `oneOf` at the top of a property, descriptions everywhere.
Defaults live here too, so the cluster and the loader fill in the same values.
"""

from __future__ import annotations

import copy
from typing import Any

from fleetwave import GROUP_VERSION
from fleetwave.resources import vocabulary
from fleetwave.resources.durations import PATTERN as DURATION_PATTERN

Schema = dict[str, Any]

LABEL_NAME_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
RESOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"


def _str(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _duration(description: str, default: str | None = None) -> Schema:
    schema: Schema = {
        "type": "string",
        "pattern": DURATION_PATTERN,
        "description": description + " A duration such as 30s, 10m, 4h or 1h30m.",
    }
    if default is not None:
        schema["default"] = default
    return schema


def _obj(description: str, properties: dict[str, Schema], required: list[str] | None = None,
         **extra: Any) -> Schema:
    schema: Schema = {
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }
    if required:
        schema["required"] = required
    return schema


def _list(description: str, items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "description": description, "items": items, **extra}


def _string_map(description: str) -> Schema:
    return {"type": "object", "description": description,
            "additionalProperties": {"type": "string"}}


DEVICE_LIST = _list(
    "Device uuids, exactly as the devices use them in their MQTT topics.",
    _str("A device uuid.", minLength=1),
)

SELECTOR = _obj(
    "Which devices this applies to, with Kubernetes label-selector semantics over the labels "
    "devices report merged with DeviceInventory labels (inventory wins). All given terms must "
    "match (AND). `devices` adds explicit uuids whatever their labels. Required, so that a "
    "forgotten selector never reaches the whole fleet; write `selector: {}` to mean every device.",
    {
        "matchLabels": _string_map(
            "Labels a device must have, each with exactly this value."),
        "matchExpressions": _list(
            "Label requirements; a device must meet every one.",
            _obj(
                "One label requirement.",
                {
                    "key": _str("The label name.", minLength=1),
                    "operator": _str(
                        "How the label relates to `values`: In, NotIn, Exists or DoesNotExist.",
                        enum=["In", "NotIn", "Exists", "DoesNotExist"]),
                    "values": _list(
                        "Label values for In and NotIn; must be empty for Exists and "
                        "DoesNotExist.", _str("A label value.")),
                },
                required=["key", "operator"],
            ),
        ),
        "devices": DEVICE_LIST,
    },
)

EXCLUDE = _obj(
    "Devices that are pinned: this rollout never sends them a command, whatever the selector.",
    {"devices": DEVICE_LIST},
)

DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"

ARTIFACT = _obj(
    "What devices fetch and how they verify it: a download `url` with its `sha256`, or a "
    "container image's `digest`.",
    {
        "url": _str("Download URL of the artifact (tarball, package or image reference); "
                    "needs sha256.", minLength=1),
        "sha256": _str("Lower-case hex SHA-256 of the artifact; devices refuse a mismatch.",
                       pattern=SHA256_PATTERN),
        "digest": _str("Image digest (sha256:<64 hex>) devices pull, never a mutable tag; "
                       "set from the registry's push for RolloutPolicy rollouts.",
                       pattern=DIGEST_PATTERN),
    },
    dependentRequired={"url": ["sha256"]},
    anyOf=[{"required": ["url"]}, {"required": ["digest"]}],
)

ANALYSIS = _obj(
    "Judge this step by a metric while it soaks: the next step starts (or the rollout "
    "completes) only once the query's result has stayed within the bounds for `for` since "
    "the wave finished; outside them for `for` is a failure of the rollout "
    "(failurePolicy.action applies, reason AnalysisFailed). An unreachable Prometheus, no "
    "data or more than one series keeps the step from finishing and never passes it.",
    {"prometheus": _obj(
        "An instant PromQL query against Prometheus's HTTP API (GET {url}/api/v1/query).",
        {"url": _str("Base URL of the Prometheus server, http:// or https://.", minLength=1),
         "query": _str("The query, in PromQL; its result must be a scalar or a vector of "
                       "exactly one sample.",
                       minLength=1),
         "min": {"type": "number", "description": "Lowest value inside the bounds "
                                                  "(inclusive); at least one of min/max."},
         "max": {"type": "number", "description": "Highest value inside the bounds "
                                                  "(inclusive); at least one of min/max."},
         "for": _duration("How long the result must stay inside the bounds to pass the "
                          "step, or outside them to fail the rollout; without it one sample "
                          "decides.")},
        required=["url", "query"])},
    required=["prometheus"],
)

STEP = _obj(
    "One wave: the cumulative share of targeted devices that runs the new version once the "
    "wave is done.",
    {
        "percent": {
            "type": "integer", "minimum": 1, "maximum": 100,
            "description": "Cumulative percent of targeted devices (1-100); steps must "
                           "increase and the last must be 100.",
        },
        "pause": _duration("How long to wait after this wave finishes before the next starts."),
        "gate": _obj(
            "Ask before this wave starts: the wave waits (Waiting, reason GateClosed) until "
            "the gate answers open; it is asked again with back-off.",
            {"webhook": _obj(
                "POST {rollout, step, version, counts}, HMAC-signed like notifications; a "
                "2xx answer with {\"allow\": true} opens the gate, anything else keeps it "
                "closed.",
                {"url": _str("The http(s) URL to POST to.", minLength=1),
                 "secretRef": _str("Name of the environment variable holding the HMAC "
                                   "secret (X-Fleetwave-Signature: sha256=...).",
                                   minLength=1)},
                required=["url"])},
            required=["webhook"]),
        "analysis": ANALYSIS,
    },
    required=["percent"],
)

DEFAULT_STEPS = [{"percent": 5}, {"percent": 25}, {"percent": 50}, {"percent": 100}]

WINDOW = _obj(
    "A recurring maintenance window: new update commands are only sent inside it. Updates "
    "already started finish outside it.",
    {
        "cron": _str("When each window opens, as a 5-field cron expression "
                     "(minute hour day-of-month month day-of-week), e.g. `0 2 * * *` for 2 AM.",
                     minLength=1),
        "duration": _duration("How long each window stays open."),
        "timezone": _str(
            "IANA time zone the cron expression is read in (e.g. Europe/Berlin), or `device` "
            "to use each device's own `timezone` label so 2 AM is 2 AM where the device is.",
            default="UTC", minLength=1),
        "fallbackTimezone": _str(
            "With timezone `device`: the IANA zone for devices without a `timezone` label.",
            default="UTC", minLength=1),
    },
    required=["cron", "duration"],
)

FREEZE = _obj(
    "An absolute interval in which no new update commands are sent (open updates finish).",
    {
        "start": _str("Start of the freeze, RFC 3339 (e.g. 2026-12-24T00:00:00Z).",
                      format="date-time"),
        "end": _str("End of the freeze, RFC 3339; must be after start.", format="date-time"),
        "reason": _str("Why; shown in status and events."),
    },
    required=["start", "end"],
)

BUDGET = _obj(
    "A disruption budget per site: at most `maxInFlight` devices updating at once among "
    "the devices that share one value of the label `groupBy` (devices without the label "
    "share one budget of their own).",
    {
        "groupBy": _str("The device label whose values are the sites, e.g. `region`.",
                        pattern=LABEL_NAME_PATTERN, minLength=1),
        "maxInFlight": {"type": "integer", "minimum": 1,
                        "description": "Devices updating at once within one value of the "
                                       "label."},
    },
    required=["groupBy", "maxInFlight"],
)

RAMP = _obj(
    "Exponential pacing: commands per minute start at `startPerMinute` and are multiplied by "
    "`factor` every `every` while the rollout runs, never above `maxPerMinute`. A pause of "
    "the rollout (by a user, `spec.paused` or the failure budget) starts it again from "
    "`startPerMinute`.",
    {
        "startPerMinute": {"type": "integer", "minimum": 1,
                           "description": "Commands per minute at the start."},
        "factor": {"type": "number", "minimum": 1, "default": 2,
                   "description": "What the rate is multiplied by every `every`."},
        "every": _duration("How long each rate holds before it grows.", default="1m"),
        "maxPerMinute": {"type": "integer", "minimum": 1,
                         "description": "The rate never exceeds this; at least "
                                        "`startPerMinute`."},
    },
    required=["startPerMinute", "maxPerMinute"],
)

HOP = _obj(
    "A mandatory intermediate version: a device that runs a version below `below` is first "
    "taken to `via`, then to the rollout's version, both as attempts of this rollout.",
    {
        "below": _str("Devices reporting a version lower than this (SemVer precedence) go "
                      "through `via` first.", minLength=1),
        "via": _str("The intermediate version; at least `below` and lower than the "
                    "rollout's version.", minLength=1),
    },
    required=["below", "via"],
)

STRATEGY = _obj(
    "How fast to get there: waves, pacing, windows and approvals.",
    {
        "steps": _list("The waves, in order. Defaults to a 5/25/50/100 percent canary.",
                       STEP, minItems=1, default=copy.deepcopy(DEFAULT_STEPS)),
        "maxInFlight": {"type": "integer", "minimum": 1, "default": 500,
                        "description": "Never more than this many devices updating at once."},
        "maxPerMinute": {"type": "integer", "minimum": 1,
                         "description": "Pace: at most this many update commands sent per "
                                        "minute, whatever the health. Unlimited when absent."},
        "budgets": _list("Per-site disruption budgets, each on its own label, alongside "
                         "maxInFlight.", BUDGET),
        "ramp": RAMP,
        "requires": _list("Mandatory intermediate versions (a migration that must run "
                          "first); the lowest applicable `via` is taken first.", HOP),
        "window": WINDOW,
        "freezes": _list("Intervals with no new commands (holidays, events).", FREEZE),
        "notBefore": _str("No command is sent before this instant (RFC 3339).",
                          format="date-time"),
        "manualApproval": {"type": "boolean", "default": False,
                           "description": "Wait for `fleetwave promote` before each wave "
                                          "after the first."},
    },
    # `{}` so that the API server, like the loader, fills in the nested defaults.
    default={},
)

CHECK = _obj(
    "A health check run against each updated device.",
    {
        "type": _str("http, tcp or container.", enum=["http", "tcp", "container"]),
        "name": _str("A name for the check, shown in status and events."),
        "url": _str("http: the URL to GET; `{device_ip}`, `{device_name}` and `{device_uuid}` "
                    "are replaced from the device's reported state."),
        "expectStatus": {"type": "integer", "minimum": 100, "maximum": 599, "default": 200,
                         "description": "http: the expected HTTP status code."},
        "bodyContains": _str("http: a substring the response body must contain."),
        "host": _str("tcp: the host to connect to; `{device_ip}` is replaced. Defaults to "
                     "the device's reported ip."),
        "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                 "description": "tcp: the port that must accept a connection."},
        "container": _str("container: the container name that must be running."),
        "image": _str("container: the image (or tag) the running container must have; "
                      "defaults to the rollout's version as tag."),
        "timeout": _duration("How long one check may take.", default="5s"),
    },
    required=["type"],
)

HEALTH = _obj(
    "How to decide that an updated device is healthy.",
    {
        "ackTimeout": _duration("Command sent to device acknowledged; a device silent this "
                                "long is unreachable.", default="10m"),
        "updateTimeout": _duration("Update started to success or failure; longer is a "
                                   "timeout.", default="15m"),
        "stableFor": _duration("After success, the device must keep the new version and "
                               "pass its checks this long to count as healthy.", default="5m"),
        "checks": _list("HTTP, TCP and container checks, all of which must pass.", CHECK),
        "confirmAfterRestart": {"type": "boolean", "default": False,
                                "description": "A device's success counts only once it "
                                "reports the new version after a restart (a new boot id); "
                                "no restart within updateTimeout is a timeout, reason "
                                "NoRestart."},
    },
    default={},
)

FAILURE_POLICY = _obj(
    "What to do when devices fail.",
    {
        "maxFailurePercent": {"type": "number", "minimum": 0, "maximum": 100, "default": 20,
                              "description": "Failure budget: (failed + timed out + "
                                             "unhealthy) / terminal devices, in percent."},
        "minSample": {"type": "integer", "minimum": 1, "default": 5,
                      "description": "The budget is only judged once this many devices "
                                     "are terminal."},
        "action": _str("Applied when the budget is exceeded: pause (wait for a person), "
                       "rollback (put updated devices back) or abort (stop; devices keep "
                       "what they run).", enum=["pause", "rollback", "abort"], default="pause"),
        "retries": {"type": "integer", "minimum": 0, "default": 1,
                    "description": "Further attempts per device after a failure or timeout, "
                                   "with exponential back-off."},
        "retryBackoff": _duration("Wait before the first retry; doubles for each next.",
                                  default="1m"),
        "offlineAfterUpdate": _duration("A device silent this long after reporting success "
                                        "counts as unhealthy.", default="10m"),
        "rollbackFailedDevices": {"type": "boolean", "default": True,
                                  "description": "Put a failed or unhealthy device back on "
                                                 "the version it ran before."},
    },
    default={},
)

ROLLOUT_SPEC_PROPERTIES: dict[str, Schema] = {
    "component": _str("What to update: `agent` for the device agent, or an application or "
                      "container name as devices report it in `versions`.", minLength=1),
    "version": _str("The version every targeted device should run.", minLength=1),
    "artifact": ARTIFACT,
    "selector": SELECTOR,
    "exclude": EXCLUDE,
    "strategy": STRATEGY,
    "health": HEALTH,
    "failurePolicy": FAILURE_POLICY,
    "force": {"type": "boolean", "default": False,
              "description": "Update even devices that already report this version."},
    "paused": {"type": "boolean", "default": False,
               "description": "Stop sending new commands; open updates finish."},
}

ROLLOUT_SPEC = _obj(
    "The desired version of one component on a set of devices, and how to get there.",
    ROLLOUT_SPEC_PROPERTIES,
    required=["component", "version", "selector"],
)

CONDITION = {
    "type": "object",
    "description": "A condition in the Kubernetes API convention.",
    "properties": {
        "type": _str("The condition's type, e.g. Progressing, Paused, Conflicted."),
        "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
        "reason": _str("CamelCase reason for the last transition."),
        "message": _str("Human-readable details."),
        "lastTransitionTime": _str("When the status last changed.", format="date-time"),
        "observedGeneration": {"type": "integer", "description": "The generation it describes."},
    },
    "required": ["type", "status"],
}

PHASES = list(vocabulary.PHASES)
"""The CRD's enum of `status.phase` (fleetwave.resources.vocabulary owns the words)."""

ROLLOUT_STATUS = {
    "type": "object",
    "description": "What fleetwave observed and did; written by the controller.",
    "properties": {
        "phase": _str("Where the rollout is.", enum=PHASES),
        "currentStep": {"type": "integer", "description": "Index of the current wave, from 0."},
        "observedGeneration": {"type": "integer",
                               "description": "The spec generation this status describes."},
        "revision": _str("The source revision (git commit) the spec came from."),
        "targeted": {"type": "integer", "description": "Devices the selector matches."},
        "done": {"type": "integer", "description": "Devices at the version and healthy "
                 "(or there already): the number behind `progress`."},
        "progress": _str("Devices done / targeted, e.g. 120/2000, for printer columns."),
        "counts": {"type": "object", "description": "Devices per update state, plus "
                   "unreachable, conflicted and overridden.",
                   "additionalProperties": {"type": "integer"}},
        "failureRate": {"type": "number", "description": "Failure rate in percent (0-100)."},
        "message": _str("A one-line summary of the current phase."),
        "conditions": _list("Conditions in the Kubernetes convention.", CONDITION),
    },
}

_METADATA = {
    "type": "object",
    "description": "Standard object metadata; `name` is required.",
    "properties": {
        "name": _str("The resource's name, unique per kind in one source.",
                     pattern=RESOURCE_NAME_PATTERN, maxLength=253),
        "namespace": _str("Kubernetes namespace (operator mode only)."),
        "labels": _string_map("Labels of the resource itself."),
        "annotations": _string_map("Annotations of the resource itself."),
    },
    "required": ["name"],
}


def _document(kind: str, spec: Schema, status: Schema | None = None) -> Schema:
    properties: dict[str, Schema] = {
        "apiVersion": _str(f"Always {GROUP_VERSION}.", enum=[GROUP_VERSION]),
        "kind": _str(f"Always {kind}.", enum=[kind]),
        "metadata": _METADATA,
        "spec": spec,
    }
    if status is not None:
        properties["status"] = status
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://fleetwave.io/schemas/{GROUP_VERSION}/{kind}.json",
        "title": kind,
        "type": "object",
        "properties": properties,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
    }


ROLLOUT = _document("Rollout", ROLLOUT_SPEC, ROLLOUT_STATUS)

POLICY_TEMPLATE = _obj(
    "The Rollout spec to create for each new tag; `component` and `version` are filled in.",
    {k: v for k, v in ROLLOUT_SPEC_PROPERTIES.items() if k not in ("version",)},
)

ROLLOUT_POLICY = _document(
    "RolloutPolicy",
    _obj(
        "Turns a registry push (image `acme/app:2.0.1`) into a Rollout of that tag.",
        {
            "imagePattern": _str("Glob matched against `repository:tag` of pushed images, "
                                 "e.g. `acme/app:*`.", minLength=1),
            "component": _str("The component the image is, as devices report it; defaults "
                              "to the last path segment of the repository."),
            "versionPolicy": _str("Which tags start a rollout: semver (only tags newer by "
                                  "semantic version than the running one) or any.",
                                  enum=["semver", "any"], default="semver"),
            "template": POLICY_TEMPLATE,
            "commitTo": _obj(
                "Commit the generated Rollout to the git source instead of keeping it in the "
                "store, so git stays the source of truth.",
                {
                    "path": _str("Folder in the repository for generated Rollout files.",
                                 default="rollouts/generated"),
                    "branch": _str("Branch to commit to; defaults to the source's branch."),
                },
            ),
        },
        required=["imagePattern"],
    ),
    {"type": "object", "description": "Last image seen and rollout created.",
     "properties": {"lastImage": _str("The last image reference that created a Rollout."),
                    "lastRollout": _str("The name of that Rollout.")}},
)

DEVICE_INVENTORY = _document(
    "DeviceInventory",
    _obj(
        "Labels for devices by uuid, kept in git; merged over the labels devices report "
        "(inventory wins).",
        {
            "devices": _list(
                "One entry per device.",
                _obj("A device's static labels.",
                     {"uuid": _str("The device uuid.", minLength=1),
                      "labels": _string_map("Labels; these win over reported labels.")},
                     required=["uuid"]),
            ),
        },
    ),
)

SCHEMAS: dict[str, Schema] = {
    "Rollout": ROLLOUT,
    "RolloutPolicy": ROLLOUT_POLICY,
    "DeviceInventory": DEVICE_INVENTORY,
}
KINDS = tuple(SCHEMAS)
