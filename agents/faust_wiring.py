"""The Faust wiring: the pipeline's stages as Faust agents, laid out in chains.

The worker finds `register_stages` through the `sluice.stages` entry point, so the core package
never imports agents/. Each chain (see sluice/layout.py) is one agent on its first stage's input
topic; inside it, stages call each other in-process (agents/chain.py). Every agent handles its
records concurrently and acks a record only once everything it decided is on Kafka: offsets are
committed up to the oldest record not yet finished, never past it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agents import admission
from agents.chain import ChainRun, Step, run_chain
from agents.infer import Resilience, breaker_event, infer
from agents.inference.cache import ResponseCache
from agents.inference.streamed import StreamHooks
from agents.route import route
from agents.routing.advice import AdviceBook
from agents.routing.feed import follow_route_advice
from agents.sanitize import sanitize
from agents.validate import DeadLettered, Limits, RawRecord, validate_record
from agents.validate_response import pii_findings, stream_guard, validate_response
from schemas import Admission, Envelope, Event, Stage, StreamChunk
from sluice.app import Pipeline, PublishFailed, current_partition, run_bounded
from sluice.codec import Poison
from sluice.layout import INPUT_TOPIC, ChainLayout, next_stage
from sluice.outcome import Outcome, utcnow
from sluice.providers.catalog import Catalog, load_catalog
from sluice.providers.openai_http import ChatClient
from sluice.tenants import TenantConfig
from topics import ADMISSION, ROUTE_ADVICE, STREAM, VALIDATED

log = logging.getLogger("sluice.agents")

__all__ = ["register_stages"]

# What an agent does with one record after the in-order part: publish, then the record is acked.
Finish = Callable[[], Awaitable[None]]
# The in-order part of handling one record (dedupe marks, quota table writes), run as records
# arrive; None means the record needs nothing more and is acked at once.
Begin = Callable[[Any], Finish | None]

ADMIT_AGENT = "admit"


def register_stages(pipeline: Pipeline) -> None:
    """Define the chain agents of the configured layout, the admit agent and the timers."""
    settings = pipeline.settings
    layout = ChainLayout.parse(settings.chain_breaks)
    wanted = {name.strip() for name in settings.worker_chains.split(",") if name.strip()}
    catalog = load_catalog(settings)
    client = ChatClient(settings)
    cache = ResponseCache(
        pipeline.cache.data,
        ttl_s=settings.cache_ttl_s,
        max_entries=settings.cache_max_entries,
        changelog=pipeline.cache.send_changelog,
    )
    resilience = Resilience.from_settings(settings, catalog, cache)
    advice = register_route_advice(pipeline)
    steps = stage_steps(pipeline, catalog, client, resilience, advice)

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

    async def publish_run(run: ChainRun, earlier: tuple[Event, ...] = ()) -> None:
        if run.outcome is not None:  # None: already answered, nothing more to say
            await pipeline.publish(run.outcome, run.next_topic, earlier=(*earlier, *run.earlier))
        await publish_breaker_changes()

    async def carry_on(outcome: Outcome, done: Stage) -> None:
        """After `done` forwarded a request: the next stage in-process, or its topic."""
        assert outcome.forward is not None
        following = next_stage(done)
        assert following is not None
        if layout.in_process(done, following):
            run = await run_chain(outcome.forward, following, layout, steps)
            await publish_run(run, earlier=(outcome.event,))
        else:
            await pipeline.publish(outcome, INPUT_TOPIC[following])

    limits = Limits.from_settings(settings, pipeline.default_reply_to)

    def begin_request(event: Any) -> Finish | None:
        """validate, in arrival order (its dedupe table must see records in order)."""
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
            return lambda: pipeline.dead_letter(decision.letter)
        outcome = decision.outcome
        if outcome.forward is None:  # rejected, or a client's duplicate
            return lambda: pipeline.publish(outcome)
        # Only accepted requests are remembered: a client may fix a rejected one and re-send it.
        pipeline.remember(pipeline.seen, decision.dedupe_key, request_id=decision.request_id)
        if pipeline.already_answered(decision.request_id):
            return None  # redelivered after its answer went out (a worker crashed before commit)
        if pipeline.has_quota(outcome.forward.tenant):  # re-keyed by tenant for the admit step
            return lambda: pipeline.publish(outcome, ADMISSION)
        return lambda: carry_on(outcome, Stage.VALIDATE)

    def begin_envelope(entry: Stage) -> Begin:
        def begin(event: Any) -> Finish | None:
            value = event.value
            if isinstance(value, Poison):
                return lambda: pipeline.dead_letter_poison(value, entry.value)
            envelope: Envelope = value
            if pipeline.already_answered(envelope.request_id):
                return None  # redelivered after it was answered: do not pay twice

            async def finish() -> None:
                await publish_run(await run_chain(envelope, entry, layout, steps))

            return finish

        return begin

    for entry in layout.entries:
        if wanted and entry.value not in wanted:
            continue
        begin = begin_request if entry is Stage.VALIDATE else begin_envelope(entry)
        topic = pipeline.requests if entry is Stage.VALIDATE else pipeline.envelope_topic(INPUT_TOPIC[entry])
        concurrent_agent(pipeline, topic, entry.value, begin)
    if not wanted or ADMIT_AGENT in wanted:
        register_admission(pipeline, catalog)
    log.info("stage layout: %s", layout.describe())

    app = pipeline.app

    @app.timer(interval=1.0)
    async def publish_breaker_transitions() -> None:
        """Every chain drains the transitions after publishing its outcome; this catches those
        of calls that never got there (a stage bug, a call cancelled at shutdown)."""
        await publish_breaker_changes()

    @app.timer(interval=settings.dedupe_sweep_interval_s)
    async def expire_cache_entries() -> None:
        expired = cache.sweep(time.time())
        if expired:
            log.info("expired %d cache entries (hits %d, misses %d)", expired, cache.hits, cache.misses)

    @app.timer(interval=settings.dedupe_sweep_interval_s)
    async def expire_idempotence_entries() -> None:
        expired = pipeline.sweep(pipeline.seen, settings.dedupe_window_s)
        expired += pipeline.sweep(pipeline.answered, settings.dedupe_window_s)
        expired += pipeline.sweep(pipeline.replies, settings.dedupe_window_s, tombstones=False)
        if expired:
            log.info("expired %d idempotence entries", expired)

    pipeline.on_stop.append(client.close)  # the shared HTTP clients close with the worker


def stage_steps(
    pipeline: Pipeline, catalog: Catalog, client: ChatClient, resilience: Resilience, advice: AdviceBook
) -> dict[Stage, Step]:
    """Each stage after validate as a chain step: its pure logic with this worker's state."""
    tenant = pipeline.settings.tenant

    async def sanitize_step(envelope: Envelope) -> Outcome:
        return sanitize(envelope, utcnow(), tenant=tenant(envelope.tenant))

    async def route_step(envelope: Envelope) -> Outcome:
        # Models whose breaker is open go to the end of the chain (route_reason says so).
        unavailable = resilience.breakers.unavailable(time.monotonic())
        return route(
            envelope,
            catalog,
            utcnow(),
            tenant=tenant(envelope.tenant),
            advice=advice,
            unavailable=unavailable,
        )

    async def infer_step(envelope: Envelope) -> Outcome | None:
        if pipeline.already_answered(envelope.request_id):
            return None
        publisher = ChunkPublisher(pipeline, envelope) if envelope.request.stream else None
        hooks = publisher.hooks(tenant(envelope.tenant)) if publisher is not None else None
        try:
            return await infer(
                envelope, catalog, client, resilience=resilience, partition=current_partition(), stream=hooks
            )
        finally:
            if publisher is not None:
                await publisher.flush()  # every chunk on Kafka before the answer and the ack

    async def review_step(envelope: Envelope) -> Outcome:
        return validate_response(
            envelope, utcnow(), tenant=tenant(envelope.tenant), catalog=catalog, pii_detector=pii_findings
        )

    return {
        Stage.SANITIZE: sanitize_step,
        Stage.ROUTE: route_step,
        Stage.INFER: infer_step,
        Stage.VALIDATE_RESPONSE: review_step,
    }


