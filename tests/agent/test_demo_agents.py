"""`fleetwave demo --agents 3` as a user runs it: three real agent processes beside the
simulated fleet, whose files visibly change on disk."""

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

LINE = re.compile(r"real agent (real-agent-\d) runs ([\d.]+): (\S+) -> versions/([\d.]+)")


def test_the_demo_runs_real_agents_and_prints_where_their_files_change(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetwave", "demo", "--devices", "100", "--agents", "3",
         "--listen", f"127.0.0.1:{free_port()}", "--workdir", str(workdir), "--keep"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    runs: dict[str, list[str]] = {}
    paths: dict[str, Path] = {}
    lines: list[str] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < 120 and not (
                len(runs) == 3 and all("1.0.6" in v for v in runs.values())):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if match := LINE.search(line):
                runs.setdefault(match[1], []).append(match[2])
                paths[match[1]] = Path(match[3])
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert sorted(runs) == ["real-agent-1", "real-agent-2", "real-agent-3"], "\n".join(lines)
    for device, versions in runs.items():
        assert versions[:2] == ["1.0.5", "1.0.6"], (device, versions)
        assert paths[device] == workdir / "agents" / device / "files" / "current"
        assert (paths[device] / "VERSION").read_text().strip() in ("1.0.6", "1.0.7")
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    for device in runs:  # stopped with the demo
        log = (workdir / "agents" / device / "agent.log").read_text()
        assert "Traceback" not in log
