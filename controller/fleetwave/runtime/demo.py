"""`fleetwave demo`: the whole system on one machine, to watch GitOps roll a fleet forward.

It starts a private Mosquitto with the shipped configuration, a local git
repository holding demo Rollouts, the same controller `fleetwave run` starts
(git source, SQLite), and a simulated fleet with a few per cent of failing and
offline devices. Midway it commits a new version to the repository, as an
operator would, and the controller picks it up from git. Everything it
started stops on Ctrl-C; its files live in one temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetwave.mqtt.broker import MOSQUITTO, BrokerConfig, MosquittoProcess, free_port
from fleetwave.protocol.signing import SigningKey
from fleetwave.resources.vocabulary import Phase
from fleetwave.runtime.controller import run_controller
from fleetwave.runtime.demo_agents import DemoAgents
from fleetwave.runtime.engine import Engine
from fleetwave.runtime.keys import create_key_file, load_key_file
from fleetwave.runtime.settings import Settings
from fleetwave.simulator.fleet import SimulatedFleet, SimulatorConfig

ROLLOUT_TEMPLATE = """\
# Committed by `fleetwave demo`: roll the device agent out in four waves.
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata:
  name: agent
spec:
  component: agent
  version: "{version}"
  selector: {{}}            # every device
  strategy:
    steps:
      - {{percent: 5}}        # canary
      - {{percent: 25, pause: 3s}}
      - {{percent: 50, pause: 3s}}
      - {{percent: 100}}
    maxInFlight: 400
  health:
    ackTimeout: 10s
    updateTimeout: 30s
    stableFor: 2s
  failurePolicy:
    maxFailurePercent: 25
    minSample: 30
    action: pause
    retries: 1
    retryBackoff: 2s
"""

NODERED_ROLLOUT = """\
# Committed by `fleetwave demo`: Node-RED on production devices only.
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata:
  name: nodered-production
spec:
  component: nodered
  version: "3.2.0"
  selector:
    matchLabels: {env: production}
  strategy:
    steps: [{percent: 10}, {percent: 100, pause: 2s}]
  health: {ackTimeout: 10s, updateTimeout: 30s, stableFor: 2s}
  failurePolicy: {maxFailurePercent: 15, minSample: 30, retries: 1, retryBackoff: 2s}
