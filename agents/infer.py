"""infer: call the routed model over HTTP. Usage comes from the reply, cost from the catalog's
prices; failures (HTTP errors, timeouts, malformed replies) are recorded on the envelope and
answered by validate-response, so every request still gets exactly one response."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

from schemas import Envelope, ErrorCode, ErrorInfo, Inference, Stage, Status, Usage
from sluice.outcome import Outcome, forward, utcnow
from sluice.providers.catalog import Catalog, ModelEntry
from sluice.providers.openai_http import Completion, ProviderError

STAGE = Stage.INFER


class ChatCaller(Protocol):
    async def complete(self, entry: ModelEntry, payload: dict[str, Any], budget_s: float) -> Completion: ...


def chat_payload(envelope: Envelope) -> dict[str, Any]:
    """The OpenAI chat-completions body for this request (model filled in by the client)."""
    request = envelope.request
    payload: dict[str, Any] = {
        "messages": [{"role": m.role, "content": m.content} for m in [*request.messages, *envelope.followup]],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if request.response_format is not None and request.response_format.type != "text":
        payload["response_format"] = request.response_format.model_dump(exclude_none=True)
    return payload


async def infer(
    envelope: Envelope, catalog: Catalog, caller: ChatCaller, now: datetime | None = None
) -> Outcome:
    started = time.perf_counter()
    now = now or utcnow()
    model_name = envelope.route.model if envelope.route else catalog.default
    envelope = envelope.model_copy(update={"tried_models": [*envelope.tried_models, model_name]})
    entry = catalog.get(model_name)
    if entry is None:
        return _failed(
            envelope, model_name, ErrorCode.MODEL_UNAVAILABLE, f"{model_name}: not in catalog", started
        )
    budget_s = (envelope.deadline_at - now).total_seconds()
    try:
        completion = await caller.complete(entry, chat_payload(envelope), budget_s)
    except ProviderError as exc:
        return _failed(envelope, entry.name, exc.code, exc.message, started)
    usage = Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )
    cost = entry.cost_usd(completion.prompt_tokens, completion.completion_tokens)
    inference = Inference(
        model=entry.name,
        content=completion.content,
        finish_reason=completion.finish_reason,
        usage=usage,
        cost_usd=cost,
        model_latency_ms=completion.latency_ms,
    )
    done = envelope.model_copy(update={"inference": inference})
    return forward(
        done,
        STAGE,
        now=utcnow(),
        duration_ms=(time.perf_counter() - started) * 1000,
        model=entry.name,
        usage=usage,
        cost_usd=cost,
        attributes={"model_latency_ms": f"{completion.latency_ms:.3f}"},
    )


def _failed(envelope: Envelope, model: str, code: ErrorCode, message: str, started: float) -> Outcome:
    inference = Inference(model=model, error=ErrorInfo(code=code, message=message, stage=STAGE))
    done = envelope.model_copy(update={"inference": inference})
    return forward(
        done,
        STAGE,
        now=utcnow(),
        duration_ms=(time.perf_counter() - started) * 1000,
        model=model,
        status=Status.FAILED.value,
        error_code=code,
    )
