"""HTTP and TCP health checks of updated devices: the I/O half of health.

The planner judges health from data (reported version, containers, silence);
checks that need the network run here, bounded in concurrency and time, and
their last result per (rollout, device) is fed back into the next plan.
Container checks need no I/O: the planner reads them from reported state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from fleetwave.resources.model import Check

log = structlog.get_logger("fleetwave.checks")


@dataclass(frozen=True, slots=True)
class CheckTarget:
    rollout: str
    device: str
    ip: str | None
    name: str | None
    checks: tuple[Check, ...]


def _fill(template: str, target: CheckTarget) -> str:
    return (template.replace("{device_ip}", target.ip or "")
            .replace("{device_name}", target.name or target.device)
            .replace("{device_uuid}", target.device))


async def run_check(check: Check, target: CheckTarget,
                    session: aiohttp.ClientSession) -> tuple[bool, str]:
    """One check: (passed, why). Never raises: a network error is a failed check."""
    timeout = check.timeout.total_seconds()
    try:
        if check.type == "http":
            if not check.url:
                return False, "http check without url"
            url = _fill(check.url, target)
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout),
                                   allow_redirects=False) as response:
                body = await response.text(errors="replace")
                if response.status != check.expect_status:
                    return False, f"GET {url}: status {response.status}, " \
                                  f"expected {check.expect_status}"
                if check.body_contains and check.body_contains not in body:
                    return False, f"GET {url}: body lacks {check.body_contains!r}"
                return True, "ok"
        if check.type == "tcp":
            host = _fill(check.host, target) if check.host else target.ip
            if not host or not check.port:
                return False, "tcp check without host/ip or port"
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, check.port),
                                               timeout)
            writer.close()
            await writer.wait_closed()
            return True, "ok"
        return True, "judged from reported state"
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return False, f"{check.type} check failed: {exc or type(exc).__name__}"


class CheckRunner:
    """Runs the configured checks of devices in their stabilisation period."""

    def __init__(self, concurrency: int = 64) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)
        self.results: dict[tuple[str, str], tuple[bool, str]] = {}

    async def run(self, targets: Iterable[CheckTarget]) -> Mapping[tuple[str, str],
                                                                   tuple[bool, str]]:
        targets = list(targets)
        if not targets:
            return self.results
        async with aiohttp.ClientSession() as session:
            async def one(target: CheckTarget) -> None:
                async with self._semaphore:
                    verdict = (True, "ok")
                    for check in target.checks:
                        if check.type == "container":
                            continue
                        passed, why = await run_check(check, target, session)
                        if not passed:
                            verdict = (False, why)
                            break
                    self.results[(target.rollout, target.device)] = verdict
            await asyncio.gather(*(one(t) for t in targets))
        return self.results

    def forget(self, rollout: str, device: str) -> None:
        self.results.pop((rollout, device), None)
