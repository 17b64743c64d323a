"""An aiohttp application served on 127.0.0.1 for a test: a webhook gate, a fake
Prometheus API, a metrics page. The port is the kernel's choice, so tests never collide."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start `app`; (its runner, to `cleanup()` at the end; its base URL)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
