"""The CRDs are valid apiextensions.k8s.io/v1 objects with structural schemas, and carry
what `kubectl get` and `kubectl explain` need."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fleetwave.resources.crds import crd, openapi_schema, render_crds, structural_schema
from fleetwave.resources.schema import KINDS, SCHEMAS

CRDS = {name: yaml.safe_load(text) for name, text in render_crds().items()}


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{*}}")


def structural_violations(schema: dict[str, Any]) -> list[str]:
    """The rules of a structural schema (Kubernetes docs, 'Specifying a structural schema')."""
    problems = []
    for path, node in walk(schema):
        where = path or "<root>"
        preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
        if "type" not in node and not preserve and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{where}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties together with additionalProperties")
        if node.get("additionalProperties") is False:
            problems.append(f"{where}: additionalProperties: false")
        for banned in ("$ref", "$schema", "$id", "title", "definitions", "$defs"):
            if banned in node:
                problems.append(f"{where}: {banned}")
        for combinator in ("oneOf", "anyOf", "allOf", "not"):
            for sub in node.get(combinator, []) if isinstance(node.get(combinator), list) else []:
                if any(k in sub for k in ("type", "default", "description", "nullable")):
                    problems.append(f"{where}: {combinator} with type/default/description")
        if node.get("x-kubernetes-preserve-unknown-fields") is False:
            problems.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or unset")
    root_meta = schema.get("properties", {}).get("metadata", {})
    if set(root_meta) - {"type"} - ({"properties"} if set(root_meta.get("properties", {}))
                                    <= {"name", "generateName"} else set()):
        problems.append(".metadata: only name and generateName may be restricted")
    return problems


@pytest.mark.parametrize("name", sorted(CRDS))
def test_each_crd_is_a_valid_apiextensions_v1_object(name: str) -> None:
    kubernetes_validate.validate(CRDS[name], "1.33.0", strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_each_schema_is_structural(kind: str) -> None:
    assert structural_violations(openapi_schema(kind)) == []


def test_the_structural_checker_catches_what_the_api_server_refuses() -> None:
    bad = {"type": "object", "additionalProperties": False, "properties": {
        "a": {"description": "untyped"},
        "b": {"type": "object", "properties": {"x": {"type": "string"}},
              "additionalProperties": {"type": "string"}},
        "c": {"$ref": "#/x", "type": "string"},
        "d": {"type": "string", "oneOf": [{"type": "string"}]},
    }}
    assert structural_violations(bad) == [
        "<root>: properties together with additionalProperties",
        "<root>: additionalProperties: false",
        ".a: no type",
        ".b: properties together with additionalProperties",
        ".c: $ref",
        ".d: oneOf with type/default/description",
    ]


def test_conversion_keeps_documentation_and_validation_and_drops_the_rest() -> None:
    steps = structural_schema(SCHEMAS["Rollout"])["properties"]["spec"]["properties"][
        "strategy"]["properties"]["steps"]
    assert steps["default"] == [{"percent": 5}, {"percent": 25}, {"percent": 50},
                                {"percent": 100}]
    assert steps["items"]["properties"]["percent"]["maximum"] == 100
    assert steps["items"]["properties"]["pause"]["pattern"] == r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
    spec = openapi_schema("Rollout")["properties"]["spec"]
    assert spec["properties"]["failurePolicy"]["properties"]["action"]["enum"] == [
        "pause", "rollback", "abort"]
    assert spec["required"] == ["component", "version", "selector"]
    freeze = spec["properties"]["strategy"]["properties"]["freezes"]["items"]
    assert freeze["properties"]["start"]["format"] == "date-time"


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description(kind: str) -> None:
    missing = [path for path, node in walk(openapi_schema(kind))
               if path and path != ".metadata" and not path.endswith("{*}")
               and not node.get("description")]
    assert missing == []


def test_rollout_printer_columns() -> None:
    version = crd("Rollout")["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]
               if not c.get("priority")}
    assert columns == {"Phase": ".status.phase", "Step": ".status.currentStep",
                       "Progress": ".status.progress", "Failures": ".status.failureRate",
                       "Age": ".metadata.creationTimestamp"}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status


@pytest.mark.parametrize(("kind", "plural", "short"), [
    ("Rollout", "rollouts", "ro"),
    ("RolloutPolicy", "rolloutpolicies", "rp"),
    ("DeviceInventory", "deviceinventories", "dinv"),
])
def test_names_version_and_status_subresource(kind: str, plural: str, short: str) -> None:
    doc = CRDS[f"{plural}.fleetwave.io.yaml"]
    assert doc["metadata"]["name"] == f"{plural}.fleetwave.io"
    spec = doc["spec"]
    assert spec["group"] == "fleetwave.io"
    assert spec["names"]["kind"] == kind
    assert short in spec["names"]["shortNames"]
    assert spec["names"]["categories"] == ["fleetwave"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert any(c["name"] == "Age" for c in version["additionalPrinterColumns"])


def test_generated_files_say_how_to_regenerate_them() -> None:
    for text in render_crds().values():
        assert text.startswith("# Generated by `fleetwave crds`")
        assert "&id" not in text and "*id" not in text  # no YAML anchors/aliases
