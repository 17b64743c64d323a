"""The signing key's life: `fleetwave keys`, the key `run` makes on SQLite, and devices that
refuse to start without a key to trust."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetwave.runtime.keys import load_key_file
from tests.support.processes import FLEETWAVE, Controller, wait_until


def fleetwave(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEETWAVE, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_generate_writes_a_private_key_only_its_owner_reads_and_prints_the_public_key(
        tmp_path: Path) -> None:
    key = tmp_path / "signing-key.pem"
    generated = fleetwave("keys", "generate", "--out", str(key))
    assert generated.returncode == 0, generated.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = json.loads(fleetwave("keys", "public", str(key), "-o", "json").stdout)
    assert generated.stdout.splitlines() == [f"keyid: {public['keyid']}",
                                             f"publicKey: {public['publicKey']}"]
    assert load_key_file(key).public.base64 == public["publicKey"]


def test_generate_never_overwrites_a_key(tmp_path: Path) -> None:
    key = tmp_path / "signing-key.pem"
    assert fleetwave("keys", "generate", "--out", str(key)).returncode == 0
    before = key.read_bytes()
    again = fleetwave("keys", "generate", "--out", str(key))
    assert again.returncode == 1
    assert again.stderr.strip() == f"fleetwave: {key} already exists; refusing to overwrite a key"
    assert key.read_bytes() == before


@pytest.mark.parametrize(("content", "says"), [
    pytest.param(None, "cannot read signing key", id="missing"),
    pytest.param(b"not a key", "not an unencrypted PKCS#8 PEM private key", id="not-pem"),
])
def test_public_of_a_bad_key_file_is_one_line(tmp_path: Path, content: bytes | None,
                                              says: str) -> None:
    key = tmp_path / "key.pem"
    if content is not None:
        key.write_bytes(content)
    result = fleetwave("keys", "public", str(key))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("fleetwave: ") and says in line


def test_simulated_devices_need_a_key_to_trust() -> None:
    result = fleetwave("simulate", "--devices", "1")
    assert result.returncode == 2
    assert "--trust-key" in result.stderr


@pytest.mark.slow
def test_run_on_sqlite_creates_its_key_beside_the_database_once(
        tmp_path: Path, controller_factory: Callable[..., Controller]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    controller = controller_factory(source, keyless=True)
    controller.start()
    key = tmp_path / "fleetwave.db.signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = load_key_file(key).public

    def logged(by: Controller) -> list[dict[str, str]]:
        lines = (json.loads(line) for line in by.log.read_text().splitlines()
                 if line.startswith("{"))
        return [entry for entry in lines if entry.get("event") == "controller.signing_key"]

    [entry] = wait_until(lambda: logged(controller), 10, "no signing key logged")
    assert (entry["keyid"], entry["public_key"]) == (public.keyid, public.base64)
    controller.stop()
    restarted = controller_factory(source, keyless=True, port=controller.port)
    restarted.start()
    assert load_key_file(key).public == public
    assert [e["keyid"] for e in wait_until(lambda: logged(restarted), 10, "not logged")] == \
        [public.keyid]
