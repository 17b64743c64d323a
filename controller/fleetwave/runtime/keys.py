"""The controller's signing key on disk: created once, private to its owner, shared by replicas.

`fleetwave keys generate` and a first `fleetwave run` on SQLite both create key files here,
so a key file is always born mode 0600 (O_CREAT|O_EXCL with the mode, before a byte of
the key is written, so it is never readable by others, not even for a moment, and an
existing file is never overwritten).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

from fleetwave.protocol.signing import SignatureError, SigningKey

log = structlog.get_logger("fleetwave.keys")

SQLITE_KEY_SUFFIX = ".signing-key.pem"
"""The key `run` creates beside `fleetwave.db` is `fleetwave.db.signing-key.pem`."""


class KeyFileError(Exception):
    """A key file that cannot be created or read; `str()` says which and what to do."""


def create_key_file(path: str | Path) -> SigningKey:
    """A new key, written to `path` (mode 0600); refuses to overwrite an existing file."""
    key = SigningKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(key.to_pem())
    return key


def load_key_file(path: str | Path) -> SigningKey:
    """The key in `path` (PKCS#8 PEM); warns when others may read it."""
    try:
        mode = os.stat(path).st_mode
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read signing key {path}: {exc.strerror}") from None
    try:
        key = SigningKey.from_pem(pem)
    except SignatureError as exc:
        raise KeyFileError(f"signing key {path}: {exc}") from None
    if mode & stat.S_IRWXO:  # group read is how a Kubernetes secret volume gives it to us
        log.warning("keys.readable_by_others", path=str(path), mode=oct(mode & 0o777),
                    hint="chmod 600 the signing key")
    return key


def controller_key(path: str | None, *, sqlite_path: Path | None, postgres: bool) -> SigningKey:
    """The key a controller signs with: `--signing-key`, else (SQLite) the one beside the
    database, created on first start; with PostgreSQL every replica must be given the same
    key file, so there is no default."""
    if path is not None:
        return load_key_file(path)
    if postgres:
        raise KeyFileError("a PostgreSQL store needs --signing-key FILE (FLEETWAVE_SIGNING_KEY), "
                           "the same file for every replica; create one with "
                           "`fleetwave keys generate --out FILE`")
    if sqlite_path is None:
        key = SigningKey.generate()
        log.warning("keys.ephemeral", keyid=key.public.keyid, public_key=key.public.base64,
                    hint="an in-memory store gets a key that dies with the process")
        return key
    beside = sqlite_path.with_name(sqlite_path.name + SQLITE_KEY_SUFFIX)
    if beside.exists():
        return load_key_file(beside)
    key = create_key_file(beside)
    log.warning("keys.created", path=str(beside), keyid=key.public.keyid,
                public_key=key.public.base64,
                hint="devices must trust this public key; see `fleetwave keys public`")
    return key
