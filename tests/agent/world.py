"""The world an agent test runs in: a real Mosquitto with per-device accounts, real agent
processes on real directories, an HTTP server for artifacts, and a controller-side MQTT
client that publishes signed commands and records what devices say.

Everything is real except where the test says otherwise (stand-in `docker`/`systemctl`).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fleetwave.mqtt.broker import BrokerConfig, MosquittoProcess, free_port
from fleetwave.protocol.admission import format_time
from fleetwave.protocol.signing import SigningKey
from tests.support.processes import wait_until

CONTROLLER = ("fleetwave", "controller-secret")
OBSERVER = ("observer", "observer-secret")
"""Reads every device's commands (the broker's simulator account): tests capture the
controller's signed commands with it, to replay them."""
DEVICE_IDS = tuple(f"dev-{n}" for n in range(1, 8))


def device_password(device: str) -> str:
    return f"{device}-secret"


# --- broker ---------------------------------------------------------------------------

@dataclass
class Broker:
    process: MosquittoProcess
    port: int
    controller: tuple[str, str] = CONTROLLER

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def start_broker(directory: Path, port: int | None = None) -> Broker:
    port = port or free_port()
    config = BrokerConfig(port=port, controller_user=CONTROLLER[0],
                          controller_password=CONTROLLER[1], persistence=False,
                          simulator_user=OBSERVER[0], simulator_password=OBSERVER[1],
                          devices={d: device_password(d) for d in DEVICE_IDS})
    process = MosquittoProcess(config.write(directory), port)
    process.start()
    return Broker(process, port)


# --- artifacts ------------------------------------------------------------------------

