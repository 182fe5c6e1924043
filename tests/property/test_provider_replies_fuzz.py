"""Fuzzing what model servers send back: reply bodies (OpenAI and Anthropic), Retry-After
headers and cached entries. Each parser either returns a well-formed value or raises the
typed ProviderError (bodies), or returns None (headers, cache entries); never anything else."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.inference.cache import CachedAnswer
from schemas import ErrorCode
from sluice.providers.anthropic_http import parse_message
from sluice.providers.calls import Completion, ProviderError, retry_after_s
from sluice.providers.openai_http import parse_completion
from sluice.providers.resilience import parse_retry_after

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def text_block() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({"type": st.sampled_from(["text", "tool_use", 3]), "text": json_values})


anthropic_like = st.fixed_dictionaries(
    {},
    optional={
        "content": st.lists(text_block() | json_values, max_size=3) | json_values,
        "stop_reason": st.sampled_from(["end_turn", "max_tokens", "stop_sequence", None, 7]),
        "usage": st.fixed_dictionaries(
            {}, optional={"input_tokens": json_values, "output_tokens": json_values}
        )
        | json_values,
    },
)


def well_formed(completion: Completion) -> bool:
    return (
        isinstance(completion.content, str)
        and completion.prompt_tokens >= 0
        and completion.completion_tokens >= 0
        and completion.finish_reason in (None, "stop", "length", "tool_calls")
    )


@FUZZ
@given(st.one_of(anthropic_like.map(orjson.dumps), st.binary(max_size=200)))
def test_parse_message_returns_a_completion_or_a_typed_error(raw: bytes) -> None:
    try:
        completion = parse_message("claude-x", raw, 1.0)
    except ProviderError as exc:
        assert exc.code is ErrorCode.MODEL_UNAVAILABLE and "claude-x" in exc.message
    else:
        assert well_formed(completion)


@FUZZ
@given(json_values.map(orjson.dumps) | st.binary(max_size=200))
def test_parse_completion_returns_a_completion_or_a_typed_error(raw: bytes) -> None:
    try:
        completion = parse_completion("gpt-x", raw, 1.0)
    except ProviderError as exc:
        assert exc.code is ErrorCode.MODEL_UNAVAILABLE
    else:
        assert isinstance(completion.content, str) and completion.prompt_tokens >= 0


@FUZZ
@given(st.text(max_size=40) | st.none(), st.floats(min_value=0, max_value=4e9))
def test_retry_after_is_none_or_a_non_negative_wait(header: str | None, now: float) -> None:
    wait = parse_retry_after(header, now)
    assert wait is None or wait >= 0
    both = retry_after_s({"retry-after-ms": header or ""} if header else {}, now)
    assert both is None or both >= 0


@FUZZ
@given(json_values)
def test_a_stored_cache_value_is_an_answer_or_nothing(value: Any) -> None:
    answer = CachedAnswer.from_value(value)
    assert answer is None or isinstance(answer.content, str)
