"""The sink's read-only HTTP endpoint: the embedded chdb path can be opened by one process
only, so while the sink owns it, `sluice dashboard` and the front door read through here.

`GET /query/<name>?minutes=60` -> {"name", "minutes", "rows"}; `GET /healthz`; `GET /stats`.
Bound to 127.0.0.1 only: it has no authentication.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sluice.observability.prom import metrics_handler
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse
from sluice.warehouse.queries import QUERIES, UnknownQuery, run_query, sink_file

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def build_app(warehouse: Warehouse, stats: Callable[[], dict[str, Any]] | None = None) -> web.Application:
    """The aiohttp application; `stats` returns the sink's counters for /stats."""

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok", "database": warehouse.database})

    async def query(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            minutes = int(request.query.get("minutes", "60"))
        except ValueError:
            return _json({"error": "minutes must be an integer"}, status=400)
        if minutes < 1:
            return _json({"error": "minutes must be >= 1"}, status=400)
        if name not in QUERIES:
            return _json({"error": f"unknown query {name!r}", "queries": sorted(QUERIES)}, status=404)
        try:
            rows = await asyncio.to_thread(run_query, warehouse, name, minutes)
        except UnknownQuery:
            return _json({"error": f"unknown query {name!r}", "queries": sorted(QUERIES)}, status=404)
        except Exception as exc:  # report the engine's error to the caller, keep serving
            log.warning("query %s failed", name, exc_info=True)
            return _json({"error": f"query failed: {exc}"}, status=500)
        return _json({"name": name, "minutes": minutes, "rows": rows})

    async def list_queries(_: web.Request) -> web.Response:
        return _json({name: q.doc for name, q in QUERIES.items()})

    async def get_stats(_: web.Request) -> web.Response:
        return _json(stats() if stats else {})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/query", list_queries)
    app.router.add_get("/query/{name}", query)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/metrics", metrics_handler)
    return app


@dataclass
class QueryServer:
    """A started server and the sink.json it advertised."""

    runner: web.AppRunner
    url: str
    settings: Settings

    async def stop(self) -> None:
        """Withdraw sink.json first (so no reader picks a closing server), then stop serving."""
        remove_sink_file(self.settings)
        await self.runner.cleanup()


def write_sink_file(settings: Settings, url: str) -> None:
    """Advertise this process atomically (readers never see half a file)."""
    path = sink_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "query_url": url}), encoding="utf-8")
    tmp.replace(path)


def remove_sink_file(settings: Settings) -> None:
    """Remove sink.json if this process wrote it (another sink may have replaced it)."""
    path = sink_file(settings)
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.warning("could not remove %s: %s", path, exc)


async def start_query_server(
    settings: Settings, warehouse: Warehouse, stats: Callable[[], dict[str, Any]] | None = None
) -> QueryServer:
    """Serve on 127.0.0.1:settings.sink_query_port (0 = any free port) and write sink.json."""
    runner = web.AppRunner(build_app(warehouse, stats), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, settings.sink_query_port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    url = f"http://{HOST}:{port}"
    write_sink_file(settings, url)
    log.info("sink query server on %s", url)
    return QueryServer(runner=runner, url=url, settings=settings)


__all__ = ["QueryServer", "build_app", "remove_sink_file", "start_query_server", "write_sink_file"]
