"""The real `fleetwave` console script against a live API server on a free port.

The server runs in a thread of the test process in front of the in-memory
FakeControl (it stands in for the engine until `fleetwave run` can be started
here); the commands run as subprocesses, exactly as users and scripts run them.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from fleetwave.api.auth import TokenSet
from fleetwave.api.server import build_app, serve
from fleetwave.metrics import build_metrics
from tests.api.fake_control import FakeControl

FLEETWAVE = str(Path(sys.executable).with_name("fleetwave"))
TOKEN = "cli-test-token"


class LiveServer:
    """The API on 127.0.0.1:<free port>, served by an event loop in a daemon thread."""

    def __init__(self, control: FakeControl) -> None:
        self.control = control
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = build_app(self.control, build_metrics(), TokenSet.from_tokens([TOKEN]))
        runner: web.AppRunner = await serve(app, "127.0.0.1:0")
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "API server did not start"

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def server(control: FakeControl) -> Iterator[LiveServer]:
    live = LiveServer(control)
    live.start()
    try:
        yield live
    finally:
        live.stop()


def fleetwave(server: LiveServer | str, *args: str, token: str | None = TOKEN,
              **env: str) -> subprocess.CompletedProcess[str]:
    url = server if isinstance(server, str) else server.url
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
    environ.update({"FLEETWAVE_SERVER": url, **env})
    if token is not None:
        environ["FLEETWAVE_TOKEN"] = token
    return subprocess.run([FLEETWAVE, *args], capture_output=True, text=True, env=environ,
                          timeout=30, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- reads ---------------------------------------------------------------------------------

def test_status_table(server: LiveServer) -> None:
    result = fleetwave(server, "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "COMPONENT", "VERSION", "PHASE", "STEP", "PROGRESS",
                                "FAILURES", "AGE"]
    agent = next(line for line in lines if line.startswith("agent-1-0-6"))
    assert "Progressing" in agent
    assert "2/4" in agent
    assert "30/100" in agent
    assert "6.2%" in agent
    assert "\x1b[" not in result.stdout  # not a terminal: no colour


@pytest.mark.parametrize("args", [
    pytest.param(["status"], id="status"),
    pytest.param(["status", "agent-1-0-6"], id="status-one"),
    pytest.param(["status", "-o", "wide"], id="status-wide"),
    pytest.param(["devices"], id="devices"),
    pytest.param(["devices", "-o", "wide"], id="devices-wide"),
    pytest.param(["history", "dev-0"], id="history"),
    pytest.param(["history", "dev-0", "-o", "wide"], id="history-wide"),
])
def test_read_commands_print_tables(server: LiveServer, args: list[str]) -> None:
    result = fleetwave(server, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].isupper()
    assert len(result.stdout.splitlines()) >= 2


@pytest.mark.parametrize(("args", "check"), [
    pytest.param(["status"], lambda d: len(d["items"]) == 2, id="status"),
    pytest.param(["status", "agent-1-0-6"], lambda d: d["name"] == "agent-1-0-6", id="one"),
    pytest.param(["devices"], lambda d: d["items"][0]["uuid"] == "dev-0",
                 id="devices"),
    pytest.param(["history", "dev-0"], lambda d: d["items"][0]["id"] == "u1", id="history"),
    pytest.param(["pause", "agent-1-0-6"], lambda d: d["status"]["phase"] == "Paused",
                 id="pause"),
])
def test_json_output_is_one_document_and_nothing_else(server: LiveServer, args: list[str],
                                                      check: object) -> None:
    result = fleetwave(server, *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert check(json.loads(result.stdout))  # type: ignore[operator]
    assert result.stderr == ""


def test_yaml_output(server: LiveServer) -> None:
    result = fleetwave(server, "status", "agent-1-0-6", "-o", "yaml")
    assert result.returncode == 0
    assert "name: agent-1-0-6" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["status", "nope"], "no rollout named nope", id="status"),
    pytest.param(["pause", "nope"], "no rollout named nope", id="pause"),
    pytest.param(["history", "ghost"], "no device ghost", id="history"),
])
def test_not_found_exits_1_with_a_message(server: LiveServer, args: list[str],
                                          message: str) -> None:
    result = fleetwave(server, *args, "-o", "json")
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == ""


# ---- control -------------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "phase"), [("pause", "Paused"), ("promote", "Progressing"),
                                           ("abort", "Aborted"), ("rollback", "RolledBack")])
def test_control_commands(server: LiveServer, control: FakeControl, op: str, phase: str) -> None:
    result = fleetwave(server, op, "agent-1-0-6")
    assert result.returncode == 0, result.stderr
    assert f"phase {phase}" in result.stdout
    assert control.calls[-1][1]["op"] == op


def test_resume_conflict_exits_1_with_the_servers_reason(server: LiveServer) -> None:
    result = fleetwave(server, "resume", "agent-1-0-6")
    assert result.returncode == 1
    assert "is not paused" in result.stderr


def test_promote_one_parked_device(server: LiveServer, control: FakeControl) -> None:
    result = fleetwave(server, "promote", "agent-1-0-6", "--device", "dev-1")
    assert result.returncode == 0, result.stderr
    assert control.calls[-1] == ("control", {"name": "agent-1-0-6", "op": "promote",
                                             "actor": "api:token-1", "device": "dev-1"})


def test_rollback_one_device(server: LiveServer, control: FakeControl) -> None:
    result = fleetwave(server, "rollback", "agent-1-0-6", "--device", "dev-2")
    assert result.returncode == 0, result.stderr
    assert control.calls[-1][0] == "rollback_device"


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_refused_token_says_what_to_do(server: LiveServer, control: FakeControl,
                                       token: str | None) -> None:
    result = fleetwave(server, "pause", "agent-1-0-6", "-o", "json", token=token)
    assert result.returncode == 1
    assert ("the server refused the token: set FLEETWAVE_TOKEN to a token from the server's "
            "--token-file") in result.stderr
    assert result.stdout == ""
    assert control.calls == []


def test_unreachable_server_says_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = fleetwave(url, "status", "-o", "json")
    assert result.returncode == 1
    assert (f"cannot reach fleetwave at {url}: is `fleetwave run` running? set --server or "
            "FLEETWAVE_SERVER") in result.stderr
    assert result.stdout == ""


def test_server_flag_wins_over_environment(server: LiveServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = fleetwave(dead, "status", "--server", server.url)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args", [
    pytest.param(["status", "--timeout", "5m"], id="timeout-without-watch"),
    pytest.param(["status", "--watch", "--timeout", "soon"], id="bad-duration"),
    pytest.param(["status", "-o", "xml"], id="bad-format"),
    pytest.param(["pause"], id="missing-rollout"),
])
def test_usage_errors_exit_2(server: LiveServer, args: list[str]) -> None:
    result = fleetwave(server, *args)
    assert result.returncode == 2
    assert result.stdout == ""


# ---- watch ---------------------------------------------------------------------------------

def test_watch_until_completed(server: LiveServer, control: FakeControl) -> None:
    control.phase_script = ["Progressing", "Progressing", "Completed"]
    result = fleetwave(server, "status", "agent-1-0-6", "--watch", "--timeout", "20s")
    assert result.returncode == 0, result.stderr
    assert "Completed" in result.stdout.splitlines()[-1]
    assert result.stdout.count("NAME") == 2  # one table per change, not per second


def test_watch_json_prints_one_final_document(server: LiveServer, control: FakeControl) -> None:
    control.phase_script = ["Progressing", "Completed"]
    result = fleetwave(server, "status", "--watch", "--timeout", "20s", "-o", "json")
    assert result.returncode == 0, result.stderr
    phases = {r["name"]: r["status"]["phase"] for r in json.loads(result.stdout)["items"]}
    assert phases == {"agent-1-0-6": "Completed", "nodered-3-1": "Completed"}


def test_watch_exits_1_when_a_rollout_is_aborted(server: LiveServer,
                                                 control: FakeControl) -> None:
    control.phase_script = ["Progressing", "Aborted"]
    result = fleetwave(server, "status", "agent-1-0-6", "-w", "--timeout", "20s")
    assert result.returncode == 1
    assert "did not complete: agent-1-0-6 (Aborted)" in result.stderr


def test_watch_times_out_with_exit_1(server: LiveServer) -> None:
    result = fleetwave(server, "status", "--watch", "--timeout", "1500ms", "-o", "json")
    assert result.returncode == 1
    assert "timed out" in result.stderr
    assert "agent-1-0-6" in result.stderr
    json.loads(result.stdout)


# ---- colour --------------------------------------------------------------------------------

def run_on_a_terminal(server: LiveServer, *args: str, **env: str) -> str:
    """Run with stdout on a pseudo-terminal, as a person at a shell would."""
    main, secondary = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    environ.update({"FLEETWAVE_SERVER": server.url, "TERM": "xterm-256color", **env})
    try:
        proc = subprocess.run([FLEETWAVE, *args], stdout=secondary, stderr=subprocess.PIPE,
                              env=environ, timeout=30, check=False)
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if secondary != -1:
            os.close(secondary)
        os.close(main)
    assert proc.returncode == 0, proc.stderr
    return b"".join(chunks).decode()


def test_colour_on_a_terminal_and_never_with_no_color(server: LiveServer) -> None:
    coloured = run_on_a_terminal(server, "status")
    assert "\x1b[" in coloured
    assert "█" in coloured
    plain = run_on_a_terminal(server, "status", NO_COLOR="1")
    assert "\x1b[" not in plain
    assert "Progressing" in plain


def test_live_watch_on_a_terminal_honours_no_color(server: LiveServer,
                                                   control: FakeControl) -> None:
    control.phase_script = ["Progressing", "Completed"]
    out = run_on_a_terminal(server, "status", "agent-1-0-6", "-w", "--timeout", "20s",
                            NO_COLOR="1")
    assert "Completed" in out
    assert "\x1b[3" not in out  # rich may move the cursor, but sets no colour


def test_devices_follows_every_page(server: LiveServer, control: FakeControl) -> None:
    """The API serves at most 1,000 devices a page; the command lists the whole fleet."""
    control.devices = {f"dev-{i:05d}": {"uuid": f"dev-{i:05d}", "online": True,
                                        "versions": {"agent": "1.0.5"}, "labels": {}}
                       for i in range(2_345)}
    result = fleetwave(server, "devices", "-o", "json")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    assert [d["uuid"] for d in items] == sorted(control.devices)
