"""What a model call returns or how it failed, shared by every provider client."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from schemas import ErrorCode, ToolCall
from sluice.providers.resilience import parse_retry_after


@dataclass(frozen=True)
class Completion:
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    tool_calls: tuple[ToolCall, ...] = ()


class ProviderError(Exception):
    """A model call that produced no usable completion; `code` is the contract's error code.

    `retryable`: worth calling the same model again (connect errors, 429, 5xx).
    `retry_after_s`: the server's Retry-After, when it sent one.
    `model_fault`: counts against the model's circuit breaker (not the request's own fault,
    such as a 400 for a request this model cannot take)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
        model_fault: bool = True,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.model_fault = model_fault


def retry_after_s(headers: Mapping[str, str], now_epoch_s: float) -> float | None:
    """The server's requested wait: OpenAI's `retry-after-ms` when present (sub-second), else
    the standard `Retry-After` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"), now_epoch_s)


def status_error(model: str, status: int, detail: str, headers: Mapping[str, str]) -> ProviderError:
    """The ProviderError for a non-200 reply: 429 and 5xx (529 overloaded included) are
    retryable; other 4xx are the request's problem for this model, tried elsewhere, not again."""
    retryable = status == 429 or status >= 500
    return ProviderError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"{model}: HTTP {status} {detail}",
        retryable=retryable,
        retry_after_s=retry_after_s(headers, time.time()),
        model_fault=retryable,
    )
