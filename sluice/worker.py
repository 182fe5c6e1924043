"""`sluice worker`: one Faust worker process running every stage agent.

Stages are found through the `sluice.stages` entry point so that this core package never
imports the agents package (imports flow agents -> sluice -> schemas/topics)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import faust

from sluice.app import Pipeline, StageRegistrar, create_app
from sluice.bus import ensure_topics
from sluice.edge.http import HealthServer, start_health_server
from sluice.observability.prom import observe_event
from sluice.settings import Settings
from sluice.supervise import all_readiness
from topics import REQUESTS

STAGES_ENTRY_POINT = "sluice.stages"
log = logging.getLogger("sluice.worker")


def load_stage_registrars() -> list[StageRegistrar]:
    found = [ep.load() for ep in entry_points(group=STAGES_ENTRY_POINT)]
    if not found:
        raise RuntimeError(
            f"no stages registered under the {STAGES_ENTRY_POINT!r} entry point: is Sluice installed "
            "(pip install -e .)?"
        )
    return found


def build_pipeline(settings: Settings) -> Pipeline:
    pipeline = Pipeline(settings, create_app(settings))
    pipeline.event_observers.append(observe_event)
    for register in load_stage_registrars():
        register(pipeline)
    apply_changelog_layout(pipeline.app, settings)
    return pipeline


def apply_changelog_layout(app: faust.App, settings: Settings) -> None:
    """Faust creates its tables' changelog topics itself; give them the configured
    min.insync.replicas (partitions follow the table, replication the app's setting)."""
    for table in app.tables.values():
        topic = table.changelog_topic
        min_insync = str(settings.topic_min_insync_replicas)
        topic.config = {**(topic.config or {}), "min.insync.replicas": min_insync}


def ready_file(settings: Settings, pid: int | None = None) -> Path:
    return settings.run_dir / f"worker-{pid or os.getpid()}.ready"


class SluiceWorker(faust.Worker):  # type: ignore[misc]
    """A Faust worker that marks itself ready (a file under SLUICE_HOME/run, and /readyz) once
    its partitions are assigned and its tables recovered: from then on requests can flow.
    SIGTERM/SIGINT drain first: stop taking records, let the ones in flight finish and be
    acked, commit, then Faust's own stop. /healthz, /readyz and /metrics are served on
    SLUICE_WORKER_HOST:SLUICE_WORKER_PORT from the start (readiness false until ready)."""

    def __init__(self, settings: Settings, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(pipeline.app, **kwargs)
        self.sluice_settings = settings
        self.pipeline = pipeline
        self.metrics: HealthServer | None = None
        self.serving = False
        self.draining = False
        pipeline.app.on_partitions_assigned.connect(self.on_rebalanced)

    async def readiness(self) -> dict[str, bool]:
        app = self.pipeline.app
        return {
            "worker": self.serving and not app.crashed,  # crashed: stopping, to be restarted
            "assigned": self.serving and not app.rebalancing,
            "tables_recovered": self.serving and app.tables.recovery.completed.is_set(),
            **all_readiness(),  # supervised background tasks (the route-advice follower)
        }

    async def on_first_start(self) -> None:
        settings = self.sluice_settings
        self.metrics = await start_health_server(settings.worker_host, settings.worker_port, self.readiness)
        await super().on_first_start()

    def _on_sigterm(self) -> None:
        self._drain_then_stop(signal.SIGTERM)

    def _on_sigint(self) -> None:
        self._drain_then_stop(signal.SIGINT)

    def _drain_then_stop(self, signum: signal.Signals) -> None:
        if self.draining or not self.serving:  # a second signal, or nothing started: stop now
            self._schedule_shutdown(signum)
            return
        self.draining = True
        if self.metrics is not None:
            self.metrics.lifecycle.draining = True
        self.add_future(self._drain(signum))

    async def _drain(self, signum: signal.Signals) -> None:
        """Faust's own partition-revoke sequence, applied to the whole assignment: no more
        fetching, records queued but not started are dropped (not acked, so not committed:
        the next worker gets them), records started are finished and acked, then committed."""
        app = self.pipeline.app
        consumer = app.consumer
        consumer.stop_flow()
        app.flow_control.suspend()
        consumer.pause_partitions(consumer.assignment())
        app.flow_control.clear()
        timeout = self.sluice_settings.drain_timeout_s
        log.info("draining: waiting up to %.0f s for records in flight", timeout)
        try:
            await asyncio.wait_for(consumer.wait_empty(), timeout)
        except TimeoutError:
            log.warning("drain timed out after %.0f s; unfinished records will be redelivered", timeout)
        # wait_empty's commit returns without committing when a periodic commit is under way
        # (Faust lets one coroutine commit at a time); the acks after that one must be committed.
        await consumer.maybe_wait_for_commit_to_finish()
        await consumer.force_commit()
        await app.producer.flush()
        log.info("drained: records in flight finished and committed")
        self._schedule_shutdown(signum)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Faust's terminal spinner lowers the root logger to DEBUG so it can spin on every record;
        with it, every aiokafka debug line builds a LogRecord (~6% of the worker's CPU under load).
        A worker's output is a log file, so no spinner: the root logger keeps the asked level."""
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        settle_garbage_collector()
        self.serving = True
        self.write_ready_file()

    def write_ready_file(self) -> None:
        """pid, app id, /metrics URL and the requests partitions this worker owns right now
        (rewritten after every rebalance, so an operator sees who does what)."""
        settings = self.sluice_settings
        path = ready_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics_url = f"{self.metrics.url}/metrics" if self.metrics is not None else None
        requests_topic = REQUESTS.name(settings.topic_prefix)
        owned = sorted(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == requests_topic
        )
        info = {
            "pid": os.getpid(),
            "app_id": settings.app_id,
            "metrics_url": metrics_url,
            "partitions": owned,
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(info))
        temporary.replace(path)  # readers never see half a file

    async def on_rebalanced(self, _sender: Any, assigned: Any = None, **_: Any) -> None:
        if ready_file(self.sluice_settings).exists():  # after start-up: keep the file current
            self.write_ready_file()

    async def on_stop(self) -> None:
        app = self.pipeline.app
        if app.crashed:  # whatever crashed it (a publish, a timer): the stop must not hang
            self.pipeline.exit_if_stop_hangs(app.crash_reason or RuntimeError("worker crashed"))
        ready_file(self.sluice_settings).unlink(missing_ok=True)
        if self.metrics is not None:
            await self.metrics.stop()
        for close in self.pipeline.on_stop:
            await close()
        await super().on_stop()


YOUNG_GENERATION_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Move everything built at start-up (modules, the Faust app, tables) out of the collector's
    sight and collect the young generation less often. Measured under load: full collections
    paused the worker for up to 88 ms, mostly traversing start-up objects that never die, and
    young collections ran ~12 times a second; both showed up as tail latency."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def install_fast_event_loop() -> None:
    """uvloop roughly halves the worker's socket and scheduling overhead; asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Blocking: create topics, then run the worker until SIGINT/SIGTERM."""
    install_fast_event_loop()
    asyncio.run(ensure_topics(settings))
    (settings.worker_datadir or settings.home / "worker").mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(settings)
    worker = SluiceWorker(settings, pipeline, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
