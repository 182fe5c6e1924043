"""The HTTP edge on SLUICE_HTTP_PORT: /healthz, plus the OpenAI-compatible front door's routes
when a gateway (`sluice.edge.gateway.Gateway`) is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

ReadinessProbe = Callable[[], Awaitable[dict[str, bool]]]


class RouteProvider(Protocol):
    """What the app needs from a gateway; a Protocol so this module does not import it."""

    def add_routes(self, app: web.Application) -> None: ...


def build_http_app(readiness: ReadinessProbe, gateway: RouteProvider | None = None) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        parts = await readiness()
        status = 200 if all(parts.values()) else 503
        return web.json_response({"ready": status == 200, "parts": parts}, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    if gateway is not None:
        gateway.add_routes(app)
    return app
