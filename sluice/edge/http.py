"""The HTTP edge on SLUICE_HTTP_PORT: health now; the OpenAI-compatible front door builds on it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

ReadinessProbe = Callable[[], Awaitable[dict[str, bool]]]


def build_http_app(readiness: ReadinessProbe) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        parts = await readiness()
        status = 200 if all(parts.values()) else 503
        return web.json_response({"ready": status == 200, "parts": parts}, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app
