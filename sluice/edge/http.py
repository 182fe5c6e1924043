"""The health endpoints every Sluice process serves, and the gateway's HTTP app on SLUICE_HTTP_PORT.

- `GET /healthz`: the process is alive (its event loop answers). 200, or 503 once it is stopping.
  An orchestrator restarts a process whose /healthz fails. The gateway's /healthz keeps the
  contract's meaning: 200 once requests can flow through it (its parts, as JSON).
- `GET /readyz`: the process can do its work now (connected, partitions assigned, tables
  recovered, not draining). 200 or 503, with the parts as JSON. A load balancer sends traffic
  only to ready processes; a draining process turns unready first.
- `GET /metrics`: Prometheus text format.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from sluice.observability.prom import http_metrics, metrics_handler

ReadinessProbe = Callable[[], Awaitable[dict[str, bool]]]
log = logging.getLogger(__name__)


class RouteProvider(Protocol):
    """What the app needs from a gateway; a Protocol so this module does not import it."""

    def add_routes(self, app: web.Application) -> None: ...


@dataclass
class Lifecycle:
    """Whether the process still takes work: `draining` turns /readyz to 503 (new work goes
    elsewhere) while /healthz stays 200 (do not kill it while it finishes what it has)."""

    draining: bool = False
    stopped: bool = False


def add_health_routes(
    app: web.Application,
    readiness: ReadinessProbe,
    lifecycle: Lifecycle,
    liveness: ReadinessProbe | None = None,
) -> None:
    """/healthz (`liveness` parts when given), /readyz and /metrics on `app`."""

    async def healthz(_: web.Request) -> web.Response:
        if liveness is not None:
            parts = await liveness()
            status = 200 if all(parts.values()) and not lifecycle.stopped else 503
            return web.json_response({"ready": status == 200, "parts": parts}, status=status)
        status = 503 if lifecycle.stopped else 200
        return web.json_response({"alive": status == 200, "draining": lifecycle.draining}, status=status)

    async def readyz(_: web.Request) -> web.Response:
        parts = {**await readiness(), "accepting": not lifecycle.draining}
        status = 200 if all(parts.values()) else 503
        return web.json_response({"ready": status == 200, "parts": parts}, status=status)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)


def build_http_app(
    readiness: ReadinessProbe,
    gateway: RouteProvider | None = None,
    dashboard: RouteProvider | None = None,
    lifecycle: Lifecycle | None = None,
) -> web.Application:
    """The health routes always (/healthz answers `readiness` without the draining flag, as
    the contract has it); the gateway's and the web dashboard's routes when given."""
    app = web.Application(middlewares=[http_metrics])
    add_health_routes(app, readiness, lifecycle or Lifecycle(), liveness=readiness)
    if gateway is not None:
        gateway.add_routes(app)
    if dashboard is not None:
        dashboard.add_routes(app)
    return app


@dataclass
class HealthServer:
    """A started health server (for processes that serve no other HTTP: worker, sink)."""

    runner: web.AppRunner
    url: str
    lifecycle: Lifecycle

    async def stop(self) -> None:
        self.lifecycle.stopped = True
        await self.runner.cleanup()


async def start_health_server(host: str, port: int, readiness: ReadinessProbe) -> HealthServer:
    """Serve /healthz, /readyz and /metrics on host:port (0 = any free port). A port that cannot
    be bound is an error: a process its orchestrator cannot probe must not pretend to run."""
    lifecycle = Lifecycle()
    app = web.Application()
    add_health_routes(app, readiness, lifecycle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}"
    log.info("health and metrics on %s (/healthz, /readyz, /metrics)", url)
    return HealthServer(runner, url, lifecycle)
