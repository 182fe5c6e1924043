"""A publish failure injected mid-load, end to end: the real broker (a Tansu of this test's own),
a real worker process, the simulator over HTTP and SluiceClient.

The broker is frozen (SIGSTOP) while requests are in flight, for longer than the worker's publish
window: the worker's publishes go unanswered, it gives up (PublishFailed), leaves those records
unacked and exits; a supervisor loop restarts it, the way systemd or Kubernetes would, while the
broker is still frozen. Once the broker is back (SIGCONT), the records the worker did not publish
are delivered again and every request sent is answered exactly once. Measured numbers are
printed (run with -s to see them)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from schemas import Response
from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker, start_broker
from tests.e2e.stack import Stack, eventually, responses_by_correlation, stack_settings

pytestmark = pytest.mark.e2e

REQUESTS = 60
FREEZE_AT = 20  # the broker freezes after this many requests were sent
SEND_INTERVAL_S = 0.05
MODEL_LATENCY_MS = 300  # model calls are always in flight when the broker freezes
PUBLISH_RETRY_S = 2.0
CRASH_STOP_TIMEOUT_S = 2.0


@pytest.fixture()
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker for this test alone: freezing the session's broker would stall other tests."""
    running = start_broker(log_path=tmp_path / "tansu.log")
    try:
        yield running
    finally:
        os.kill(running.process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
        running.stop()


@dataclass
class Supervised:
    """Restarts the worker whenever it exits, as a process supervisor would."""

    stack: Stack
    exits: list[int] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            worker = self.stack.processes["worker"]
            code = worker.poll()
            if code is not None:
                self.exits.append(code)
                self.stack.start("worker")
            await asyncio.sleep(0.1)


async def test_a_publish_failure_mid_load_is_answered_after_recovery(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = stack_settings(
        own_broker.bootstrap,
        tmp_path,
        "pf",
        publish_retry_s=PUBLISH_RETRY_S,
        crash_stop_timeout_s=CRASH_STOP_TIMEOUT_S,
    )
    stack = Stack(settings, tmp_path / "logs")
    supervisor = Supervised(stack)
    supervising: asyncio.Task[None] | None = None
    try:
        stack.start("simulator", SLUICE_SIMULATOR_LATENCY_MS=str(MODEL_LATENCY_MS))
        stack.wait_simulator_ready()
        stack.wait_worker_ready(stack.start("worker"))
        supervising = asyncio.create_task(supervisor.run())
        ids = [f"pf-{index}-{uuid.uuid4().hex[:8]}" for index in range(REQUESTS)]
        async with SluiceClient(settings=settings, timeout_s=90) as client:
            sent: list[asyncio.Task[Response]] = []
            frozen_at = 0.0
            for index, correlation_id in enumerate(ids):
                if index == FREEZE_AT:
                    os.kill(own_broker.process.pid, signal.SIGSTOP)
                    frozen_at = time.monotonic()
                prompt = f"publish fault question {index}"
                sent.append(
                    asyncio.create_task(
                        client.request(prompt, correlation_id=correlation_id, model="sim-small")
                    )
                )
                await asyncio.sleep(SEND_INTERVAL_S)
            # frozen until the worker gave up on its publishes and exited, and its replacement runs
            await eventually(lambda: len(supervisor.exits) >= 1, timeout=60, interval=0.1)
            worker_exited_after = time.monotonic() - frozen_at
            await eventually(lambda: stack.processes["worker"].poll() is None, timeout=10, interval=0.1)
            os.kill(own_broker.process.pid, signal.SIGCONT)
            frozen_for = time.monotonic() - frozen_at
            replies = await asyncio.gather(*sent)
            answered_after = time.monotonic() - frozen_at
        supervising.cancel()
        counts = await responses_by_correlation(settings)
        log = "".join(path.read_text(errors="replace") for path in stack.logs.glob("worker*.log"))
        calls = stack.simulator_calls("sim-small")
    finally:
        if supervising is not None:
            supervising.cancel()
        stack.stop_all()

    unpublished = log.count("record left unacked")
    print(
        f"\npublish fault: broker frozen {frozen_for:.1f}s (publish window {PUBLISH_RETRY_S}s); "
        f"worker exited {worker_exited_after:.1f}s after the freeze with {supervisor.exits}, "
        f"{unpublished} outcome(s) not published; {len(replies)}/{REQUESTS} answered "
        f"{answered_after:.1f}s after the freeze; {calls - REQUESTS} model call(s) made again; "
        f"answers per request: {sorted(set(counts[c] for c in ids))}"
    )
    assert unpublished > 0, f"no publish failed: the fault was not injected; logs in {stack.logs}"
    assert supervisor.exits[0] != 0, "a worker whose publishes failed exits with an error"
    assert [r.correlation_id for r in replies] == ids
    assert all(r.status.value == "ok" for r in replies), [r.error for r in replies if r.error]
    assert {c: counts[c] for c in ids if counts[c] != 1} == {}, "exactly one answer per request"
