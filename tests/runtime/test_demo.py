"""`fleetwave demo` as a user runs it: a rollout moves through its waves within a minute,
and Ctrl-C stops everything the demo started."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetwave.mqtt.broker import free_port

pytestmark = pytest.mark.slow


def test_the_demo_shows_waves_within_a_minute_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetwave", "demo", "--devices", "500", "--listen", listen,
         "--workdir", str(workdir), "--keep"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < 60:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if re.search(r"agent\s+1\.0\.6\s+\w+\s+step [2-4]", line):
                break
        assert any(re.search(r"agent\s+1\.0\.6\s+\w+\s+step [2-4]", line) for line in lines), (
            "no second wave within a minute:\n" + "\n".join(lines))
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    # Its broker is gone: the shipped config it wrote names the port it listened on.
    config = (workdir / "broker" / "mosquitto.conf").read_text()
    port = int(re.search(r"listener (\d+)", config).group(1))  # type: ignore[union-attr]
    probe = subprocess.run([sys.executable, "-c",
                            f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
                           capture_output=True, check=False)
    assert probe.returncode != 0, "the demo's Mosquitto still accepts connections"
