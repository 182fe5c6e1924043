"""Prometheus metrics, defined once. Every process serves the default registry at GET /metrics
(prometheus-client also registers its process collector: CPU seconds, resident memory, fds).

Which process moves which metric: the worker derives the pipeline metrics from the events it
publishes (`observe_event`), the sink its rows, consumer lag and alert states, the HTTP front
door its own requests. A process only exports what it moves, so Prometheus sums across
processes without double counting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from schemas import Event

log = logging.getLogger(__name__)

# --- pipeline (worker) --------------------------------------------------------------------
REQUESTS = Counter(
    "sluice_requests", "Requests ended, by final status and error code", ["status", "code", "model"]
)
STAGE_EVENTS = Counter("sluice_stage_events", "Stage events emitted", ["stage", "status"])
STAGE_DURATION = Histogram(
    "sluice_stage_duration_seconds",
    "Time a stage spent on one request",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TOKENS = Counter("sluice_tokens", "Tokens of finished requests", ["model", "kind"])
COST = Counter("sluice_cost_usd", "Spend of finished requests (USD)", ["model"])
CACHE_HITS = Counter("sluice_cache_hits", "Requests answered from cache", ["model"])
BREAKER_STATE = Gauge("sluice_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["model"])
BREAKER_TRANSITIONS = Counter("sluice_breaker_transitions", "Circuit breaker transitions", ["model", "state"])

# --- sink ---------------------------------------------------------------------------------
SINK_ROWS = Counter("sluice_sink_rows", "Rows the sink inserted", ["table"])
CONSUMER_LAG = Gauge(
    "sluice_consumer_lag",
    "End offset minus committed offset, summed over partitions; stage = the stage reading the topic",
    ["group", "topic", "stage"],
)
ALERTS_FIRING = Gauge("sluice_alerts_firing", "1 while the alert rule fires", ["rule"])

# --- HTTP front door ----------------------------------------------------------------------
HTTP_REQUESTS = Counter("sluice_http_requests", "Front-door HTTP requests", ["path", "status"])
HTTP_DURATION = Histogram("sluice_http_request_duration_seconds", "Front-door HTTP latency", ["path"])

BREAKER_LEVEL = {"breaker_closed": 0, "breaker_half_open": 1, "breaker_open": 2}


def observe_event(event: Event) -> None:
    """Move the pipeline metrics for one published event. Totals (tokens, cost, cache) come
    from the final event only: it carries the request's sums, intermediate events a part."""
    status = event.status
    if status in BREAKER_LEVEL:  # a breaker transition, not work on a request
        model = event.model or ""
        BREAKER_STATE.labels(model).set(BREAKER_LEVEL[status])
        BREAKER_TRANSITIONS.labels(model, status.removeprefix("breaker_")).inc()
        return
    stage = event.stage.value
    STAGE_EVENTS.labels(stage, status).inc()
    STAGE_DURATION.labels(stage).observe(max(event.duration_ms, 0.0) / 1000)
    summary = event.summary
    if summary is None:
        return
    model = event.model or ""
    REQUESTS.labels(summary.status.value, event.error_code.value if event.error_code else "", model).inc()
    if event.prompt_tokens:
        TOKENS.labels(model, "prompt").inc(event.prompt_tokens)
    if event.completion_tokens:
        TOKENS.labels(model, "completion").inc(event.completion_tokens)
    if event.cost_usd > 0:
        COST.labels(model).inc(event.cost_usd)
    if event.cached:
        CACHE_HITS.labels(model).inc()


def exposition() -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(REGISTRY)


async def metrics_handler(_: web.Request) -> web.Response:
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time front-door requests by route pattern (not raw path: bounded labels)."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_REQUESTS.labels(path, str(status)).inc()
        HTTP_DURATION.labels(path).observe(time.perf_counter() - started)


@dataclass
class MetricsServer:
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_metrics_server(host: str, port: int) -> MetricsServer:
    """A bare /metrics endpoint for processes that serve no other HTTP (the worker)."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    url = f"http://{host}:{bound}/metrics"
    log.info("metrics on %s", url)
    return MetricsServer(runner, url)
