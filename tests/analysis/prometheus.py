"""A real Prometheus scraping a /metrics page the test controls, for the analysis tests.

Prometheus is Debian's (`scripts/lib/tools.sh: fw_install_prometheus` puts it in
.tools/bin); each instance gets a free port, a scrape interval of 1 s, its own storage
directory, and is stopped by its pid. The page is an aiohttp server on a thread of its
own, so the tests (synchronous ones too) change what it serves between scrapes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from fleetwave.mqtt.broker import free_port
from tests.deploy.tools import find_tool
from tests.support.http import serve
from tests.support.processes import terminate, wait_until


class MetricsPage:
    """GET /metrics answers `values` (name or name{labels} -> number) as Prometheus text."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _page(self, request: web.Request) -> web.Response:
        del request
        body = "".join(f"{name} {value}\n" for name, value in sorted(self.values.items()))
        return web.Response(text=body, content_type="text/plain")

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._page)
        self._runner, url = await serve(app)
        return int(url.rsplit(":", 1)[1])

    def start(self) -> None:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Prometheus:
    """One `prometheus` process scraping `target` (host:port) every second."""

    workdir: Path
    target: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "app",
                                "static_configs": [{"targets": [self.target]}]}]}))
        with (self.workdir / "prometheus.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(find_tool("prometheus")), f"--config.file={config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, 30, lambda: f"prometheus did not start: {self.tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def query(self, promql: str) -> Any:
        """The API's `data` for an instant query (what fleetwave's runner reads too)."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]

    def wait_for_sample(self, promql: str, timeout: float = 30) -> None:
        """Until `promql` has a sample: Prometheus's first scrape takes a few seconds."""
        wait_until(lambda: self.query(promql)["result"], timeout,
                   lambda: f"prometheus has no sample of {promql}: {self.tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None

    def tail(self) -> str:
        log = self.workdir / "prometheus.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def settle(seconds: float) -> None:
    """Let `seconds` of wall clock pass (scrapes and queries happen meanwhile)."""
    time.sleep(seconds)
