"""The whole `fleetwave operator` process: store, MQTT link, engine, API and the operator.

The same pieces as `fleetwave.runtime.controller.run_controller`, wired the
same way, with the Kubernetes custom resources as the source of desired state
instead of a folder or git. One asyncio loop runs kopf, the engine, the MQTT
link and the HTTP API (`/healthz`, `/readyz`, `/metrics`: the probes point
there, kopf's own liveness endpoint is not used).
"""

from __future__ import annotations

import asyncio

import structlog

from fleetwave.operator.kube import Credentials
from fleetwave.operator.runtime import (
    LeaderGuard,
    OperatorOptions,
    OperatorRuntime,
    kubernetes_credentials,
)
from fleetwave.runtime.leadership import Elector
from fleetwave.runtime.settings import Settings

log = structlog.get_logger("fleetwave.operator")


async def run_operator(settings: Settings, options: OperatorOptions, *,
                       stop: asyncio.Event | None = None,
                       credentials: Credentials | None = None) -> None:
    """Run one replica until `stop` is set or SIGTERM/SIGINT arrives."""
    from fleetwave.api.server import build_app, serve
    from fleetwave.runtime.controller import controller_core, install_signal_handlers

    stop = stop or asyncio.Event()
    # kopf installs its own handlers when it starts; until then, these stop us.
    install_signal_handlers(stop)
    async with controller_core(settings) as core:
        store_lease = (Elector(core.store, core.metrics, name="operator",
                               ttl=options.lease_duration)
                       if core.store.backend == "postgresql" else None)
        runtime = OperatorRuntime(core.engine, credentials or kubernetes_credentials(), options,
                                  store_lease=store_lease)
        app = build_app(LeaderGuard(core.engine, runtime), core.metrics, core.tokens,
                        read_tokens=core.read_tokens,
                        live=core.live)
        runner = await serve(app, settings.listen)
        tasks = [asyncio.create_task(runtime.run(stop), name="operator")]
        log.info("operator.started", listen=settings.listen, identity=options.identity,
                 namespace=options.namespace or "*", lease=options.lease_name)
        try:
            await asyncio.wait([asyncio.create_task(stop.wait()), *tasks],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)  # releases the Lease
            await runner.cleanup()
    log.info("operator.stopped")
