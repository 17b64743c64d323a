"""HTTP and TCP health checks of updated devices: the I/O half of health.

The planner judges health from data (reported version, containers, silence);
checks that need the network run here, bounded in concurrency and time, and
their last result per (rollout, device) is fed back into the next plan.
Container checks need no I/O: the planner reads them from reported state.

A device chooses the `ip` and `name` it reports, so it chooses where the
controller connects. Every address a check would reach is therefore decided
here first (`AddressPolicy`): a device value that is not an address or an RFC
1123 host name is refused before it reaches a URL, host names are resolved once
and every address they resolve to is checked, and the connection goes to that
checked address (aiohttp is given a resolver that only returns it), so a second
resolution cannot point elsewhere. The body read and the time are capped and a
redirect is a failure, never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from fleetwave.metrics import Metrics
from fleetwave.resources.model import Check

log = structlog.get_logger("fleetwave.checks")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_BODY_BYTES = 64 * 1024
"""A health endpoint answers a few bytes; more is read no further and fails the check."""
MAX_CHECK_SECONDS = 60.0
"""Upper bound on one check, whatever its `timeout` says."""

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class Refused(Exception):
    """A check the controller will not make; `reason` is a HEALTH_CHECK_REFUSALS value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_cidrs(values: Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `fd00::/8` or a bare address; items may hold several, comma or space
    separated (as FLEETWAVE_HEALTH_CHECK_ALLOW does). Raises ValueError naming a bad one."""
    out: list[Network] = []
    for value in values:
        for item in re.split(r"[\s,]+", value.strip()):
            if not item:
                continue
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not a CIDR range like 10.0.0.0/8 or "
                                 "fd00::/8") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses a health check may connect to.

    Refused unless inside `allow`: loopback, link-local (169.254/16, fe80::/10, where
    cloud metadata services live), unspecified, multicast, broadcast, the same in
    IPv4-mapped IPv6 form, and `deny` (the controller's own cluster ranges).
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def of(cls, allow: Iterable[str] = (), deny: Iterable[str] = (),
           environ: Mapping[str, str] | None = None) -> AddressPolicy:
        """From flag values; the Kubernetes API's address (KUBERNETES_SERVICE_HOST) is
        always denied, so an operator in a cluster never checks its own API server."""
        env = os.environ if environ is None else environ
        denied = list(parse_cidrs(deny))
        api = env.get("KUBERNETES_SERVICE_HOST", "").strip("[]")
        with contextlib.suppress(ValueError):  # a host name there is not a range
            denied.append(ipaddress.ip_network(api))
        return cls(parse_cidrs(allow), tuple(denied))

    def refusal(self, address: IPAddress) -> str | None:
        """The refusal reason for `address`, or None when a check may connect to it."""
        forms = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        if any(a in net for a in forms for net in self.allow if a.version == net.version):
            return None
        for a in forms:
            if a.is_unspecified:
                return "unspecified"
            if a.is_loopback:
                return "loopback"
            if a.is_link_local:
                return "link_local"
            if a.is_multicast:
                return "multicast"
            if a == _BROADCAST:
                return "broadcast"
            if any(a in net for net in self.deny if a.version == net.version):
                return "denied"
        return None


def parse_host(text: str) -> IPAddress | str:
    """An IP address, or a host name as RFC 1123 spells it; else Refused(not_an_address).

    `10.0.0.1:6443/api` is neither: substituted into a URL it would choose the port and
    path, so it is refused before it reaches one.
    """
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    if 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split(".")):
        return name
    raise Refused("not_an_address", f"{text[:80]!r} is neither an IP address nor a host name")


async def resolve_checked(host: str, port: int, policy: AddressPolicy) -> list[IPAddress]:
    """The addresses `host` resolves to, each one checked; one refused refuses them all."""
    parsed = parse_host(host)
    if isinstance(parsed, str):
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parsed, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise OSError(f"cannot resolve {parsed}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                                       for info in infos))
    else:
        addresses = [parsed]
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            via = f" ({host} resolves to it)" if isinstance(parsed, str) else ""
            raise Refused(reason, f"refused to connect to {reason.replace('_', '-')} "
                                  f"address {address}{via}")
    return addresses


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp with the addresses `resolve_checked` approved, never with DNS."""

    def __init__(self) -> None:
        self.pinned: dict[tuple[str, int], list[IPAddress]] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = self.pinned.get((host, port))
        if not addresses:
            raise OSError(f"{host} was not checked before connecting")
        return [ResolveResult(hostname=host, host=str(a), port=port,
                              family=socket.AF_INET if a.version == 4 else socket.AF_INET6,
                              proto=0, flags=socket.AI_NUMERICHOST) for a in addresses]

    async def close(self) -> None:
        self.pinned.clear()


@dataclass(frozen=True, slots=True)
class CheckTarget:
    rollout: str
    device: str
    ip: str | None
    name: str | None
    checks: tuple[Check, ...]


def _fill(template: str, target: CheckTarget, *, url: bool) -> str:
    """The template with the device's values, each validated before it is substituted."""
    out = template
    for placeholder, value in (("{device_ip}", target.ip),
                               ("{device_name}", target.name or target.device)):
        if placeholder not in out:
            continue
        if not value:
            raise ValueError(f"device reports no {placeholder[8:-1]}")
        host = parse_host(value)
        text = f"[{host}]" if url and isinstance(host, ipaddress.IPv6Address) else str(host)
        out = out.replace(placeholder, text)
    uuid = quote(target.device, safe="") if url else target.device
    return out.replace("{device_uuid}", uuid)


async def _http(check: Check, target: CheckTarget, session: aiohttp.ClientSession,
                resolver: _PinnedResolver, policy: AddressPolicy) -> tuple[bool, str]:
    if not check.url:
        return False, "http check without url"
    text = _fill(check.url, target, url=True)
    try:
        url = URL(text)  # the parser aiohttp itself uses, so both see the same host
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
        raise Refused("not_an_address", f"{text[:120]} is not an http(s) URL with a host")
    addresses = await resolve_checked(url.raw_host, url.port, policy)
    resolver.pinned[(url.raw_host, url.port)] = addresses
    async with session.get(url, allow_redirects=False) as response:
        if 300 <= response.status < 400:
            raise Refused("redirect", f"GET {url}: redirect {response.status} to "
                          f"{response.headers.get('Location', '?')[:120]}, not followed")
        body = bytearray()
        async for chunk in response.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise Refused("body_too_large",
                              f"GET {url}: body over {MAX_BODY_BYTES} bytes, not read further")
        if response.status != check.expect_status:
            return False, f"GET {url}: status {response.status}, expected {check.expect_status}"
        if check.body_contains and check.body_contains not in body.decode(errors="replace"):
            return False, f"GET {url}: body lacks {check.body_contains!r}"
        return True, "ok"


async def _tcp(check: Check, target: CheckTarget, policy: AddressPolicy) -> tuple[bool, str]:
    host = _fill(check.host, target, url=False) if check.host else target.ip
    if not host or not check.port:
        return False, "tcp check without host/ip or port"
    [address, *_] = await resolve_checked(host, check.port, policy)
    _, writer = await asyncio.open_connection(str(address), check.port)
    writer.close()
    await writer.wait_closed()
    return True, "ok"


class CheckRunner:
    """Runs the configured checks of devices in their stabilisation period."""

    def __init__(self, concurrency: int = 64, policy: AddressPolicy | None = None,
                 metrics: Metrics | None = None) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)
        self.policy = policy or AddressPolicy()
        self.metrics = metrics
        self.results: dict[tuple[str, str], tuple[bool, str]] = {}

    async def run_check(self, check: Check, target: CheckTarget,
                        session: aiohttp.ClientSession,
                        resolver: _PinnedResolver) -> tuple[bool, str]:
        """One check: (passed, why). Never raises: a network error is a failed check, a
        refusal a failed check that is logged and counted."""
        seconds = min(check.timeout.total_seconds(), MAX_CHECK_SECONDS)
        try:
            async with asyncio.timeout(seconds):
                if check.type == "http":
                    return await _http(check, target, session, resolver, self.policy)
                if check.type == "tcp":
                    return await _tcp(check, target, self.policy)
            return True, "judged from reported state"
        except Refused as refused:
            if self.metrics is not None:
                self.metrics.health_checks_refused.labels(reason=refused.reason).inc()
            log.warning("health_check.refused", rollout=target.rollout, device=target.device,
                        reason=refused.reason, detail=str(refused))
            return False, f"{check.type} check refused: {refused}"
        except TimeoutError:
            return False, f"{check.type} check failed: no answer within {seconds:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return False, f"{check.type} check failed: {exc or type(exc).__name__}"

    async def run(self, targets: Iterable[CheckTarget]) -> Mapping[tuple[str, str],
                                                                   tuple[bool, str]]:
        targets = list(targets)
        if not targets:
            return self.results
        resolver = _PinnedResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False,
                                         force_close=True)
        # No decompression: a gzip bomb would expand past MAX_BODY_BYTES in one chunk.
        async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                         auto_decompress=False,
                                         headers={"Accept-Encoding": "identity"}) as session:
            async def one(target: CheckTarget) -> None:
                async with self._semaphore:
                    verdict = (True, "ok")
                    for check in target.checks:
                        if check.type == "container":
                            continue
                        passed, why = await self.run_check(check, target, session, resolver)
                        if not passed:
                            verdict = (False, why)
                            break
                    self.results[(target.rollout, target.device)] = verdict
            await asyncio.gather(*(one(t) for t in targets))
        return self.results

    def forget(self, rollout: str, device: str) -> None:
        self.results.pop((rollout, device), None)
