"""Named analytics queries, and one way to run them whoever holds the warehouse.

Queries read the per-minute rollups for windows under 24 hours and the hourly ones from 24
hours on (NamedQuery.sql_for); no query needs FINAL, because the sink's entry tables drop
redelivered rows before they are stored or counted (migration 0007). Tables are written
`{db}.table` (the runner substitutes the database) and the window is the bound parameter
`{minutes:UInt32}`.

With the embedded engine only the process owning the chdb path can read it: while a sink
runs, `open_for_reading` asks the sink's query server; otherwise it opens the path itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, WarehouseError, connect
from sluice.warehouse.metrics import (
    LATENCY_BY_STAGE,
    METRIC_QUERIES,
    MODEL,
    ROLLUP_WINDOW,
    pct,
    rollup_query,
)
from sluice.warehouse.named import NamedQuery as NamedQuery

MAX_MINUTES = 366 * 24 * 60
SINK_FILE = "sink.json"


DASHBOARD = rollup_query(
    "dashboard",
    "Per model over the last N minutes of finished requests: volume, errors, latency, cost, "
    "tokens and answer quality. '(none)' holds requests that ended before a model was chosen.",
    f"""
SELECT
    {MODEL} AS model,
    sum(t.requests) AS requests,
    sumIf(t.requests, t.status = 'ok') AS ok,
    sumIf(t.requests, t.status != 'ok') AS errors,
    round(errors / requests, 4) AS error_rate,{pct("latency_ms")},
    round(sum(t.cost_usd), 6) AS cost_usd,
    sum(t.prompt_tokens) AS prompt_tokens,
    sum(t.completion_tokens) AS completion_tokens,
    sum(t.cached) AS cached,
    round(sum(t.groundedness_sum) / nullIf(sum(t.grounded_checked), 0), 3) AS avg_groundedness,
    sum(t.hallucinations) AS hallucinations
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY model
ORDER BY requests DESC, model
""",
)

TOTALS = rollup_query(
    "totals",
    "Finished requests of the last N minutes by status and error code ('' = no error).",
    f"""
SELECT
    t.status AS status,
    t.error_code AS error_code,
    sum(t.requests) AS requests,
    round(sum(t.cost_usd), 6) AS cost_usd
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY status, error_code
ORDER BY requests DESC, status, error_code
""",
)

STAGE_LATENCY = NamedQuery(
    "stage_latency",
    "Stage durations of the last N minutes by stage (pipeline order) and model: where time goes.",
    LATENCY_BY_STAGE.sql,
    LATENCY_BY_STAGE.hourly_sql,
)

FEEDBACK = rollup_query(
    "feedback",
    "User feedback of the last N minutes by label: how often each complaint or praise comes in "
    "(a request rated again counts with its latest rating only).",
    f"""
SELECT
    t.label AS label,
    sum(t.messages) AS messages,
    round(sum(t.rating_sum) / messages, 3) AS avg_rating,
    sum(t.negative) AS negative
FROM {{db}}.feedback_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY label
HAVING messages != 0
ORDER BY messages DESC, label
""",
)

DEADLETTERS = NamedQuery(
    "deadletters",
    "Dead-lettered messages of the last N minutes by source topic and stage: what operators must look at.",
    """
SELECT
    source_topic,
    stage,
    count() AS messages,
    max(ts) AS last_ts,
    argMax(reason, ts) AS last_reason
FROM
(
    SELECT source_topic, stage, ts, reason
    FROM {db}.deadletters
    WHERE ts >= now64(3) - toIntervalMinute({minutes:UInt32})
    LIMIT 1 BY source_topic, `partition`, `offset`, raw_hash
)
GROUP BY source_topic, stage
ORDER BY messages DESC, source_topic, stage
""",
)

TENANT_SPEND = rollup_query(
    "tenant_spend",
    "Finished requests of the last N minutes by tenant: requests, answered, refused by quota, spend.",
    f"""
