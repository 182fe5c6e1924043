"""Background tasks that must not die silently, on mode's supervisors (what Faust itself uses).

Each task (a reply reader, the route-advice follower, the sink's loops and monitors) runs as a
`SupervisedTask`, a mode Service. When its coroutine raises, or returns although it should run
until stopped, the service crashes: the death is logged with its reason, `readiness()` turns
false for it, and its `Supervisor` (a OneForOneSupervisor) restarts it after an exponential
backoff (`base_s` doubling up to `max_s`). A task that then runs for `healthy_after_s` has its
backoff reset. Every supervisor alive in a process is listed by `all_readiness()`."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from mode import Service
from mode.supervisors import OneForOneSupervisor

log = logging.getLogger("sluice.supervise")

TaskFactory = Callable[[], Awaitable[None]]


class TaskEnded(RuntimeError):
    """A background loop returned on its own: as bad as a crash, since nobody does its work."""


class SupervisedTask(Service):  # type: ignore[misc]
    """One background coroutine as a restartable service."""

    def __init__(
        self, name: str, factory: TaskFactory, done: Callable[[], bool] | None = None, **options: Any
    ) -> None:
        self.task_name = name
        self.factory = factory
        self.done = done  # when it returns True, the coroutine returning is its normal end
        self.starts = 0
        self.deaths = 0
        self.last_error: str | None = None
        self.running_since: float | None = None
        super().__init__(**options)

    @property
    def label(self) -> str:
        return f"task {self.task_name}"

    @property
    def shortlabel(self) -> str:
        return self.task_name

    @Service.task
    async def _run(self) -> None:
        self.starts += 1
        self.running_since = asyncio.get_running_loop().time()
        try:
            await self.factory()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._died(f"{type(exc).__name__}: {exc}")
            raise
        self.running_since = None
        if not self.should_stop and not (self.done is not None and self.done()):
            self._died("returned")
            raise TaskEnded(f"{self.task_name} returned")

    def _died(self, reason: str) -> None:
        self.deaths += 1
        self.last_error = reason
        self.running_since = None
        log.error("background task %s died (%s); it will be restarted", self.task_name, reason)

    @property
    def alive(self) -> bool:
        return self.started and not self.crashed and not self.should_stop and self.running_since is not None


_LIVE: weakref.WeakSet[Supervisor] = weakref.WeakSet()


class Supervisor(OneForOneSupervisor):  # type: ignore[misc]
    """Restarts each crashed task alone, after its backoff."""

    def __init__(
        self,
        name: str,
        *,
        base_s: float = 0.2,
        max_s: float = 5.0,
        healthy_after_s: float = 30.0,
        **options: Any,
    ) -> None:
        # mode's restart budget is a rate limit that exits the process; the backoff paces instead.
        super().__init__(max_restarts=1000.0, over=1.0, **options)
        self.name, self.base_s, self.max_s, self.healthy_after_s = name, base_s, max_s, healthy_after_s
        self.tasks: dict[str, SupervisedTask] = {}
        self._failures: dict[str, int] = {}
        _LIVE.add(self)

    def supervise(
        self, name: str, factory: TaskFactory, done: Callable[[], bool] | None = None
    ) -> SupervisedTask:
        """Add a task; it starts with the supervisor (or at once when the supervisor runs).
        `done()` true means the coroutine returning is its normal end, not a death."""
        task = SupervisedTask(name, factory, done, loop=self.loop)
        self.tasks[name] = task
        self.add(task)
        if self.started:
            self.wakeup()
        return task

    def backoff_s(self, name: str) -> float:
        return float(min(self.max_s, self.base_s * 2 ** max(0, self._failures.get(name, 0) - 1)))

    async def restart_service(self, service: Any) -> None:
        name = getattr(service, "task_name", repr(service))
        ran_s = service.loop.time() - service.running_since if getattr(service, "running_since", None) else 0
        self._failures[name] = 1 if ran_s >= self.healthy_after_s else self._failures.get(name, 0) + 1
        delay = self.backoff_s(name)
        log.warning("restarting %s in %.2f s (failure %d)", name, delay, self._failures[name])
        await asyncio.sleep(delay)
        if not self.should_stop:
            await service.restart()

    def readiness(self) -> dict[str, bool]:
        """One entry per task: true while it runs, false from its death until its restart."""
        return {f"{self.name}.{name}": task.alive for name, task in self.tasks.items()}


def all_readiness() -> dict[str, bool]:
    """The readiness of every supervised task in this process (for /healthz)."""
    parts: dict[str, bool] = {}
    for supervisor in list(_LIVE):
        if supervisor.started and not supervisor.should_stop:
            parts.update(supervisor.readiness())
    return parts


async def run_supervised(name: str, factory: TaskFactory, **options: Any) -> None:
    """Run one task under its own supervisor until cancelled (for callers that hold a plain
    asyncio task, e.g. the worker's route-advice follower)."""
    supervisor = Supervisor(name, **options)
    supervisor.supervise(name, factory)
    await supervisor.start()
    try:
        await asyncio.Event().wait()
    finally:
        await supervisor.stop()
