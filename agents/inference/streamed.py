"""infer's streaming side: call the model with streaming on, pass each delta through the
stream's checks (agents/inference/stream_guard.py) and hand the text they release to the
wiring's chunk callback, which publishes it. Pure of Kafka: the callback is injected."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agents.inference.stream_guard import StreamGuard, StreamStep
from schemas import ErrorCode
from sluice.providers.calls import Completion, ProviderError
from sluice.providers.catalog import ModelEntry
from sluice.providers.streaming import StreamPart, estimate_tokens, prompt_estimate

CONTENT_FILTER = "content_filter"


@runtime_checkable
class StreamingCaller(Protocol):
    def stream(
        self, entry: ModelEntry, payload: dict[str, Any], budget_s: float
    ) -> AsyncGenerator[StreamPart, None]: ...


@dataclass
class StreamHooks:
    """One streamed request's state: `on_chunk(text)` publishes released text; `guard()` makes
    the checks for one model call (a retry before anything was released starts afresh)."""

    on_chunk: Callable[[str], Awaitable[None]]
    guard: Callable[[], StreamGuard]
    released_chars: int = 0
    chunks: int = 0
    ttft_ms: float | None = None  # call start to the model's first token
    first_release_ms: float | None = None  # call start to the first text sent on
    cut: str | None = None
    model: str = ""  # the model being called, for the chunks
    mode: str = "windowed"  # the tenant's stream_checks, for the infer event

    @property
    def released(self) -> bool:
        """Text went out: the call can no longer be retried or moved to another model."""
        return self.released_chars > 0

    def attributes(self) -> dict[str, str]:
        found = {"stream": self.mode, "stream_chunks": str(self.chunks)}
        if self.ttft_ms is not None:
            found["ttft_ms"] = f"{self.ttft_ms:.3f}"
        if self.first_release_ms is not None:
            found["first_release_ms"] = f"{self.first_release_ms:.3f}"
        if self.cut is not None:
            found["stream_cut"] = self.cut
        return found


async def streamed_call(
    caller: StreamingCaller,
    entry: ModelEntry,
    payload: dict[str, Any],
    budget_s: float,
    hooks: StreamHooks,
) -> Completion:
    """One streamed model call. A check that blocks ends it: the model is hung up on and the
    completion is what was released, finish_reason `content_filter`, tokens estimated."""
    guard = hooks.guard()
    hooks.model = entry.name
    started = time.perf_counter()
    completion: Completion | None = None
    async with contextlib.aclosing(caller.stream(entry, payload, budget_s)) as parts:
        async for part in parts:
            if part.done is not None:
                completion = part.done
                break
            if hooks.ttft_ms is None:
                hooks.ttft_ms = (time.perf_counter() - started) * 1000
            step = guard.feed(part.text)
            await _release(hooks, step, started)
            if step.cut is not None:
                break
    if guard.cut is None:
        if completion is None:
            raise ProviderError(
                ErrorCode.MODEL_UNAVAILABLE, f"{entry.name}: the stream ended early", retryable=True
            )
        await _release(hooks, guard.close(), started)
    if guard.cut is None:
        assert completion is not None
        return completion
    hooks.cut = guard.cut
    return Completion(
        content=guard.released_text,
        finish_reason=CONTENT_FILTER,
        prompt_tokens=prompt_estimate(payload),
        completion_tokens=estimate_tokens(guard.text),  # the model wrote it, so it is paid for
        latency_ms=(time.perf_counter() - started) * 1000,
    )


async def _release(hooks: StreamHooks, step: StreamStep, started: float) -> None:
    if not step.release:
        return
    if hooks.first_release_ms is None:
        hooks.first_release_ms = (time.perf_counter() - started) * 1000
    await hooks.on_chunk(step.release)
    hooks.released_chars += len(step.release)
    hooks.chunks += 1
