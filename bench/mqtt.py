"""Status ingest through Mosquitto: fleetwave's `MqttLink` beside a bare paho subscriber.

    python bench/mqtt.py [--messages 60000] [--rounds 3] [--devices 10000]

Starts its own Mosquitto with the shipped configuration. For each round and each subscriber:
a persistent session is created and left; publisher processes (simulated devices, QoS 1,
realistic status payloads, a window of 1,000 unacknowledged publishes each) fill its queue;
then the subscriber reconnects and the time to drain the queue is measured. That is the
ingest capacity, without the publishers competing for the two cores. `--live` measures with
the publishers running at the same time instead.

- bare paho: `on_message` counts, nothing else (the ceiling of any paho-based client).
- fleetwave: `MqttLink` receives, parses and validates every message into `Status` values
  and hands them in batches to a no-op `on_messages`.
The ratio is fleetwave / bare paho; the target is at least 0.70.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "controller"))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from fleetwave.metrics import build_metrics
from fleetwave.mqtt import MqttLink, MqttSettings
from fleetwave.mqtt.broker import BrokerConfig, MosquittoProcess, free_port
from fleetwave.protocol.messages import DeviceMessage
from fleetwave.protocol.signing import SigningKey

CONTROLLER = ("fleetwave", "bench-controller")
SIMULATOR = ("fleetwave-simulator", "bench-simulator")
TYPES = ("update_command_received", "update_started", "update_progress", "update_succeeded")


def publish(port: int, first: int, count: int, devices: int, tag: str) -> None:
    """One publisher process: `count` QoS 1 status messages from many simulated devices."""
    window = threading.Semaphore(1000)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{tag}-{first}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(*SIMULATOR)
    client.on_publish = lambda *a: window.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    for i in range(first, first + count):
        device = f"{i % devices:08x}-0000-4000-8000-000000000000"
        body = {"type": TYPES[i % 4], "correlation_id": f"{tag}-{i:08d}-cid",
                "timestamp": 1_700_000_000_000 + i, "percent": i % 101,
                "current_version": "1.0.5", "target_version": "1.0.6",
                "deployment_type": "docker"}
        window.acquire()
        client.publish(f"iot/device/{device}/agent/status", json.dumps(body), qos=1)
    for _ in range(1000):
        window.acquire()  # all acknowledged
    client.loop_stop()
    client.disconnect()


def run_publishers(port: int, messages: int, devices: int, tag: str,
                   processes: int) -> list[multiprocessing.Process]:
    per = messages // processes
    procs = [multiprocessing.Process(target=publish, args=(port, n * per, per, devices, tag))
             for n in range(processes)]
    for p in procs:
        p.start()
    return procs


def bare_session(port: int, client_id: str,
                 topic: str = "iot/device/+/agent/status") -> None:
    """Create the persistent session (subscribed to `topic`), then leave."""
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(*CONTROLLER)
    client.on_subscribe = lambda *a: done.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.subscribe(topic, qos=1)
    client.loop_start()
    done.wait(10)
    client.loop_stop()
    client.disconnect()


def bare_paho(port: int, client_id: str, expected: int, start_publishers: object) -> float:
    """Messages/s of a bare paho subscriber (resumes the session, counts, nothing else)."""
    count = 0
    last = 0.0
    finished = threading.Event()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        nonlocal count, last
        count += 1
        if count >= expected:
            last = time.perf_counter()
            finished.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(*CONTROLLER)
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    first = time.perf_counter()  # both subscribers are timed from their connect call
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.subscribe("iot/device/+/agent/status", qos=1)
    client.loop_start()
    procs = start_publishers() if callable(start_publishers) else []
    if not finished.wait(300):
        raise SystemExit(f"bare paho received {count} of {expected}")
    client.loop_stop()
    client.disconnect()
    for p in procs:
        p.join()
    return expected / (last - first)


async def fleetwave_ingest(port: int, client_id: str, expected: int,
                           start_publishers: object) -> tuple[float, int]:
    """Messages/s through MqttLink (parse, validate, batch hand-off to a no-op callback)."""
    count = 0
    batches = 0
    last = 0.0
    finished = asyncio.Event()

    async def on_messages(batch: list[DeviceMessage]) -> None:
        nonlocal count, last, batches
        count += len(batch)
        batches += 1
        if count >= expected:
            last = time.perf_counter()
            finished.set()

    settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}", username=CONTROLLER[0],
                            password=CONTROLLER[1], client_id=client_id, session_expiry=3600)
    first = time.perf_counter()
    async with MqttLink(settings, build_metrics(CollectorRegistry()), on_messages,
                        signing_key=SigningKey.generate()):
        procs = start_publishers() if callable(start_publishers) else []
        try:
            async with asyncio.timeout(300):
                await finished.wait()
        except TimeoutError:
            raise SystemExit(f"fleetwave received {count} of {expected}") from None
        for p in procs:
            await asyncio.to_thread(p.join)
    return expected / (last - first), batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--live", action="store_true",
                        help="publish while the subscriber drains (publishers compete for CPU)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-") as tmp:
        port = free_port()
        config = BrokerConfig(port=port, controller_user=CONTROLLER[0],
                              controller_password=CONTROLLER[1], simulator_user=SIMULATOR[0],
                              simulator_password=SIMULATOR[1], persistence=False)
        with MosquittoProcess(config.write(tmp), port):
            paho_rates: list[float] = []
            link_rates: list[float] = []
            batch_counts: list[int] = []
            for r in range(args.rounds):
                for name in (("paho", "fleetwave") if r % 2 == 0 else ("fleetwave", "paho")):
                    client_id = f"bench-{name}-{r}"
                    tag = f"{name}{r}"
                    bare_session(port, client_id) if name == "paho" else asyncio.run(
                        _link_session(port, client_id))

                    def starter(tag: str = tag) -> list[multiprocessing.Process]:
                        return run_publishers(port, args.messages, args.devices, tag,
                                              args.publishers)

                    if not args.live:  # fill the queue while the subscriber is away
                        for p in starter():
                            p.join()
                        start: object = None
                    else:
                        start = starter
                    if name == "paho":
                        paho_rates.append(bare_paho(port, client_id, args.messages, start))
                    else:
                        rate, batches = asyncio.run(
                            fleetwave_ingest(port, client_id, args.messages, start))
                        link_rates.append(rate)
                        batch_counts.append(batches)
                print(f"round {r + 1}: bare paho {paho_rates[-1]:8.0f} msg/s   "
                      f"fleetwave {link_rates[-1]:8.0f} msg/s   "
                      f"ratio {link_rates[-1] / paho_rates[-1]:.2f}", flush=True)
            p_med = statistics.median(paho_rates)
            f_med = statistics.median(link_rates)
            mode = "live (publishers running)" if args.live else "queued (drain)"
            print(f"\nstatus ingest, {args.messages} QoS 1 messages from {args.devices} "
                  f"devices, {mode}, median of {args.rounds}:")
            print(f"  bare paho subscriber : {p_med:8.0f} msg/s")
            print(f"  fleetwave MqttLink   : {f_med:8.0f} msg/s  "
                  f"(parse + validate + batch hand-off; "
                  f"{statistics.mean(batch_counts):.0f} batches per run)")
            print(f"  ratio                : {f_med / p_med:.2f}  (target >= 0.70)")


async def _link_session(port: int, client_id: str) -> None:
    """Create the link's persistent session (subscribed), then leave."""
    settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}", username=CONTROLLER[0],
                            password=CONTROLLER[1], client_id=client_id, session_expiry=3600)

    async def ignore(batch: list[DeviceMessage]) -> None:
        return None

    async with MqttLink(settings, build_metrics(CollectorRegistry()), ignore,
                        signing_key=SigningKey.generate()) as link:
        async with asyncio.timeout(10):
            await link.wait_connected()


if __name__ == "__main__":
    main()
