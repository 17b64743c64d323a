"""Who may write (`--token-file`) and, optionally, who may read (`--read-token-file`).

Reads are open by default (they show what git already shows); with a read token
file every read under /api/v1 needs a read or a write token. Every write needs a
write token.
Tokens are compared as SHA-256 digests with `hmac.compare_digest` against every
configured token, so neither the position of a mismatch nor which token matched
shows in the response time. Without a token file writes are refused outright:
an API that accepts anonymous `abort` is worse than one that accepts nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path


class TokenFileError(ValueError):
    """A token file that cannot be used; the message names the file and what to fix."""


class AuthError(Exception):
    """A write request without an acceptable token: `status` 401 or 403, `code` a stable slug."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; AuthError 401 otherwise."""
    if not header:
        raise AuthError(401, "unauthorized",
                        "this request needs a bearer token: send `Authorization: Bearer "
                        "<token>` (the CLI reads FLEETWAVE_TOKEN)")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "unauthorized", "the Authorization header must be `Bearer <token>`")
    return token


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class TokenSet:
    """The bearer tokens allowed to write; empty means writes are disabled.

    Only digests are kept, so a token never sits in memory dumps or reprs in clear.
    """

    digests: tuple[bytes, ...] = ()
    source: str | None = field(default=None)

    @classmethod
    def disabled(cls) -> TokenSet:
        """No `--token-file`: every write is refused with a message saying how to enable them."""
        return cls()

    @classmethod
    def from_tokens(cls, tokens: list[str] | tuple[str, ...],
                    source: str | None = None) -> TokenSet:
        cleaned = [t.strip() for t in tokens if t.strip()]
        return cls(tuple(_digest(t) for t in cleaned), source)

    @classmethod
    def from_file(cls, path: str | Path) -> TokenSet:
        """One token a line; blank lines and lines starting with `#` are ignored.

        A file with no token is an error rather than "writes disabled": the operator
        asked for tokens, so silently refusing every write would be a surprise.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenFileError(f"cannot read token file {p}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise TokenFileError(f"token file {p} is not UTF-8 text") from exc
        tokens = [line.strip() for line in text.splitlines()
                  if line.strip() and not line.strip().startswith("#")]
        if not tokens:
            raise TokenFileError(f"token file {p} holds no token: write one token per line")
        return cls.from_tokens(tokens, str(p))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def match(self, token: str) -> int | None:
        """The 1-based index of the matching token, or None; the same work whatever the input."""
        given = _digest(token)
        found: int | None = None
        for i, digest in enumerate(self.digests, start=1):
            if hmac.compare_digest(given, digest) and found is None:
                found = i
        return found

    def authorize(self, header: str | None) -> str:
        """Check an `Authorization` header; return the actor recorded in the audit trail.

        Raises AuthError: 403 when writes are disabled or the token is wrong,
        401 when the header is missing or not a bearer token.
        """
        if not self.enabled:
            raise AuthError(403, "writes_disabled",
                            "writes are disabled on this server: start `fleetwave run` with "
                            "--token-file FILE (one bearer token per line)")
        index = self.match(bearer_token(header))
        if index is None:
            raise AuthError(403, "forbidden",
                            "the token is not accepted: use one from the server's --token-file")
        return f"api:token-{index}"


@dataclass(frozen=True)
class ReadAccess:
    """Who may read /api/v1: anyone without `--read-token-file`, else a read or write token.

    A write token reads too, so the CLI needs one FLEETWAVE_TOKEN whatever it does.
    `/healthz`, `/readyz` and `/metrics` are not under /api/v1 and stay open: probes
    and scrapers carry no token by default, and `/metrics` holds only bounded,
    device-free aggregates (reach to it is a NetworkPolicy's job).
    """

    readers: TokenSet = field(default_factory=TokenSet.disabled)
    writers: TokenSet = field(default_factory=TokenSet.disabled)

    @property
    def required(self) -> bool:
        return self.readers.enabled

    def authorize(self, header: str | None) -> str:
        """The actor (`api:read-token-N`, `api:token-N`, or `anonymous` when reads are open)."""
        if not self.required:
            return "anonymous"
        token = bearer_token(header)
        index = self.readers.match(token)
        if index is not None:
            return f"api:read-token-{index}"
        index = self.writers.match(token)
        if index is not None:
            return f"api:token-{index}"
        raise AuthError(403, "forbidden",
                        "the token is not accepted for reads: use one from the server's "
                        "--read-token-file or --token-file")
