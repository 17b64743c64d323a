"""A whole rollout end to end: `fleetwave run` beside a bare-bones controller, same fleet.

    python bench/rollout.py [--devices 10000] [--rounds 1]

Each measurement gets its own private Mosquitto (shipped configuration, no persistence) and
its own fast fleet (bench/fleet.py: 4 processes of instant devices, each command answered
at once with received, started, succeeded and a new retained state; same seed, so the same
devices) in separate processes, so the fleet does not share the controller's interpreter
and spends less CPU per update than the controller. Both controllers are child processes
too, so their peak RSS (VmHWM) is their own.

- baseline: written here, the least a controller can do and still speak DESIGN.md's
  protocol. paho, subscribe to state and status, hash the devices into 5/25/50/100 waves
  (blake2b of rollout + uuid, sorted), publish retained QoS 1 update commands with a
  correlation id through a window of 1,000 unacknowledged publishes (paho's message ids are
  16-bit), record every command and status in SQLite (WAL, executemany in batches), clear
  the retained command of each device that succeeded, start the next wave when every device
  of the current one reported success.
- fleetwave: `fleetwave run` with a folder source; once it has seen every device online
  (`fleetwave_devices_online` on /metrics), the bench writes one Rollout (5/25/50/100,
  stableFor 0s, no pauses, maxInFlight = devices) into the folder and samples
  `GET /api/v1/rollouts` every 0.5 s until its phase is Completed; the longest time its
  counts did not move is reported (issue 15: never 5 s).

Both rollout times run from "every device is known" to "every device updated": startup and
the ingest of the retained states are reported apart. The ratio is fleetwave / baseline;
TOOLING.md asks for a small factor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "controller"))

# The child roles import fleetwave lazily: the baseline's RSS must not include it.

CONTROLLER = ("fleetwave", "bench-controller")
SIMULATOR = ("fleetwave-simulator", "bench-simulator")
STEPS = (5, 25, 50, 100)
FROM_VERSION, TO_VERSION = "1.0.5", "1.0.6"
PREFIX = "iot/device"

ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: bench}}
spec:
  component: agent
  version: "{version}"
  selector: {{}}
  strategy:
    steps: [{{percent: 5}}, {{percent: 25}}, {{percent: 50}}, {{percent: 100}}]
    maxInFlight: {in_flight}
  health: {{ackTimeout: 120s, updateTimeout: 300s, stableFor: 0s}}
  failurePolicy: {{maxFailurePercent: 50, minSample: 10, retries: 0}}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM: the peak resident set of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- child: the bare-bones baseline controller ------------------------------------------------


def baseline_main(args: argparse.Namespace) -> None:
    """The least a controller can do; prints one JSON line of figures."""
    import sqlite3
    from hashlib import blake2b

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    # Signing is part of the least a controller does now (DESIGN.md 9.1).
    from fleetwave.protocol.signing import SigningKey

    key = SigningKey.from_pem(Path(args.signing_key).read_bytes())
    n = args.devices
    versions: dict[str, str] = {}
    all_known = threading.Event()
    wave_done = threading.Event()
    pending: set[str] = set()
    rows: list[tuple[str, str, str, int]] = []
    rows_lock = threading.Lock()
    to_clear: list[str] = []
    window = threading.Semaphore(1000)
    received = 0

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        nonlocal received
        received += 1
        parts = msg.topic.split("/")
        device, kind = parts[2], parts[4]
        if kind == "state":
            body = json.loads(msg.payload)
            versions[device] = body["versions"].get("agent", "")
            if len(versions) >= n:
                all_known.set()
        elif kind == "status":
            body = json.loads(msg.payload)
            status = body.get("type", "")
            with rows_lock:
                rows.append((device, status, body.get("correlation_id", ""),
                             body.get("timestamp", 0)))
                if status == "update_succeeded":
                    to_clear.append(device)
            if status == "update_succeeded" and device in pending:
                pending.discard(device)
                if not pending:
                    wave_done.set()

    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-base-") as tmp:
        db = sqlite3.connect(Path(tmp) / "baseline.db", check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE updates (device TEXT PRIMARY KEY, state TEXT NOT NULL, "
                   "correlation_id TEXT NOT NULL, updated_at INTEGER NOT NULL)")
        upsert = ("INSERT INTO updates VALUES (?, ?, ?, ?) ON CONFLICT(device) DO UPDATE SET "
                  "state = excluded.state, correlation_id = excluded.correlation_id, "
                  "updated_at = excluded.updated_at")

        def flush() -> None:
            """Store the statuses received, then clear the retained command of every device
            that finished (records first, as DESIGN.md asks)."""
            with rows_lock:
                batch = rows[:]
                rows.clear()
                clears = to_clear[:]
                to_clear.clear()
            for start in range(0, len(batch), 500):
                db.executemany(upsert, batch[start:start + 500])
                db.commit()
            for device in clears:
                window.acquire()
                client.publish(f"{PREFIX}/{device}/agent/update", b"", qos=1, retain=True)

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline",
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(*CONTROLLER)
        client.max_inflight_messages_set(100)  # TOOLING.md: faster than 1,000
        client.max_queued_messages_set(0)
        client.on_message = on_message
        client.on_publish = lambda *a: window.release()
        connected = time.perf_counter()
        client.connect("127.0.0.1", args.port)
        client.subscribe([(f"{PREFIX}/+/agent/state", 1), (f"{PREFIX}/+/agent/status", 1)])
        client.loop_start()
        if not all_known.wait(600):
            raise SystemExit(f"baseline saw {len(versions)} of {n} devices")
        started = time.perf_counter()
        cpu_started = sum(os.times()[:2])

        rollout = b"bench"
        order = sorted(versions, key=lambda d: blake2b(rollout + d.encode(),
                                                        digest_size=8).digest())
        done = 0
        sent = 0
        for percent in STEPS:
            upto = math.ceil(n * percent / 100)
            wave = [d for d in order[done:upto] if versions[d] != TO_VERSION]
            done = upto
            wave_done.clear()
            pending.update(wave)
            if not wave:
                continue
            created = []
            for device in wave:
                cid = f"bench-{device}-1"
                now = time.time()
                body = json.dumps(key.sign({
                    "action": "update", "component": "agent", "version": TO_VERSION,
                    "correlation_id": cid, "timestamp": int(now * 1000), "device": device,
                    "release": int(now * 1000),
                    "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                time.gmtime(now + 600))})).encode()
                window.acquire()
                client.publish(f"{PREFIX}/{device}/agent/update", body, qos=1, retain=True)
                created.append((device, "sent", cid, int(time.time() * 1000)))
                sent += 1
                if len(created) >= 500:
                    db.executemany(upsert, created)
                    db.commit()
                    created.clear()
                    flush()
            db.executemany(upsert, created)
            db.commit()
            while not wave_done.wait(0.05):
                flush()
            flush()
        finished = time.perf_counter()
        cpu = sum(os.times()[:2]) - cpu_started
        for _ in range(1000):
            window.acquire()  # every command acknowledged
        client.loop_stop()
        client.disconnect()
        stored = db.execute("SELECT count(*) FROM updates WHERE state = 'update_succeeded'"
                            ).fetchone()[0]
        db.close()
    print(json.dumps({"startup": started - connected, "rollout": finished - started,
                      "rss_mib": peak_rss_mib(), "cpu": cpu, "sent": sent, "received": received,
                      "stored_succeeded": stored}), flush=True)


# ---- the run ----------------------------------------------------------------------------------


@dataclass
class Figures:
    startup: float
    """Seconds from subscribing until every device's state was known."""
    rollout: float
    """Seconds from every device known to every device updated."""
    rss_mib: float
    detail: str = ""


