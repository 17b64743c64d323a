"""The agent as a program: what it imports, how it reads its config, how it stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetwave.agent.config import ConfigError, load_config
from fleetwave.protocol.signing import SigningKey
from tests.agent.world import agent_config, files_component

KEY = SigningKey.generate()


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def good(tmp_path: Path) -> dict[str, Any]:
    return agent_config("dev-1", tmp_path, 1883, KEY,
                        {"app": files_component(tmp_path / "app")})


@pytest.mark.parametrize("entry", [
    pytest.param(["-m", "fleetwave", "agent"], id="fleetwave-agent"),
    pytest.param(["-m", "fleetwave.agent"], id="python-m-fleetwave.agent"),
])
def test_the_agent_imports_none_of_the_controllers_dependencies(
        tmp_path: Path, entry: list[str]) -> None:
    config = good(tmp_path)
    config["components"]["svc"] = {"version": "1", "handler": "systemd",
                                   "systemd": {"unit": "x", "binary": "/usr/bin/x"}}
    config["components"]["box"] = {"version": "1", "handler": "docker",
                                   "docker": {"container": "x", "image": "acme/x"}}
    config["components"]["run"] = {"version": "1", "handler": "script", "install": ["true"]}
    path = write(tmp_path, config)
    result = subprocess.run([sys.executable, *entry, "--config", str(path), "--check-imports"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["forbidden"] == []
    # and the interpreter's own record agrees (-X importtime lists every module loaded)
    traced = subprocess.run([sys.executable, "-X", "importtime", *entry, "--config",
                             str(path), "--check-imports"],
                            check=False, capture_output=True, text=True, timeout=60)
    loaded = {line.split("|")[-1].strip() for line in traced.stderr.splitlines()
              if line.startswith("import time:")}
    assert "paho.mqtt.client" in loaded and "fleetwave.agent.pipeline" in loaded
    assert not {m for m in loaded if m.split(".")[0] in
                ("click", "aiohttp", "sqlalchemy", "kopf", "structlog", "rich")}


@pytest.mark.parametrize(("change", "message"), [
    pytest.param(lambda c: c.pop("device"), "device.id: is required", id="no-device"),
    pytest.param(lambda c: c["broker"].update(url="http://x"), "broker.url: must be mqtt://",
                 id="bad-broker-url"),
    pytest.param(lambda c: c["broker"].update(passwordFile="/nonexistent/pw"),
                 "broker.passwordFile: cannot read", id="missing-password-file"),
    pytest.param(lambda c: c["trust"].update(keys=[]), "trust.keys: must list", id="no-keys"),
    pytest.param(lambda c: c["trust"].update(keys=["bm90IGEga2V5"]), "trust.keys: an Ed25519",
                 id="bad-key"),
    pytest.param(lambda c: c["components"]["app"].update(handler="rpm"),
                 "components.app.handler: must be one of script, files, docker, systemd",
                 id="unknown-handler"),
    pytest.param(lambda c: c["components"]["app"].pop("files"),
                 "components.app.files.target: is required", id="files-without-target"),
    pytest.param(lambda c: c["components"]["app"].update(install="/bin/x --y"),
                 "components.app.install: must be a list (argv)", id="install-not-argv"),
    pytest.param(lambda c: c.update(components={}), "components: at least one",
                 id="no-components"),
    pytest.param(lambda c: c.update(maxArtifactBytes=-1), "maxArtifactBytes: must be a positive",
                 id="bad-bound"),
])
def test_a_bad_config_is_one_clear_line_naming_the_field(
        tmp_path: Path, change: Any, message: str) -> None:
    config = good(tmp_path)
    change(config)
    path = write(tmp_path, config)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)
    result = subprocess.run([sys.executable, "-m", "fleetwave", "agent", "--config", str(path)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fleetwave agent: {path}: {message}")


def test_a_config_that_is_not_yaml_or_missing_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("device: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "agent.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    result = subprocess.run([sys.executable, "-m", "fleetwave", "agent"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--config FILE is required" in result.stderr


def test_the_shipped_example_config_and_unit_are_what_the_agent_reads(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "agent"
    config = yaml.safe_load((examples / "agent.yaml").read_text())
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config["trust"]["keys"] = [KEY.public.base64]
    config["broker"].update(passwordFile=str(tmp_path / "pw"), caFile=str(tmp_path / "ca.pem"))
    loaded = load_config(write(tmp_path, config))
    assert sorted(loaded.components) == ["collector", "firmware", "nodered", "webapp"]
    assert {c.handler for c in loaded.components.values()} == {
        "files", "docker", "systemd", "script"}
    assert loaded.broker.tls and loaded.broker.password == "secret"
    unit = (examples / "fleetwave-agent.service").read_text()
    assert "ExecStart=/usr/local/bin/fleetwave agent --config /etc/fleetwave/agent.yaml\n" in unit
    assert "Restart=always" in unit


def test_a_damaged_journal_stops_the_agent_with_what_to_do(tmp_path: Path) -> None:
    """The journal holds the replay ledger: the agent never guesses and starts from zero."""
    path = write(tmp_path, good(tmp_path))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "journal.json").write_text('{"executed": {"app": {"release": "x"')
    result = subprocess.run([sys.executable, "-m", "fleetwave", "agent", "--config", str(path)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "journal.json is damaged" in result.stderr and "move it away" in result.stderr
    assert "Traceback" not in result.stderr


def test_supervise_needs_a_self_update_component(tmp_path: Path) -> None:
    path = write(tmp_path, good(tmp_path))
    result = subprocess.run([sys.executable, "-m", "fleetwave", "agent", "--config", str(path),
                             "--supervise"], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "selfUpdate: true" in result.stderr
