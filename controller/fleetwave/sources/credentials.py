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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fleetwave.sources.base import SourceError

DEFAULT_TOKEN_USER = "x-access-token"
"""GitHub's convention for a token as basic-auth password; GitLab and Gitea accept any user."""

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

    def passphrase(self) -> str:
        """The SSH key's passphrase ("" without a passphrase file)."""
        return _first_line(self.ssh_passphrase_file) if self.ssh_passphrase_file else ""

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
