"""The HTTP edge on SLUICE_HTTP_PORT: /healthz, plus the OpenAI-compatible front door's routes
when a gateway (`sluice.edge.gateway.Gateway`) is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from sluice.observability.prom import http_metrics, metrics_handler

ReadinessProbe = Callable[[], Awaitable[dict[str, bool]]]


class RouteProvider(Protocol):
    """What the app needs from a gateway; a Protocol so this module does not import it."""

    def add_routes(self, app: web.Application) -> None: ...


def build_http_app(
    readiness: ReadinessProbe,
    gateway: RouteProvider | None = None,
    dashboard: RouteProvider | None = None,
) -> web.Application:
    """/healthz and /metrics always; the gateway's and the web dashboard's routes when given."""

    async def healthz(_: web.Request) -> web.Response:
        parts = await readiness()
        status = 200 if all(parts.values()) else 503
        return web.json_response({"ready": status == 200, "parts": parts}, status=status)

    app = web.Application(middlewares=[http_metrics])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    if gateway is not None:
        gateway.add_routes(app)
    if dashboard is not None:
        dashboard.add_routes(app)
    return app
