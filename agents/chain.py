"""Run consecutive stages in-process: a request is handed from one stage's function to the next
without a Kafka hop, until the chain's layout says the next stage starts a chain of its own.

Pure: no Kafka, no Faust. The wiring (agents/faust_wiring.py) publishes what a run returns.
Each stage still produces its own event with its own duration, so the per-stage latency table
stays true whatever the layout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from schemas import Envelope, ErrorCode, Event, Stage, Status
from sluice.layout import INPUT_TOPIC, ChainLayout, next_stage
from sluice.outcome import Outcome, fail, utcnow
from topics import TopicSpec

log = logging.getLogger("sluice.chain")

# A stage as the chain sees it: the request in, the stage's decision out. None means there is
# nothing to do (the request was already answered: a redelivered copy).
Step = Callable[[Envelope], Awaitable[Outcome | None]]

# validate -> sanitize -> route -> infer -> validate_response, plus retries back to infer; a run
# longer than this is a bug (a retry loop that never ends), answered as `internal`.
MAX_STEPS_PER_RUN = 32


@dataclass(frozen=True)
class ChainRun:
    """What one run decided: the last stage's outcome (a final response, a forward to the next
    chain's topic, or an event only), and the events of the stages before it, in order."""

    outcome: Outcome | None
    next_topic: TopicSpec | None
    earlier: tuple[Event, ...]


async def guarded(stage: Stage, envelope: Envelope, step: Step) -> Outcome | None:
    """A bug in a stage must still answer the request: it becomes a typed `internal` failure."""
    try:
        return await step(envelope)
    except Exception as exc:  # turned into the request's `internal` error, and logged
        log.exception("stage %s failed on request %s", stage.value, envelope.request_id)
        return fail(
            envelope,
            stage,
            Status.FAILED,
            ErrorCode.INTERNAL,
            f"{stage.value} failed unexpectedly ({type(exc).__name__})",
            now=utcnow(),
            duration_ms=0.0,
        )


async def run_chain(
    envelope: Envelope, start: Stage, layout: ChainLayout, steps: Mapping[Stage, Step]
) -> ChainRun:
    """Run stages from `start` for as long as the layout keeps the next one in this chain."""
    stage = start
    earlier: list[Event] = []
    for _ in range(MAX_STEPS_PER_RUN):
        outcome = await guarded(stage, envelope, steps[stage])
        if outcome is None or outcome.forward is None:
            return ChainRun(outcome, None, tuple(earlier))
        following = next_stage(stage)
        if following is None:
            raise ValueError(f"{stage.value} forwarded a request past the last stage")
        if not layout.in_process(stage, following):
            return ChainRun(outcome, INPUT_TOPIC[following], tuple(earlier))
        earlier.append(outcome.event)
        envelope, stage = outcome.forward, following
    log.error("request %s ran %d stages without an answer", envelope.request_id, MAX_STEPS_PER_RUN)
    runaway = fail(
        envelope,
        stage,
        Status.FAILED,
        ErrorCode.INTERNAL,
        f"the request did not finish within {MAX_STEPS_PER_RUN} stage runs",
        now=utcnow(),
        duration_ms=0.0,
    )
    return ChainRun(runaway, None, tuple(earlier))
