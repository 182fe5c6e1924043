"""Supervised background tasks: a death is counted and shown on readiness, the task is restarted
(with backoff) until it runs, a normal end under `done()` is no death, and all_readiness lists
every running supervisor's tasks."""

from __future__ import annotations

import asyncio

from sluice.supervise import Supervisor, all_readiness

LONG = 30.0  # an upper bound for waiting on events, never a measured duration


async def test_a_dying_task_is_restarted_and_readiness_follows() -> None:
    runs: list[int] = []
    begun, died, running, release = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        begun.set()
        if len(runs) == 1:
            await release.wait()
            died.set()
            raise RuntimeError("injected")
        running.set()
        await asyncio.Event().wait()

    supervisor = Supervisor("unit", base_s=0.05, max_s=0.05)
    task = supervisor.supervise("flaky", flaky)
    await supervisor.start()
    try:
        await asyncio.wait_for(begun.wait(), LONG)
        assert supervisor.readiness() == {"unit.flaky": True}
        assert all_readiness()["unit.flaky"] is True
        release.set()
        await asyncio.wait_for(died.wait(), LONG)
        await asyncio.sleep(0)
        assert supervisor.readiness() == {"unit.flaky": False}
        await asyncio.wait_for(running.wait(), LONG)
        assert supervisor.readiness() == {"unit.flaky": True}
        assert (task.deaths, task.starts, task.last_error) == (1, 2, "RuntimeError: injected")
    finally:
        await supervisor.stop()
    assert "unit.flaky" not in all_readiness()


async def test_returning_is_a_death_unless_done() -> None:
    stop = asyncio.Event()
    returned = asyncio.Event()

    async def quits() -> None:
        returned.set()

    async def finishes() -> None:
        await stop.wait()

    supervisor = Supervisor("ends", base_s=10.0)
    quitter = supervisor.supervise("quits", quits)
    finisher = supervisor.supervise("finishes", finishes, done=stop.is_set)
    await supervisor.start()
    try:
        await asyncio.wait_for(returned.wait(), LONG)
        await asyncio.sleep(0)
        assert quitter.deaths == 1 and supervisor.readiness()["ends.quits"] is False
        stop.set()
        await asyncio.sleep(0.01)
        assert finisher.deaths == 0
    finally:
        await supervisor.stop()


def test_backoff_doubles_up_to_its_cap() -> None:
    supervisor = Supervisor("b", base_s=0.2, max_s=1.0)
    delays = []
    for failures in range(1, 6):
        supervisor._failures["t"] = failures
        delays.append(supervisor.backoff_s("t"))
    assert delays == [0.2, 0.4, 0.8, 1.0, 1.0]
