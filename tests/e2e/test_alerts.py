"""Alerts end to end: the simulator is driven into a 30% error rate; the sink's evaluator (on a
1-minute window, evaluated every second) publishes a firing Alert on sluice.alerts and POSTs it
to a real local webhook; after recovery, good traffic brings the rate down and it resolves.
The worker's /metrics counts the failures by status and code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from schemas import Alert, Response
from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker, free_port
from sluice.observability.rules import AlertRule
from tests.e2e.stack import Stack, read_topic, running_stack, stack_settings
from topics import ALERTS

pytestmark = pytest.mark.e2e

RULE = AlertRule(name="errors", metric="error_rate", threshold=0.2, window_minutes=1, severity="critical")
WEBHOOK_PORT = free_port()


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("alerts")
    settings = stack_settings(
        broker.bootstrap,
        root,
        "al",
        alert_rules=[RULE],
        alert_interval_s=1.0,
        alert_webhook_url=f"http://127.0.0.1:{WEBHOOK_PORT}/hook",
    )
    with running_stack(settings, root / "logs") as running:
        yield running


async def send(client: SluiceClient, count: int, tag: str) -> list[Response]:
    return list(
        await asyncio.gather(*(client.request(f"{tag} question {i}", max_tokens=16) for i in range(count)))
    )


async def alerts_on_topic(stack: Stack) -> list[Alert]:
    topic = ALERTS.name(stack.settings.topic_prefix)
    records = await read_topic(stack.settings.bootstrap, topic, idle_s=0.3)
    return [Alert.model_validate_json(value or b"") for _, value, _, _ in records]


async def wait_for_alerts(
    stack: Stack, count: int, timeout: float, keep_sending: SluiceClient | None = None
) -> list[Alert]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alerts = await alerts_on_topic(stack)
        if len(alerts) >= count:
            return alerts
        if keep_sending is not None:  # good traffic dilutes the window's error rate
            # Right after recovery an open breaker may still refuse a few calls until its probe
            # succeeds; the alert must resolve all the same once good answers dominate.
            await send(keep_sending, 10, "recovered")
        await asyncio.sleep(0.5)
    raise AssertionError(f"expected {count} alerts within {timeout}s, got {await alerts_on_topic(stack)}")


async def test_error_rate_alert_fires_and_resolves(stack: Stack, tmp_path: Path) -> None:
    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", WEBHOOK_PORT).start()
    try:
        async with SluiceClient(settings=stack.settings, timeout_s=60) as client:
            assert {r.status.value for r in await send(client, 14, "healthy")} == {"ok"}
            await asyncio.sleep(3)  # several evaluations of a healthy window
            assert await alerts_on_topic(stack) == []

            stack.fault("*", "down")
            failed = await send(client, 6, "broken")  # 6 of 20 = 30% errors
            assert {r.status.value for r in failed} == {"failed"}
            firing = await wait_for_alerts(stack, 1, timeout=60)
            assert [(a.rule, a.state, a.severity) for a in firing] == [("errors", "firing", "critical")]
            assert firing[0].value is not None and firing[0].value >= 0.2

            stack.fault("*", "none")
            both = await wait_for_alerts(stack, 2, timeout=120, keep_sending=client)
            assert [a.state for a in both] == ["firing", "resolved"]
            assert both[1].since == both[0].since and both[1].value is not None and both[1].value <= 0.2
            # Once the breakers have probed the recovered models, every answer is good again.
            statuses: set[str] = set()
            for _ in range(30):
                statuses = {r.status.value for r in await send(client, 10, "after")}
                if statuses == {"ok"}:
                    break
                await asyncio.sleep(1)
            assert statuses == {"ok"}
        await asyncio.sleep(2)
        assert len(await alerts_on_topic(stack)) == 2, "no repeated transitions"
        assert [body["state"] for body in received] == ["firing", "resolved"]
        assert [Alert.model_validate(body) for body in received] == both
    finally:
        await runner.cleanup()

    worker = next(p for p in stack.settings.run_dir.glob("worker-*.ready"))
    url = json.loads(worker.read_text())["metrics_url"]
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(url)).text
        simulator = (await http.get(f"{stack.simulator_root}/metrics")).text
    assert "process_cpu_seconds" in {family.name for family in text_string_to_metric_families(simulator)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    failed_count = sum(
        v
        for (name, labels), v in samples.items()
        if name == "sluice_requests_total"
        and ("code", "model_unavailable") in labels
        and ("status", "failed") in labels
    )
    assert failed_count >= 6
    assert any(name == "sluice_stage_duration_seconds_count" for name, _ in samples)
