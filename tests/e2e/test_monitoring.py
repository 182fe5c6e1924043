"""Monitoring on the real broker and the real sink (chdb): the web dashboard renders charts in
headless Chromium, /metrics parses as Prometheus text, and negative feedback for one model on
one route makes the sink publish RouteAdvice demoting it (and restoring it after recovery)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from schemas import Event, Feedback, RequestSummary, RouteAdvice, Stage, Status
from sluice.edge.http import build_http_app
from sluice.local.broker import free_port
from sluice.settings import Settings
from sluice.warehouse.queries import running_sink_url
from sluice.warehouse.synthetic import synthetic_requests
from sluice.warehouse.web import WebDashboard
from tests.e2e.stack import eventually, publish_raw, read_topic, running_sink
from topics import EVENTS, FEEDBACK, ROUTE_ADVICE

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


def event_records(events: list[Event]) -> list[tuple[bytes, bytes]]:
    return [(e.correlation_id.encode(), e.model_dump_json().encode()) for e in events]


async def test_web_dashboard_renders_charts_and_metrics_parse(
    live_settings: Settings, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    settings = live_settings
    async with running_sink(settings) as stats:
        requests = list(synthetic_requests(600, spread_minutes=45))
        events = [e for request in requests for e in request]
        await publish_raw(settings.bootstrap, EVENTS.name(settings.topic_prefix), event_records(events))
        rated = [(request[0].request_id, 1 - n % 3) for n, request in enumerate(requests[::4])]
        await publish_raw(settings.bootstrap, FEEDBACK.name(settings.topic_prefix), feedback_records(rated))
        await eventually(lambda: stats.rows_inserted["events"] >= len(events), timeout=60)
        await eventually(lambda: stats.rows_inserted["feedback"] >= len(rated), timeout=60)

        port = free_port()
        app = build_http_app(_always_ready, dashboard=WebDashboard(settings))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                data = (await http.get("/dashboard/data", params={"minutes": 60})).json()
                assert sum(row["requests"] for row in data["timeseries"]) == 600
                assert {row["model"] for row in data["tables"]["models"]} == {
                    "sim-small",
                    "sim-medium",
                    "sim-large",
                }
                dom = await asyncio.to_thread(chromium, ["--dump-dom", f"{base}/dashboard"])
                shot = tmp_path / "dashboard.png"
                await asyncio.to_thread(
                    chromium, [f"--screenshot={shot}", "--window-size=1400,1300", f"{base}/dashboard"]
                )
                # Every chart drew at least one series with real points.
                for chart in ("latency", "cost", "errors", "cache", "quality", "volume"):
                    svg = re.search(rf'<svg id="chart-{chart}"[^>]*>(.*?)</svg>', dom, re.S)
                    assert svg is not None, chart
                    points = [int(n) for n in re.findall(r'data-points="(\d+)"', svg.group(1))]
                    assert points and max(points) >= 10, (chart, points)
                assert 'data-loaded="true"' in dom
                assert "sim-large" in dom  # the models table
                quality = re.search(r'<svg id="chart-quality"[^>]*>(.*?)</svg>', dom, re.S)
                assert quality is not None and re.search(
                    r'data-series="mean_rating" data-points="[1-9]', quality.group(1)
                )
                assert shot.stat().st_size > 10_000
                if os.environ.get("SLUICE_UPDATE_SCREENSHOT") == "1":
                    shutil.copyfile(shot, SCREENSHOT)

                edge = (await http.get("/metrics")).text
                assert {"sluice_http_requests", "sluice_http_request_duration_seconds"} <= names_of(edge)
            sink_url = running_sink_url(settings)
            assert sink_url is not None
            async with httpx.AsyncClient(timeout=10) as http:
                sink_metrics = (await http.get(f"{sink_url}/metrics")).text
            families = names_of(sink_metrics)
            assert {"sluice_sink_rows", "process_resident_memory_bytes", "sluice_consumer_lag"} <= families
            rows = [s for f in text_string_to_metric_families(sink_metrics) for s in f.samples]
            assert any(
                s.name == "sluice_sink_rows_total" and s.labels == {"table": "events"} and s.value > 0
                for s in rows
            )
        finally:
            await runner.cleanup()


async def _always_ready() -> dict[str, bool]:
    return {"test": True}


def names_of(text: str) -> set[str]:
    """Family names, parsed by the official Prometheus text parser (raises on bad syntax)."""
    return {family.name for family in text_string_to_metric_families(text)}


def chromium(args: list[str]) -> str:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rated_requests(route: str, model: str, count: int, tag: str) -> list[Event]:
    """Final events of `count` answered requests on `route` served by `model`."""
    now = datetime.now(UTC)
    events = []
    for n in range(count):
        request_id = f"{tag}-{model}-{n}"
        events.append(
            Event(
                event_id=f"{request_id}/validate_response",
                request_id=request_id,
                correlation_id=f"c-{request_id}",
                tenant="acme",
                stage=Stage.VALIDATE_RESPONSE,
                status="ok",
                ts=now,
                model=model,
                summary=RequestSummary(
                    received_at=now - timedelta(seconds=1),
                    finished_at=now,
                    status=Status.OK,
                    latency_ms=1000.0,
                    route=route,
                ),
            )
        )
    return events


async def test_negative_feedback_demotes_a_model_on_its_route(live_settings: Settings) -> None:
    settings = live_settings.with_overrides(
        feedback_interval_s=0.5, feedback_min_samples=4, feedback_window_minutes=30
    )
    prefix = settings.topic_prefix
    bad = rated_requests("support", "sim-small", 6, "fb")
    good = rated_requests("support", "sim-medium", 6, "fb")
    async with running_sink(settings) as stats:
        await publish_raw(settings.bootstrap, EVENTS.name(prefix), event_records(bad + good))
        await eventually(lambda: stats.rows_inserted["requests"] >= 12, timeout=60)
        ratings = [(e.request_id, -1) for e in bad] + [(e.request_id, 1) for e in good]
        await publish_raw(settings.bootstrap, FEEDBACK.name(prefix), feedback_records(ratings))

        async def advice() -> list[RouteAdvice]:
            records = await read_topic(settings.bootstrap, ROUTE_ADVICE.name(prefix), idle_s=0.3)
            return [RouteAdvice.model_validate_json(value or b"") for _, value, _, _ in records]

        deadline = time.monotonic() + 60
        published: list[RouteAdvice] = []
        while time.monotonic() < deadline and not published:
            published = await advice()
            await asyncio.sleep(0.5)
        assert [(a.route, a.model, a.demote) for a in published] == [("support", "sim-small", True)]
        demoted = published[0]
        assert demoted.samples == 6 and demoted.satisfaction == -1.0
        assert "demoted" in demoted.reason and "-1.00" in demoted.reason

        # The model recovers: enough good ratings lift the mean over feedback_recover_at.
        more = rated_requests("support", "sim-small", 14, "fb2")
        await publish_raw(settings.bootstrap, EVENTS.name(prefix), event_records(more))
        await eventually(lambda: stats.rows_inserted["requests"] >= 26, timeout=60)
        await publish_raw(
            settings.bootstrap, FEEDBACK.name(prefix), feedback_records([(e.request_id, 1) for e in more])
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(published) < 2:
            published = await advice()
            await asyncio.sleep(0.5)
        assert [(a.model, a.demote) for a in published] == [("sim-small", True), ("sim-small", False)]
        assert "restored" in published[1].reason
        await asyncio.sleep(1.5)  # further evaluations publish nothing: the advice did not change
        assert len(await advice()) == 2


def feedback_records(ratings: list[tuple[str, int]]) -> list[tuple[bytes, bytes]]:
    return [
        (
            request_id.encode(),
            orjson.dumps(Feedback(request_id=request_id, tenant="acme", rating=rating).model_dump()),
        )  # type: ignore[arg-type]
        for request_id, rating in ratings
    ]
