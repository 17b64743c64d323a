"""`fleetwave keys`: create the controller's signing key and print what devices must trust.

`generate` writes the private key (PKCS#8 PEM, mode 0600) and prints the public key;
`public` prints the public key of a key file, the text devices are configured with
(`fleetwave simulate --trust-key-file`, the agent's `trust.keys`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fleetwave.cli.logging import configure_logging
from fleetwave.protocol.signing import PublicKey, SignatureError
from fleetwave.runtime.keys import KeyFileError, create_key_file, load_key_file


def public_text(key: PublicKey, output: str) -> str:
    """`-o json`: `{"keyid", "publicKey"}`; plain: `keyid: …` and `publicKey: …` lines."""
    if output == "json":
        return json.dumps({"keyid": key.keyid, "publicKey": key.base64})
    return f"keyid: {key.keyid}\npublicKey: {key.base64}"


def read_public_keys(path: str | Path) -> list[PublicKey]:
    """The keys in a file holding `keys public` output (either form), or bare base64 keys,
    one a line; JSON may also be a list of such objects."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if doc is not None:
        objects = doc if isinstance(doc, list) else [doc]
        texts = [o.get("publicKey") if isinstance(o, dict) else None for o in objects]
    else:
        texts = [line.split(":", 1)[1] if ":" in line else line
                 for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith(("keyid", "#"))]
    keys: list[PublicKey] = []
    for item in texts:
        if not isinstance(item, str):
            raise click.BadParameter(f"{path}: expected {{\"keyid\", \"publicKey\"}} objects")
        try:
            keys.append(PublicKey.from_base64(item))
        except SignatureError as exc:
            raise click.BadParameter(f"{path}: {exc}") from None
    if not keys:
        raise click.BadParameter(f"{path} holds no public key")
    return keys


@click.group("keys")
def keys() -> None:
    """The Ed25519 key the controller signs commands with (DESIGN.md 9.1)."""
    configure_logging("auto", "warning")


@keys.command("generate")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the private key (must not exist; created mode 0600).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="How to print the public key.")
def generate(out: str, output: str) -> None:
    """Create a signing key in FILE and print its public key."""
    try:
        key = create_key_file(out)
    except KeyFileError as exc:
        click.echo(f"fleetwave: {exc}", err=True)
        sys.exit(1)
    click.echo(public_text(key.public, output))


@keys.command("public")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def public(file: str, output: str) -> None:
    """Print the public key of the signing key in FILE: what devices trust."""
    try:
        key = load_key_file(file)
    except KeyFileError as exc:
        click.echo(f"fleetwave: {exc}", err=True)
        sys.exit(1)
    click.echo(public_text(key.public, output))