class ChunkPublisher:
    """Publishes a streamed request's released text as StreamChunk records on the stream topic,
    keyed by correlation_id (one partition: in order). Sends are not awaited one by one, so the
    model's stream never waits for the broker; `flush` waits for all of them."""

    def __init__(self, pipeline: Pipeline, envelope: Envelope) -> None:
        self.pipeline = pipeline
        self.envelope = envelope
        self.topic = STREAM.name(pipeline.settings.topic_prefix)
        self.seq = 0
        self.offset = 0
        self.sending: list[asyncio.Task[None]] = []
        self.stream: StreamHooks | None = None

    def hooks(self, rules: TenantConfig) -> StreamHooks | None:
        """None for a tenant whose streams are buffered: the answer then comes whole, checked."""
        if rules.output.stream_checks == "buffered":
            return None
        self.stream = StreamHooks(
            on_chunk=self.publish,
            guard=lambda: stream_guard(self.envelope, rules),
            mode=rules.output.stream_checks,
        )
        return self.stream

    async def publish(self, text: str) -> None:
        envelope = self.envelope
        chunk = StreamChunk(
            correlation_id=envelope.correlation_id,
            request_id=envelope.request_id,
            tenant=envelope.tenant,
            model=self.stream.model if self.stream is not None else "",
            seq=self.seq,
            offset=self.offset,
            delta=text,
        )
        self.seq += 1
        self.offset += len(text)
        send = self.pipeline.send(self.topic, envelope.correlation_id.encode(), chunk)
        self.sending.append(asyncio.create_task(send))
        await asyncio.sleep(0)  # let the send reach the producer now, in order

    async def flush(self) -> None:
        if self.sending:
            await asyncio.gather(*self.sending)


