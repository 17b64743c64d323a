"""Real `fleetwave run` and `fleetwave simulate` processes for end-to-end tests.

Each test gets its own broker (tests.support.broker), store file, source folder
and API port; every process it starts is killed at the end, even on failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetwave.mqtt.broker import free_port
from fleetwave.runtime.keys import create_key_file, load_key_file
from tests.support.broker import RunningBroker

FLEETWAVE = [sys.executable, "-m", "fleetwave"]


def signing_keys(where: Path) -> tuple[Path, Path]:
    """(private key, `keys public -o json` file) in `where`, created once: the controllers
    of one test sign with the first (replicas share a key), its devices trust the second."""
    private, public = where / "signing-key.pem", where / "trusted-key.json"
    if not private.exists():
        create_key_file(private)
    if not public.exists():
        key = load_key_file(private).public
        public.write_text(json.dumps({"keyid": key.keyid, "publicKey": key.base64}))
    return private, public


@dataclass
class Controller:
    """One `fleetwave run` process and how to reach it."""

    workdir: Path
    broker: RunningBroker
    port: int
    source: Path
    store: str
    token: str = "test-token"
    extra_args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    key_dir: Path | None = None
    """Where the test's signing key lives (default: workdir)."""
    keyless: bool = False
    """Start without --signing-key (on SQLite, `run` then creates one beside the database)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """More environment for the process (e.g. a gate's `secretRef`)."""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "controller.log"
        (self.workdir / "tokens").write_text(self.token + "\n")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, FLEETWAVE_BROKER_USERNAME=self.broker.controller[0],
                   FLEETWAVE_BROKER_PASSWORD=self.broker.controller[1], **self.env)
        args = [*FLEETWAVE, "run", "--broker", self.broker.url, "--store", self.store,
                "--source", str(self.source), "--listen", f"127.0.0.1:{self.port}",
                "--token-file", str(self.workdir / "tokens"), "--log-format", "json",
                "--poll-interval", "0.5", *self.key_args(), *self.extra_args]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.workdir)
        wait_until(lambda: self.get("/readyz", ok_only=False) is not None, 30,
                   f"controller did not answer on {self.url}; log: {self.tail()}")

    def key_args(self) -> list[str]:
        if self.keyless:
            return []
        return ["--signing-key", str(signing_keys(self.key_dir or self.workdir)[0])]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc)
        self.proc = None
        return code

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str, ok_only: bool = True) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if ok_only:
                raise
            return {"status": exc.code}
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def post(self, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body or {}).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def rollout(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/v1/rollouts/{name}")
        return result

    def devices(self) -> list[dict[str, Any]]:
        """Every device, following the API's pages."""
        items: list[dict[str, Any]] = []
        query = "?limit=1000"
        while True:
            page = self.get("/api/v1/devices" + query)
            items += page["items"]
            if page.get("next") is None:
                return items
            query = f"?limit=1000&cursor={page['next']}"


@dataclass
class Simulator:
    broker: RunningBroker
    workdir: Path
    devices: int
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    key_dir: Path | None = None
    """Where the test's signing key lives (default: workdir): the devices trust it."""

    def start(self) -> None:
        env = dict(os.environ, FLEETWAVE_BROKER_USERNAME=self.broker.simulator[0],
                   FLEETWAVE_BROKER_PASSWORD=self.broker.simulator[1])
        trusted = signing_keys(self.key_dir or self.workdir)[1]
        args = [*FLEETWAVE, "simulate", "--broker", self.broker.url, "--devices",
                str(self.devices), "--trust-key-file", str(trusted), *self.args]
        with (self.workdir / "simulator.log").open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None


def terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a clean stop is part of what is tested), then SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def wait_until(check: Callable[[], Any], timeout: float, message: str | Callable[[], str],
               interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(message() if callable(message) else message)
        time.sleep(interval)


@pytest.fixture
def controller_factory(tmp_path: Path, broker: RunningBroker) -> Iterator[
        Callable[..., Controller]]:
    started: list[Controller] = []

    def make(source: Path, *, store: str | None = None, extra_args: Sequence[str] = (),
             port: int | None = None, keyless: bool = False,
             env: Mapping[str, str] | None = None) -> Controller:
        workdir = tmp_path / f"controller-{len(started)}"
        workdir.mkdir()
        controller = Controller(workdir=workdir, broker=broker, port=port or free_port(),
                                source=source,
                                store=store or f"sqlite:///{tmp_path / 'fleetwave.db'}",
                                extra_args=extra_args, key_dir=tmp_path, keyless=keyless,
                                env=env or {})
        started.append(controller)
        return controller

    yield make
    for controller in started:
        controller.stop()


@pytest.fixture
def simulator_factory(tmp_path: Path, broker: RunningBroker) -> Iterator[
        Callable[..., Simulator]]:
    started: list[Simulator] = []

    def make(devices: int, *args: str) -> Simulator:
        simulator = Simulator(broker=broker, workdir=tmp_path, devices=devices, args=args,
                              key_dir=tmp_path)
        started.append(simulator)
        simulator.start()
        return simulator

    yield make
    for simulator in started:
        simulator.stop()