SELECT
    t.tenant AS tenant,
    sum(t.requests) AS requests,
    sumIf(t.requests, t.status = 'ok') AS ok,
    sumIf(t.requests, t.error_code IN ('rate_limited', 'budget_exceeded')) AS refused_by_quota,
    sum(t.cost_usd) AS cost_usd
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY tenant
ORDER BY cost_usd DESC, tenant
""",
)

# The operator's overview queries (the first figures Sluice had). Like the metrics they read
# the rollups, which count each stored row once (the sink drops redelivered copies before any
# view sees them); dead letters are few and read raw, one row per source position.
EXACT_QUERIES = (DASHBOARD, TOTALS, STAGE_LATENCY, FEEDBACK, DEADLETTERS, TENANT_SPEND)
QUERIES: dict[str, NamedQuery] = {query.name: query for query in EXACT_QUERIES}
QUERIES.update({query.name: query for query in METRIC_QUERIES})


class UnknownQuery(KeyError):
    """No named query by that name."""


def _jsonable(value: Any) -> Any:
    """The same values whether rows come from the engine or over HTTP: ISO UTC times, NaN as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def run_query(
    client: Warehouse, name: str, minutes: int = 60, summary: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows of the named query over the last `minutes`, as JSON-ready dicts (blocking).
    `summary`, when given, receives the engine's query summary (read_rows, read_bytes, ...)."""
    query = QUERIES.get(name)
    if query is None:
        raise UnknownQuery(name)
    window = max(1, min(int(minutes), MAX_MINUTES))
    rows = client.query(query.sql_for(window), parameters={"minutes": window}, summary=summary)
    return [{key: _jsonable(value) for key, value in row.items()} for row in rows]


# --- reading from whichever process owns the warehouse -----------------------------------


def sink_file(settings: Settings) -> Path:
    """Where a running sink advertises its query server: {"pid": ..., "query_url": ...}."""
    return settings.run_dir / SINK_FILE


def running_sink_url(settings: Settings) -> str | None:
    """The query_url of a live sink process, or None (no file, unreadable file, or dead pid)."""
    try:
        info = json.loads(sink_file(settings).read_text(encoding="utf-8"))
        pid, url = int(info["pid"]), str(info["query_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return url


class Reader:
    """Runs named queries somewhere; use as a context manager."""

    where: str = ""

    def rows(self, name: str, minutes: int = 60) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SinkReader(Reader):
    """Asks the running sink's query server (it owns the chdb path)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.where = url
        self._http = httpx.Client(base_url=url, timeout=timeout)

    def rows(self, name: str, minutes: int = 60) -> list[dict[str, Any]]:
        response = self._http.get(f"/query/{name}", params={"minutes": minutes})
        if response.status_code == 404:
            raise UnknownQuery(name)
        if response.status_code != 200:
            raise WarehouseError(f"sink query server answered {response.status_code}: {response.text[:200]}")
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows

    def close(self) -> None:
        self._http.close()


class DirectReader(Reader):
    """Opens the warehouse in this process (nothing else holds the chdb path, or a real server)."""

    def __init__(self, warehouse: Warehouse, where: str) -> None:
        self.where = where
        self.warehouse = warehouse

    def rows(self, name: str, minutes: int = 60) -> list[dict[str, Any]]:
        try:
            return run_query(self.warehouse, name, minutes)
        except UnknownQuery:
            raise
        except Exception as exc:  # missing tables are the usual cause on a fresh home
            hint = "were migrations applied? run `sluice migrate`"
            raise WarehouseError(f"query {name!r} failed ({hint}): {exc}") from exc

    def close(self) -> None:
        self.warehouse.close()


def _sink_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def open_for_reading(settings: Settings) -> Reader:
    """A Reader for the dashboard: the live sink's query server when there is one, else the
    warehouse opened directly. Raises WarehouseError when the chdb path is held by a process
    that does not answer (e.g. a sink still starting)."""
    url = running_sink_url(settings)
    if url is not None and _sink_answers(url):
        return SinkReader(url)
    try:
        warehouse = connect(settings)
    except WarehouseError as exc:
        hint = " (a sink process holds it; is it still starting?)" if url else ""
        raise WarehouseError(f"{exc}{hint}") from exc
    where = "embedded" if warehouse.embedded else "server"
    return DirectReader(warehouse, f"{where}:{warehouse.database}")


async def fetch_rows(settings: Settings, name: str, minutes: int = 60) -> list[dict[str, Any]]:
    """open_for_reading + rows off the event loop, for async callers (HTTP dashboards)."""

    def read() -> list[dict[str, Any]]:
        with open_for_reading(settings) as reader:
            return reader.rows(name, minutes)

    return await asyncio.to_thread(read)
