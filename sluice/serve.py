"""`sluice gateway` and `sluice sink` as deployable processes: health, readiness and metrics on
their configured ports, and a drain on SIGTERM (stop taking work, finish what is in flight,
commit, exit 0). `sluice up` runs the gateway through the same `serve_gateway_process`.

A second SIGINT/SIGTERM during a drain stops at once (the work not finished is redelivered by
Kafka to the next process; nothing is lost, at worst a model call is repeated)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sluice.bus import ensure_topics
from sluice.edge.gateway import Gateway
from sluice.edge.http import Lifecycle, ReadinessProbe, build_http_app, start_health_server
from sluice.settings import Settings
from sluice.supervise import all_readiness

log = logging.getLogger("sluice.serve")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signals(stop: asyncio.Event, abort: Callable[[], Any]) -> Callable[[], None]:
    """The first SIGINT/SIGTERM sets `stop` (drain); a second calls `abort`. Returns the undo."""
    loop = asyncio.get_running_loop()

    def handle() -> None:
        if stop.is_set():
            abort()
        stop.set()

    for signum in SIGNALS:
        loop.add_signal_handler(signum, handle)

    def undo() -> None:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)

    return undo


async def serve_gateway_process(
    settings: Settings,
    stop: asyncio.Event,
    *,
    extra_readiness: ReadinessProbe | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """The HTTP front door, /dashboard and the health routes on SLUICE_HTTP_HOST:PORT until
    `stop` is set; then drain: /readyz turns 503, the listener closes, requests in flight get
    their answers (up to SLUICE_DRAIN_TIMEOUT_S), and only then the Kafka client closes."""
    from sluice.warehouse.web import WebDashboard  # the dashboard's reader pulls in ClickHouse

    await ensure_topics(settings)
    gateway = Gateway(settings)  # its default resolver follows the tenants file
    await gateway.start()
    lifecycle = Lifecycle()

    async def readiness() -> dict[str, bool]:
        parts = await gateway.readiness()
        if extra_readiness is not None:
            parts.update(await extra_readiness())
        return parts

    app = build_http_app(readiness, gateway=gateway, dashboard=WebDashboard(settings), lifecycle=lifecycle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.drain_timeout_s)
    try:
        await runner.setup()
        await web.TCPSite(runner, settings.http_host, settings.http_port, backlog=4096).start()
        if on_listening is not None:
            on_listening(f"http://{settings.http_host}:{settings.http_port}")
        await stop.wait()
        lifecycle.draining = True
        if settings.gateway_drain_delay_s:  # still serving, unready: balancers stop sending here
            await asyncio.sleep(settings.gateway_drain_delay_s)
        log.info("draining: no new connections; waiting for requests in flight")
    finally:
        await runner.cleanup()  # closes the listener, then waits for handlers in flight
        await gateway.stop()
    log.info("gateway stopped")


def run_gateway(settings: Settings) -> int:
    """Blocking: `sluice gateway` until SIGINT/SIGTERM, then drain and exit 0."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve_gateway_process(
                settings, stop, on_listening=lambda url: print(f"gateway    {url}/v1 ready", flush=True)
            )
        )
        undo = on_stop_signals(stop, task.cancel)
        try:
            await task
        finally:
            undo()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        log.warning("gateway stopped without finishing its requests in flight")
        return 1
    return 0


def run_sink_process(settings: Settings) -> int:
    """Blocking: `sluice sink` with its health server until SIGINT/SIGTERM; then drain: stop
    fetching, insert the last batch, commit its offsets, exit 0."""
    from sluice.warehouse.sink import run_sink

    if settings.sink_niceness:  # background work: on a shared machine, answers come first
        os.nice(settings.sink_niceness)

    async def main() -> int:
        stop, ready = asyncio.Event(), asyncio.Event()

        async def readiness() -> dict[str, bool]:
            # plus each supervised monitor (lag, alerts, route advice): false while it restarts
            return {"sink": ready.is_set() and not stop.is_set(), **all_readiness()}

        health = await start_health_server(settings.sink_host, settings.sink_port, readiness)
        print(f"sink       health {health.url}/readyz, metrics {health.url}/metrics", flush=True)
        task = asyncio.create_task(run_sink(settings, ready=ready, stop=stop))
        undo = on_stop_signals(stop, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.warning("sink stopped without its final flush")
            return 1
        finally:
            undo()
            await health.stop()
        return 0

    return asyncio.run(main())
