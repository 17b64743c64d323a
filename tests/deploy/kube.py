"""Validation of Kubernetes objects with what runs on this machine: kubernetes-validate's
bundled OpenAPI schemas for built-in kinds, our CRDs' `openAPIV3Schema` (through
jsonschema) for fleetwave's kinds, and small schemas of our own for the two Prometheus
Operator kinds the chart may render (their CRDs are not available here)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

Doc = dict[str, Any]
KUBE_VERSION = "1.33.0"


def load_docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def strict_crd_schema(schema: Any) -> Any:
    """The schema as the API server applies it with strict field validation (kubectl's
    default since 1.27): unknown fields are errors, not silently pruned."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def custom_resource_validators(crds: list[Doc]) -> dict[tuple[str, str], jsonschema.Validator]:
    """(apiVersion, kind) -> validator, for each served version of each CRD."""
    validators: dict[tuple[str, str], jsonschema.Validator] = {}
    for crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict_crd_schema(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(
                schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return validators


_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                            "labels": _LABELS, "annotations": _LABELS}}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                          r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
MONITORING_SCHEMAS: dict[str, Any] = {
    # The fields of monitoring.coreos.com/v1 the chart uses, as the operator's CRDs define them.
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "namespaceSelector": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}}}},
                    "selector": {"type": "object", "properties": {"matchLabels": _LABELS}},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"}, "path": {"type": "string"},
                            "interval": _DURATION, "scrapeTimeout": _DURATION,
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}}}}},
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["groups"], "additionalProperties": False,
                "properties": {"groups": {"type": "array", "items": {
                    "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"}, "interval": _DURATION,
                        "rules": {"type": "array", "items": {
                            "type": "object", "required": ["expr"], "additionalProperties": False,
                            "properties": {
                                "alert": {"type": "string"}, "record": {"type": "string"},
                                "expr": {"type": "string"}, "for": _DURATION,
                                "labels": _LABELS, "annotations": _LABELS}}}}}}},
            },
        },
    },
}


def validate(doc: Doc, custom: dict[tuple[str, str], jsonschema.Validator]) -> list[str]:
    """Errors for one object, [] when valid; every object must have a schema somewhere."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in custom:
        return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in custom[key].iter_errors(doc)]
    if key[0] == "monitoring.coreos.com/v1" and key[1] in MONITORING_SCHEMAS:
        validator = jsonschema.Draft7Validator(MONITORING_SCHEMAS[key[1]])
        return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '(root)'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"no schema for {key[1]} {key[0]}: {exc}"]
    return []


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
