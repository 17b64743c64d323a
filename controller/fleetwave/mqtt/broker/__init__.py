"""The Mosquitto configuration fleetwave ships, rendered for a real deployment, the tests and
the demo, and a small supervisor that runs `/usr/sbin/mosquitto` with it.

The templates beside this module (`mosquitto.conf`, `acl`) are the shipped configuration;
`BrokerConfig.write()` fills them in and builds the password file with `mosquitto_passwd`, so
the tests exercise exactly what operators deploy (the Helm chart renders the same templates).

No password ships: the controller's (and the simulator's) must be given. Account names go
into the ACL file and, through `%u`, into topic patterns, so names that are MQTT wildcards or
topic separators (`+`, `#`, `/`), control characters or empty names are refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Self

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "mosquitto_passwd"


class BrokerError(RuntimeError):
    """Mosquitto could not be configured or started; the message says what to check."""


class AccountError(BrokerError, ValueError):
    """An account name or password that cannot be written safely; the message says why."""


_FORBIDDEN_IN_NAMES = {"/": "a topic level separator", "+": "an MQTT wildcard",
                       "#": "an MQTT wildcard", ":": "the password file's separator"}
MAX_NAME_BYTES = 65535
"""MQTT's limit on a user name (a UTF-8 string with a 16-bit length)."""


def check_account_name(name: str) -> None:
    """Refuse a user name that would widen the ACL or corrupt the password or ACL file.

    Mosquitto puts the authenticated name into `pattern` lines (`iot/device/%u/...`), so a
    device named `+` or `a/#` would read every device's commands; a newline would add ACL
    lines of its choosing.
    """
    if not name:
        raise AccountError("an account name must not be empty")
    for char, why in _FORBIDDEN_IN_NAMES.items():
        if char in name:
            raise AccountError(f"account name {name!r} contains {char!r} ({why})")
    if any(not c.isprintable() or c.isspace() for c in name):
        raise AccountError(f"account name {name!r} contains whitespace or a control character")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise AccountError(f"account name of {len(name.encode())} bytes: MQTT allows "
                           f"{MAX_NAME_BYTES}")


def check_password(name: str, password: str | None) -> str:
    if not password:
        raise AccountError(f"account {name!r} has no password: fleetwave ships none; give "
                           f"one (e.g. {new_password.__module__}.new_password())")
    if any(c in password for c in "\r\n\x00"):
        raise AccountError(f"the password of account {name!r} contains a line break or NUL")
    return password


