"""Scale-out on the real broker: two worker processes in one consumer group share the request
partitions; when one is killed mid-load, the survivor takes its partitions over and nothing is
lost or answered twice. The takeover time is measured and printed (run with -s)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker
from sluice.worker import ready_file
from tests.e2e.stack import Stack, responses_by_correlation, responses_of, running_stack, stack_settings
from topics import REQUESTS

pytestmark = pytest.mark.e2e

TAKEOVER_LIMIT_S = 15.0


def owned_partitions(stack: Stack, name: str) -> set[int]:
    path = ready_file(stack.settings, stack.processes[name].pid)
    try:
        return set(json.loads(path.read_text())["partitions"])
    except (OSError, ValueError, KeyError):
        return set()


async def wait_for(check: object, timeout: float) -> float:
    """Seconds until `check()` holds; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if callable(check) and check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


@pytest.mark.parametrize("consumer_in_loop", [True, False], ids=["consumer-in-loop", "consumer-thread"])
async def test_two_workers_share_partitions_and_the_survivor_takes_over(
    broker: EmbeddedBroker, tmp_path: Path, consumer_in_loop: bool
) -> None:
    """In both places the worker's Kafka consumer can run (SLUICE_CONSUMER_IN_LOOP)."""
    settings = stack_settings(broker.bootstrap, tmp_path, "so", consumer_in_loop=consumer_in_loop)
    everything = set(range(REQUESTS.partitions))
    with running_stack(settings, tmp_path / "logs") as stack:
        second = stack.start("worker-2")
        stack.wait_worker_ready(second)
        await wait_for(
            lambda: (
                owned_partitions(stack, "worker") | owned_partitions(stack, "worker-2") == everything
                and bool(owned_partitions(stack, "worker"))
                and bool(owned_partitions(stack, "worker-2"))
            ),
            timeout=60,
        )
        first_share, second_share = owned_partitions(stack, "worker"), owned_partitions(stack, "worker-2")
        assert not first_share & second_share  # one owner per partition

        ids = [f"so-{i}-{uuid.uuid4().hex[:6]}" for i in range(300)]
        async with SluiceClient(settings=settings, timeout_s=120) as client:

            async def send_all() -> list[object]:
                tasks = []
                for i, cid in enumerate(ids):
                    tasks.append(asyncio.create_task(client.request(f"scale out {i}", correlation_id=cid)))
                    await asyncio.sleep(1 / 30)  # 30 req/s, open loop
                return list(await asyncio.gather(*tasks))

            sending = asyncio.create_task(send_all())
            await asyncio.sleep(3.0)
            stack.kill("worker")
            takeover_s = await wait_for(lambda: owned_partitions(stack, "worker-2") == everything, timeout=60)
            responses = await sending
        print(
            f"\nscale-out: partitions {sorted(first_share)} / {sorted(second_share)}; "
            f"takeover {takeover_s:.1f} s"
        )
        assert takeover_s <= TAKEOVER_LIMIT_S
        assert len(responses) == len(ids)
        counts = await responses_by_correlation(settings)
        missing = [cid for cid in ids if counts[cid] == 0]
        doubled = [cid for cid in ids if counts[cid] > 1]
        details = [await responses_of(settings, cid) for cid in doubled[:3]]
        assert not missing and not doubled, f"missing={missing[:5]} doubled={doubled[:5]} {details}"
