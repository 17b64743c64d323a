"""`fleetwave plan` as CI runs it: the installed console script in a subprocess, on a
fleet snapshot or against a live `fleetwave run`; output formats, determinism and
exit codes (0 ok, 1 invalid files or unreachable server, 2 usage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Controller, Simulator, wait_until

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "tests" / "fixtures" / "fleet-snapshot.json"
FLEETWAVE = str(Path(sys.executable).parent / "fleetwave")
NOW = "2026-03-28T12:00:00Z"

ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  component: agent
  version: "{version}"
  selector: {selector}
  strategy:
    steps: [{{percent: 5}}, {{percent: 25, pause: 1h}}, {{percent: 100}}]
    maxPerMinute: 120
    window: {{cron: "0 2 * * *", duration: 3h, timezone: device, fallbackTimezone: UTC}}
"""


def write_rollout(folder: Path, name: str = "agent-1-0-6", version: str = "1.0.6",
                  selector: str = "{matchLabels: {env: production}}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(ROLLOUT.format(name=name, version=version, selector=selector))
    return path


def fleetwave(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
    env["NO_COLOR"] = "1"
    return subprocess.run([FLEETWAVE, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60, check=False)


def plan_json(*args: str) -> dict[str, Any]:
    proc = fleetwave("plan", *args, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_table_shows_each_wave_with_counts_and_earliest_start(tmp_path: Path) -> None:
    path = write_rollout(tmp_path)
    proc = fleetwave("plan", str(path), "--fleet", str(SNAPSHOT), "--now", NOW)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "now 2026-03-28T12:00:00Z; fleet of 1000 devices"
    assert "Rollout agent-1-0-6: agent -> 1.0.6" in lines
    header = next(line for line in lines if line.startswith("WAVE"))
    for column in ("DEVICES", "REGION", "DEVICE_TYPE", "EARLIEST START", "SENDING DONE"):
        assert column in header
    first_wave = next(line for line in lines if line.startswith("1 "))
    # Kolkata devices open first: 02:00 IST on 29 March is 20:30Z the day before.
    assert "2026-03-28T20:30:00Z" in first_wave
    assert "Times are the earliest possible" in proc.stdout
    assert proc.stderr == ""  # --now given: no note about the clock


def test_json_lists_the_devices_of_each_wave(tmp_path: Path) -> None:
    data = plan_json(str(write_rollout(tmp_path)), "--fleet", str(SNAPSHOT), "--now", NOW,
                     "--by", "region", "--by", "timezone")
    [rollout] = data["rollouts"]
    assert data["now"] == NOW and data["devices"] == 1000
    assert data["groupBy"] == ["region", "timezone"]
    waves = rollout["waves"]
    assert [w["step"] for w in waves] == [1, 2, 3]
    assert all(w["members"] == len(w["devices"]) == sum(w["byLabel"]["region"].values())
               for w in waves)
    everyone = [u for w in waves for u in w["devices"]]
    assert len(everyone) == len(set(everyone)) == rollout["toUpdate"]
    assert rollout["toUpdate"] + rollout["upToDate"] == rollout["targeted"]
    assert waves[0]["earliestStart"] == "2026-03-28T20:30:00Z"
    assert waves[1]["pauseAfterSeconds"] == 3600


def test_markdown_is_a_pull_request_comment(tmp_path: Path) -> None:
    proc = fleetwave("plan", str(write_rollout(tmp_path)), "--fleet", str(SNAPSHOT),
                     "--now", NOW, "-o", "markdown")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("## fleetwave plan\n")
    assert "### `agent-1-0-6`: agent → 1.0.6" in text
    assert "| Wave | % | Devices | `region` | `device_type` | Earliest start |" in text
    assert text.count("<details>") == text.count("</details>") == 1
    assert "**Wave 1** (" in text and "**Wave 3** (" in text


def test_conflicts_name_the_other_rollout(tmp_path: Path) -> None:
    write_rollout(tmp_path, "agent-a", selector="{matchLabels: {region: eu-central}}")
    write_rollout(tmp_path, "agent-b", version="1.0.7", selector="{}")
    data = plan_json(str(tmp_path), "--fleet", str(SNAPSHOT), "--now", NOW)
    a, b = data["rollouts"]
    assert a["conflicted"]["with"] == ["agent-b"] and b["conflicted"]["with"] == ["agent-a"]
    assert a["conflicted"]["devices"] == b["conflicted"]["devices"]
    assert a["targeted"] == 0 and a["conflicted"]["count"] > 0


@pytest.mark.parametrize("output", ["table", "json", "markdown"])
def test_same_input_same_output_byte_for_byte(tmp_path: Path, output: str) -> None:
    path = write_rollout(tmp_path)
    runs = [fleetwave("plan", str(path), "--fleet", str(SNAPSHOT), "--now", NOW, "-o", output)
            for _ in range(2)]
    assert runs[0].returncode == runs[1].returncode == 0
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout


def test_without_now_the_clock_is_used_and_said(tmp_path: Path) -> None:
    proc = fleetwave("plan", str(write_rollout(tmp_path)), "--fleet", str(SNAPSHOT))
    assert proc.returncode == 0, proc.stderr
    assert "planned as of now" in proc.stderr and "--now" in proc.stderr


def test_an_invalid_rollout_file_exits_1_with_validate_style_errors(tmp_path: Path) -> None:
    path = write_rollout(tmp_path)
    path.write_text(path.read_text().replace("percent: 5}", "percent: 500}"))
    proc = fleetwave("plan", str(path), "--fleet", str(SNAPSHOT), "--now", NOW)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"{path}:9:23: error: spec.strategy.steps[0].percent" in proc.stderr


@pytest.mark.parametrize(("args", "says"), [
    pytest.param(["--fleet", "missing.json"], "missing.json", id="missing-snapshot"),
    pytest.param(["--now", "yesterday"], "--now", id="bad-now"),
    pytest.param(["-o", "html"], "html", id="unknown-format"),
    pytest.param(["--fleet", str(SNAPSHOT), "--server", "http://127.0.0.1:1"], "not both",
                 id="fleet-and-server"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    proc = fleetwave("plan", str(write_rollout(tmp_path)), *args)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr


def test_a_snapshot_that_is_not_a_device_list_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.json"
    bad.write_text('{"devices": []}')
    proc = fleetwave("plan", str(write_rollout(tmp_path)), "--fleet", str(bad))
    assert proc.returncode == 2 and "fleetwave devices -o json" not in proc.stdout
    assert "items" in proc.stderr


def test_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    proc = fleetwave("plan", str(write_rollout(tmp_path)), "--server", "http://127.0.0.1:1",
                     "--now", NOW)
    assert proc.returncode == 1
    assert "cannot reach fleetwave at http://127.0.0.1:1" in proc.stderr


@pytest.mark.slow
def test_against_a_live_controller_it_matches_the_exported_snapshot_and_sees_conflicts(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    """`--server` reads the same devices as `fleetwave devices -o json` exports, and the
    controller's own rollouts for conflicts."""
    live = tmp_path / "live"
    write_rollout(live, "agent-live", selector="{matchLabels: {region: eu-central}}")
    simulator_factory(120, "--seed", "21")
    controller = controller_factory(live)
    controller.start()
    wait_until(lambda: len(controller.devices()) == 120, 30, "devices not announced")
    exported = subprocess.run([FLEETWAVE, "devices", "-o", "json", "--server", controller.url],
                              capture_output=True, text=True, timeout=30, check=True).stdout
    snapshot = tmp_path / "fleet.json"
    snapshot.write_text(exported)
    change = write_rollout(tmp_path / "change", "agent-next", version="1.0.7", selector="{}")

    from_server = plan_json(str(change), "--server", controller.url, "--now", NOW)
    from_file = plan_json(str(change), "--fleet", str(snapshot), "--now", NOW)
    [live_plan], [file_plan] = from_server["rollouts"], from_file["rollouts"]
    eu_central = sum(1 for d in json.loads(exported)["items"]
                     if d["labels"].get("region") == "eu-central")
    assert eu_central > 0
    assert live_plan["conflicted"] == {"count": eu_central, "with": ["agent-live"],
                                       "devices": live_plan["conflicted"]["devices"]}
    assert live_plan["targeted"] == 120 - eu_central
    assert file_plan["targeted"] == 120 and file_plan["conflicted"]["count"] == 0
    # Outside the conflict both agree device by device, wave by wave.
    conflicted = set(live_plan["conflicted"]["devices"])
    assert all(conflicted.isdisjoint(w["devices"]) for w in live_plan["waves"])
    assert sum(w["members"] for w in live_plan["waves"]) == live_plan["toUpdate"]
