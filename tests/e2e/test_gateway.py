"""The OpenAI-compatible front door end to end: the official `openai` SDK against the gateway,
on a real stack (broker, simulator, sink and worker processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import orjson
import pytest

from sluice.edge.gateway import serve_gateway
from sluice.local.broker import EmbeddedBroker, free_port
from tests.e2e.stack import Stack, read_topic, running_stack, stack_settings

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Say hello to the gateway."}]


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gateway")
    settings = stack_settings(
        broker.bootstrap,
        root,
        "g",
        simulator_seed=11,
    )
    with running_stack(settings, root / "logs") as running:
        yield running


@pytest.fixture()
async def root_url(stack: Stack) -> AsyncIterator[str]:
    """The gateway in this test's event loop, on a free port."""
    port = free_port()
    async with serve_gateway(stack.settings, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture()
async def sdk(root_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{root_url}/v1", api_key="anything", max_retries=0, timeout=30)
    async with client:
        yield client


async def test_chat_completion_with_the_openai_sdk(sdk: openai.AsyncOpenAI, root_url: str) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, max_tokens=32, extra_headers={"X-Request-Id": "gw-plain-1"}
    )
    assert raw.headers["X-Request-Id"] == "gw-plain-1"
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "sim-small"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    sluice = (completion.model_extra or {})["sluice"]
    assert sluice["status"] == "ok" and sluice["cost_usd"] > 0
    assert completion.id == f"chatcmpl-{sluice['request_id']}"
    assert set(sluice["checks"]) == {"groundedness", "hallucination", "schema_valid", "flags"}
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{root_url}/healthz")
    assert health.status_code == 200 and health.json()["parts"] == {"gateway": True, "client.replies": True}


async def test_streaming_with_the_openai_sdk(sdk: openai.AsyncOpenAI, stack: Stack) -> None:
    stream = await sdk.chat.completions.create(
        model="sim-medium",
        messages=[{"role": "user", "content": "Stream me a short answer."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Request-Id": "gw-stream-1"},
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].model == "sim-medium"
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in with_choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    streamed = "".join(c.choices[0].delta.content or "" for c in with_choices)
    # The stream carries exactly the answer the pipeline published for this correlation_id.
    published = [
        orjson.loads(value or b"")
        for _, value, _, _ in await read_topic(
            stack.settings.bootstrap, f"{stack.settings.topic_prefix}responses"
        )
    ]
    answer = next(r for r in published if r["correlation_id"] == "gw-stream-1")
    assert streamed and streamed == answer["content"]


async def test_errors_become_the_sdks_typed_exceptions(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.chat.completions.create(model="no-such-model", messages=HELLO)
    assert unknown.value.code == "invalid_request" and unknown.value.type == "invalid_request_error"
    assert "model" in unknown.value.message

    for size in (70_000, 200_000):  # over the Request's limit, and over the raw body limit
        with pytest.raises(openai.APIStatusError) as oversized:
            await sdk.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "x" * size}]
            )
        assert oversized.value.status_code == 413 and oversized.value.code == "payload_too_large"

    with pytest.raises(openai.BadRequestError) as unsupported:
        await sdk.chat.completions.create(model="auto", messages=HELLO, n=3)
    assert unsupported.value.param == "n"


async def test_models_list_includes_the_simulated_models(sdk: openai.AsyncOpenAI) -> None:
    ids = [model.id async for model in sdk.models.list()]
    assert {"auto", "sim-small", "sim-medium", "sim-large"} <= set(ids)


async def test_garbage_bytes_get_an_openai_error_body(root_url: str) -> None:
    async with httpx.AsyncClient(base_url=root_url, timeout=10) as http:
        for garbage in (b"\xff\xfe\x00garbage", b'{"messages": [', b"[" * 5000):
            reply = await http.post(
                "/v1/chat/completions", content=garbage, headers={"Content-Type": "application/json"}
            )
            assert reply.status_code == 400
            error = reply.json()["error"]
            assert error["code"] == "invalid_request" and error["type"] == "invalid_request_error"
            assert error["message"]
        assert (await http.get("/healthz")).status_code == 200, "the server survived"


async def test_feedback_is_accepted_and_lands_on_the_feedback_topic(
    sdk: openai.AsyncOpenAI, root_url: str, stack: Stack
) -> None:
    completion = await sdk.chat.completions.create(model="auto", messages=HELLO, max_tokens=16)
    async with httpx.AsyncClient(base_url=root_url, timeout=10) as http:
        accepted = await http.post(
            "/v1/feedback",
            json={"request_id": completion.id, "rating": -1, "label": "unhelpful", "comment": "too short"},
            headers={"Authorization": "Bearer anything"},
        )
        invalid = await http.post("/v1/feedback", json={"request_id": completion.id, "rating": 7})
    assert accepted.status_code == 202 and accepted.json() == {"accepted": True}
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid_request"
    request_id = completion.id.removeprefix("chatcmpl-")
    records = await read_topic(stack.settings.bootstrap, f"{stack.settings.topic_prefix}feedback")
    mine = [orjson.loads(value or b"") for key, value, _, _ in records if key == request_id.encode()]
    assert mine == [
        {
            "request_id": request_id,
            "tenant": "demo",
            "rating": -1,
            "label": "unhelpful",
            "comment": "too short",
        }
    ]
