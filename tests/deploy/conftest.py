"""Fixtures for the deployment checks: the chart rendered once per `chart/ci/*.yaml`,
the CRDs, and validators for built-in kinds (kubernetes-validate) and our custom
resources (jsonschema against the CRDs' openAPIV3Schema)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kube import Doc, load_docs
from tests.deploy.tools import ROOT, find_tool, run_tool

CHART = ROOT / "chart"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSION = "1.33.0"
NAMESPACE = "fleetwave"
RELEASE = "fleetwave"
REQUIRED = ("--set", "broker.url=mqtts://mosquitto.mqtt.svc:8883",
            "--set", "broker.existingSecret=fleetwave-broker")
"""The values the chart cannot render without (the broker and the controller's account)."""


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The helm binary and an environment whose cache, config and data homes are private."""
    binary = find_tool("helm")
    home = tmp_path_factory.mktemp("helm")
    env = dict(os.environ)
    env.update(HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"))
    yield binary, env


class Renderer:
    """`helm template` with a cache: each values file renders once per session. Without a
    values file (`-f`, each of chart/ci/ is complete), `render` adds the REQUIRED values;
    `run` passes only what it is told."""

    def __init__(self, binary: Path, env: dict[str, str]) -> None:
        self.binary = binary
        self.env = env
        self._cache: dict[tuple[str, ...], list[Doc]] = {}

    def render(self, *args: str) -> list[Doc]:
        key = tuple(args) if "-f" in args else (*REQUIRED, *args)
        if key not in self._cache:
            result = self.run(*key)
            assert result.returncode == 0, f"helm template {' '.join(args)}:\n{result.stderr}"
            self._cache[key] = load_docs(result.stdout)
        return self._cache[key]

    def run(self, *args: str) -> Any:
        return run_tool([self.binary, "template", RELEASE, CHART, "--namespace", NAMESPACE,
                         "--kube-version", KUBE_VERSION, *args], env=self.env)


@pytest.fixture(scope="session")
def chart(helm: tuple[Path, dict[str, str]]) -> Renderer:
    return Renderer(*helm)


def read_yaml_docs(path: Path) -> list[Doc]:
    return load_docs(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def crd_files() -> dict[str, str]:
    """crds/*.yaml, the generated CRDs every other copy must equal."""
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "crds").glob("*.yaml"))}
    assert files, "crds/ is empty: run `fleetwave crds`"
    return files


@pytest.fixture(scope="session")
def crds(crd_files: dict[str, str]) -> list[Doc]:
    return [yaml.safe_load(text) for text in crd_files.values()]
