"""The CRDs exist once, generated from the package's schemas (`fleetwave crds`), and are
copied byte for byte into manifests/crds/ and chart/files/crds/ (the chart templates them
from there). These tests fail as soon as one copy drifts, and say how to fix it."""

from __future__ import annotations

import json

import pytest
import yaml

from fleetwave.resources.crds import render_crds
from tests.deploy.conftest import Renderer
from tests.deploy.kube import Doc, custom_resource_validators
from tests.deploy.tools import ROOT

COPIES = {
    "manifests/crds": ROOT / "manifests" / "crds",
    "chart/files/crds": ROOT / "chart" / "files" / "crds",
}


def test_crds_folder_is_what_the_package_generates(crd_files: dict[str, str]) -> None:
    assert crd_files == render_crds(), "crds/ is stale: run `fleetwave crds`"


@pytest.mark.parametrize("copy", sorted(COPIES))
def test_each_copy_equals_crds(copy: str, crd_files: dict[str, str]) -> None:
    folder = COPIES[copy]
    found = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.yaml"))}
    assert found == crd_files, f"{copy} drifted from crds/: run `cp crds/*.yaml {copy}/`"


def test_the_chart_renders_exactly_these_crds(chart: Renderer, crds: list[Doc]) -> None:
    rendered = [d for d in chart.render() if d["kind"] == "CustomResourceDefinition"]
    by_name = {d["metadata"]["name"]: d for d in rendered}
    assert sorted(by_name) == sorted(c["metadata"]["name"] for c in crds)
    for crd in crds:
        got = by_name[crd["metadata"]["name"]]
        # Compared as JSON so that a number turned float by the chart's fromYaml shows.
        assert json.dumps(got["spec"], sort_keys=True) == json.dumps(crd["spec"], sort_keys=True)
        assert crd["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
        assert got["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_keep_crds_off_drops_the_resource_policy(chart: Renderer) -> None:
    rendered = [d for d in chart.render("--set", "keepCRDs=false")
                if d["kind"] == "CustomResourceDefinition"]
    assert rendered
    assert all("helm.sh/resource-policy" not in d["metadata"].get("annotations", {})
               for d in rendered)


def test_install_crds_off_renders_none(chart: Renderer) -> None:
    assert not [d for d in chart.render("--set", "installCRDs=false")
                if d["kind"] == "CustomResourceDefinition"]


def test_crd_schemas_accept_a_rollout_and_reject_mistakes(crds: list[Doc]) -> None:
    """The jsonschema check used on custom resources really applies the CRD's schema."""
    validators = custom_resource_validators(crds)
    rollout = validators[("fleetwave.io/v1alpha1", "Rollout")]
    good = {"apiVersion": "fleetwave.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "agent-1-0-6"},
            "spec": {"component": "agent", "version": "1.0.6",
                     "selector": {"matchLabels": {"device_type": "rpi4"}}}}
    assert list(rollout.iter_errors(good)) == []
    for bad in (
        {**good, "spec": {"version": "1.0.6"}},                              # no component
        {**good, "spec": {**good["spec"], "versoin": "1.0.7"}},             # unknown field
        {**good, "status": {"phase": "Exploded"}},                           # unknown phase
    ):
        assert list(rollout.iter_errors(bad)), yaml.safe_dump(bad)
