"""Ed25519 signatures over RFC 8785 canonical JSON (DESIGN.md section 9.1).

The controller signs every command; devices (the simulator and the agent) verify
them with the same functions, so there is one definition of "what is signed".
A signature covers the JCS form of the command object without its `signature`
member, which makes it independent of key order and whitespace on the wire.
`keyid` is the first 16 hex digits of the SHA-256 of the raw 32-byte public key,
so a device holding several trusted keys (during a rotation) finds the right one.

Pure: no I/O. Reading and writing key files is the caller's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG: Final = "ed25519"
SIGNATURE_FIELD: Final = "signature"


class SignatureError(ValueError):
    """A signature, key or signed document that does not check out; `str()` says why."""


def keyid(public_raw: bytes) -> str:
    """The first 16 hex digits of SHA-256 of the raw public key."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: RFC 8785 JSON of `body` without `signature`."""
    unsigned = {k: v for k, v in body.items() if k != SIGNATURE_FIELD}
    try:
        return rfc8785.dumps(unsigned)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise SignatureError(f"cannot canonicalise command: {exc}") from exc


@dataclass(frozen=True)
class PublicKey:
    """A trusted key as devices hold it: its id and the raw 32 bytes (base64 on paper)."""

    key: Ed25519PublicKey
    raw: bytes
    keyid: str

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        if len(raw) != 32:
            raise SignatureError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        return cls(Ed25519PublicKey.from_public_bytes(raw), raw, keyid(raw))

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError("a public key must be base64 of 32 raw bytes") from exc
        return cls.from_raw(raw)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode()


@dataclass(frozen=True)
class SigningKey:
    """The controller's private key (PKCS#8 PEM on disk, mode 0600)."""

    key: Ed25519PrivateKey
    public: PublicKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls._of(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"not an unencrypted PKCS#8 PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the signing key must be an Ed25519 key")
        return cls._of(key)

    @classmethod
    def _of(cls, key: Ed25519PrivateKey) -> SigningKey:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        return cls(key, PublicKey.from_raw(raw))

    def to_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def sign(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`body` with its `signature` member (any earlier one is replaced)."""
        sig = self.key.sign(canonical(body))
        signed = {k: v for k, v in body.items() if k != SIGNATURE_FIELD}
        signed[SIGNATURE_FIELD] = {"alg": ALG, "keyid": self.public.keyid,
                                   "sig": base64.b64encode(sig).decode()}
        return signed


class TrustedKeys:
    """The keys a device accepts commands from, by keyid."""

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self._by_id = {k.keyid: k for k in keys}
        if not self._by_id:
            raise SignatureError("at least one trusted key is needed")

    @classmethod
    def from_base64(cls, texts: Iterable[str]) -> TrustedKeys:
        return cls(PublicKey.from_base64(t) for t in texts)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_id

    def verify(self, body: Mapping[str, Any]) -> str:
        """Checks `body`'s signature; returns the keyid that signed it, or raises."""
        sig = body.get(SIGNATURE_FIELD)
        if sig is None:
            raise SignatureError("unsigned command")
        if type(sig) is not dict:
            raise SignatureError("signature must be an object")
        if sig.get("alg") != ALG:
            raise SignatureError(f"signature alg must be {ALG}")
        kid = sig.get("keyid")
        key = self._by_id.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise SignatureError(f"signed by an untrusted key {kid!r}")
        text = sig.get("sig")
        if not isinstance(text, str):
            raise SignatureError("signature sig must be base64 text")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError("signature sig is not base64") from exc
        try:
            key.key.verify(raw, canonical(body))
        except InvalidSignature as exc:
            raise SignatureError(f"signature does not verify with key {key.keyid}") from exc
        return key.keyid
