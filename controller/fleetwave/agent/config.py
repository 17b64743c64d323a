"""The agent's config file (DESIGN.md 9.2), read once at start into frozen values.

A device is often configured by hand or by a provisioning script, so every mistake is a
`ConfigError` naming the file and the field (`agent.yaml: components.app.handler: must be
one of script, files, docker, systemd`), never a traceback.
"""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from fleetwave.protocol.signing import SignatureError, TrustedKeys
from fleetwave.protocol.topics import DEFAULT_PREFIX

HANDLERS: Final = ("script", "files", "docker", "systemd")
DEFAULT_MAX_ARTIFACT_BYTES: Final = 512 * 1024 * 1024
"""512 MiB: a container-less device's whole application; a bigger download is refused."""


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    keepalive: int = 30
    """Seconds: the broker publishes the last will about 1.5 keepalives after a silence."""


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    """What runs before the agent first updates it."""
    handler: str
    install: tuple[str, ...] = ()
    health_check: tuple[str, ...] = ()
    rollback: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    """The handler's own block (`files: {target}`, `docker: {container, image}`, …)."""
    self_update: bool = False
    """This component is the agent itself: a new version must confirm after a restart."""
    exec_argv: tuple[str, ...] = ()
    """For `self_update`: what `--supervise` runs (default: this agent, this config)."""
    timeout: float = 600.0
    """Seconds an install, health check or rollback program may run."""


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    device: str
    broker: Broker
    trust: TrustedKeys
    state_dir: Path
    components: Mapping[str, Component]
    labels: Mapping[str, str] = field(default_factory=dict)
    timezone: str | None = None
    topic_prefix: str = DEFAULT_PREFIX
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    download_timeout: float = 30.0
    """Seconds without a byte from the server before a download attempt is given up."""
    confirm_timeout: float = 300.0
    """Seconds a new agent has to start and confirm before the old one is restored."""
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    """What names this boot (`bootIdFile`): Linux gives each boot a new random id here.
    A `confirm_after_restart` update succeeds only under another id than its install's."""


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, "must be a mapping")
        return value

    def text(self, body: Mapping[str, Any], key: str, where: str, *,
             required: bool = True) -> str | None:
        value = body.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}" if where else key, "is required")
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # `version: 1.0` in YAML is a float
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}.{key}" if where else key, "must be a non-empty string")
        return value

    def argv(self, body: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = body.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            raise self.fail(f"{where}.{key}", "must be a list (argv), e.g. [/usr/bin/x, --y]")
        if not isinstance(value, list) or not value or \
                not all(isinstance(a, str) and a for a in value):
            raise self.fail(f"{where}.{key}", "must be a non-empty list of strings (argv)")
        return tuple(value)

    def number(self, body: Mapping[str, Any], key: str, default: float, where: str) -> float:
        value = body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(f"{where}{key}", "must be a positive number")
        return float(value)


def load_config(path: str | Path) -> AgentConfig:
    """Read and check the config file; raises `ConfigError`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    r = _Reader(path)
    body = r.mapping(raw, "file")
    device = r.mapping(body.get("device"), "device")
    device_id = r.text(device, "id", "device")
    assert device_id is not None
    if any(c in device_id for c in "/+#\x00"):
        raise r.fail("device.id", "may not contain /, +, # or NUL (it is a topic level)")
    labels = {str(k): str(v) for k, v in r.mapping(device.get("labels"), "device.labels").items()}
    state_dir = r.text(body, "stateDir", "")
    assert state_dir is not None
    components = _components(r, body, path)
    if not components:
        raise r.fail("components", "at least one component is required")
    return AgentConfig(
        path=path, device=device_id, broker=_broker(r, body), trust=_trust(r, body),
        state_dir=Path(state_dir), components=components, labels=labels,
        timezone=r.text(device, "timezone", "device", required=False),
        topic_prefix=r.text(body, "topicPrefix", "", required=False) or DEFAULT_PREFIX,
        max_artifact_bytes=int(r.number(body, "maxArtifactBytes",
                                        DEFAULT_MAX_ARTIFACT_BYTES, "")),
        download_timeout=r.number(body, "downloadTimeout", 30.0, ""),
        confirm_timeout=r.number(body, "confirmTimeout", 300.0, ""),
        boot_id_file=Path(r.text(body, "bootIdFile", "", required=False)
                          or AgentConfig.boot_id_file),
    )


def _broker(r: _Reader, body: Mapping[str, Any]) -> Broker:
    broker = r.mapping(body.get("broker"), "broker")
    url = r.text(broker, "url", "broker")
    assert url is not None
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise r.fail("broker.url", f"must be mqtt://host:port or mqtts://host:port, not {url!r}")
    try:
        port = parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise r.fail("broker.url", f"bad port in {url!r}") from exc
    password = None
    password_file = r.text(broker, "passwordFile", "broker", required=False)
    if password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise r.fail("broker.passwordFile", f"cannot read {password_file}: "
                         f"{exc.strerror or exc}") from exc
    ca_file = r.text(broker, "caFile", "broker", required=False)
    if ca_file is not None and not Path(ca_file).is_file():
        raise r.fail("broker.caFile", f"{ca_file} is not a file")
    return Broker(host=parsed.hostname, port=port, tls=parsed.scheme == "mqtts",
                  username=r.text(broker, "username", "broker", required=False),
                  password=password, ca_file=ca_file,
                  keepalive=int(r.number(broker, "keepalive", 30, "broker.")))


def _trust(r: _Reader, body: Mapping[str, Any]) -> TrustedKeys:
    keys = r.mapping(body.get("trust"), "trust").get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise r.fail("trust.keys", "must list at least one base64 public key "
                     "(`fleetwave keys public FILE` prints it)")
    try:
        return TrustedKeys.from_base64(keys)
    except SignatureError as exc:
        raise r.fail("trust.keys", str(exc)) from exc


_HANDLER_KEYS: Final = {"files": ("target",), "docker": ("container", "image"),
                        "systemd": ("unit", "binary")}


def _components(r: _Reader, body: Mapping[str, Any], path: Path) -> dict[str, Component]:
    out: dict[str, Component] = {}
    for name, value in r.mapping(body.get("components"), "components").items():
        where = f"components.{name}"
        c = r.mapping(value, where)
        handler = r.text(c, "handler", where)
        if handler not in HANDLERS:
            raise r.fail(f"{where}.handler", f"must be one of {', '.join(HANDLERS)}")
        options = r.mapping(c.get(handler), f"{where}.{handler}")
        for key in _HANDLER_KEYS.get(handler, ()):
            r.text(options, key, f"{where}.{handler}")
        install = r.argv(c, "install", where)
        if handler == "script" and not install:
            raise r.fail(f"{where}.install", "is required for the script handler")
        self_update = c.get("selfUpdate", False)
        if not isinstance(self_update, bool):
            raise r.fail(f"{where}.selfUpdate", "must be true or false")
        exec_argv = r.argv(c, "exec", where) or (
            sys.executable, "-m", "fleetwave.agent", "--config", str(path.absolute()))
        version = r.text(c, "version", where)
        assert version is not None and handler is not None
        out[str(name)] = Component(
            name=str(name), version=version, handler=handler, install=install,
            health_check=r.argv(c, "healthCheck", where), rollback=r.argv(c, "rollback", where),
            options=options, self_update=self_update, exec_argv=exec_argv,
            timeout=r.number(c, "timeout", 600.0, f"{where}."))
    return out
