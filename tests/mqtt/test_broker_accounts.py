"""The broker tooling that writes accounts (fleetwave.mqtt.broker): no default password,
names that would widen the ACL refused, and a password file that is never readable by
anyone else, not even while it still holds the plain passwords. Runs the real
`mosquitto_passwd`."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from fleetwave.mqtt.broker import (
    AccountError,
    BrokerConfig,
    MosquittoProcess,
    free_port,
    new_password,
    write_password_file,
)


@pytest.mark.parametrize(("name", "reason"), [
    pytest.param("", "empty", id="empty"),
    pytest.param("site/7", "'/'", id="slash"),
    pytest.param("+", "'+'", id="plus"),
    pytest.param("dev#", "'#'", id="hash"),
    pytest.param("a:b", "':'", id="colon"),
    pytest.param("a\nuser fleetwave", "control character", id="newline-acl-injection"),
    pytest.param("tab\there", "control character", id="tab"),
    pytest.param("bell\x07", "control character", id="control"),
    pytest.param("two words", "whitespace", id="space"),
])
def test_account_names_that_would_widen_the_acl_are_refused(name: str, reason: str,
                                                            tmp_path: Path) -> None:
    with pytest.raises(AccountError, match=re.escape(reason)):
        BrokerConfig(controller_password="pw", devices={name: "pw"})
    with pytest.raises(AccountError, match=re.escape(reason)):
        BrokerConfig(controller_user=name, controller_password="pw")
    with pytest.raises(AccountError, match=re.escape(reason)):
        write_password_file(tmp_path / "passwd", {name: "pw"})
    assert not list(tmp_path.iterdir()), "nothing written for a refused account"


def test_no_default_controller_password() -> None:
    with pytest.raises(AccountError, match="no password"):
        BrokerConfig()
    with pytest.raises(AccountError, match="no password"):
        BrokerConfig(controller_password="x", simulator_user="sim")
    assert len(new_password()) >= 40 and new_password() != new_password()


def test_a_device_named_like_the_controller_is_refused() -> None:
    with pytest.raises(AccountError, match="defined twice"):
        BrokerConfig(controller_password="x", devices={"fleetwave": "y"})
    with pytest.raises(AccountError, match="defined twice"):
        BrokerConfig(controller_password="x", controller_replicas={"r1": "a"},
                     devices={"r1": "y"})


def test_the_password_file_is_0600_while_it_holds_plain_passwords(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A umask of 0 (the worst an operator's shell can have) and an observer in front of the
    real mosquitto_passwd that records the mode of the file it is handed, while that file
    still holds the passwords in clear."""
    real = shutil.which("mosquitto_passwd")
    assert real, "mosquitto_passwd (Debian package mosquitto) is needed"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen"
    observer = bin_dir / "mosquitto_passwd"
    observer.write_text(f'#!/bin/sh\nstat -c %a "$2" > {seen}\ngrep -c ":s3cret$" "$2" >> {seen}\n'
                        f'exec {real} "$@"\n')
    observer.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    target = tmp_path / "broker" / "passwd"
    target.parent.mkdir()
    old = os.umask(0)
    try:
        write_password_file(target, {"fleetwave": "s3cret", "device-a": "other"})
    finally:
        os.umask(old)
    mode, plain_lines = seen.read_text().split()
    assert mode == "600", "the plain passwords were in a file others could read"
    assert plain_lines == "1", "the observer saw the file while it held the plain password"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert "s3cret" not in text and text.startswith("fleetwave:$7$")
    assert sorted(p.name for p in target.parent.iterdir()) == ["passwd"], "no staging file left"


def test_an_existing_file_or_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("do not touch\n")
    elsewhere.chmod(0o644)
    link = tmp_path / "passwd"
    link.symlink_to(elsewhere)
    write_password_file(link, {"fleetwave": "s3cret"})
    assert elsewhere.read_text() == "do not touch\n"
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600


def test_the_written_accounts_log_in_on_a_real_broker(tmp_path: Path) -> None:
    """Positive control: what the tooling writes is what Mosquitto accepts."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    config = BrokerConfig(port=free_port(), controller_password="controller-pw",
                          devices={"device-a": "a-pw"})
    with MosquittoProcess(config.write(tmp_path), config.port) as process:
        for user, password, ok in (("fleetwave", "controller-pw", True),
                                   ("device-a", "a-pw", True), ("device-a", "wrong", False)):
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}")
            client.username_pw_set(user, password)
            client.connect("127.0.0.1", process.port)
            code = None

            def on_connect(c: paho.Client, u: object, f: object, rc: paho.ReasonCode,
                           p: object) -> None:
                nonlocal code
                code = rc

            client.on_connect = on_connect
            for _ in range(100):  # a bound on a hang only; the CONNACK comes at once
                if code is not None:
                    break
                client.loop(timeout=0.1)
            assert code is not None, "no CONNACK"
            client.disconnect()
            assert (not code.is_failure) is ok, (user, password, code)
