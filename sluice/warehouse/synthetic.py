"""Synthetic pipeline traffic as the stages would emit it: five stage events per request, the
last carrying the request's summary. For the analytics benchmark, tests and demo dashboards;
the events go through the real broker and sink like any others. Deterministic for a seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from schemas import ErrorCode, Event, RequestSummary, Stage, Status

TENANTS = ("acme", "globex", "initech", "umbrella")
# model -> (USD per 1K tokens, typical latency ms)
MODELS = {"sim-small": (0.006, 120.0), "sim-medium": (0.018, 350.0), "sim-large": (0.09, 900.0)}
ROUTES = {"simple": "sim-small", "general": "sim-medium", "hard": "sim-large"}
STAGES = (Stage.VALIDATE, Stage.SANITIZE, Stage.ROUTE, Stage.INFER, Stage.VALIDATE_RESPONSE)
QUESTIONS = 500


def synthetic_requests(
    count: int,
    *,
    seed: int = 7,
    spread_minutes: float = 60.0,
    error_rate: float = 0.05,
    prefix: str = "syn",
    ago_minutes: float = 0.0,
) -> Iterator[list[Event]]:
    """`count` requests' events, finishing uniformly over the `spread_minutes` that end
    `ago_minutes` before now."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(minutes=ago_minutes)
    for n in range(count):
        route = rng.choice(tuple(ROUTES))
        model = ROUTES[route]
        price, latency = MODELS[model]
        finished = now - timedelta(minutes=rng.random() * spread_minutes)
        request_id, correlation_id = f"{prefix}-{seed}-{n}", f"{prefix}-c-{seed}-{n}"
        tenant = rng.choice(TENANTS)
        failed = rng.random() < error_rate
        cached = not failed and rng.random() < 0.1
        prompt, completion = rng.randint(20, 400), rng.randint(10, 256)
        cost = 0.0 if cached else round((prompt + completion) * price / 1000, 8)
        question = rng.randrange(QUESTIONS)
        answer = question if rng.random() > 0.03 else rng.randrange(10**6)
        durations = [rng.uniform(0.2, 2), rng.uniform(1, 8), rng.uniform(0.1, 1)]
        durations += [0.5 if cached else rng.gammavariate(4, latency / 4), rng.uniform(1, 10)]
        stages = STAGES[:4] if failed else STAGES
        received = finished - timedelta(milliseconds=sum(durations[: len(stages)]))
        grounded = rng.random()
        events = []
        at = received
        for i, stage in enumerate(stages):
            at += timedelta(milliseconds=durations[i])
            last = i == len(stages) - 1
            summary = None
            if last:
                summary = RequestSummary(
                    received_at=received,
                    finished_at=at,
                    status=Status.FAILED if failed else Status.OK,
                    latency_ms=(at - received).total_seconds() * 1000,
                    groundedness=None if failed else round(grounded, 3),
                    hallucination=None if failed else grounded < 0.08,
                    schema_valid=None if failed else rng.random() > 0.01,
                    route=route,
                )
            events.append(
                Event(
                    event_id=f"{request_id}/{stage.value}",
                    request_id=request_id,
                    correlation_id=correlation_id,
                    tenant=tenant,
                    stage=stage,
                    status=("failed" if failed else "ok") if last else "ok",
                    ts=at,
                    duration_ms=durations[i],
                    model=model if stage in (Stage.ROUTE, Stage.INFER, Stage.VALIDATE_RESPONSE) else None,
                    prompt_tokens=prompt if last and not failed else 0,
                    completion_tokens=completion if last and not failed else 0,
                    cost_usd=cost if last and not failed else 0.0,
                    cached=cached and last,
                    cache_savings_usd=round((prompt + completion) * price / 1000, 8)
                    if cached and last
                    else 0.0,
                    error_code=rng.choice((ErrorCode.TIMEOUT, ErrorCode.MODEL_UNAVAILABLE))
                    if failed and last
                    else None,
                    attributes=_attributes(stage, last, failed, question, answer, durations[i], rng),
                    summary=summary,
                )
            )
        yield events


def _attributes(
    stage: Stage, last: bool, failed: bool, question: int, answer: int, duration_ms: float, rng: random.Random
) -> dict[str, str]:
    """What the stages record: the final event's analytics; infer's replica (one of two, with a
    failed call on the way now and then) and the model's latency."""
    if last and not failed:
        return {"max_tokens": "256", "question_hash": f"q{question}", "answer_hash": f"a{answer}"}
    if stage is not Stage.INFER:
        return {}
    found = {"deployment": rng.choice(("gpu-a", "gpu-b")), "model_latency_ms": f"{duration_ms:.3f}"}
    if failed or rng.random() < 0.05:
        found["deployment_errors"] = rng.choice(("gpu-a", "gpu-b"))
    return found
