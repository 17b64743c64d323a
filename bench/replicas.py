"""Status ingest spread over 1, 2 and 3 replicas with `$share`, beside bare paho subscribers.

    python bench/replicas.py [--messages 60000] [--rounds 3] [--replicas 1,2,3]

Starts its own Mosquitto with the shipped configuration. For each round, each replica count
N and each kind of subscriber: N persistent sessions subscribe to
`$share/bench/iot/device/+/agent/status` and leave; publisher processes fill their queues
(Mosquitto hands each shared message to one member of the group, queued while it is away);
then N subscriber processes (each its own process, as replicas are) reconnect at once and
the time until the last message arrived anywhere is measured. That is the group's ingest
capacity without the publishers competing for the cores.

- bare paho: one process per member whose `on_message` counts, nothing else.
- fleetwave: one process per member running `MqttLink` (parse, validate, batch hand-off,
  manual acknowledgements where the link has them) into a no-op `on_messages`.

The ratio is fleetwave / bare paho for the same N; the scaling is rate(N) / rate(1).
On 2 cores the broker and the subscribers share the machine, so N = 3 cannot scale past
what 2 cores give: the figure to read there is the ratio to bare paho, which has the same
limit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "controller"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

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
from mqtt import CONTROLLER, SIMULATOR, bare_session, run_publishers


def shared(group: str) -> str:
    return f"$share/{group}/iot/device/+/agent/status"


def bare_member(port: int, client_id: str, start: Barrier, counts: multiprocessing.Queue,
                quiet: float, group: str) -> None:
    """Resume the session, count until nothing arrived for `quiet` seconds; report
    (count, first connect time, last message time)."""
    count = 0
    last = 0.0
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(*CONTROLLER)

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        nonlocal count, last
        count += 1
        last = time.time()

    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    start.wait()
    first = time.time()
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    _until_quiet(lambda: last, first, quiet)
    client.loop_stop()
    client.disconnect()
    counts.put((count, first, last))


def link_member(port: int, client_id: str, start: Barrier, counts: multiprocessing.Queue,
                quiet: float, group: str) -> None:
    """The same through `MqttLink` with `--shared-group`, in its own event loop."""
    count = 0
    last = 0.0

    async def on_messages(batch: list[DeviceMessage]) -> None:
        nonlocal count, last
        count += len(batch)
        last = time.time()

    async def run() -> float:
        settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}", username=CONTROLLER[0],
                                password=CONTROLLER[1], client_id=client_id,
                                session_expiry=3600, shared_group=group)
        await asyncio.to_thread(start.wait)
        first = time.time()
        async with MqttLink(settings, build_metrics(CollectorRegistry()), on_messages,
                        signing_key=SigningKey.generate()):
            await asyncio.to_thread(_until_quiet, lambda: last, first, quiet)
        return first

    first = asyncio.run(run())
    counts.put((count, first, last))


def _until_quiet(last: object, first: float, quiet: float) -> None:
    assert callable(last)
    while True:
        time.sleep(0.1)
        seen = last() or first
        if time.time() - seen > quiet:
            return


def measure(kind: str, port: int, replicas: int, messages: int, devices: int, tag: str,
            publishers: int) -> float:
    """Messages/s of `replicas` members of one shared group draining their queues."""
    ids = [f"bench-{tag}-{i}" for i in range(replicas)]
    # A group of its own: Mosquitto hands a shared message to members that are away too
    # (queued in their sessions), so an earlier measurement's sessions would take a share.
    group = f"bench-{tag}"
    for client_id in ids:
        bare_session(port, client_id, shared(group))
    for p in run_publishers(port, messages, devices, tag, publishers):
        p.join()
    start = multiprocessing.Barrier(replicas)
    counts: multiprocessing.Queue = multiprocessing.Queue()
    target = bare_member if kind == "paho" else link_member
    procs = [multiprocessing.Process(target=target, args=(port, cid, start, counts, 2.0, group))
             for cid in ids]
    for p in procs:
        p.start()
    results = [counts.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    received = sum(r[0] for r in results)
    expected = messages // publishers * publishers
    if received < expected:
        raise SystemExit(f"{kind} x{replicas}: received {received} of {expected}")
    first = min(r[1] for r in results)
    last = max(r[2] for r in results)
    shares = sorted(r[0] for r in results)
    print(f"    {kind:9s} x{replicas}: {received / (last - first):8.0f} msg/s  "
          f"(shares {shares})", flush=True)
    return received / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--replicas", default="1,2,3")
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]

    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-") as tmp:
        port = free_port()
        config = BrokerConfig(port=port, controller_user=CONTROLLER[0],
                              controller_password=CONTROLLER[1], simulator_user=SIMULATOR[0],
                              simulator_password=SIMULATOR[1], persistence=False)
        rates: dict[tuple[str, int], list[float]] = {}
        with MosquittoProcess(config.write(tmp), port):
            for r in range(args.rounds):
                print(f"round {r + 1}:", flush=True)
                for n in counts:
                    kinds = ("paho", "fleetwave") if r % 2 == 0 else ("fleetwave", "paho")
                    for kind in kinds:
                        rates.setdefault((kind, n), []).append(measure(
                            kind, port, n, args.messages, args.devices, f"{kind}{n}r{r}",
                            args.publishers))
        print(f"\nstatus ingest on $share, {args.messages} QoS 1 messages from "
              f"{args.devices} devices, queued (drain), median of {args.rounds}:")
        base = {kind: statistics.median(rates[(kind, counts[0])]) for kind in
                ("paho", "fleetwave")}
        for n in counts:
            paho_rate = statistics.median(rates[("paho", n)])
            link_rate = statistics.median(rates[("fleetwave", n)])
            print(f"  {n} replica(s): bare paho {paho_rate:8.0f} msg/s "
                  f"(x{paho_rate / base['paho']:.2f})   fleetwave {link_rate:8.0f} msg/s "
                  f"(x{link_rate / base['fleetwave']:.2f})   ratio {link_rate / paho_rate:.2f}")


if __name__ == "__main__":
    main()