def concurrent_agent(pipeline: Pipeline, topic: Any, name: str, begin: Begin) -> None:
    """An agent that takes records in order (`begin`), finishes them concurrently (model calls
    take seconds), and acks each only once its finish has published everything. Nothing more is
    pulled while `infer_max_in_flight` records are unfinished. A publish the broker keeps
    refusing stops the worker, unacked: after the restart the record is delivered again."""
    max_in_flight = pipeline.settings.infer_max_in_flight

    async def run(stream: Any) -> None:
        semaphore = asyncio.Semaphore(max_in_flight)
        in_flight: set[asyncio.Task[None]] = set()
        manual = stream.noack()
        unfinished = pipeline.unfinished

        async def ack(event: Any) -> None:
            with unfinished.acking(event.message):  # the acks the consumer counts (offsets.py)
                await manual.ack(event)
            unfinished.finished(event.message.tp, event.message.offset)

        try:
            async for event in manual.events():
                unfinished.taken(event.message.tp, event.message.offset)
                finish = begin(event)
                if finish is None:
                    await ack(event)
                    continue

                async def work(event: Any = event, finish: Finish = finish) -> None:
                    try:
                        await finish()
                    except PublishFailed as exc:
                        log.critical("%s: outcome not published, record left unacked: %s", name, exc)
                        await pipeline.crash(exc)
                        return
                    await ack(event)

                await run_bounded(semaphore, in_flight, work)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    pipeline.app.agent(topic, name=name)(run)


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
            follow_route_advice(pipeline.settings, topic, book), name="route-advice"
        )

        async def stop_following() -> None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

        pipeline.on_stop.append(stop_following)

    return book


# --- quotas: the admit step (agents/admission.py) ----------------------------------------------


def register_admission(pipeline: Pipeline, catalog: Catalog) -> None:
    """The admit agent: rate limits and budgets per tenant, from the `quota` table; admitted
    requests re-enter at sanitize (through the validated topic), refused ones are answered.
    Decisions are taken in the tenant partition's order; their publishing runs concurrently.
    Plus the expiry of lost holds."""
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

    def begin(event: Any) -> Finish | None:
        record = event.value
        if isinstance(record, Poison):
            return lambda: pipeline.dead_letter_poison(record, ADMIT_AGENT)
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
        outcome = decision.outcome
        if outcome is None:
            return None
        return lambda: pipeline.publish(outcome, VALIDATED)

    concurrent_agent(pipeline, pipeline.admission, ADMIT_AGENT, begin)

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
