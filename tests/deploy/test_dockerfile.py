"""The Dockerfile's shape. No Docker engine (nor buildah, kaniko or hadolint) runs on this
machine, so the image is never built here: these tests read the Dockerfile and check what
a build would give (pinned base, non-root numeric USER, no compilers in the final stage,
a healthcheck on /healthz, the fleetwave entrypoint, dependencies installed only from the
hash-pinned lock). The README says how to build it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.tools import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cc1", "libc6-dev",
               "python3-dev", "-dev ")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and ARGs expanded."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def final_stage() -> Stage:
    return parse()[1][-1]


def test_multi_stage_with_a_builder_that_makes_wheels() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    builder = stages[0]
    assert any("pip wheel" in run for run in builder.values("RUN"))


def test_every_base_image_is_an_exact_python_slim_bookworm_release_pinned_by_digest() -> None:
    _, stages = parse()
    for stage in stages:
        pinned = re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", stage.base)
        assert pinned, f"base {stage.base!r} is not an exact python 3.11 slim tag with a digest"
    assert len({s.base for s in stages}) == 1, "builder and final stage must share the base (ABI)"


LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "build-requirements.lock"


def locked(path: Path) -> dict[str, list[str]]:
    """name -> its --hash values, from a `--generate-hashes` lock file."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pins: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --hash=")
        requirement = Requirement(spec.strip())
        [version] = list(requirement.specifier)
        assert version.operator == "==", f"{path.name}: {spec} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = options
    return pins


def runtime_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked(LOCK)
    missing = runtime_dependencies() - set(pins)
    assert not missing, (f"requirements.lock lacks {sorted(missing)}: re-run the uv pip "
                         f"compile command in its header")
    for name, hashes in pins.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h.strip()) for h in hashes), \
            name
    build = locked(BUILD_LOCK)
    assert {"setuptools", "wheel"} <= set(build) and all(build.values())


def test_aiomqtt_is_not_a_runtime_dependency() -> None:
    """Nothing in the controller imports it (mqtt/connection.py says why): tests only."""
    assert "aiomqtt" not in runtime_dependencies()
    assert not [p for p in (ROOT / "controller").rglob("*.py")
                if re.search(r"^\s*(import|from) aiomqtt", p.read_text(), re.MULTILINE)]


def test_dependencies_install_only_from_the_lock_with_hashes() -> None:
    builder, final = parse()[1][0], final_stage()
    fetch = " ".join(builder.values("RUN"))
    assert "--require-hashes" in fetch and "-r requirements.lock" in fetch
    assert "--only-binary=:all:" in fetch, "no dependency is compiled in the builder"
    assert "-r build-requirements.lock" in fetch and "--no-build-isolation" in fetch, \
        "fleetwave's own wheel is built with the hash-pinned backend, not a fresh download"
    [install] = final.values("RUN")[:1]
    commands = [c.strip() for c in install.split("&&")]
    assert re.search(r"pip install --no-index --find-links=/wheels --require-hashes "
                     r"-r \S*requirements\.lock$", commands[0]), commands[0]
    assert re.search(r"pip install --no-index --find-links=/wheels --no-deps fleetwave$",
                     commands[1]), commands[1]


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = final_stage().values("USER")
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), f"USER {users[-1]!r}: use a numeric uid so runAsNonRoot can check it"
    assert int(user) == 10001


def test_final_stage_installs_no_build_tools() -> None:
    stage = final_stage()
    for run in stage.values("RUN"):
        for tool in BUILD_TOOLS:
            assert tool not in f"{run} ", f"final stage RUN installs {tool.strip()}: {run}"
    for copy in stage.values("COPY"):
        assert "--from=builder" not in copy or "/wheels" in copy, copy


def test_healthcheck_hits_healthz_with_python_not_curl() -> None:
    [check] = final_stage().values("HEALTHCHECK")
    assert "/healthz" in check
    assert "python" in check
    assert "curl" not in check and "wget" not in check


def test_entrypoint_port_and_data_volume() -> None:
    stage = final_stage()
    assert stage.values("ENTRYPOINT") == ['["fleetwave"]']
    assert stage.values("CMD") == ['["run"]']
    assert stage.values("EXPOSE") == ["8080"]
    assert any("/data" in v for v in stage.values("VOLUME"))
    env = " ".join(stage.values("ENV"))
    assert "FLEETWAVE_LISTEN=0.0.0.0:8080" in env, "in a container, listen beyond loopback"
    assert "sqlite:////data/" in env


def test_dockerignore_sends_only_the_package() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "controller", "requirements.lock",
                       "build-requirements.lock"}
    copied = {w for c in final_stage().values("COPY") + parse()[1][0].values("COPY")
              for w in shlex.split(c)[:-1] if not w.startswith("--")}
    assert copied <= allowed, f"COPY of files .dockerignore excludes: {copied - allowed}"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_command_reports_the_healthz_status(status: int, exit_code: int) -> None:
    """Runs the HEALTHCHECK's own command against a local /healthz."""
    [check] = final_stage().values("HEALTHCHECK")
    argv = json.loads(check[check.index("CMD") + 3:].strip())
    assert argv[:2] == ["python", "-c"]
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "FLEETWAVE_LISTEN": f"0.0.0.0:{server.server_address[1]}"}
        result = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True,
                                timeout=30, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == exit_code, result.stderr