def signing_key(tmp: Path) -> Path:
    """The key both controllers sign with and the fleet trusts, one per measurement."""
    from fleetwave.runtime.keys import create_key_file

    path = tmp / "signing-key.pem"
    if not path.exists():
        create_key_file(path)
    return path


def child(role: str, args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "--role", role, "--port", str(port),
            "--devices", str(args.devices), "--seed", str(args.seed),
            "--signing-key", str(signing_key(log.parent))]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)


def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float, log: Path) -> str:
    """The first stdout line of `proc` starting with `prefix` (without it)."""
    box: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                box.append(line[len(prefix):].strip())
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise SystemExit(f"{proc.args[3]} did not print {prefix!r} within {timeout:.0f} s "
                         f"(exit {proc.poll()}):\n{tail}")
    return box[0]


def end(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def world(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[int, int]]:
    """A fresh private broker and a ready fast fleet (bench/fleet.py); yields (broker port,
    fleet pid)."""
    from fleetwave.mqtt.broker import BrokerConfig, MosquittoProcess, free_port

    port = free_port()
    config = BrokerConfig(port=port, controller_user=CONTROLLER[0],
                          controller_password=CONTROLLER[1], simulator_user=SIMULATOR[0],
                          simulator_password=SIMULATOR[1], persistence=False)
    with MosquittoProcess(config.write(tmp / "broker"), port):
        log = tmp / "fleet.log"
        argv = [sys.executable, str(ROOT / "bench" / "fleet.py"), "--port", str(port),
                "--devices", str(args.devices), "--seed", str(args.seed),
                "--processes", str(args.fleet_processes), "--per-client", str(args.per_client),
                "--version", FROM_VERSION, "--username", SIMULATOR[0],
                "--password", SIMULATOR[1]]
        sim = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
        try:
            read_line(sim, "ready ", 600, log)
            yield port, sim.pid
        finally:
            end(sim)


def fleet_cpu(pid: int) -> float:
    """CPU seconds of the fleet: its main process and every worker process."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for kid in children.read_text().split() if children.exists() else ():
        with contextlib.suppress(FileNotFoundError):
            total += cpu_seconds(int(kid))
    return total


def measure_baseline(args: argparse.Namespace, tmp: Path) -> Figures:
    with world(args, tmp) as (port, sim):
        log = tmp / "baseline.log"
        sim_cpu = fleet_cpu(sim)
        proc = child("baseline", args, port, log)
        try:
            out = json.loads("{" + read_line(proc, "{", args.timeout, log))
        finally:
            end(proc)
        sim_cpu = fleet_cpu(sim) - sim_cpu
    return Figures(out["startup"], out["rollout"], out["rss_mib"],
                   f"CPU s: controller {out['cpu']:.1f}, fleet {sim_cpu:.1f}; "
                   f"{out['sent']} commands, {out['received']} messages in")


def http_get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def metric_values(api: str, name: str) -> dict[str, float]:
    """The samples of one metric on /metrics, by their first label's value ("" for a
    metric without labels)."""
    body = http_get(api + "/metrics")
    values: dict[str, float] = {}
    for line in (body or b"").decode().splitlines():
        if line.startswith((name + "{", name + " ")):
            label = line.split('"')[1] if line[len(name)] == "{" else ""
            values[label] = values.get(label, 0.0) + float(line.split()[-1])
    return values


def devices_online(api: str) -> float:
    return metric_values(api, "fleetwave_devices_online").get("", 0.0)


def measure_fleetwave(args: argparse.Namespace, tmp: Path) -> Figures:
    from fleetwave.mqtt.broker import free_port

    source = tmp / "rollouts"
    source.mkdir()
    with world(args, tmp) as (port, sim):
        api_port = free_port()
        api = f"http://127.0.0.1:{api_port}"
        env = dict(os.environ, FLEETWAVE_BROKER_USERNAME=CONTROLLER[0],
                   FLEETWAVE_BROKER_PASSWORD=CONTROLLER[1])
        argv = [sys.executable, "-m", "fleetwave", "run", "--broker", f"mqtt://127.0.0.1:{port}",
                "--store", f"sqlite:///{tmp / 'fleetwave.db'}", "--source", str(source),
                "--listen", f"127.0.0.1:{api_port}", "--poll-interval", "0.2",
                "--log-format", "json", "--log-level", args.log_level,
                # the whole fleet appears at once here; a real fleet trickles in
                "--max-new-devices-per-minute", str(max(1000, args.devices)),
                "--signing-key", str(signing_key(tmp))]
        if args.profile:
            argv = [str(ROOT / ".venv/bin/py-spy"), "record", "-o", args.profile, "-r", "50",
                    "-f", args.profile_format,
                    *(["--gil"] if args.profile_gil else []), "--", *argv]
        log = tmp / "controller.log"
        started = time.perf_counter()
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=tmp)
        try:
            pid = controller_pid(proc)
            deadline = time.monotonic() + 600
            while devices_online(api) < args.devices:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"controller never saw {args.devices} devices online:\n"
                                     f"{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)
            known = time.perf_counter()
            known_wall = time.time()
            cpu_known = cpu_seconds(pid), fleet_cpu(sim)
            (source / "bench.yaml").write_text(
                ROLLOUT.format(version=TO_VERSION, in_flight=args.devices))
            deadline = time.monotonic() + args.timeout
            status: dict[str, object] = {}
            last_change, last_counts = time.monotonic(), None
            longest = 0.0
            while True:
                body = http_get(api + "/api/v1/rollouts")
                items = json.loads(body).get("items", []) if body else []
                found = [i for i in items if i.get("name") == "bench"]
                if found:
                    status = found[0].get("status", {})
                    if status.get("counts") != last_counts:
                        last_change, last_counts = time.monotonic(), status.get("counts")
                    if status.get("phase") == "Completed":
                        break
                    if status.get("phase") in ("Failed", "Aborted", "Paused"):
                        raise SystemExit(f"rollout ended {status.get('phase')}: {status}")
                idle = time.monotonic() - last_change
                longest = max(longest, idle)
                if proc.poll() is not None or time.monotonic() > deadline or idle > args.stall:
                    raise SystemExit(
                        f"rollout {'stalled' if idle > args.stall else 'not completed'} "
                        f"(no change for {idle:.0f} s): {status.get('counts')}\n"
                        f"inspect with: py-spy dump --pid {pid}")
                time.sleep(0.5)
            finished = time.perf_counter()
            published = metric_values(api, "fleetwave_mqtt_messages_published_total")
            rss = peak_rss_mib(pid)
            cpu = cpu_seconds(pid) - cpu_known[0], fleet_cpu(sim) - cpu_known[1]
        finally:
            if args.profile:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(controller_pid(proc), signal.SIGINT)  # py-spy writes on child exit
                proc.wait(60)
            end(proc)
    counts = status.get("counts", {})
    assert isinstance(counts, dict)
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    # Like the baseline's, startup runs from subscribing (the controller's log says when) to
    # every device known: the interpreter's imports and the store's migration are apart.
    subscribed = subscribed_at(log)
    startup = known_wall - subscribed if subscribed is not None else known - started
    return Figures(startup, finished - known, rss,
                   f"CPU s: controller {cpu[0]:.1f}, fleet {cpu[1]:.1f}; longest without "
                   f"progress {longest:.1f} s; {shown}; published "
                   + ", ".join(f"{int(n)} {kind}" for kind, n in sorted(published.items())))


def subscribed_at(log: Path) -> float | None:
    """Wall-clock time of the controller's `mqtt.subscribing` log line."""
    from datetime import datetime

    for line in log.read_text(errors="replace").splitlines():
        if '"mqtt.subscribing"' in line:
            stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
            return datetime.fromisoformat(stamp).timestamp()
    return None


