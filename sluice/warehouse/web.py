"""GET /dashboard: the web dashboard, one self-contained page (hand-written SVG charts, no
CDN), and GET /dashboard/data, the JSON it polls every 5 s. The data is read through the same
reader as `sluice dashboard` (the live sink's query server, else the warehouse directly)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web

from sluice.settings import Settings
from sluice.warehouse.connection import WarehouseError
from sluice.warehouse.queries import MAX_MINUTES, open_for_reading

SERIES = ("timeseries", "feedback_series")
TABLES: tuple[str, ...] = ("models", "latency_by_stage", "errors_by_category", "cost_per_1k")
TABLES += ("top_routes", "satisfaction", "cache")


def page() -> bytes:
    return files("sluice.warehouse").joinpath("static/dashboard.html").read_bytes()


def read_dashboard(settings: Settings, minutes: int) -> dict[str, Any]:
    """Every series and table the page shows, from one reader (blocking). The requests go out
    together: the warehouse runs one query at a time, but the HTTP and JSON work overlaps."""
    with open_for_reading(settings) as reader, ThreadPoolExecutor(max_workers=4) as pool:
        names = (*SERIES, *TABLES)
        rows = dict(zip(names, pool.map(lambda name: reader.rows(name, minutes), names), strict=True))
        data: dict[str, Any] = {name: rows[name] for name in SERIES}
        data["tables"] = {name: rows[name] for name in TABLES}
        data["source"] = reader.where
    data["minutes"] = minutes
    return data


class WebDashboard:
    """The dashboard's routes, added to the HTTP edge next to the gateway's."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._page = page()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/dashboard", self._page_handler)
        app.router.add_get("/dashboard/data", self._data)

    async def _page_handler(self, _: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8")

    async def _data(self, request: web.Request) -> web.Response:
        try:
            minutes = max(1, min(int(request.query.get("minutes", "60")), MAX_MINUTES))
        except ValueError:
            return web.json_response({"error": "minutes must be an integer"}, status=400)
        try:
            data = await asyncio.to_thread(read_dashboard, self.settings, minutes)
        except WarehouseError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.Response(body=orjson.dumps(data), content_type="application/json")
