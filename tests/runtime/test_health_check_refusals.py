"""The real CheckRunner against real loopback sockets: addresses a device may not aim the
controller at get no connection, and hostile servers fail in bounded time and memory."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta

import pytest

from fleetwave.metrics import HEALTH_CHECK_REFUSALS, Metrics, build_metrics
from fleetwave.resources.model import Check
from fleetwave.runtime.checks import (
    MAX_BODY_BYTES,
    AddressPolicy,
    CheckRunner,
    CheckTarget,
    Refused,
    parse_cidrs,
    parse_host,
)
from tests.runtime.checkservers import HostileServer, Sentinel
from tests.support.processes import wait_until

LOOPBACK = AddressPolicy.of(["127.0.0.0/8"], environ={})
BOUND = 15.0
"""Seconds after which a check that should have given up is a test failure, not a hang."""


def refused(metrics: Metrics) -> dict[str, float]:
    return {reason: metrics.registry.get_sample_value(
        "fleetwave_health_checks_refused_total", {"reason": reason}) or 0.0
        for reason in HEALTH_CHECK_REFUSALS}


def run(runner: CheckRunner, *targets: CheckTarget) -> dict[str, tuple[bool, str]]:
    results = asyncio.run(asyncio.wait_for(runner.run(targets), BOUND))
    return {device: verdict for (_, device), verdict in results.items()}


def http(url: str, seconds: float = 2.0) -> Check:
    return Check(type="http", url=url, timeout=timedelta(seconds=seconds))


class TestAddresses:
    @pytest.mark.parametrize(("text", "parsed"), [
        pytest.param("10.0.0.1", ipaddress.ip_address("10.0.0.1"), id="ipv4"),
        pytest.param("[fd00::1]", ipaddress.ip_address("fd00::1"), id="ipv6-bracketed"),
        pytest.param("gw-1.site.example.", "gw-1.site.example", id="host-name"),
    ])
    def test_addresses_and_host_names_parse(self, text: str, parsed: object) -> None:
        assert parse_host(text) == parsed

    @pytest.mark.parametrize("text", [
        "10.0.0.1:6443/api", "10.0.0.1:6443", "evil.example/@10.0.0.1", "a..b", "-a.example",
        "a_b.example", "x" * 64 + ".example", "user@host", "", "host name",
    ])
    def test_anything_else_is_not_an_address(self, text: str) -> None:
        with pytest.raises(Refused) as caught:
            parse_host(text)
        assert caught.value.reason == "not_an_address"

    @pytest.mark.parametrize(("address", "reason"), [
        pytest.param("127.0.0.1", "loopback", id="loopback"),
        pytest.param("::1", "loopback", id="loopback-v6"),
        pytest.param("169.254.169.254", "link_local", id="metadata-service"),
        pytest.param("fe80::1", "link_local", id="link-local-v6"),
        pytest.param("0.0.0.0", "unspecified", id="unspecified"),
        pytest.param("::", "unspecified", id="unspecified-v6"),
        pytest.param("224.0.0.1", "multicast", id="multicast"),
        pytest.param("ff02::1", "multicast", id="multicast-v6"),
        pytest.param("255.255.255.255", "broadcast", id="broadcast"),
        pytest.param("::ffff:127.0.0.1", "loopback", id="mapped-loopback"),
        pytest.param("::ffff:169.254.169.254", "link_local", id="mapped-metadata"),
        pytest.param("10.96.0.1", "denied", id="cluster-api"),
        pytest.param("10.244.3.7", "denied", id="pod-range"),
        pytest.param("10.0.0.1", None, id="device-lan"),
        pytest.param("2001:db8::7", None, id="device-v6"),
    ])
    def test_default_policy(self, address: str, reason: str | None) -> None:
        policy = AddressPolicy.of(deny=["10.244.0.0/16"],
                                  environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
        assert policy.refusal(ipaddress.ip_address(address)) == reason

    def test_allow_wins_over_every_refusal(self) -> None:
        policy = AddressPolicy.of(["127.0.0.0/8, 10.244.0.0/16"], ["10.244.0.0/16"], {})
        for address in ("127.0.0.1", "::ffff:127.0.0.1", "10.244.0.9"):
            assert policy.refusal(ipaddress.ip_address(address)) is None
        assert policy.refusal(ipaddress.ip_address("::1")) == "loopback"

    def test_a_bad_range_says_what_to_write(self) -> None:
        with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33' is not a CIDR range")):
            parse_cidrs(["10.0.0.0/33"])


HOSTILE_IPS = {
    "metadata": "169.254.169.254",
    "loopback": "127.0.0.1",
    "mapped": "::ffff:127.0.0.1",
    "injected": "10.0.0.1:6443/api",
    "named-loopback": "localhost",
}


def hostile_targets(port: int) -> list[CheckTarget]:
    """Each device's check would reach the sentinel on loopback, if it were made."""
    # Generous timeouts: on a loaded CI machine an allowed loopback check must not time out.
    checks = (http(f"http://{{device_ip}}:{port}/health", seconds=10.0),
              Check(type="tcp", port=port, timeout=timedelta(seconds=10)))
    injected_into_sentinel = CheckTarget("r", "injected-loopback", f"127.0.0.1:{port}/health#",
                                         None, checks[:1])
    return [*(CheckTarget("r", device, ip, None, checks) for device, ip in HOSTILE_IPS.items()),
            *(CheckTarget("r", f"tcp-{device}", ip, None, checks[1:])
              for device, ip in HOSTILE_IPS.items()),
            injected_into_sentinel]


