"""Steady open-loop load through the Python client: `sluice load` and the benchmarks use it.

Open loop means requests are sent on schedule whether or not earlier ones have answered, so
a slow pipeline shows up as latency and timeouts instead of silently lowering the rate."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluice.edge.client import SluiceClient, SluiceTimeout


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class LoadReport:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def answered(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != "timeout")

    @property
    def succeeded(self) -> int:
        return self.statuses.get("ok", 0)

    @property
    def goodput(self) -> float:
        """Successful answers per second: a typed error or a timeout is an answer, not throughput."""
        return self.succeeded / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "succeeded": self.succeeded,
            "statuses": dict(self.statuses),
            "duration_s": round(self.duration_s, 3),
            "goodput_rps": round(self.goodput, 1),
            "latency_ms": {f"p{q}": round(percentile(self.latencies_ms, q), 2) for q in (50, 95, 99)},
        }


async def run_load(
    client: SluiceClient,
    rate: float,
    duration_s: float,
    *,
    make_request: Callable[[int], dict[str, Any]],
    on_progress: Callable[[int, int], None] | None = None,
    settle_s: float = 30.0,
) -> LoadReport:
    """Send `rate` requests/s for `duration_s`; wait up to `settle_s` for the last answers.
    `duration_s` of the report runs from the first send to the last answer."""
    report = LoadReport()
    total = int(rate * duration_s)
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()

    async def one(index: int) -> None:
        # Latency counts from the scheduled send time, so a generator that falls behind cannot
        # hide a slow system (no coordinated omission).
        sent_at = started + index / rate
        try:
            response = await client.request(**make_request(index), timeout_s=settle_s + duration_s)
        except SluiceTimeout:
            report.statuses["timeout"] += 1
            return
        report.latencies_ms.append((time.perf_counter() - sent_at) * 1000)
        report.statuses[response.status.value] += 1
        if on_progress is not None:
            on_progress(report.answered, total)

    for index in range(total):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
        report.sent += 1
    await asyncio.gather(*tasks)
    report.duration_s = time.perf_counter() - started
    return report