def controller_pid(proc: subprocess.Popen[bytes]) -> int:
    """The python process itself, also when py-spy wraps it."""
    for _ in range(100):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        if not children.exists():
            break
        kids = children.read_text().split()
        if kids:
            return int(kids[0])
        if "py-spy" not in " ".join(map(str, proc.args)):  # type: ignore[arg-type]
            break
        time.sleep(0.05)
    return proc.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fleet-processes", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=1250,
                        help="devices per MQTT connection of the fleet")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds a rollout may take before the bench gives up")
    parser.add_argument("--stall", type=float, default=60.0,
                        help="give up when the rollout's counts do not move for this long")
    parser.add_argument("--log-level", default="info", help="of `fleetwave run`")
    parser.add_argument("--logs", metavar="DIR", help="keep every process's log here")
    parser.add_argument("--only", choices=("baseline", "fleetwave"))
    parser.add_argument("--profile", metavar="FILE",
                        help="run `fleetwave run` under py-spy record, writing FILE")
    parser.add_argument("--profile-format", default="raw", help="py-spy -f (raw, speedscope)")
    parser.add_argument("--profile-gil", action="store_true",
                        help="sample only the thread holding the GIL (where CPU goes)")
    parser.add_argument("--role", choices=("baseline",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--signing-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "baseline":
        return baseline_main(args)

    # SIGTERM (e.g. scripts/bench's time limit) unwinds, so every child is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, list[Figures]] = {"baseline": [], "fleetwave": []}
    names = [args.only] if args.only else ["baseline", "fleetwave"]
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            with tempfile.TemporaryDirectory(prefix=f"fleetwave-bench-{name}-") as tmp:
                measure = measure_baseline if name == "baseline" else measure_fleetwave
                try:
                    fig = measure(args, Path(tmp))
                finally:
                    if args.logs:
                        keep = Path(args.logs) / f"{name}-{r + 1}"
                        keep.mkdir(parents=True, exist_ok=True)
                        for log in Path(tmp).rglob("*.log"):
                            shutil.copy(log, keep / log.name)
            results[name].append(fig)
            print(f"round {r + 1} {name:9}: rollout {fig.rollout:7.2f} s   startup "
                  f"{fig.startup:6.2f} s   peak RSS {fig.rss_mib:6.0f} MiB   ({fig.detail})",
                  flush=True)

    load = os.getloadavg()
    print(f"\nrollout of {args.devices} instant devices through 5/25/50/100 waves "
          f"({args.fleet_processes} fleet processes), median of {args.rounds}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores:")
    medians = {}
    for name in names:
        figs = results[name]
        rollout = statistics.median(f.rollout for f in figs)
        startup = statistics.median(f.startup for f in figs)
        rss = max(f.rss_mib for f in figs)
        medians[name] = rollout
        print(f"  {name:9}: rollout {rollout:7.2f} s  ({args.devices / rollout:6.0f} devices/s)"
              f"   startup {startup:6.2f} s   peak RSS {rss:5.0f} MiB")
    if len(medians) == 2:
        print(f"  ratio    : {medians['fleetwave'] / medians['baseline']:.1f}x  "
              f"(fleetwave / baseline rollout time; TOOLING.md: a small factor)")


if __name__ == "__main__":
    main()
