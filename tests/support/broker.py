"""Mosquitto fixtures: a real broker with the configuration fleetwave ships, on a free port,
authentication on, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleetwave.mqtt.broker import BrokerConfig, BrokerFiles, MosquittoProcess, free_port

CONTROLLER = ("fleetwave", "controller-secret")
SIMULATOR = ("fleetwave-simulator", "simulator-secret")
DEVICES = {f"device-{name}": f"{name}-secret" for name in ("a", "b", "c")}


@dataclass
class RunningBroker:
    """A started Mosquitto; `url` for fleetwave, `port` and accounts for raw clients."""

    process: MosquittoProcess
    config: BrokerConfig
    files: BrokerFiles
    host: str = "127.0.0.1"
    controller: tuple[str, str] = CONTROLLER
    simulator: tuple[str, str] = SIMULATOR
    devices: dict[str, str] = field(default_factory=lambda: dict(DEVICES))

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def restart(self) -> None:
        """Stop (Mosquitto saves sessions and queues) and start again on the same port."""
        self.process.restart()

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        self.process.start()


def start_broker(directory: Path, **overrides: object) -> RunningBroker:
    port = free_port()
    config = BrokerConfig(port=port, controller_user=CONTROLLER[0],
                          controller_password=CONTROLLER[1], simulator_user=SIMULATOR[0],
                          simulator_password=SIMULATOR[1], devices=DEVICES,
                          autosave_interval=1, **overrides)  # type: ignore[arg-type]
    files = config.write(directory)
    process = MosquittoProcess(files, port)
    process.start()
    return RunningBroker(process=process, config=config, files=files)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    running = start_broker(tmp_path / "mosquitto")
    try:
        yield running
    finally:
        running.stop()
