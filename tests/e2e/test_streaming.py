"""Streaming through infer against the real simulator over HTTP (OpenAI and Anthropic kinds):
the text arrives in many pieces and adds up to the non-streamed answer; a leak in the 3rd
sentence ends the stream with content_filter before the leaked text is released."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from agents.infer import Resilience, infer
from agents.inference.streamed import StreamHooks
from agents.validate_response import pii_findings, stream_guard, validate_response
from schemas import Envelope, Request, RouteDecision, Status
from sluice.local.simulator import SimulatorServer
from sluice.outcome import utcnow
from sluice.providers.catalog import Catalog, ModelEntry
from sluice.providers.openai_http import ChatClient
from sluice.tenants import TenantConfig

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_SIM_KEY", "any-key")


LEAK = "Here is the summary. The report covers three regions. Mail dana.leak@example.org for more. Bye now."
PRICES = {"input_price_per_1k": 0.001, "output_price_per_1k": 0.002}


def catalog() -> Catalog:
    return Catalog(
        default="sim-small",
        models=(
            ModelEntry(name="sim-small", base_url="simulator", **PRICES),
            ModelEntry(
                name="claude-sim",
                kind="anthropic",
                upstream_model="sim-small",
                base_url="simulator",
                api_key_env="SLUICE_TEST_SIM_KEY",  # the simulator's Anthropic face wants a key
                **PRICES,
            ),
        ),
    )


def envelope(model: str, stream: bool = True) -> Envelope:
    now = utcnow()
    request = Request.model_validate(
        {
            "correlation_id": "c1",
            "tenant": "acme",
            "messages": [{"role": "user", "content": "Summarise the regional report."}],
            "max_tokens": 64,
            "stream": stream,
        }
    )
    return Envelope(
        request_id="r1",
        correlation_id="c1",
        tenant="acme",
        reply_to="sluice.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=10),
        request=request,
        route=RouteDecision(model=model, reason="test"),
    )


def hooks(env: Envelope, sink: list[str], mode: str = "windowed") -> StreamHooks:
    async def on_chunk(text: str) -> None:
        sink.append(text)

    # windowed: release word by word; asynchronous: every piece as it comes
    tenant = TenantConfig(output={"stream_window_sentences": 0, "stream_checks": mode})  # type: ignore[arg-type]
    return StreamHooks(on_chunk=on_chunk, guard=lambda: stream_guard(env, tenant), mode=mode)


async def script(server: SimulatorServer, content: str) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            server.url.removesuffix("/v1") + "/admin/faults",
            json={"model": "*", "mode": "scripted", "content": content},
        )
        assert reply.status_code == 200


@pytest.mark.parametrize("model", ["sim-small", "claude-sim"])
async def test_streamed_text_comes_in_pieces_and_equals_the_whole_answer(
    model: str, client: ChatClient
) -> None:
    whole = await infer(envelope(model, stream=False), catalog(), client, resilience=Resilience())
    assert whole.forward and whole.forward.inference and whole.forward.inference.content
    pieces: list[str] = []
    env = envelope(model)
    streamed = await infer(env, catalog(), client, resilience=Resilience(), stream=hooks(env, pieces))
    assert streamed.forward is not None
    inference = streamed.forward.inference
    assert inference is not None and inference.error is None and inference.streamed
    assert len(pieces) > 3 and "".join(pieces) == inference.content == whole.forward.inference.content
    assert inference.usage.completion_tokens == whole.forward.inference.usage.completion_tokens
    assert inference.ttft_ms is not None and streamed.event.attributes["stream"] == "windowed"
    final = validate_response(streamed.forward, utcnow(), catalog=catalog(), pii_detector=pii_findings)
    assert final.response is not None and final.response.status is Status.OK
    assert final.event.attributes["streamed"] == "true" and "ttft_ms" in final.event.attributes


@pytest.mark.parametrize("model", ["sim-small", "claude-sim"])
async def test_asynchronous_checks_release_the_first_piece_before_its_word_is_complete(
    model: str, client: ChatClient
) -> None:
    windowed: list[str] = []
    env = envelope(model)
    await infer(env, catalog(), client, resilience=Resilience(), stream=hooks(env, windowed))
    pieces: list[str] = []
    env = envelope(model)
    unheld = hooks(env, pieces, "asynchronous")
    outcome = await infer(env, catalog(), client, resilience=Resilience(), stream=unheld)
    assert outcome.forward is not None and outcome.forward.inference is not None
    assert "".join(pieces) == "".join(windowed) == outcome.forward.inference.content
    assert len(pieces) > len(windowed)  # the model's own pieces, not whole words
    assert not pieces[0].endswith((" ", "\n")) and windowed[0].startswith(pieces[0])
    assert outcome.event.attributes["stream"] == "asynchronous"


@pytest.mark.parametrize("model", ["sim-small", "claude-sim"])
async def test_a_leak_in_the_third_sentence_ends_the_stream_with_content_filter(
    model: str, client: ChatClient, simulator: SimulatorServer
) -> None:
    await script(simulator, LEAK)
    pieces: list[str] = []
    env = envelope(model)
    outcome = await infer(env, catalog(), client, resilience=Resilience(), stream=hooks(env, pieces))
    released = "".join(pieces)
    assert released and "dana" not in released and "example.org" not in released
    assert outcome.forward is not None and outcome.forward.inference is not None
    assert outcome.forward.inference.stream_cut == "pii_leak"
    assert outcome.event.attributes["stream_cut"] == "pii_leak"
    tenant: dict[str, Any] = {"output": {"safe_message": "That answer was withheld."}}
    final = validate_response(outcome.forward, utcnow(), tenant=TenantConfig(**tenant), catalog=catalog())
    response = final.response
    assert response is not None and response.status is Status.BLOCKED
    assert response.finish_reason == "content_filter" and response.content == "That answer was withheld."
    assert final.event.attributes["stream_cut"] == "pii_leak" and "ttft_ms" in final.event.attributes
    assert final.event.completion_tokens > 0 and final.event.cost_usd > 0  # what the model wrote is paid
