"""Parsers of what model servers and clients send, fed arbitrary input: a streamed reply's
lines (OpenAI and Anthropic), and the simulator's Anthropic face. They answer with a typed
failure (ProviderError, an error text), never an unexpected exception."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.local.simulator_anthropic import to_chat_body
from sluice.providers.calls import Completion, ProviderError
from sluice.providers.streaming import StreamReader

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "message_delta",
                "message_stop",
                "error",
            ]
        ),
        "choices": json_values,
        "usage": json_values,
        "delta": json_values,
        "index": json_values,
        "content_block": json_values,
        "message": json_values,
    },
)
lines = st.one_of(
    st.text(max_size=40),
    event_like.map(lambda e: "data: " + orjson.dumps(e).decode()),
    json_values.map(lambda v: "data: " + orjson.dumps(v).decode()),
    st.just("data: [DONE]"),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["openai", "anthropic"]), st.lists(lines, max_size=8))
def test_stream_reader_fails_only_as_a_provider_error(kind: str, fed: list[str]) -> None:
    reader = StreamReader("m", kind)
    try:
        for line in fed:
            assert isinstance(reader.feed(line), str)
        done = reader.completion(1.0)
    except ProviderError:
        return
    assert isinstance(done, Completion) and done.content == reader.text


@settings(max_examples=150, deadline=None)
@given(
    json_values
    | st.dictionaries(
        st.sampled_from(["model", "max_tokens", "messages", "system", "tools", "tool_choice", "stream"]),
        json_values,
    )
)
def test_the_simulator_reads_any_messages_body_or_says_what_is_wrong(body: Any) -> None:
    result = to_chat_body(body)
    assert isinstance(result, str | dict)