def tar_of(files: Mapping[str, str | bytes], mode: int = 0o644) -> bytes:
    """A gzipped tar holding `files` (name -> content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactServer:
    """http.server in a thread: serves `files`, honours `Range: bytes=N-`, and can cut a
    response short (`truncate_once`) or dribble it (`delay_per_chunk`) to test resumption."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.truncate_once: set[str] = set()
        self.delay_per_chunk = 0.0
        self.lie_length: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                range_header = self.headers.get("Range")
                server.requests.append((name, range_header))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if range_header and range_header.startswith("bytes="):
                    start = int(range_header[6:].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/"
                                     f"{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                length = server.lie_length.get(name, len(body))
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if name in server.truncate_once:
                    server.truncate_once.discard(name)
                    body = body[:len(body) // 2]
                self.close_connection = True
                try:
                    for i in range(0, len(body), 4096):
                        if server.delay_per_chunk:
                            time.sleep(server.delay_per_chunk)
                        self.wfile.write(body[i:i + 4096])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent gave up on this response (bound, timeout): expected

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def add(self, name: str, data: bytes) -> tuple[str, str]:
        self.files[name] = data
        return self.url(name), sha256(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the controller side --------------------------------------------------------------

class Controller:
    """Publishes signed commands as the controller would and records every status/state."""

    def __init__(self, broker: Broker, key: SigningKey) -> None:
        self.key = key
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self.online: dict[str, bool] = {}
        self.lock = threading.Lock()
        self.release = 100
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4()}")
        client.username_pw_set(*CONTROLLER)
        client.on_message = self._on_message
        client.on_connect = lambda c, *_: c.subscribe(
            [("iot/device/+/agent/status", 1), ("iot/device/+/agent/state", 1),
             ("iot/device/+/agent/online", 1)])
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        self.client = client

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        device, kind = msg.topic.split("/")[2], msg.topic.split("/")[-1]
        if not msg.payload:
            return
        body = json.loads(msg.payload)
        with self.lock:
            if kind == "status":
                self.statuses.setdefault(device, []).append(body)
            elif kind == "state":
                self.states[device] = body
            elif kind == "online":
                self.online[device] = body["online"]

    def command(self, device: str, version: str, *, action: str = "update",
                component: str = "app", url: str | None = None, sha: str | None = None,
                digest: str | None = None, release: int | None = None,
                expires_in: float = 600, scheduled_time: str | None = None,
                correlation_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """A signed command body (not yet sent)."""
        if release is None:
            self.release += 1
            release = self.release
        body: dict[str, Any] = {
            "action": action, "version": version, "component": component,
            "correlation_id": correlation_id or str(uuid.uuid4()),
            "scheduled_time": scheduled_time, "force": False,
            "timestamp": int(time.time() * 1000), "device": device, "release": release,
            "expires_at": format_time(time.time() + expires_in), **extra}
        if url is not None or digest is not None:
            body["artifact"] = {k: v for k, v in (("url", url), ("sha256", sha),
                                                  ("digest", digest)) if v is not None}
        return self.key.sign(body)

    def send(self, device: str, body: Mapping[str, Any] | bytes) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(f"iot/device/{device}/agent/update", payload, qos=1,
                            retain=True).wait_for_publish(5)

    def of(self, device: str, cid: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            items = list(self.statuses.get(device, []))
        return [s for s in items if cid is None or s.get("correlation_id") == cid]

    def types(self, device: str, cid: str | None = None) -> list[str]:
        return [s["type"] for s in self.of(device, cid)]

    def final(self, device: str, cid: str) -> dict[str, Any] | None:
        for s in self.of(device, cid):
            if s["type"] in ("update_succeeded", "update_failed", "update_cancelled",
                             "rollback_succeeded", "rollback_failed", "download_succeeded",
                             "download_failed"):
                return s
        return None

    def version(self, device: str, component: str = "app") -> str | None:
        with self.lock:
            state = self.states.get(device)
        return None if state is None else state["versions"].get(component)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --- agents ---------------------------------------------------------------------------

@dataclass
class AgentProcess:
    device: str
    root: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "agent.yaml"

    @property
    def log(self) -> Path:
        return self.root / "agent.log"

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(self, *extra: str) -> None:
        self.write_config()
        args = [sys.executable, "-m", "fleetwave", "agent", "--config",
                str(self.config_path), "--log-level", "debug", *extra]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def agent_config(device: str, root: Path, broker_port: int, key: SigningKey,
                 components: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    (root / "password").write_text(device_password(device))
    return {"device": {"id": device, "labels": {"site": "lab"}},
            "broker": {"url": f"mqtt://127.0.0.1:{broker_port}", "username": device,
                       "passwordFile": str(root / "password"), "keepalive": 5},
            "trust": {"keys": [key.public.base64]},
            "stateDir": str(root / "state"), "downloadTimeout": 5,
            "components": dict(components), **extra}


def files_component(target: Path, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"version": version, "handler": "files", "files": {"target": str(target)},
            **extra}


def install_version(target: Path, version: str, files: Mapping[str, str]) -> None:
    """What was on the device before the agent: versions/<v>/ and `current`."""
    directory = target / "versions" / version
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_text(content)
    os.symlink(f"versions/{version}", target / "current")


def script(path: Path, text: str) -> Path:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


@dataclass
class World:
    root: Path
    broker: Broker
    key: SigningKey
    controller: Controller
    artifacts: ArtifactServer
    agents: list[AgentProcess] = field(default_factory=list)

    def agent(self, device: str, components: Mapping[str, Any], *, start: bool = True,
              env: Mapping[str, str] | None = None, **extra: Any) -> AgentProcess:
        root = self.root / device
        root.mkdir(exist_ok=True)
        agent = AgentProcess(device, root, agent_config(device, root, self.broker.port,
                                                        self.key, components, **extra),
                             env=dict(env or {}))
        self.agents.append(agent)
        if start:
            agent.start()
            self.wait_online(agent)
        return agent

    def wait_online(self, agent: AgentProcess, timeout: float = 20) -> None:
        wait_until(lambda: self.controller.online.get(agent.device) is True
                 and agent.device in self.controller.states, timeout,
                 lambda: f"{agent.device} never came online:\n{agent.log_tail()}")

    def final(self, agent: AgentProcess, cid: str, timeout: float = 30) -> dict[str, Any]:
        result: dict[str, Any] = wait_until(
            lambda: self.controller.final(agent.device, cid), timeout,
            lambda: f"no final status for {cid} from {agent.device}: "
                    f"{self.controller.of(agent.device)}\n{agent.log_tail()}")
        return result


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    broker = start_broker(tmp_path / "mosquitto")
    key = SigningKey.generate()
    controller = Controller(broker, key)
    artifacts = ArtifactServer()
    w = World(tmp_path, broker, key, controller, artifacts)
    try:
        yield w
    finally:
        for agent in w.agents:
            agent.stop()
        controller.close()
        artifacts.close()
        broker.process.stop()
