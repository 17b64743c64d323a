"""A fleet of instant devices, fast enough to measure a controller rather than itself.

    python bench/fleet.py --port 1883 --devices 10000 [--processes 4] [--per-client 1250]

`fleetwave.simulator` models real devices (progress, delays, failures, one asyncio task per
update): it spends more CPU per update than the controller it drives, so a benchmark built on
it measures the simulator. This fleet does the least a device can: several processes, each
with a few paho clients that speak for many devices, and every command answered at once, in
the network thread, with `update_command_received`, `update_started`, `update_succeeded` and
a new retained state (4 QoS 1 publishes per update). Publishes go through a window of at
most 1,000 unacknowledged per client (paho's message ids are 16-bit, TOOLING.md).

Prints `ready <seconds> <devices>` once the broker acknowledged every device's retained state
and online message, then answers until SIGTERM. Device uuids are deterministic (`--seed`),
so the same fleet can be started again for a second controller.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid as uuidlib
from random import Random

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

PREFIX = "iot/device"
WINDOW = 1000


def device_ids(devices: int, seed: int) -> list[str]:
    rng = Random(seed)
    return [str(uuidlib.UUID(int=rng.getrandbits(128), version=4)) for _ in range(devices)]


def _ms() -> int:
    return int(time.time() * 1000)


class Client:
    """One MQTT connection speaking for many devices.

    All its work runs in paho's network thread (on_connect, on_message, on_publish), so the
    queue and the window need no lock: paho calls on_publish holding its own message lock,
    and a second thread publishing under a lock of ours would deadlock against it.
    """

    def __init__(self, port: int, name: str, devices: list[str], user: str, password: str,
                 version: str) -> None:
        self.devices = devices
        self.versions = dict.fromkeys(devices, version)
        self.queue: collections.deque[tuple[str, bytes, bool]] = collections.deque()
        self.inflight = 0
        self.announced = False
        self.idle = threading.Event()
        self.answered: dict[str, str] = {}
        """device -> correlation id last answered (a retained command seen again is
        answered again with its final status only)."""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name,
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(user, password)
        client.max_inflight_messages_set(100)  # TOOLING.md: faster than 1,000
        client.max_queued_messages_set(0)
        client.on_connect = self.on_connect
        client.on_message = self.on_message
        client.on_publish = self.on_publish
        client.connect("127.0.0.1", port, keepalive=120)
        self.client = client

    def start(self) -> None:
        self.client.loop_start()

    def on_connect(self, client: paho.Client, userdata: object, flags: object, rc: object,
                   props: object) -> None:
        for i in range(0, len(self.devices), 500):
            client.subscribe([(f"{PREFIX}/{d}/agent/update", 1)
                              for d in self.devices[i:i + 500]])
        if not self.announced:
            self.announced = True
            for device in self.devices:
                self.queue.append((f"{PREFIX}/{device}/agent/state", self.state(device), True))
                self.queue.append((f"{PREFIX}/{device}/agent/online",
                                   b'{"online":true,"timestamp":%d}' % _ms(), True))
        self.pump()

    def state(self, device: str) -> bytes:
        return json.dumps({"uuid": device, "versions": {"agent": self.versions[device]},
                           "labels": {}, "deployment_type": "native", "ip": None,
                           "containers": [], "timestamp": _ms()},
                          separators=(",", ":")).encode()

    def pump(self) -> None:
        """Publish queued messages while the window has room."""
        while self.queue and self.inflight < WINDOW:
            topic, payload, retain = self.queue.popleft()
            self.inflight += 1
            self.client.publish(topic, payload, qos=1, retain=retain)
        if not self.queue and self.inflight == 0:
            self.idle.set()

    def on_publish(self, client: paho.Client, userdata: object, mid: int, rc: object,
                   props: object) -> None:
        self.inflight -= 1
        self.pump()

    def on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if not msg.payload:
            return  # the controller cleared its retained command
        device = msg.topic.split("/")[2]
        command = json.loads(msg.payload)
        cid = command.get("correlation_id", "")
        action = command.get("action")
        status = f"{PREFIX}/{device}/agent/status"
        out = self.queue
        ok = "rollback_succeeded" if action == "rollback" else "update_succeeded"
        if action == "cancel":
            out.append((status, self._status("update_cancelled", cid), False))
        elif self.answered.get(device) == cid:
            out.append((status, self._status(ok, cid, self.versions[device]), False))
        else:
            self.answered[device] = cid
            version = command.get("version", "")
            out.append((status, self._status("update_command_received", cid, version), False))
            out.append((status, self._status("update_started", cid), False))
            self.versions[device] = version
            out.append((status, self._status(ok, cid, version), False))
            out.append((f"{PREFIX}/{device}/agent/state", self.state(device), True))
        self.pump()

    @staticmethod
    def _status(kind: str, cid: str, version: str | None = None) -> bytes:
        if version is None:
            return b'{"type":"%s","correlation_id":"%s","timestamp":%d}' % (
                kind.encode(), cid.encode(), _ms())
        return b'{"type":"%s","correlation_id":"%s","version":"%s","timestamp":%d}' % (
            kind.encode(), cid.encode(), version.encode(), _ms())


def worker(index: int, args: argparse.Namespace, devices: list[str],
           ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    clients = [Client(args.port, f"bench-fleet-{index}-{n}", devices[i:i + args.per_client],
                      args.username, args.password, args.version)
               for n, i in enumerate(range(0, len(devices), args.per_client))]
    for client in clients:
        client.start()
    for client in clients:
        client.idle.wait()
    ready.set()
    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=1250)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--version", default="1.0.5")
    parser.add_argument("--username", default="fleetwave-simulator")
    parser.add_argument("--password", default="bench-simulator")
    args = parser.parse_args()
    ids = device_ids(args.devices, args.seed)
    started = time.perf_counter()
    events = []
    procs = []
    for index in range(args.processes):
        event = multiprocessing.Event()
        proc = multiprocessing.Process(target=worker, daemon=True,
                                       args=(index, args, ids[index::args.processes], event))
        proc.start()
        events.append(event)
        procs.append(proc)

    def stop(*_: object) -> None:
        for proc in procs:
            proc.terminate()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    for event in events:
        event.wait()
    print(f"ready {time.perf_counter() - started:.2f} {len(ids)}", flush=True)
    for proc in procs:
        proc.join()
    sys.exit(0)


if __name__ == "__main__":
    main()
