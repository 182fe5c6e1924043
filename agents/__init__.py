"""The pipeline's stages, one module each (validate, sanitize, route, infer, validate_response).

Each module holds the stage's logic as plain functions; `register_stages` below only wires them
to Faust agents. The worker finds this function through the `sluice.stages` entry point.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agents import admission
from agents.infer import Resilience, breaker_event, candidates, infer
from agents.inference.cache import ResponseCache
from agents.route import route
from agents.routing.advice import AdviceBook
from agents.routing.feed import follow_route_advice
from agents.sanitize import sanitize
from agents.validate import DeadLettered, Limits, RawRecord, validate_record
from agents.validate_response import pii_findings, validate_response
from schemas import Admission, Envelope, ErrorCode, Stage, Status
from sluice.app import Pipeline, current_partition, run_bounded
from sluice.codec import Poison
from sluice.outcome import Outcome, fail, utcnow
from sluice.providers.catalog import Catalog, load_catalog
from sluice.providers.openai_http import ChatClient
from topics import ADMISSION, INFERRED, ROUTE_ADVICE, ROUTED, SANITIZED, VALIDATED, TopicSpec

log = logging.getLogger("sluice.agents")

__all__ = ["register_stages"]


async def guarded(stage: Stage, envelope: Envelope, compute: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """A bug in a stage must still answer the request: it becomes a typed `internal` failure."""
    try:
        return await compute()
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


def register_stages(pipeline: Pipeline) -> None:
    """Define the five stage agents (and the table expiry timer) on the pipeline's Faust app."""
    app, settings = pipeline.app, pipeline.settings
    catalog = load_catalog(settings)
    limits = Limits.from_settings(settings, pipeline.default_reply_to)

    @app.agent(pipeline.requests, name="validate")
    async def validate_agent(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            record = RawRecord(
                value=event.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
            )
            decision = validate_record(record, limits, pipeline.seen, utcnow(), settings.tenant)
            if isinstance(decision, DeadLettered):
                await pipeline.dead_letter(decision.letter)
                continue
            if decision.outcome.forward is not None:
                # Only accepted requests are remembered: a client may fix a rejected one and re-send it.
                pipeline.remember(pipeline.seen, decision.dedupe_key, request_id=decision.request_id)
            # Quotas: a tenant with limits goes through the admit step; others skip its hop.
            quota_hop = decision.outcome.forward is not None and pipeline.has_quota(
                decision.outcome.forward.tenant
            )
            await pipeline.publish(decision.outcome, ADMISSION if quota_hop else VALIDATED)

    register_admission(pipeline, catalog)

    def simple_stage(
        source: TopicSpec, target: TopicSpec, stage: Stage, logic: Callable[[Envelope], Outcome]
    ) -> None:
        async def run(stream: Any) -> None:
            async for envelope in _envelopes(pipeline, stream, stage):

                async def compute(envelope: Envelope = envelope) -> Outcome:
                    return logic(envelope)

                await pipeline.publish(await guarded(stage, envelope, compute), target)

        app.agent(pipeline.envelope_topic(source), name=stage.value)(run)

    simple_stage(
        VALIDATED,
        SANITIZED,
        Stage.SANITIZE,
        lambda env: sanitize(env, utcnow(), tenant=settings.tenant(env.tenant)),
    )
    # --- infer: cache, retries, breakers, fallbacks and per-model backpressure ---------------
    client = ChatClient(settings)
    cache = ResponseCache(
        pipeline.cache.data,
        ttl_s=settings.cache_ttl_s,
        max_entries=settings.cache_max_entries,
        changelog=pipeline.cache.send_changelog,
    )
    resilience = Resilience.from_settings(settings, catalog, cache)

    advice = register_route_advice(pipeline)
    simple_stage(
        SANITIZED,
        ROUTED,
        Stage.ROUTE,
        # Models whose breaker is open go to the end of the chain (route_reason says so).
        lambda env: route(
            env,
            catalog,
            utcnow(),
            tenant=settings.tenant(env.tenant),
            advice=advice,
            unavailable=resilience.breakers.unavailable(time.monotonic()),
        ),
    )

    async def publish_breaker_changes() -> None:
        """Breaker state changes become infer-stage events (and log lines)."""
        for transition in resilience.breakers.drain():
            log.warning(
                "circuit breaker for %s: %s -> %s (%s)",
                transition.model,
                transition.previous.value,
                transition.state.value,
                transition.reason,
            )
            await pipeline.publish(Outcome(event=breaker_event(transition)))

    async def admit_to_model(envelope: Envelope) -> Callable[[], None]:
        """Wait for a slot of the routed model before the record is handed over: a full model
        pauses consumption instead of piling up calls that would time out. A request whose
        deadline passes while it waits goes on without a slot; infer answers it with a timeout
        without calling the model."""
        remaining = (envelope.deadline_at - utcnow()).total_seconds()
        gates = resilience.gates
        if gates is None or remaining <= 0:
            return _no_release
        gate = gates.gate(candidates(envelope, catalog)[0])
        try:
            async with asyncio.timeout(remaining):
                await gate.acquire()
        except TimeoutError:
            return _no_release
        return gate.release

    async def call_model(envelope: Envelope) -> None:
        if pipeline.already_answered(envelope.correlation_id, envelope.request_id):
            return  # redelivered after it was answered: do not pay twice
        model = candidates(envelope, catalog)[0]
        partition = current_partition()
        outcome = await guarded(
            Stage.INFER,
            envelope,
            lambda: infer(envelope, catalog, client, resilience=resilience, held=model, partition=partition),
        )
        await pipeline.publish(outcome, INFERRED)
        await publish_breaker_changes()

    @app.timer(interval=1.0)
    async def publish_breaker_transitions() -> None:
        """Every call drains the transitions after publishing its outcome; this catches those
        of calls that never got there (a stage bug, a call cancelled at shutdown)."""
        await publish_breaker_changes()

    @app.timer(interval=settings.dedupe_sweep_interval_s)
    async def expire_cache_entries() -> None:
        expired = cache.sweep(time.time())
        if expired:
            log.info("expired %d cache entries (hits %d, misses %d)", expired, cache.hits, cache.misses)

    # --- end of infer wiring ------------------------------------------------------------------

    async def review_answer(envelope: Envelope) -> None:
        async def compute() -> Outcome:
            return validate_response(
                envelope,
                utcnow(),
                tenant=settings.tenant(envelope.tenant),
                catalog=catalog,
                pii_detector=pii_findings,
            )

        # A retry goes back to infer (the routed topic) with its new model or repair turn.
        await pipeline.publish(await guarded(Stage.VALIDATE_RESPONSE, envelope, compute), ROUTED)

    concurrent_stage(
        pipeline, ROUTED, Stage.INFER, call_model, settings.infer_max_in_flight, admit=admit_to_model
    )
    concurrent_stage(pipeline, INFERRED, Stage.VALIDATE_RESPONSE, review_answer, settings.infer_max_in_flight)
    pipeline.on_stop.append(client.close)  # the shared HTTP clients close with the worker

    @app.timer(interval=settings.dedupe_sweep_interval_s)
    async def expire_idempotence_entries() -> None:
        expired = pipeline.sweep(pipeline.seen, settings.dedupe_window_s)
        expired += pipeline.sweep(pipeline.answered, settings.dedupe_window_s)
        expired += pipeline.sweep(pipeline.replies, settings.dedupe_window_s, tombstones=False)
        if expired:
            log.info("expired %d idempotence entries", expired)


# --- Feedback loop -> router ------------------------------------------------------------------
# The feedback evaluator publishes RouteAdvice on the compacted route-advice topic (1 partition,
# key `route|model`). Each worker follows the whole topic from its start, outside any consumer
# group (see agents/routing/feed.py), into one AdviceBook that the route stage reads for every
# `auto` request: every worker applies the same advice, also right after a restart.


def register_route_advice(pipeline: Pipeline) -> AdviceBook:
    """Start following the route-advice topic when the worker starts; return the book it fills."""
    book = AdviceBook()
    topic = ROUTE_ADVICE.name(pipeline.settings.topic_prefix)

    @pipeline.app.task
    async def follow_advice() -> None:
        follower = asyncio.create_task(
            follow_route_advice(pipeline.settings.bootstrap, topic, book), name="route-advice"
        )

        async def stop_following() -> None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

        pipeline.on_stop.append(stop_following)

    return book


# --- quotas: the admit step (agents/admission.py) ----------------------------------------------


def register_admission(pipeline: Pipeline, catalog: Catalog) -> None:
    """The admit agent: rate limits and budgets per tenant, from the `quota` table; admitted
    requests go on to sanitize, refused ones are answered. Plus the expiry of lost holds."""
    app, settings, table = pipeline.app, pipeline.settings, pipeline.quota
    config = admission.QuotaConfig.from_settings(settings)

    def read(key: str) -> dict[str, Any] | None:
        value = table.data.get(key)
        return value if isinstance(value, dict) else None

    def write(decision: admission.Decision, partition: int) -> None:
        # In order, to the same changelog partition: a crash leaves a prefix (see admission.py).
        for key, value in decision.writes:
            if value is None:
                table.data.pop(key, None)
            else:
                value["p"] = partition
                table.data[key] = value
            table.send_changelog(partition, key, value)

    @app.agent(pipeline.admission, name="admit")
    async def admit_agent(stream: Any) -> None:
        async for event in stream.events():
            record = event.value
            if isinstance(record, Poison):
                await pipeline.dead_letter_poison(record, "admit")
                continue
            assert isinstance(record, Admission)
            now = utcnow()
            if record.request is not None:
                envelope = record.request
                rules = settings.tenant(envelope.tenant)
                need = admission.reservation_for(envelope, rules, catalog)
                decision = admission.admit(envelope, rules, need, read, config, now)
            else:
                assert record.settlement is not None
                decision = admission.settle(record.settlement, read, config, now)
            write(decision, int(event.message.partition))
            if decision.outcome is not None:
                await pipeline.publish(decision.outcome, VALIDATED)

    @app.timer(interval=settings.quota_sweep_interval_s)
    async def expire_quota_holds() -> None:
        now = utcnow()
        to_expire, to_forget = admission.sweepable(list(table.data.items()), config, now)
        for request_id in to_expire:  # through the topic: ordered with the tenant's other changes
            hold = read(admission.hold_key(request_id))
            if hold is not None:
                expiry = admission.expiry_of(hold, request_id, now)
                await pipeline.send(
                    pipeline.admission_name, expiry.tenant.encode(), Admission(settlement=expiry)
                )
        for key in to_forget:
            hold = read(key)
            write(admission.Decision(writes=[(key, None)]), int((hold or {}).get("p", 0)))
        if to_expire or to_forget:
            log.info("quota holds: %d expiring unsettled, %d forgotten", len(to_expire), len(to_forget))


# --- end quotas ----------------------------------------------------------------------------------


def concurrent_stage(
    pipeline: Pipeline,
    source: TopicSpec,
    stage: Stage,
    handle: Callable[[Envelope], Awaitable[None]],
    max_in_flight: int,
    admit: Callable[[Envelope], Awaitable[Callable[[], None]]] | None = None,
) -> None:
    """An agent whose records are handled concurrently, for stages that wait on I/O (model
    calls; durable answer marks). Each record is acked only when its handling has finished,
    and nothing more is pulled while `max_in_flight` are running. `admit`, when given, is
    awaited before a record is handed over (more backpressure, e.g. a model's concurrency
    limit); the release it returns runs when the record's handling ends."""

    async def run(stream: Any) -> None:
        semaphore = asyncio.Semaphore(max_in_flight)
        in_flight: set[asyncio.Task[None]] = set()
        manual = stream.noack()
        try:
            async for event in manual.events():
                value = event.value
                if isinstance(value, Poison):
                    await pipeline.dead_letter_poison(value, stage.value)
                    await manual.ack(event)
                    continue

                release = await admit(value) if admit is not None else _no_release

                async def work(
                    event: Any = event, envelope: Envelope = value, release: Callable[[], None] = release
                ) -> None:
                    try:
                        await handle(envelope)
                    finally:
                        release()
                        await manual.ack(event)

                await run_bounded(semaphore, in_flight, work)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    pipeline.app.agent(pipeline.envelope_topic(source), name=stage.value)(run)


def _no_release() -> None:
    """The release of an admission that took no slot."""


async def _envelopes(pipeline: Pipeline, stream: Any, stage: Stage) -> AsyncIterator[Envelope]:
    """The stream's envelopes; poison records are dead-lettered on the way."""
    async for value in stream:
        if isinstance(value, Poison):
            await pipeline.dead_letter_poison(value, stage.value)
            continue
        yield value
