"""infer: answer the routed request from the response cache or by calling a model over HTTP.

Resilience, all inside the request's deadline:
* retries on the same model for retryable failures (connect errors, 429, 5xx, broken replies)
  with full-jitter exponential backoff; a Retry-After is honoured when it fits, else the next
  model is tried at once;
* a circuit breaker per model endpoint: an open breaker sends the request straight on;
* replicas: a model served by several deployments is balanced over them (least calls in flight,
  weighted); each deployment has its own breaker, a failed call is retried on another replica
  at once, and the model stays up while any replica is;
* the route's fallback chain (`route.fallbacks`) after the routed model;
* a per-model concurrency gate (the routed model's slot is taken by the agent before the record
  is handed over, see agents/__init__.py; fallback slots are taken here).

Usage comes from the reply, cost from the catalog's prices; a cache hit costs 0 and records what
the call would have cost. Failures are recorded on the envelope and answered by
validate-response, so every request still gets exactly one response; only a request out of
time is answered (timeout) by infer itself, to save the hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agents.inference.cache import CachedAnswer, ResponseCache, cache_eligible, cache_key, cacheable
from agents.inference.streamed import StreamHooks, StreamingCaller, streamed_call
from schemas import (
    ChatMessage,
    Checks,
    Envelope,
    ErrorCode,
    ErrorInfo,
    Event,
    Inference,
    Stage,
    Status,
    Usage,
)
from sluice.outcome import Identity, Outcome, Spend, event_id_for, finish, forward, utcnow
from sluice.providers.catalog import Catalog, Deployment, ModelEntry
from sluice.providers.openai_http import Completion, ProviderError
from sluice.providers.resilience import (
    Balancer,
    BreakerPolicy,
    Breakers,
    CircuitBreaker,
    ModelGates,
    Transition,
    backoff_s,
)
from sluice.settings import Settings

STAGE = Stage.INFER
SYSTEM_TENANT = "_system"
MIN_CALL_S = 0.02  # less budget than this left: not worth starting another call


class ChatCaller(Protocol):
    async def complete(self, entry: ModelEntry, payload: dict[str, Any], budget_s: float) -> Completion: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_s: float = 0.1
    max_backoff_s: float = 2.0
    retry_after_max_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=settings.infer_retry_attempts,
            base_s=settings.infer_retry_base_s,
            max_backoff_s=settings.infer_retry_max_backoff_s,
            retry_after_max_s=settings.infer_retry_after_max_s,
        )


@dataclass
class Resilience:
    """The worker's shared infer state: breakers, gates, the cache and the clocks (injectable)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    reserve_s: float = 0.05  # of the deadline, kept for validate-response and the reply
    breakers: Breakers = field(default_factory=lambda: Breakers(BreakerPolicy()))
    gates: ModelGates | None = None
    balancer: Balancer = field(default_factory=Balancer)
    cache: ResponseCache | None = None
    rng: random.Random = field(default_factory=random.Random)
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @classmethod
    def from_settings(
        cls, settings: Settings, catalog: Catalog, cache: ResponseCache | None = None
    ) -> Resilience:
        return cls(
            retry=RetryPolicy.from_settings(settings),
            reserve_s=settings.infer_deadline_reserve_ms / 1000,
            breakers=Breakers(
                BreakerPolicy.from_settings(settings),
                {m.name: len(m.deployments) for m in catalog.models if m.replicated},
            ),
            gates=ModelGates({m.name: m.total_concurrency for m in catalog.models}),
            cache=cache if settings.cache_enabled else None,
        )