def new_password() -> str:
    """A random password (32 bytes of entropy) for an account the operator did not name one."""
    return secrets.token_urlsafe(32)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (tests and the demo start brokers on one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class BrokerFiles:
    """Paths of one rendered configuration."""

    directory: Path
    config: Path
    acl: Path
    password_file: Path
    persistence: Path
    log: Path


@dataclass(frozen=True)
class BrokerConfig:
    """Inputs of the shipped configuration; defaults suit one controller and 100,000 devices."""

    port: int = 1883
    host: str = "127.0.0.1"
    prefix: str = "iot/device"
    controller_user: str = "fleetwave"
    controller_password: str | None = None
    """Required: no default password ships (`new_password()` makes one)."""
    controller_replicas: Mapping[str, str] = field(default_factory=dict)
    """More controller accounts (user -> password), one per further replica. The broker
    uses the user name as client id (`bind_client_ids`), so replicas sharing status through
    `--shared-group` each need an account of their own; each gets the controller's ACL."""
    simulator_user: str | None = None
    """An account that acts for every device (the simulator multiplexes devices on few
    connections, so the per-device ACL cannot apply to it). Leave None in production."""
    simulator_password: str | None = None
    devices: Mapping[str, str] = field(default_factory=dict)
    """Device uuid -> password: real per-device accounts (the ACL patterns apply)."""
    max_queued_messages: int = 1_000_000
    """Per client: a fleet of 100,000 devices can send ten statuses each while the controller
    restarts. Mosquitto's default of 1,000 silently drops the rest."""
    max_queued_bytes: int = 1024 * 1024 * 1024
    """Per client, 1 GiB: the bound that protects the broker when a session is abandoned."""
    persistent_client_expiration: str = "7d"
    """Sessions (and queues) of clients gone longer than this are discarded."""
    max_inflight_messages: int = 1000
    max_packet_size: int = 262144
    persistence: bool = True
    autosave_interval: int = 60
    run_as_user: str | None = None
    """Mosquitto drops root privileges to this user; None keeps the current user when
    started as root (tests, demo) and Mosquitto's default otherwise."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    log_to_file: bool = True

    def __post_init__(self) -> None:
        self.accounts()  # refuses bad names, missing passwords and clashes before any write

    @property
    def bind_client_ids(self) -> bool:
        """`use_username_as_clientid`: the broker replaces every client id by the user name,
        so no device can connect as the controller's client id and take its session (or
        discard its queue). Off only with the simulator account, which multiplexes devices
        over several connections under one name (tests and the demo)."""
        return self.simulator_user is None

    def render_config(self, files: BrokerFiles) -> str:
        tls = ""
        if self.tls_cert_file and self.tls_key_file:
            tls = f"certfile {self.tls_cert_file}\nkeyfile {self.tls_key_file}\n"
            if self.tls_ca_file:
                tls += f"cafile {self.tls_ca_file}\nrequire_certificate false\n"
        user = self.run_as_user
        if user is None and hasattr(os, "geteuid") and os.geteuid() == 0:
            user = "root"
        return _template("mosquitto.conf").substitute(
            password_file=files.password_file,
            acl_file=files.acl,
            port=self.port,
            host=self.host,
            use_username_as_clientid="true" if self.bind_client_ids else "false",
            tls=tls,
            max_queued_messages=self.max_queued_messages,
            max_queued_bytes=self.max_queued_bytes,
            persistent_client_expiration=self.persistent_client_expiration,
            max_inflight_messages=self.max_inflight_messages,
            max_packet_size=self.max_packet_size,
            persistence="true" if self.persistence else "false",
            persistence_location=f"{files.persistence}/",
            autosave_interval=self.autosave_interval,
            user_line=f"user {user}" if user else "",
            log_dest=f"file {files.log}" if self.log_to_file else "stderr",
            connection_messages="false",
        )

    def render_acl(self) -> str:
        simulator = ""
        if self.simulator_user:
            p = self.prefix
            simulator = (
                "\n# The simulator acts for every device (tests and demo only).\n"
                f"user {self.simulator_user}\n"
                f"topic read {p}/+/agent/update\n"
                f"topic write {p}/+/agent/status\n"
                f"topic write {p}/+/agent/state\n"
                f"topic write {p}/+/agent/online\n")
        replicas = "".join(
            f"\n# Controller replica {user}: the controller's rights under its own account.\n"
            f"user {user}\n"
            f"topic read {self.prefix}/+/agent/status\n"
            f"topic read {self.prefix}/+/agent/state\n"
            f"topic read {self.prefix}/+/agent/online\n"
            f"topic write {self.prefix}/+/agent/update\n"
            for user in self.controller_replicas)
        return _template("acl").substitute(prefix=self.prefix,
                                           controller_user=self.controller_user,
                                           replica_block=replicas,
                                           simulator_block=simulator)

    def accounts(self) -> dict[str, str]:
        """Every account, user -> password; refuses bad names, missing passwords, and a
        device or replica named like another account (it would get that account's rights)."""
        privileged = [(self.controller_user, self.controller_password),
                      *self.controller_replicas.items()]
        if self.simulator_user is not None:
            privileged.append((self.simulator_user, self.simulator_password))
        users: dict[str, str] = {}
        for user, password in [*privileged, *self.devices.items()]:
            check_account_name(user)
            if user in users:
                raise AccountError(f"account {user!r} is defined twice (a device named like "
                                   f"the controller would get the controller's rights)")
            users[user] = check_password(user, password)
        return users

    def write(self, directory: str | os.PathLike[str]) -> BrokerFiles:
        """Render config, ACL and a hashed password file into `directory`."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        files = BrokerFiles(directory=root, config=root / "mosquitto.conf", acl=root / "acl",
                            password_file=root / "passwd", persistence=root / "data",
                            log=root / "mosquitto.log")
        files.persistence.mkdir(exist_ok=True)
        files.acl.write_text(self.render_acl(), encoding="utf-8")
        write_password_file(files.password_file, self.accounts())
        files.config.write_text(self.render_config(files), encoding="utf-8")
        return files


def write_password_file(path: Path, accounts: Mapping[str, str]) -> None:
    """Plain `user:password` lines hashed in one `mosquitto_passwd -U` call (fast for
    thousands of device accounts, unlike one call per user).

    The plain passwords go into a new file created with mode 0600 (O_EXCL, so never an
    existing file someone else can read, and no chmod after the fact); once hashed it
    replaces `path` atomically.
    """
    lines = []
    for user, password in accounts.items():
        check_account_name(user)
        lines.append(f"{user}:{check_password(user, password)}\n")
    tool = shutil.which(MOSQUITTO_PASSWD)
    if tool is None:
        raise BrokerError("mosquitto_passwd not found: install the `mosquitto` package")
    staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        result = subprocess.run([tool, "-U", str(staging)], capture_output=True, text=True,
                                check=False, timeout=120)
        if result.returncode != 0:
            raise BrokerError(f"mosquitto_passwd failed: {result.stderr.strip()}")
        os.replace(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


class MosquittoProcess:
    """Runs `/usr/sbin/mosquitto -c <config>`; `start()` returns once the port accepts
    connections. Restartable (same port, same persistence directory), so tests can take the
    broker away mid-stream."""

    def __init__(self, files: BrokerFiles, port: int, host: str = "127.0.0.1",
                 executable: str = MOSQUITTO) -> None:
        self.files = files
        self.port = port
        self.host = host
        self.executable = executable
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        if not Path(self.executable).exists():
            raise BrokerError(f"{self.executable} not found: install the `mosquitto` package")
        self._proc = subprocess.Popen([self.executable, "-c", str(self.files.config)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr \
                    else ""
                raise BrokerError(f"mosquitto exited with {self._proc.returncode}: {err}"
                                  f"{self._log_tail()}")
            if wait_for_port(self.host, self.port, 0.1):
                return
        self.stop()
        raise BrokerError(f"mosquitto did not accept connections on port {self.port}"
                          f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n" + self.files.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto writes its persistence snapshot), then SIGKILL if needed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL: a crash, no snapshot written."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()

    def restart(self, timeout: float = 10.0) -> None:
        self.stop(timeout)
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
