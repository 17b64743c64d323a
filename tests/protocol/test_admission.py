"""The device-side command rules (DESIGN.md 9.1), exactly as the simulator and agent use them."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from fleetwave.protocol.admission import (
    Accepted,
    Executed,
    Refused,
    Repeated,
    admit,
    format_time,
)
from fleetwave.protocol.messages import Command
from fleetwave.protocol.signing import (
    PublicKey,
    SignatureError,
    SigningKey,
    TrustedKeys,
    canonical,
    keyid,
)
from fleetwave.protocol.versions import compare

NOW = 1_800_000_000.0
DEVICE = "dev-1"
KEY = SigningKey.generate()
OTHER = SigningKey.generate()
TRUST = TrustedKeys([KEY.public])


def command(**changes: Any) -> Command:
    base = Command(action="update", component="app", version="2.0.0", correlation_id="c-2",
                   timestamp=int(NOW * 1000), device=DEVICE, release=2,
                   expires_at=format_time(NOW + 600))
    return replace(base, **changes)


def wire(cmd: Command, key: SigningKey = KEY, **tamper: Any) -> bytes:
    body = key.sign(cmd.to_body())
    body.update(tamper)
    return json.dumps(body).encode()


def verdict(payload: bytes, executed: dict[str, Executed] | None = None,
            running: dict[str, str] | None = None) -> Any:
    return admit(payload, device=DEVICE, trusted=TRUST, now=NOW,
                 executed=executed if executed is not None else {"app": Executed(1, "c-1")},
                 running=running if running is not None else {"app": "1.0.0"})


def test_a_signed_command_for_this_device_is_accepted() -> None:
    result = verdict(wire(command()))
    assert isinstance(result, Accepted)
    assert result.keyid == KEY.public.keyid
    assert result.executed == Executed(2, "c-2")


@pytest.mark.parametrize(("payload", "reason", "cause"), [
    pytest.param(wire(command(), OTHER), "rejected", "untrusted key", id="other-key"),
    pytest.param(command().to_payload(), "rejected", "unsigned", id="unsigned"),
    pytest.param(wire(command(), version="9.9.9"), "rejected", "does not verify",
                 id="tampered-after-signing"),
    pytest.param(wire(command(device="dev-2")), "rejected", "for device", id="other-device"),
    pytest.param(wire(command(expires_at=format_time(NOW - 1))), "rejected", "expired",
                 id="expired"),
    pytest.param(wire(command(expires_at=None)), "rejected", "no expires_at", id="no-expiry"),
    pytest.param(wire(command(release=None)), "rejected", "no release", id="no-release"),
    pytest.param(wire(command(release=0, correlation_id="c-0")), "rejected", "replayed",
                 id="older-release"),
    pytest.param(wire(command(release=1, correlation_id="c-x")), "rejected", "already used",
                 id="same-release-other-attempt"),
    pytest.param(wire(command(version="0.9.0")), "downgrade", "lower than the running",
                 id="unmarked-downgrade"),
    pytest.param(b"\xff not json", "rejected", "not JSON", id="garbage"),
    pytest.param(b"[1]", "rejected", "not a JSON object", id="not-an-object"),
    pytest.param(b"{" + b" " * 20000 + b"}", "rejected", "larger than", id="too-large"),
])
def test_refusals_name_their_cause(payload: bytes, reason: str, cause: str) -> None:
    result = verdict(payload)
    assert isinstance(result, Refused)
    assert result.reason == reason
    assert cause in result.cause


def test_a_marked_downgrade_and_a_rollback_to_a_lower_version_are_accepted() -> None:
    assert isinstance(verdict(wire(command(version="0.9.0", downgrade=True))), Accepted)
    assert isinstance(verdict(wire(command(action="rollback", version="0.9.0"))), Accepted)


def test_the_started_attempt_again_is_repeated_not_rerun() -> None:
    result = verdict(wire(command(release=1, correlation_id="c-1")))
    assert isinstance(result, Repeated)


def test_a_finished_attempt_repeats_even_after_its_command_expired() -> None:
    old = command(release=1, correlation_id="c-1", expires_at=format_time(NOW - 3600))
    assert isinstance(verdict(wire(old)), Repeated)


def test_a_cancel_of_the_running_attempt_is_accepted_an_older_one_refused() -> None:
    running = {"app": Executed(2, "c-2")}
    assert isinstance(verdict(wire(command(action="cancel")), running), Accepted)
    stale = verdict(wire(command(action="cancel", release=1, correlation_id="c-1")), running)
    assert isinstance(stale, Refused)
    assert "replayed" in stale.cause


def test_refusals_carry_the_correlation_id_to_report_under() -> None:
    result = verdict(wire(command(device="dev-2")))
    assert isinstance(result, Refused)
    assert (result.correlation_id, result.component) == ("c-2", "app")


def test_keyid_is_the_first_16_hex_of_sha256_of_the_raw_key() -> None:
    import hashlib
    raw = KEY.public.raw
    assert len(raw) == 32
    assert keyid(raw) == hashlib.sha256(raw).hexdigest()[:16] == KEY.public.keyid


def test_the_signature_covers_canonical_json_whatever_the_key_order() -> None:
    body = KEY.sign(command().to_body())
    shuffled = dict(reversed(list(body.items())))
    assert canonical(shuffled) == canonical(body)
    assert TRUST.verify(shuffled) == KEY.public.keyid
    raw_sig = base64.b64decode(body["signature"]["sig"])
    assert len(raw_sig) == 64
    KEY.public.key.verify(raw_sig, canonical(body))  # raises if it were not JCS-covered


def test_keys_round_trip_through_pem_and_base64() -> None:
    again = SigningKey.from_pem(KEY.to_pem())
    assert again.public.raw == KEY.public.raw
    assert PublicKey.from_base64(KEY.public.base64).keyid == KEY.public.keyid
    with pytest.raises(SignatureError):
        PublicKey.from_base64("not base64!")
    with pytest.raises(SignatureError):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("1.0.0", "1.0.1", -1), ("1.10.0", "1.9.0", 1), ("v2", "2.0.0", 0),
    ("1.0.0-rc.1", "1.0.0", -1), ("1.0.0-alpha", "1.0.0-alpha.1", -1),
    ("1.0.0-alpha.beta", "1.0.0-alpha.1", 1), ("1.0.0+build.5", "1.0.0", 0),
    ("latest", "1.0.0", None), ("1.0.0", "01.0.0", None),
])
def test_version_precedence(a: str, b: str, expected: int | None) -> None:
    assert compare(a, b) == expected


def test_a_download_is_admitted_by_the_same_rules_and_its_install_is_a_newer_release() -> None:
    """A download carries its own release; the install that follows has a higher one."""
    download = command(action="download", release=5, correlation_id="d-5",
                       artifact_url="https://a/x.tgz", artifact_sha256="a" * 64)
    result = verdict(wire(download))
    assert isinstance(result, Accepted) and result.command.action == "download"
    assert result.command.artifact_url == "https://a/x.tgz"
    after = {"app": result.executed}
    assert isinstance(verdict(wire(download), after), Repeated)
    assert isinstance(verdict(wire(command(release=6, correlation_id="i-6")), after), Accepted)
    replay = verdict(wire(replace(download, release=4, correlation_id="d-4")), after)
    assert isinstance(replay, Refused) and "replayed" in replay.cause
    for bad in (command(action="download", device="dev-2"),
                command(action="download", expires_at=format_time(NOW - 1))):
        assert isinstance(verdict(wire(bad)), Refused)
    assert isinstance(verdict(wire(download), running={"app": "3.0.0"}), Accepted), \
        "a download installs nothing: no downgrade to refuse"
