"""infer() against the real simulator over HTTP, and parse_completion on its own."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

from agents.infer import chat_payload, infer
from agents.validate_response import validate_response
from schemas import Envelope, ErrorCode, Request, RouteDecision, Stage, Status, Usage
from sluice.local.simulator import SimulatorServer
from sluice.outcome import Outcome, event_id_for, utcnow
from sluice.providers.catalog import BUILTIN_CATALOG, Catalog, ModelEntry
from sluice.providers.openai_http import ChatClient, ProviderError, parse_completion
from sluice.settings import Settings

PROMPT = "hello world!"  # 12 chars -> 3 simulated prompt tokens


def admin_url(server: SimulatorServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def set_fault(server: SimulatorServer, **fault: Any) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(admin_url(server, "/admin/faults"), json={"model": "sim-small", **fault})
        assert reply.status_code == 200, reply.text


async def total_calls(server: SimulatorServer) -> int:
    async with httpx.AsyncClient() as http:
        reply = await http.get(admin_url(server, "/admin/stats"))
        assert reply.status_code == 200
        return int(reply.json()["total"]["calls"])


def routed(model: str | None = "sim-small", deadline_s: float = 10.0, **request_fields: Any) -> Envelope:
    now = utcnow()
    fields: dict[str, Any] = {
        "correlation_id": "corr-1",
        "tenant": "acme",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        **request_fields,
    }
    return Envelope(
        request_id="req-1",
        correlation_id="corr-1",
        tenant="acme",
        reply_to="sluice.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=deadline_s),
        request=Request.model_validate(fields),
        route=RouteDecision(model=model, reason="test") if model else None,
    )


def assert_failed(outcome: Outcome, code: ErrorCode, model: str = "sim-small") -> None:
    """infer never answers itself: a failure rides on the envelope to validate_response."""
    assert outcome.response is None
    assert outcome.forward is not None
    inference = outcome.forward.inference
    assert inference is not None
    assert inference.content is None
    assert inference.model == model
    assert inference.error is not None
    assert inference.error.code is code
    assert inference.error.stage is Stage.INFER
    assert outcome.event.stage is Stage.INFER
    assert outcome.event.status == "failed"
    assert outcome.event.error_code is code
    assert outcome.event.event_id == event_id_for("req-1", Stage.INFER)
    final = validate_response(outcome.forward, utcnow())
    assert final.response is not None and final.response.error is not None
    assert final.response.status is Status.FAILED
    assert final.response.error.code is code
    assert final.response.error.stage is Stage.INFER


def assert_timed_out(outcome: Outcome, model: str = "sim-small") -> None:
    """Out of time, infer answers itself: a final timeout response, no hop to validate_response."""
    assert outcome.forward is None
    response = outcome.response
    assert response is not None and response.error is not None
    assert response.status is Status.FAILED
    assert (response.error.code, response.error.stage) == (ErrorCode.TIMEOUT, Stage.INFER)
    assert response.model == model
    assert outcome.reply_to == "sluice.responses"
    assert outcome.event.stage is Stage.INFER and outcome.event.status == "failed"
    assert outcome.event.summary is not None
    assert outcome.event.event_id == event_id_for("req-1", Stage.INFER)


# --- over HTTP -----------------------------------------------------------------------------------


async def test_ok_path_usage_from_reply_and_cost_from_catalog(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    outcome = await infer(routed(), BUILTIN_CATALOG, client)
    assert outcome.response is None
    assert outcome.forward is not None
    inference = outcome.forward.inference
    assert inference is not None
    assert inference.error is None
    assert inference.model == "sim-small"
    assert inference.content is not None and inference.content.startswith("[simulated sim-small]")
    assert inference.finish_reason == "length"  # max_tokens 16 < the simulator's 64
    assert inference.usage == Usage(prompt_tokens=3, completion_tokens=16, total_tokens=19)
    expected_cost = (3 * 0.0002 + 16 * 0.0006) / 1000
    assert inference.cost_usd == pytest.approx(expected_cost)
    event = outcome.event
    assert (event.stage, event.status, event.model) == (Stage.INFER, "ok", "sim-small")
    assert (event.prompt_tokens, event.completion_tokens) == (3, 16)
    assert event.cost_usd == pytest.approx(expected_cost)
    assert "model_latency_ms" in event.attributes
    assert await total_calls(simulator) == 1
    final = validate_response(outcome.forward, utcnow())
    assert final.response is not None and final.response.status is Status.OK
    assert final.response.content == inference.content


async def test_named_model_prices_come_from_its_catalog_entry(client: ChatClient) -> None:
    outcome = await infer(routed("sim-large"), BUILTIN_CATALOG, client)
    assert outcome.forward is not None and outcome.forward.inference is not None
    inference = outcome.forward.inference
    assert inference.model == "sim-large"
    assert inference.cost_usd == pytest.approx((3 * 0.005 + 16 * 0.015) / 1000)


async def test_no_route_uses_the_catalog_default(client: ChatClient) -> None:
    outcome = await infer(routed(model=None), BUILTIN_CATALOG, client)
    assert outcome.forward is not None and outcome.forward.inference is not None
    assert outcome.forward.inference.model == "sim-small"


async def test_catalog_entry_with_explicit_base_url(simulator: SimulatorServer, client: ChatClient) -> None:
    catalog = Catalog(
        default="house",
        models=(
            ModelEntry(
                name="house",
                base_url=simulator.url,
                upstream_model="sim-medium",
                input_price_per_1k=1.0,
                output_price_per_1k=2.0,
            ),
        ),
    )
    outcome = await infer(routed("house"), catalog, client)
    assert outcome.forward is not None and outcome.forward.inference is not None
    inference = outcome.forward.inference
    assert inference.model == "house"
    assert inference.content is not None and inference.content.startswith("[simulated sim-medium]")
    assert inference.cost_usd == pytest.approx((3 * 1.0 + 16 * 2.0) / 1000)


async def test_json_mode_reaches_the_model(client: ChatClient) -> None:
    outcome = await infer(routed(response_format={"type": "json_object"}), BUILTIN_CATALOG, client)
    assert outcome.forward is not None and outcome.forward.inference is not None
    content = outcome.forward.inference.content
    assert content is not None
    assert orjson.loads(content)["model"] == "sim-small"


@pytest.mark.parametrize("close", [False, True])
async def test_down_model_is_model_unavailable(
    client: ChatClient, simulator: SimulatorServer, close: bool
) -> None:
    await set_fault(simulator, mode="down", close=close)
    assert_failed(await infer(routed(), BUILTIN_CATALOG, client), ErrorCode.MODEL_UNAVAILABLE)


async def test_rate_limited_model_is_model_unavailable(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    await set_fault(simulator, mode="rate_limited")
    assert_failed(await infer(routed(), BUILTIN_CATALOG, client), ErrorCode.MODEL_UNAVAILABLE)


async def test_hanging_model_is_a_timeout_within_the_deadline(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    await set_fault(simulator, mode="timeout")
    outcome = await infer(routed(deadline_s=0.5), BUILTIN_CATALOG, client)
    assert_timed_out(outcome)
    assert await total_calls(simulator) == 1


@pytest.mark.parametrize("kind", ["invalid_json", "missing_choices"])
async def test_malformed_reply_is_model_unavailable(
    client: ChatClient, simulator: SimulatorServer, kind: str
) -> None:
    await set_fault(simulator, mode="malformed", kind=kind)
    outcome = await infer(routed(), BUILTIN_CATALOG, client)
    assert_failed(outcome, ErrorCode.MODEL_UNAVAILABLE)
    assert outcome.forward is not None and outcome.forward.inference is not None
    assert outcome.forward.inference.error is not None
    assert "malformed" in outcome.forward.inference.error.message


async def test_broken_json_content_is_caught_by_validate_response(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    await set_fault(simulator, mode="malformed", kind="bad_content")
    outcome = await infer(routed(response_format={"type": "json_object"}), BUILTIN_CATALOG, client)
    assert outcome.forward is not None and outcome.forward.inference is not None
    assert outcome.forward.inference.error is None  # a well-formed reply whose content is broken
    broken = outcome.forward.inference.content
    # first review: sent back to the model with the validation error (a repair re-ask)
    repair = validate_response(outcome.forward, utcnow(), catalog=BUILTIN_CATALOG)
    assert repair.response is None and repair.forward is not None
    assert repair.forward.repair_attempts == 1
    assert [m.content for m in repair.forward.followup][:1] == [broken]
    assert len(chat_payload(repair.forward)["messages"]) == 3  # the request, the bad answer, the re-ask
    # once the repair budget is spent the client gets response_invalid, never the broken JSON
    spent = outcome.forward.model_copy(update={"repair_attempts": 1})
    final = validate_response(spent, utcnow(), catalog=BUILTIN_CATALOG)
    assert final.response is not None and final.response.error is not None
    assert final.response.error.code is ErrorCode.RESPONSE_INVALID
    assert final.response.checks.schema_valid is False
    assert final.response.content is None


async def test_deadline_already_passed_is_a_timeout_without_calling(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    before = await total_calls(simulator)
    outcome = await infer(routed(deadline_s=-1.0), BUILTIN_CATALOG, client)
    assert_timed_out(outcome)
    assert await total_calls(simulator) == before == 0


async def test_unknown_routed_model_fails_without_calling(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    outcome = await infer(routed("ghost"), BUILTIN_CATALOG, client)
    assert_failed(outcome, ErrorCode.MODEL_UNAVAILABLE, model="ghost")
    assert await total_calls(simulator) == 0


async def test_model_the_server_does_not_know_is_model_unavailable(
    simulator: SimulatorServer, client: ChatClient
) -> None:
    catalog = Catalog(
        default="x",
        models=(ModelEntry(name="x", base_url=simulator.url, input_price_per_1k=0, output_price_per_1k=0),),
    )
    outcome = await infer(routed("x"), catalog, client)
    assert_failed(outcome, ErrorCode.MODEL_UNAVAILABLE, model="x")
    assert outcome.forward is not None and outcome.forward.inference is not None
    assert outcome.forward.inference.error is not None
    assert "404" in outcome.forward.inference.error.message


async def test_unreachable_server_is_model_unavailable(settings: Settings) -> None:
    catalog = Catalog(
        default="x",
        models=(
            ModelEntry(
                name="x", base_url="http://127.0.0.1:9/v1", input_price_per_1k=0, output_price_per_1k=0
            ),
        ),
    )
    chat = ChatClient(settings.with_overrides(infer_max_in_flight=32))
    try:
        assert_failed(await infer(routed("x"), catalog, chat), ErrorCode.MODEL_UNAVAILABLE, model="x")
    finally:
        await chat.close()


def test_chat_payload_carries_messages_limits_and_json_mode() -> None:
    payload = chat_payload(routed(response_format={"type": "json_object"}, temperature=0.2))
    assert payload == {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
    }
    assert "response_format" not in chat_payload(routed(response_format={"type": "text"}))
    assert "model" not in chat_payload(routed())  # the client fills in the served name


# --- parse_completion ----------------------------------------------------------------------------


def completion_body(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    body.update(changes)
    return orjson.dumps(body)


def test_parse_completion_reads_content_usage_and_finish() -> None:
    completion = parse_completion("m", completion_body(), 12.5)
    assert completion.content == "hi"
    assert completion.finish_reason == "stop"
    assert (completion.prompt_tokens, completion.completion_tokens) == (5, 7)
    assert completion.latency_ms == 12.5


@pytest.mark.parametrize("usage", [None, {}])
def test_parse_completion_missing_usage_is_zero(usage: Any) -> None:
    completion = parse_completion("m", completion_body(usage=usage), 1.0)
    assert (completion.prompt_tokens, completion.completion_tokens) == (0, 0)


def test_parse_completion_clamps_negative_usage_and_ignores_odd_finish() -> None:
    choices = [{"message": {"content": "x"}, "finish_reason": 3}]
    completion = parse_completion("m", completion_body(choices=choices, usage={"prompt_tokens": -4}), 1.0)
    assert completion.prompt_tokens == 0
    assert completion.finish_reason is None


def test_parse_completion_null_content_is_empty() -> None:
    choices = [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]
    assert parse_completion("m", completion_body(choices=choices), 1.0).content == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b'{"id": "x", "choices": [{"message": {"content": "cut',
        b"[]",
        b'"a string"',
        b"null",
        completion_body(choices=[]),
        completion_body(choices={"0": {"message": {"content": "x"}}}),
        completion_body(choices=[None]),
        completion_body(choices=[{"message": "text"}]),
        completion_body(choices=[{"message": {}}]),
        completion_body(choices=[{"delta": {"content": "x"}}]),
        completion_body(usage={"prompt_tokens": "many"}),
        completion_body(usage={"completion_tokens": None}),
        orjson.dumps({"usage": {}}),
    ],
)
def test_parse_completion_off_protocol_is_model_unavailable(raw: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_completion("sim-x", raw, 1.0)
    assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "sim-x" in caught.value.message


@pytest.mark.parametrize("usage", [[1, 2], "lots", 7])
def test_parse_completion_non_object_usage_is_model_unavailable(usage: Any) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_completion("sim-x", completion_body(usage=usage), 1.0)
    assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