def chat_payload(envelope: Envelope) -> dict[str, Any]:
    """The OpenAI chat-completions body for this request (model filled in by the client)."""
    request = envelope.request
    payload: dict[str, Any] = {
        "messages": [chat_message(m) for m in [*request.messages, *envelope.followup]],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if request.response_format is not None and request.response_format.type != "text":
        payload["response_format"] = request.response_format.model_dump(exclude_none=True)
    if request.tools:
        payload["tools"] = [tool.model_dump(exclude_none=True) for tool in request.tools]
        if request.tool_choice is not None:
            choice = request.tool_choice
            payload["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
    if request.stop:
        payload["stop"] = list(request.stop)
    return payload


def chat_message(message: ChatMessage) -> dict[str, Any]:
    """One turn in OpenAI's form: an assistant's tool calls, a tool result's call id."""
    found: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        found["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        found["content"] = message.content or None
    if message.tool_call_id is not None:
        found["tool_call_id"] = message.tool_call_id
    return found


def candidates(envelope: Envelope, catalog: Catalog) -> list[str]:
    """The routed model, then its fallbacks, each once."""
    route = envelope.route
    names = [route.model, *route.fallbacks] if route else [catalog.default]
    return list(dict.fromkeys(names))


@dataclass
class _Tally:
    attempts: int = 0
    tried: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    deployment: str = ""  # of the last call made
    failed_deployments: list[str] = field(default_factory=list)  # one entry per failed call

    def attributes(self) -> dict[str, str]:
        """Which replica answered (or was called last) and which failed, for per-deployment metrics."""
        found = {"deployment": self.deployment} if self.deployment else {}
        if self.failed_deployments:
            found["deployment_errors"] = ",".join(self.failed_deployments)[:500]
        return found


async def infer(
    envelope: Envelope,
    catalog: Catalog,
    caller: ChatCaller,
    now: datetime | None = None,
    resilience: Resilience | None = None,
    *,
    held: str | None = None,
    partition: int = 0,
    stream: StreamHooks | None = None,
) -> Outcome:
    """`held`: a model whose concurrency slot the caller already holds for this request.
    `partition`: the record's partition, where a new cache entry's changelog record goes.
    `stream`: for a streamed request, the model is called with streaming on and the text its
    checks release goes to `stream.on_chunk` as it comes (agents/inference/streamed.py)."""
    started = time.perf_counter()
    now = now or utcnow()
    res = resilience or Resilience()
    deadline = res.monotonic() + (envelope.deadline_at - now).total_seconds() - res.reserve_s
    key = cache_key(envelope) if res.cache is not None and cache_eligible(envelope) else None
    if key is not None and res.cache is not None:
        hit = res.cache.get(key, envelope.tenant, res.wall())
        if hit is not None:
            return _cache_hit(envelope, catalog, hit, started)
    tally = _Tally()
    payload = chat_payload(envelope)
    names = candidates(envelope, catalog)
    last: ProviderError | None = None
    for position, name in enumerate(names):
        entry = catalog.get(name)
        tally.tried.append(name)
        if entry is None:
            last = ProviderError(ErrorCode.MODEL_UNAVAILABLE, f"{name}: not in catalog", model_fault=False)
            tally.errors.append(last.message)
            continue
        async with _slot(res, name, held, deadline) as admitted:
            if not admitted:
                last = ProviderError(ErrorCode.TIMEOUT, f"{name}: no free slot before the deadline")
                tally.errors.append(last.message)
                break
            result = await _call(
                res, caller, entry, payload, deadline, tally, more=position < len(names) - 1, stream=stream
            )
        if isinstance(result, Completion):
            return _answered(envelope, catalog, entry, result, tally, started, res, key, partition, stream)
        last = result
        tally.errors.append(result.message)
        if deadline - res.monotonic() <= MIN_CALL_S or (stream is not None and stream.released):
            break  # out of time, or text already went out: no other model may continue it
    return _failed(
        envelope, names, last, tally, started, out_of_time=deadline - res.monotonic() <= MIN_CALL_S
    )


@contextlib.asynccontextmanager
async def _slot(res: Resilience, model: str, held: str | None, deadline: float) -> AsyncIterator[bool]:
    """This model's concurrency slot, waited for at most until the deadline."""
    if res.gates is None or model == held:
        yield True
        return
    gate = res.gates.gate(model)
    try:
        async with asyncio.timeout(max(deadline - res.monotonic(), 0.0)):
            await gate.acquire()
    except TimeoutError:
        yield False
        return
    try:
        yield True
    finally:
        gate.release()


async def _pick(
    res: Resilience, entry: ModelEntry, avoid: frozenset[str], deadline: float
) -> tuple[Deployment, CircuitBreaker] | ProviderError:
    """The deployment for the next call and its breaker: the least busy with a free slot whose
    breaker lets the call through (a half-open one takes it as its probe). When the only ones
    left are at their max_concurrency it waits for a slot, until the deadline."""
    while True:
        busy = False
        for deployment in res.balancer.ranked(entry, avoid):
            if res.balancer.full(entry, deployment):
                busy = True
                continue
            breaker = res.breakers.of(entry.name, deployment.label if entry.replicated else None)
            if breaker.allow(res.monotonic(), res.wall()):
                return deployment, breaker
        if not busy:
            what = "every replica's circuit breaker is" if entry.replicated else "circuit breaker"
            return ProviderError(ErrorCode.MODEL_UNAVAILABLE, f"{entry.name}: {what} open", model_fault=False)
        if not await res.balancer.freed(entry.name, deadline - res.monotonic() - MIN_CALL_S):
            return ProviderError(ErrorCode.TIMEOUT, f"{entry.name}: no free replica before the deadline")


async def _call(
    res: Resilience,
    caller: ChatCaller,
    entry: ModelEntry,
    payload: dict[str, Any],
    deadline: float,
    tally: _Tally,
    *,
    more: bool,
    stream: StreamHooks | None = None,
) -> Completion | ProviderError:
    """Up to `retry.attempts` calls to one model; the error that ended them otherwise. A failed
    call on one replica is retried on another at once, without backoff."""
    error = ProviderError(ErrorCode.TIMEOUT, f"{entry.name}: deadline passed before the call")
    failed: set[str] = set()
    for retry in range(res.retry.attempts):
        remaining = deadline - res.monotonic()
        if remaining <= MIN_CALL_S:
            return ProviderError(ErrorCode.TIMEOUT, f"{entry.name}: deadline passed before the call")
        picked = await _pick(res, entry, frozenset(failed), deadline)
        if isinstance(picked, ProviderError):
            return picked
        deployment, breaker = picked
        remaining = deadline - res.monotonic()  # waiting for a free replica took some
        tally.attempts += 1
        tally.deployment = deployment.label
        called = res.monotonic()
        try:
            with res.balancer.hold(entry.name, deployment.label):
                if stream is not None and isinstance(caller, StreamingCaller):
                    completion = await streamed_call(caller, entry.on(deployment), payload, remaining, stream)
                else:
                    completion = await caller.complete(entry.on(deployment), payload, remaining)
        except ProviderError as exc:
            error = exc
            tally.failed_deployments.append(deployment.label)
            breaker.record(
                res.monotonic(), res.wall(), ok=not exc.model_fault, latency_s=res.monotonic() - called
            )
        except BaseException:
            breaker.release_probe()  # cancelled mid-call: the probe slot must not stay taken
            raise
        else:
            breaker.record(res.monotonic(), res.wall(), ok=True, latency_s=res.monotonic() - called)
            return completion
        if not error.retryable or retry == res.retry.attempts - 1 or (stream is not None and stream.released):
            return error
        failed.add(deployment.label)
        if entry.replicated and len(failed) < len(entry.deployments):
            continue  # another replica has not failed this request: try it now
        wait = backoff_s(retry, res.retry.base_s, res.retry.max_backoff_s, res.rng)
        if error.retry_after_s is not None:
            # With a fallback left, a long Retry-After is a reason to move on, not to wait.
            longest = res.retry.max_backoff_s if more else res.retry.retry_after_max_s
            if error.retry_after_s > longest:
                return error
            wait = max(wait, error.retry_after_s)
        if res.monotonic() + wait >= deadline - MIN_CALL_S:
            return error  # no time for another call here; a fallback may still fit
        failed.clear()  # every replica failed once: after the backoff, any may be tried again
        await res.sleep(wait)
    return error


def _answered(
    envelope: Envelope,
    catalog: Catalog,
    entry: ModelEntry,
    completion: Completion,
    tally: _Tally,
    started: float,
    res: Resilience,
    key: str | None,
    partition: int,
    stream: StreamHooks | None = None,
) -> Outcome:
    usage = Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )
    cost = entry.cost_usd(completion.prompt_tokens, completion.completion_tokens)
    baseline = envelope.route.baseline_model if envelope.route else None
    inference = Inference(
        model=entry.name,
        content=completion.content,
        tool_calls=list(completion.tool_calls) or None,
        finish_reason=completion.finish_reason,
        usage=usage,
        cost_usd=cost,
        model_latency_ms=completion.latency_ms,
        attempts=tally.attempts,
        routing_savings_usd=catalog.routing_savings(
            baseline, entry.name, completion.prompt_tokens, completion.completion_tokens
        ),
        streamed=stream is not None and stream.released,
        ttft_ms=stream.ttft_ms if stream is not None else None,
        stream_cut=stream.cut if stream is not None else None,
    )
    cache_note = "bypass"
    if key is not None and res.cache is not None:
        cache_note = "miss"
        if cacheable(completion.content, completion.finish_reason):
            answer = CachedAnswer(
                tenant=envelope.tenant,
                model=entry.name,
                content=completion.content,
                finish_reason=completion.finish_reason,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                cost_usd=cost,
            )
            res.cache.put(key, answer, res.wall(), partition)
            cache_note = "stored"
    done = envelope.model_copy(
        update={"inference": inference, "tried_models": [*envelope.tried_models, *tally.tried]}
    )
    attributes = {
        "model_latency_ms": f"{completion.latency_ms:.3f}",
        "attempts": str(tally.attempts),
        "cache": cache_note,
        **tally.attributes(),
        **(stream.attributes() if stream is not None else {}),
    }
    if tally.tried[0] != entry.name:
        attributes["fallback_from"] = tally.tried[0]
        attributes["fallback_errors"] = "; ".join(tally.errors)[:500]
    return forward(
        done,
        STAGE,
        now=utcnow(),
        duration_ms=(time.perf_counter() - started) * 1000,
        model=entry.name,
        usage=usage,
        cost_usd=cost,
        attributes=attributes,
    )


def _cache_hit(envelope: Envelope, catalog: Catalog, hit: CachedAnswer, started: float) -> Outcome:
    """Zero cost and zero usage; the savings are what the stored usage costs at today's prices
    (or what it cost, for a model no longer in the catalog). No routing savings: nothing was
    spent that a routing choice could have saved."""
    entry = catalog.get(hit.model)
    would_cost = entry.cost_usd(hit.prompt_tokens, hit.completion_tokens) if entry else hit.cost_usd
    inference = Inference(
        model=hit.model,
        content=hit.content,
        finish_reason=hit.finish_reason,
        attempts=0,
        cached=True,
        cache_savings_usd=would_cost,
    )
    done = envelope.model_copy(update={"inference": inference})
    return forward(
        done,
        STAGE,
        now=utcnow(),
        duration_ms=(time.perf_counter() - started) * 1000,
        model=hit.model,
        attributes={
            "cache": "hit",
            "cache_savings_usd": f"{would_cost:.8f}",
            "cached_prompt_tokens": str(hit.prompt_tokens),
            "cached_completion_tokens": str(hit.completion_tokens),
        },
    )


def _failed(
    envelope: Envelope,
    names: list[str],
    last: ProviderError | None,
    tally: _Tally,
    started: float,
    *,
    out_of_time: bool,
) -> Outcome:
    code = ErrorCode.TIMEOUT if out_of_time or last is None else last.code
    model = tally.tried[-1] if tally.tried else names[0]
    message = "; ".join(tally.errors) or "deadline passed before the model was called"
    inference = Inference(
        model=model, attempts=tally.attempts, error=ErrorInfo(code=code, message=message[:1000], stage=STAGE)
    )
    done = envelope.model_copy(
        update={"inference": inference, "tried_models": [*envelope.tried_models, *tally.tried]}
    )
    attributes = {"attempts": str(tally.attempts), "tried": ",".join(tally.tried), **tally.attributes()}
    duration_ms = (time.perf_counter() - started) * 1000
    if out_of_time:
        return _answer_now(done, inference, model, attributes, duration_ms)
    return forward(
        done,
        STAGE,
        now=utcnow(),
        duration_ms=duration_ms,
        model=model,
        status=Status.FAILED.value,
        error_code=code,
        attributes=attributes,
    )


def _answer_now(
    envelope: Envelope, inference: Inference, model: str, attributes: dict[str, str], duration_ms: float
) -> Outcome:
    """Out of time: infer sends the timeout response itself. One Kafka hop less than going
    through validate-response (which has nothing to review), so the answer leaves as close to
    the deadline as the worker can manage."""
    assert inference.error is not None
    outcome = finish(
        Identity.of(envelope),
        STAGE,
        Status.FAILED,
        reply_to=envelope.reply_to,
        received_at=envelope.received_at,
        now=utcnow(),
        duration_ms=duration_ms,
        error=inference.error,
        model=model,
        usage=envelope.earlier_usage,
        cost_usd=envelope.earlier_cost_usd,
        checks=Checks(flags=list(envelope.flags)),
        attributes=attributes,
        spend=Spend.of(envelope),
    )
    if not envelope.attempt:
        return outcome
    # keep a later attempt's event apart from the first attempt's infer event
    event_id = event_id_for(envelope.request_id, STAGE, f"attempt-{envelope.attempt}")
    event = outcome.event.model_copy(update={"event_id": event_id})
    return Outcome(event=event, response=outcome.response, reply_to=outcome.reply_to)


def breaker_request_id(transition: Transition) -> str:
    """`breaker/<model>/<new state>/<epoch ms>`: names one breaker transition. Breaker events
    carry it as request_id and correlation_id (tenant `_system`); their event_id is derived
    from it, so a re-published transition replaces itself in ClickHouse."""
    where = (
        transition.model if transition.deployment is None else f"{transition.model}@{transition.deployment}"
    )
    return f"breaker/{where}/{transition.state.value}/{round(transition.at_s * 1000)}"


def breaker_event(transition: Transition) -> Event:
    """The infer-stage event for one breaker state change (status breaker_<state>)."""
    request_id = breaker_request_id(transition)
    return Event(
        event_id=event_id_for(request_id, STAGE),
        request_id=request_id,
        correlation_id=request_id,
        tenant=SYSTEM_TENANT,
        stage=STAGE,
        status=f"breaker_{transition.state.value}",
        ts=datetime.fromtimestamp(transition.at_s, tz=utcnow().tzinfo),
        model=transition.model,
        attributes={
            "from": transition.previous.value,
            "to": transition.state.value,
            "calls": str(transition.calls),
            "bad_calls": str(transition.bad_calls),
            "reason": transition.reason,
            **({} if transition.deployment is None else {"deployment": transition.deployment}),
        },
    )