def test_devices_cannot_aim_checks_at_refused_addresses(sentinel: Sentinel) -> None:
    metrics = build_metrics()
    results = run(CheckRunner(policy=AddressPolicy.of(environ={}), metrics=metrics),
                  *hostile_targets(sentinel.port))
    assert sentinel.accepted == 0
    assert all(not passed and "refused" in why for passed, why in results.values()), results
    assert "refused to connect to link-local address 169.254.169.254" in results["metadata"][1]
    assert "localhost resolves to it" in results["named-loopback"][1]
    assert "'10.0.0.1:6443/api' is neither an IP address nor a host name" in \
        results["injected"][1]
    counts = refused(metrics)
    assert counts["link_local"] == 2
    assert counts["not_an_address"] == 3
    assert counts["loopback"] == 6


def test_the_same_loopback_checks_pass_once_allowed(sentinel: Sentinel) -> None:
    """Proves the test above can fail: allowed, the checks reach the sentinel."""
    metrics = build_metrics()
    targets = [t for t in hostile_targets(sentinel.port)
               if t.ip in ("127.0.0.1", "::ffff:127.0.0.1", "localhost")]
    policy = AddressPolicy.of(["127.0.0.0/8", "::1"], environ={})  # localhost may be ::1 too
    results = run(CheckRunner(policy=policy, metrics=metrics), *targets)
    assert set(results) == {"loopback", "mapped", "named-loopback", "tcp-loopback",
                            "tcp-mapped", "tcp-named-loopback"}
    assert all(verdict == (True, "ok") for verdict in results.values()), results
    # A TCP check succeeds at the handshake, before the sentinel's thread accept()s it.
    wait_until(lambda: sentinel.accepted >= 9, 10, lambda: f"{sentinel.accepted} accepted")
    assert sentinel.accepted == 9  # three devices with two checks, three with one
    assert sum(refused(metrics).values()) == 0


@pytest.fixture
def hostile(sentinel: Sentinel) -> Iterator[HostileServer]:
    with HostileServer(redirect_to=f"http://127.0.0.1:{sentinel.port}/health") as server:
        yield server


def test_an_endless_body_fails_after_64_kib_in_bounded_memory(hostile: HostileServer) -> None:
    metrics = build_metrics()
    target = CheckTarget("r", "d", "127.0.0.1", None,
                         (http(f"http://{{device_ip}}:{hostile.port}/endless", seconds=30),))
    tracemalloc.start()
    try:
        results = run(CheckRunner(policy=LOOPBACK, metrics=metrics), target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    passed, why = results["d"]
    assert not passed
    assert f"body over {MAX_BODY_BYTES} bytes" in why
    assert peak < 16 * 1024 * 1024
    assert refused(metrics)["body_too_large"] == 1


def test_a_trickling_server_fails_at_the_check_timeout(hostile: HostileServer) -> None:
    target = CheckTarget("r", "d", "127.0.0.1", None,
                         (http(f"http://{{device_ip}}:{hostile.port}/trickle", seconds=1),))
    passed, why = run(CheckRunner(policy=LOOPBACK), target)["d"]
    assert not passed
    assert "no answer within 1s" in why


def test_a_redirect_fails_and_is_not_followed(hostile: HostileServer,
                                              sentinel: Sentinel) -> None:
    metrics = build_metrics()
    target = CheckTarget("r", "d", "127.0.0.1", None,
                         (http(f"http://{{device_ip}}:{hostile.port}/redirect"),))
    passed, why = run(CheckRunner(policy=LOOPBACK, metrics=metrics), target)["d"]
    assert not passed
    assert "redirect 302" in why and "not followed" in why
    assert sentinel.accepted == 0
    assert refused(metrics)["redirect"] == 1


def test_a_device_name_is_held_to_the_same_rules(sentinel: Sentinel) -> None:
    metrics = build_metrics()
    url = f"http://{{device_name}}:{sentinel.port}/health"
    targets = [CheckTarget("r", "injected", "10.0.0.1", f"127.0.0.1:{sentinel.port}/health?",
                           (http(url),)),
               CheckTarget("r", "loopback", "10.0.0.1", "localhost", (http(url),))]
    results = run(CheckRunner(policy=AddressPolicy.of(environ={}), metrics=metrics), *targets)
    assert sentinel.accepted == 0
    assert "neither an IP address nor a host name" in results["injected"][1]
    assert "localhost resolves to it" in results["loopback"][1]
    assert refused(metrics)["not_an_address"] == 1


def test_a_device_without_an_ip_fails_without_counting_a_refusal() -> None:
    metrics = build_metrics()
    target = CheckTarget("r", "d", None, None, (http("http://{device_ip}:1880/health"),))
    passed, why = run(CheckRunner(metrics=metrics), target)["d"]
    assert not passed
    assert "device reports no ip" in why
    assert sum(refused(metrics).values()) == 0
