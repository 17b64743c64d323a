"""Git credentials read from files, and the redaction that keeps them out of every output.

Secrets live in files (Kubernetes Secrets mounted as files, or paths given on
the command line), are read at the moment libgit2 asks for them, and are never
stored on an object whose repr could reach a log. Everything a user sees (log
lines, errors, metric labels, snapshots) goes through `Redactor` first, which
removes URL userinfo and any secret value libgit2 might echo back.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pygit2
from pygit2.enums import CredentialType

from fleetwave.sources.base import SourceError

DEFAULT_TOKEN_USER = "x-access-token"
"""GitHub's convention for a token as basic-auth password; GitLab and Gitea accept any user."""

_HOMEDIR_LOCK = threading.Lock()
"""libgit2 reads known_hosts from one process-wide home directory: swap it under this lock."""


@dataclass(frozen=True, slots=True)
class GitCredentials:
    """Where the secrets are, never the secrets themselves (safe to log and repr)."""

    token_file: str | os.PathLike[str] | None = None
    """A file holding an HTTPS token (first line); sent as basic auth `username:token`."""
    username: str = DEFAULT_TOKEN_USER
    ssh_key_file: str | os.PathLike[str] | None = None
    """A private SSH key (OpenSSH or PEM format)."""
    ssh_public_key_file: str | os.PathLike[str] | None = None
    """Defaults to `<ssh_key_file>.pub` when that exists; libssh2 can derive it otherwise."""
    ssh_passphrase_file: str | os.PathLike[str] | None = None
    known_hosts_file: str | os.PathLike[str] | None = None
    """OpenSSH known_hosts; without it the user's ~/.ssh/known_hosts is used. Unknown hosts
    are always refused."""

    def token(self) -> str | None:
        return _first_line(self.token_file) if self.token_file else None

    def secrets(self) -> list[str]:
        """Secret values to scrub from messages (read fresh; files may rotate)."""
        out = []
        for f in (self.token_file, self.ssh_passphrase_file):
            if f:
                try:
                    value = _first_line(f)
                except SourceError:
                    continue
                if value:
                    out.append(value)
        return out


def _first_line(path: str | os.PathLike[str]) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read credentials file {path}: "
                          f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def redact_url(url: str) -> str:
    """`https://user:token@host/r.git` -> `https://***@host/r.git`; ssh user names stay.

    An HTTPS user name is often the token itself (`https://<token>@github.com`), so
    all userinfo goes; for ssh the user (`git@`) is not a secret, only a password is.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    if parts.scheme in ("ssh", "git+ssh", "ssh+git") and ":" not in userinfo:
        return url
    if parts.scheme in ("ssh", "git+ssh", "ssh+git"):
        userinfo = userinfo.split(":", 1)[0] + ":***"
    else:
        userinfo = "***"
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query,
                       parts.fragment))


class Redactor:
    """Scrubs a URL's userinfo and secret values out of any text shown to people."""

    def __init__(self, url: str, credentials: GitCredentials | None) -> None:
        self._url = url
        self._credentials = credentials
        self.shown_url = redact_url(url)

    def __call__(self, text: str) -> str:
        out = text.replace(self._url, self.shown_url)
        secrets = list(self._credentials.secrets()) if self._credentials else []
        if "://" in self._url:
            netloc = urlsplit(self._url).netloc
            if "@" in netloc:
                userinfo = netloc.rsplit("@", 1)[0]
                secrets.extend(s for s in userinfo.split(":") if len(s) >= 4)
                secrets.append(userinfo)
        for secret in sorted(set(secrets), key=len, reverse=True):
            if secret:
                out = out.replace(secret, "***")
        return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", out)


class Callbacks(pygit2.RemoteCallbacks):
    """Answers libgit2's credential and certificate questions from `GitCredentials`.

    libgit2 asks again after a refused credential; answering the same thing would
    loop, so the second request for one kind fails with a message users can act on.
    """

    def __init__(self, credentials: GitCredentials | None, shown_url: str) -> None:
        super().__init__()
        self._credentials = credentials or GitCredentials()
        self._shown_url = shown_url
        self._asked: set[str] = set()
        self.rejected: list[tuple[str, str]] = []
        """(ref, message) for each reference the remote refused during a push."""

    def credentials(self, url: str, username_from_url: str | None,
                    allowed_types: CredentialType) -> Any:
        creds = self._credentials
        if allowed_types & CredentialType.USERPASS_PLAINTEXT:
            token = creds.token()
            if token:
                return self._once("token", pygit2.UserPass(creds.username, token),
                                  "the server refused the token from the token file")
            if username_from_url is not None:
                # libgit2 already tried the user:password in the URL before asking us.
                raise SourceError(f"authentication to {self._shown_url} failed: the server "
                                  "refused the credentials in the URL; check the token")
        if allowed_types & CredentialType.SSH_KEY and creds.ssh_key_file:
            key = str(creds.ssh_key_file)
            pub = creds.ssh_public_key_file or (key + ".pub" if Path(key + ".pub").exists()
                                                 else None)
            passphrase = _first_line(creds.ssh_passphrase_file) if creds.ssh_passphrase_file \
                else ""
            return self._once("ssh", pygit2.Keypair(username_from_url or "git",
                                                    str(pub) if pub else None, key, passphrase),
                              "the server refused the SSH key")
        raise SourceError(f"{self._shown_url} asks for credentials: give a token file "
                          "(HTTPS) or an SSH key file (ssh://)")

    def _once(self, kind: str, credential: Any, refused: str) -> Any:
        if kind in self._asked:
            raise SourceError(f"authentication to {self._shown_url} failed: {refused}; "
                              "check that it is current and allowed to read the repository")
        self._asked.add(kind)
        return credential

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        """Accept only what TLS verified, or (SSH) a host key listed in known_hosts.

        pygit2 would otherwise let any SSH host key through; libgit2 already checked
        the key against known_hosts (see `known_hosts_home`) and tells us in `valid`.
        """
        if not valid:
            raise SourceError(f"the identity of {host.decode(errors='replace')} could not be "
                              "verified: for ssh add its key to the known_hosts file, for "
                              "https make sure its certificate is trusted")
        return True

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected.append((refname, message))


@contextmanager
def known_hosts_home(credentials: GitCredentials | None, workdir: Path) -> Iterator[None]:
    """Point libgit2's home at a private folder holding our known_hosts, for one operation.

    libgit2 (libssh2 backend) reads `<home>/.ssh/known_hosts` and only tells the
    certificate callback whether the key matched. The home directory is process-wide,
    so it is swapped under a lock and restored afterwards.
    """
    if credentials is None or not credentials.known_hosts_file:
        yield
        return
    home = workdir / ".fleetwave-ssh-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(credentials.known_hosts_file, home / ".ssh" / "known_hosts")
    except OSError as exc:
        raise SourceError(f"cannot read known_hosts file {credentials.known_hosts_file}: "
                          f"{exc.strerror}") from None
    with _HOMEDIR_LOCK:
        before = pygit2.settings.homedir
        pygit2.settings.homedir = str(home)
        try:
            yield
        finally:
            pygit2.settings.homedir = before or str(Path.home())
