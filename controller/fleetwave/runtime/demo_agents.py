"""Real device agents beside the demo's simulated fleet (`fleetwave demo --agents N`).

Each is a `fleetwave agent` process with the `files` handler on a directory in the demo's
workdir, its own broker account, and the demo's signing key as its only trusted key. The
demo serves the agent releases (small tars with a VERSION file) from a local HTTP server
and adds their URL and SHA-256 to the `agent` Rollout, so one can watch `current` move
from 1.0.5 to 1.0.6 to 1.0.7 on disk while the simulated devices do the same in memory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

FIRST_VERSION = "1.0.5"
"""What the simulated fleet starts on, so the real agents join the same rollouts."""


@dataclass
class RealAgent:
    device: str
    root: Path
    password: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def current(self) -> Path:
        return self.root / "files" / "current"

    def version(self) -> str | None:
        """What `current` points at, read from the disk."""
        try:
            return os.readlink(self.current).rsplit("/", 1)[-1]
        except OSError:
            return None


class DemoAgents:
    """N agent processes and the HTTP server of their artifacts."""

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.agents = [RealAgent(f"real-agent-{n}", directory / f"real-agent-{n}",
                                 f"demo-agent-{n}-{os.urandom(6).hex()}")
                       for n in range(1, count + 1)]
        self._server: http.server.ThreadingHTTPServer | None = None

    def accounts(self) -> dict[str, str]:
        """Broker accounts: each agent logs in as its device id (the ACL's %u)."""
        return {a.device: a.password for a in self.agents}

    def serve(self, versions: tuple[str, ...]) -> dict[str, tuple[str, str]]:
        """Build a release tar per version and serve them; version -> (url, sha256)."""
        served = self.directory / "artifacts"
        served.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietHandler, directory=str(served))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        port = self._server.server_address[1]
        out = {}
        for version in versions:
            data = _release(version)
            (served / f"agent-{version}.tar.gz").write_bytes(data)
            out[version] = (f"http://127.0.0.1:{port}/agent-{version}.tar.gz",
                            hashlib.sha256(data).hexdigest())
        return out

    def start(self, broker_port: int, trusted_key: str) -> None:
        for agent in self.agents:
            target = agent.root / "files"
            first = target / "versions" / FIRST_VERSION
            first.mkdir(parents=True, exist_ok=True)
            (first / "VERSION").write_text(FIRST_VERSION + "\n")
            if not agent.current.is_symlink():
                os.symlink(f"versions/{FIRST_VERSION}", agent.current)
            (agent.root / "password").write_text(agent.password)
            config = {
                "device": {"id": agent.device, "labels": {"kind": "real-agent"}},
                "broker": {"url": f"mqtt://127.0.0.1:{broker_port}", "username": agent.device,
                           "passwordFile": str(agent.root / "password")},
                "trust": {"keys": [trusted_key]}, "stateDir": str(agent.root / "state"),
                "components": {"agent": {"version": FIRST_VERSION, "handler": "files",
                                         "files": {"target": str(target)}}}}
            (agent.root / "agent.yaml").write_text(yaml.safe_dump(config))
            with (agent.root / "agent.log").open("ab") as log:
                agent.proc = subprocess.Popen(
                    [sys.executable, "-m", "fleetwave.agent", "--config",
                     str(agent.root / "agent.yaml")], stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        for agent in self.agents:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGTERM)
        for agent in self.agents:
            if agent.proc is not None:
                try:
                    agent.proc.wait(15)
                except subprocess.TimeoutExpired:
                    agent.proc.kill()
                    agent.proc.wait(5)
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown()
                self._server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _release(version: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("VERSION", f"{version}\n"),
                           ("README", f"demo application, release {version}\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