"""


@dataclass
class DemoOptions:
    devices: int = 2000
    speed: float = 4.0
    fail_rate: float = 0.02
    offline_rate: float = 0.01
    seed: int = 7
    listen: str = "127.0.0.1:8080"
    workdir: str | None = None
    keep: bool = False
    bump_after: float = 90.0
    """Seconds after start at the latest before the demo commits a new version."""
    health_check_allow: tuple[str, ...] = ("127.0.0.0/8",)
    """Everything the demo runs listens on loopback, which checks refuse by default."""
    signing_key: str | None = None
    """The controller's key file (default: one created in the workdir); the simulated
    devices trust its public key."""
    agents: int = 0
    """Real `fleetwave agent` processes (files handler) beside the simulated fleet."""


@dataclass
class DemoState:
    """What the live display shows besides the rollouts."""

    started: float
    workdir: Path
    broker_url: str
    api_url: str
    repo: Path
    fleet: SimulatedFleet | None = None
    engine: Engine | None = None
    commits: list[str] | None = None
    agents: DemoAgents | None = None

    @property
    def dashboard_url(self) -> str:
        """The dashboard, served by the controller at `/` of its API listener."""
        return f"{self.api_url}/"


def ensure_installed() -> None:
    """Install Mosquitto and git with apt-get where they are missing and we may (root);
    otherwise say what to install."""
    missing = [pkg for pkg, binary in (("mosquitto", MOSQUITTO), ("git", "git"))
               if shutil.which(binary) is None and not Path(binary).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{' and '.join(missing)} not installed: install "
                           f"{' '.join(missing)} (e.g. apt-get install {' '.join(missing)}) "
                           "or run ./scripts/demo as root")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        subprocess.run(command, check=True, env={**os.environ,
                                                 "DEBIAN_FRONTEND": "noninteractive"})
    # Debian starts a system broker on 1883; the demo runs its own on a free port.
    subprocess.run(["service", "mosquitto", "stop"], check=False, capture_output=True)


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=Fleet Operator",
         "-c", "user.email=operator@example.com", *args],
        check=True, capture_output=True, text=True)
    return result.stdout.strip()


def agent_rollout(version: str, artifacts: Mapping[str, tuple[str, str]] | None) -> str:
    """The demo's agent Rollout; with real agents it carries their release's artifact."""
    text = ROLLOUT_TEMPLATE.format(version=version)
    if artifacts and version in artifacts:
        url, sha = artifacts[version]
        text = text.replace(f'  version: "{version}"\n', f'  version: "{version}"\n'
                            f'  artifact: {{url: "{url}", sha256: "{sha}"}}\n')
    return text


def init_repository(repo: Path, artifacts: Mapping[str, tuple[str, str]] | None = None) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "rollouts").mkdir(exist_ok=True)
    (repo / "rollouts" / "agent.yaml").write_text(agent_rollout("1.0.6", artifacts))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Roll out agent 1.0.6 to the fleet")


def commit_new_version(repo: Path,
                       artifacts: Mapping[str, tuple[str, str]] | None = None) -> str:
    (repo / "rollouts" / "agent.yaml").write_text(agent_rollout("1.0.7", artifacts))
    (repo / "rollouts" / "nodered.yaml").write_text(NODERED_ROLLOUT)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Agent 1.0.7 and Node-RED 3.2.0 for production")
    return _git(repo, "rev-parse", "--short", "HEAD")


async def run_demo(options: DemoOptions, stop: asyncio.Event,
                   show: Callable[[DemoState], Awaitable[None]]) -> None:
    """Start everything, run until `stop`, then stop everything in reverse order."""
    await asyncio.to_thread(ensure_installed)
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="fleetwave-demo-"))
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    port = free_port()
    agents = DemoAgents(workdir / "agents", options.agents) if options.agents else None
    broker_config = BrokerConfig(port=port, simulator_user="simulator",
                                 controller_password="demo-controller",
                                 simulator_password="demo-simulator", persistence=False,
                                 devices=agents.accounts() if agents else {})
    broker = MosquittoProcess(broker_config.write(workdir / "broker"), port)
    key_path = Path(options.signing_key or workdir / "signing-key.pem")
    key = await asyncio.to_thread(_demo_key, key_path)
    repo = workdir / "repo"
    artifacts = agents.serve(("1.0.6", "1.0.7")) if agents else None
    init_repository(repo, artifacts)
    state = DemoState(started=time.monotonic(), workdir=workdir,
                      broker_url=f"mqtt://127.0.0.1:{port}",
                      api_url=f"http://{options.listen}", repo=repo, commits=[],
                      agents=agents)
    settings = Settings(
        broker=state.broker_url, broker_username=broker_config.controller_user,
        broker_password=broker_config.controller_password,
        broker_client_id="fleetwave-demo-controller",
        store=f"sqlite:///{workdir / 'fleetwave.db'}", source=f"file://{repo}",
        branch="main", path="rollouts", poll_interval=2.0, listen=options.listen,
        workdir=str(workdir / "controller"), resync_interval=2.0, signing_key=str(key_path),
        health_check_allow=options.health_check_allow,
        # the simulated fleet appears at once, not at a real fleet's churn
        max_new_devices_per_minute=max(Settings.max_new_devices_per_minute, options.devices),
    )
    broker.start()
    try:
        if agents is not None:
            agents.start(port, key.public.base64)
        engine_ready = asyncio.Event()

        async def ready(engine: Engine) -> None:
            state.engine = engine
            engine_ready.set()

        controller = asyncio.create_task(run_controller(settings, stop=stop, ready=ready))
        await asyncio.wait([asyncio.create_task(engine_ready.wait()), controller],
                           return_when=asyncio.FIRST_COMPLETED)
        if controller.done():
            controller.result()  # raises what stopped it
        fleet_config = SimulatorConfig(
            broker=state.broker_url, username=broker_config.simulator_user,
            password=broker_config.simulator_password, devices=options.devices,
            seed=options.seed, speed=options.speed, fail_rate=options.fail_rate,
            offline_rate=options.offline_rate, offline_duration=20.0,
            client_id_prefix="fleetwave-demo-sim", trust_keys=(key.public.base64,))
        async with SimulatedFleet(fleet_config) as fleet:
            state.fleet = fleet
            bumped = False
            while not stop.is_set() and not controller.done():
                await show(state)
                if not bumped and _first_done(state, options):
                    revision = await asyncio.to_thread(commit_new_version, repo, artifacts)
                    assert state.commits is not None
                    state.commits.append(revision)
                    bumped = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
            stop.set()
        await controller
    finally:
        stop.set()
        if agents is not None:
            await asyncio.to_thread(agents.stop)
        broker.stop()
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _demo_key(path: Path) -> SigningKey:
    """The given key file, or a new one (the simulated devices trust its public key)."""
    return load_key_file(path) if path.exists() else create_key_file(path)


def _first_done(state: DemoState, options: DemoOptions) -> bool:
    """Commit the new version once agent 1.0.6 completed, or after `bump_after` seconds."""
    if time.monotonic() - state.started > options.bump_after:
        return True
    engine = state.engine
    if engine is None:
        return False
    rollout = engine.get_rollout("agent")
    return rollout is not None and rollout["status"].get("phase") == Phase.COMPLETED
