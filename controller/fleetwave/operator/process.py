"""The whole `fleetwave operator` process: store, MQTT link, engine, API and the operator.

The same pieces as `fleetwave.runtime.controller.run_controller`, wired the
same way, with the Kubernetes custom resources as the source of desired state
instead of a folder or git. One asyncio loop runs kopf, the engine, the MQTT
link and the HTTP API (`/healthz`, `/readyz`, `/metrics`: the probes point
there, kopf's own liveness endpoint is not used).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog

from fleetwave.operator.kube import Credentials
from fleetwave.operator.runtime import (
    LeaderGuard,
    OperatorOptions,
    OperatorRuntime,
    kubernetes_credentials,
)
from fleetwave.runtime.settings import Settings

log = structlog.get_logger("fleetwave.operator")


async def run_operator(settings: Settings, options: OperatorOptions, *,
                       stop: asyncio.Event | None = None,
                       credentials: Credentials | None = None) -> None:
    """Run one replica until `stop` is set or SIGTERM/SIGINT arrives."""
    from fleetwave.api.auth import TokenSet
    from fleetwave.api.server import build_app, serve
    from fleetwave.metrics import build_metrics
    from fleetwave.mqtt.link import MqttLink
    from fleetwave.runtime.controller import mqtt_settings
    from fleetwave.runtime.engine import Engine
    from fleetwave.store import Store, open_store

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # kopf installs its own handlers when it starts; until then, these stop us.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    metrics = build_metrics()
    store: Store = open_store(settings.store)
    tokens = (TokenSet.from_file(settings.token_file) if settings.token_file
              else TokenSet.disabled())
    try:
        await store.migrate()
        engine_ref: list[Engine] = []

        async def on_messages(batch: Any) -> None:
            await engine_ref[0].on_device_messages(batch)

        link = MqttLink(mqtt_settings(settings), metrics, on_messages)
        engine = Engine(store, link, metrics, resync_interval=settings.resync_interval)
        engine_ref.append(engine)
        engine.broker_connected = lambda: link.connected
        await link.start()
        runtime = OperatorRuntime(engine, credentials or kubernetes_credentials(), options)
        app = build_app(LeaderGuard(engine, runtime), metrics, tokens)
        runner = await serve(app, settings.listen)
        tasks = [asyncio.create_task(runtime.run(stop), name="operator")]
        log.info("operator.started", listen=settings.listen, identity=options.identity,
                 namespace=options.namespace or "*", lease=options.lease_name)
        await asyncio.wait([asyncio.create_task(stop.wait()), *tasks],
                           return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)  # releases the Lease
        await runner.cleanup()
        await link.stop()  # the persistent session stays on the broker
    finally:
        await store.close()
        log.info("operator.stopped")
