"""The model simulator over real HTTP: started on a free 127.0.0.1 port inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from sluice.local.simulator import SimulatorConfig, SimulatorServer, serve

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
async def sim() -> AsyncIterator[SimulatorServer]:
    server = await serve(SimulatorConfig(latency_ms=5, latency_jitter_ms=0, seed=7))
    yield server
    await server.close()


@pytest.fixture()
async def http(sim: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=_root(sim), timeout=10) as client:
        yield client


def _root(server: SimulatorServer) -> str:
    return server.url.removesuffix("/v1")


async def chat(
    http: httpx.AsyncClient, model: str = "sim-small", content: str = "Summarise the report", **extra: Any
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return await http.post("/v1/chat/completions", json=body)


async def set_fault(http: httpx.AsyncClient, model: str, mode: str, **params: Any) -> None:
    response = await http.post("/admin/faults", json={"model": model, "mode": mode, **params})
    assert response.status_code == 200, response.text


async def stats(http: httpx.AsyncClient, model: str) -> dict[str, int]:
    counters: dict[str, int] = (await http.get("/admin/stats")).json()["models"][model]
    return counters


def _content(response: httpx.Response) -> str:
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


# --- the OpenAI surface ----------------------------------------------------------------------------------


async def test_health_and_model_list(sim: SimulatorServer, http: httpx.AsyncClient) -> None:
    assert sim.url == f"http://127.0.0.1:{sim.port}/v1"
    assert (await http.get("/healthz")).status_code == 200
    listing = (await http.get("/v1/models")).json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["sim-small", "sim-medium", "sim-large"]


async def test_success_has_the_openai_shape_and_usage(http: httpx.AsyncClient) -> None:
    response = await chat(http, content="abcdefgh")  # 8 characters: 2 prompt tokens
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    reply = response.json()
    assert reply["id"].startswith("simcmpl-")
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int)
    assert reply["model"] == "sim-small"
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("[simulated sim-small] Reply to: abcdefgh")
    assert choice["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 2, "completion_tokens": 64, "total_tokens": 66}


async def test_max_tokens_below_reply_size_finishes_with_length(http: httpx.AsyncClient) -> None:
    reply = (await chat(http, max_tokens=7)).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 7
    assert len(reply["choices"][0]["message"]["content"]) <= 28


async def test_json_mode_content_parses(http: httpx.AsyncClient) -> None:
    for kind in ("json_object", "json_schema"):
        response = await chat(http, model="sim-medium", response_format={"type": kind})
        content = orjson.loads(_content(response))
        assert content["model"] == "sim-medium"
        assert content["answer"].startswith("[simulated sim-medium]")


async def test_streaming_sends_openai_chunks_then_done(http: httpx.AsyncClient) -> None:
    whole = _content(await chat(http, content="stream me"))
    response = await chat(http, content="stream me", stream=True, stream_options={"include_usage": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == whole
    assert chunks[-1]["usage"]["completion_tokens"] == 64


async def test_unknown_model_is_404_with_openai_error(http: httpx.AsyncClient) -> None:
    response = await chat(http, model="gpt-imaginary")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert {"message", "type", "code"} <= set(error)


async def test_bad_requests_are_400(http: httpx.AsyncClient) -> None:
    not_json = await http.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    no_messages = await http.post("/v1/chat/completions", json={"model": "sim-small"})
    bad_max = await chat(http, max_tokens=0)
    for response in (not_json, no_messages, bad_max):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_seeded_servers_give_the_same_sequence() -> None:
    async def run_once() -> list[tuple[int, str]]:
        server = await serve(SimulatorConfig(latency_ms=1, latency_jitter_ms=0, error_rate=0.5, seed=11))
        try:
            async with httpx.AsyncClient(base_url=_root(server), timeout=10) as http:
                results = []
                for i in range(30):
                    response = await chat(http, content=f"question {i % 3}")
                    results.append((response.status_code, _content(response) if response.is_success else ""))
                return results
        finally:
            await server.close()

    first, second = await run_once(), await run_once()
    assert first == second
    assert {status for status, _ in first} >= {200} and {status for status, _ in first} & {500, 503}


# --- faults switched at run time ---------------------------------------------------------------------------


async def test_down_fault_is_503_until_switched_off(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-small", "down")
    response = await chat(http)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert (await chat(http, model="sim-medium")).status_code == 200  # other models unaffected
    await set_fault(http, "sim-small", "none")
    assert (await chat(http)).status_code == 200
    counters = await stats(http, "sim-small")
    assert (counters["calls"], counters["errors"], counters["ok"]) == (2, 1, 1)


async def test_down_fault_can_drop_the_connection(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-small", "down", close=True)
    with pytest.raises(httpx.TransportError):
        await chat(http)
    await set_fault(http, "sim-small", "none")
    assert (await chat(http)).status_code == 200


async def test_slow_fault_multiplies_latency(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-small", "slow", factor=400)  # 5 ms -> 2 s
    with pytest.raises(httpx.TimeoutException):
        await http.post(
            "/v1/chat/completions",
            json={"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
            timeout=0.5,
        )
    await set_fault(http, "sim-small", "none")
    fast = await http.post(
        "/v1/chat/completions",
        json={"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
        timeout=5,
    )
    assert fast.status_code == 200


async def test_flaky_fault_returns_server_errors(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-large", "flaky", rate=1.0)
    for _ in range(10):
        response = await chat(http, model="sim-large")
        assert response.status_code in (500, 503)
        assert response.json()["error"]["type"] == "server_error"
    await set_fault(http, "sim-large", "flaky")  # default rate 0.5
    statuses = {(await chat(http, model="sim-large")).status_code for _ in range(40)}
    assert 200 in statuses and statuses & {500, 503}


async def test_rate_limited_fault_sends_retry_after(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-medium", "rate_limited", retry_after=1.5)
    response = await chat(http, model="sim-medium")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert (await stats(http, "sim-medium"))["rate_limited"] == 1


async def test_hallucinate_fault_invents_numbers_absent_from_the_prompt(http: httpx.AsyncClient) -> None:
    prompt = "Revenue was 1200 in 2021 and 3400 in 2022. What changed?"
    honest = _content(await chat(http, content=prompt))
    await set_fault(http, "sim-small", "hallucinate")
    wild = _content(await chat(http, content=prompt))
    assert wild.startswith("[simulated sim-small]")
    invented = [n for n in re.findall(r"\d+", wild) if n not in prompt]
    assert len(invented) >= 3
    assert not [n for n in re.findall(r"\d+", honest) if n not in prompt]


async def test_malformed_fault_kinds(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-small", "malformed", kind="invalid_json")
    response = await chat(http)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    await set_fault(http, "sim-small", "malformed", kind="missing_choices")
    parsed = (await chat(http)).json()
    assert "choices" not in parsed and parsed["object"] == "chat.completion"
    await set_fault(http, "sim-small", "malformed", kind="bad_content")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(_content(await chat(http, response_format={"type": "json_object"})))
    assert (await stats(http, "sim-small"))["malformed"] == 3


async def test_malformed_rate_from_config() -> None:
    server = await serve(SimulatorConfig(latency_ms=1, latency_jitter_ms=0, malformed_rate=1.0, seed=1))
    try:
        async with httpx.AsyncClient(base_url=_root(server), timeout=10) as http:
            for _ in range(5):
                response = await chat(http)
                assert response.status_code == 200
                with contextlib.suppress(ValueError):
                    assert "choices" not in response.json()
    finally:
        await server.close()


async def test_timeout_fires_on_the_client_and_close_is_quick() -> None:
    server = await serve(SimulatorConfig(latency_ms=1, latency_jitter_ms=0, timeout_rate=1.0))
    async with httpx.AsyncClient(base_url=_root(server), timeout=60) as http:
        body = {"model": "sim-small", "messages": [{"role": "user", "content": "hang"}]}
        with pytest.raises(httpx.TimeoutException):
            await http.post("/v1/chat/completions", json=body, timeout=0.5)
        for _ in range(100):  # the client gave up, so the server cancels the hung call and frees its slot
            if (await stats(http, "sim-small"))["in_flight"] == 0:
                break
            await asyncio.sleep(0.02)
        assert (await stats(http, "sim-small"))["in_flight"] == 0
        pending = asyncio.create_task(http.post("/v1/chat/completions", json=body))
        for _ in range(100):
            if (await stats(http, "sim-small"))["in_flight"] == 1:
                break
            await asyncio.sleep(0.02)
        assert (await stats(http, "sim-small"))["timeouts"] == 2
        await asyncio.wait_for(server.close(), timeout=5)  # far below the 600 s hang
        with contextlib.suppress(httpx.TransportError):
            response = await asyncio.wait_for(pending, timeout=5)
            assert response.status_code >= 500


async def test_timeout_fault_switches_on_and_off(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-small", "timeout")
    with pytest.raises(httpx.TimeoutException):
        await http.post(
            "/v1/chat/completions",
            json={"model": "sim-small", "messages": [{"role": "user", "content": "x"}]},
            timeout=0.5,
        )
    await set_fault(http, "sim-small", "none")
    assert (await chat(http)).status_code == 200


async def test_star_fault_covers_every_model_until_a_model_overrides_it(http: httpx.AsyncClient) -> None:
    await set_fault(http, "*", "down")
    assert {(await chat(http, model=m)).status_code for m in ("sim-small", "sim-medium", "sim-large")} == {
        503
    }
    await set_fault(http, "sim-large", "none")
    assert (await chat(http, model="sim-large")).status_code == 200
    assert (await chat(http, model="sim-small")).status_code == 503
    await set_fault(http, "*", "none")  # clears the per-model faults too
    assert {(await chat(http, model=m)).status_code for m in ("sim-small", "sim-medium", "sim-large")} == {
        200
    }


async def test_admin_faults_rejects_bad_input(http: httpx.AsyncClient) -> None:
    cases = [
        ({"model": "sim-small", "mode": "exploded"}, 400),
        ({"model": "sim-small", "mode": "flaky", "rate": 2}, 400),
        ({"model": "sim-small", "mode": "down", "typo": True}, 400),
        ({"mode": "down"}, 400),
        ({"model": "nope", "mode": "down"}, 404),
    ]
    for body, status in cases:
        response = await http.post("/admin/faults", json=body)
        assert response.status_code == status, body
        assert "error" in response.json()
    assert (await http.post("/admin/faults", content=b"not json")).status_code == 400
    assert (await http.get("/admin/config")).json()["faults"] == {}


async def test_config_shows_settings_and_active_faults(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-medium", "slow", factor=3)
    shown = (await http.get("/admin/config")).json()
    assert shown["config"]["seed"] == 7
    assert shown["config"]["latency_ms"] == 5
    assert set(shown["config"]["models"]) == {"sim-small", "sim-medium", "sim-large"}
    assert shown["faults"]["sim-medium"]["mode"] == "slow"
    assert shown["faults"]["sim-medium"]["factor"] == 3


async def test_stats_count_calls_per_model_and_reset_clears_them(http: httpx.AsyncClient) -> None:
    for model in ("sim-small", "sim-small", "sim-small", "sim-large", "gpt-unknown"):
        await chat(http, model=model)
    report = (await http.get("/admin/stats")).json()
    assert report["models"]["sim-small"]["calls"] == 3
    assert report["models"]["sim-large"]["calls"] == 1
    assert report["models"]["sim-medium"]["calls"] == 0
    assert report["total"]["calls"] == 4 and report["total"]["ok"] == 4
    assert report["total"]["in_flight"] == 0
    await set_fault(http, "sim-small", "down")
    assert (await http.post("/admin/reset")).status_code == 200
    assert (await http.get("/admin/stats")).json()["total"]["calls"] == 0
    assert (await http.get("/admin/config")).json()["faults"] == {}
    assert (await chat(http)).status_code == 200


# --- capacity and the CLI entry point ----------------------------------------------------------------------


async def test_two_thousand_calls_in_flight_at_once() -> None:
    server = await serve(SimulatorConfig(latency_ms=2000, latency_jitter_ms=0))
    body = {"model": "sim-medium", "messages": [{"role": "user", "content": "load"}]}
    # aiohttp's client here: httpx's pool slows down sharply at thousands of connections, and this test
    # is about the server's capacity, not the client's.
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one() -> int:
                async with session.post(f"{server.url}/chat/completions", json=body) as response:
                    await response.read()
                    return int(response.status)

            statuses = await asyncio.gather(*(one() for _ in range(2000)))
            async with session.get(f"{_root(server)}/admin/stats") as response:
                counters = (await response.json())["models"]["sim-medium"]
    finally:
        await server.close()
    assert set(statuses) == {200}
    assert counters["calls"] == 2000
    assert counters["peak_in_flight"] == 2000


async def test_run_serves_until_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SLUICE_SIMULATOR_PORT": "0",
        "SLUICE_SIMULATOR_LATENCY_MS": "1",
        "PYTHONPATH": str(REPO),
    }
    code = "from sluice.settings import Settings; from sluice.local.simulator import run; run(Settings())"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        url = re.search(r"http://\S+/v1", line)
        assert url, line
        async with httpx.AsyncClient(base_url=url.group(0), timeout=10) as http:
            assert (await http.get("/models")).status_code == 200
            reply = (
                await http.post(
                    "/chat/completions", json={"model": "sim-small", "messages": [{"content": "x"}]}
                )
            ).json()
            assert reply["choices"][0]["message"]["content"].startswith("[simulated sim-small]")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# --- the Anthropic messages surface ----------------------------------------------------------------------

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-sim"}


async def messages(
    http: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    payload = {
        "model": "sim-small",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hi there"}],
        **body,
    }
    return await http.post(
        "/v1/messages", json=payload, headers=ANTHROPIC_HEADERS if headers is None else headers
    )


async def test_messages_api_answers_in_anthropic_shape(http: httpx.AsyncClient) -> None:
    response = await messages(http, system="Be brief.", max_tokens=200)
    assert response.status_code == 200
    body = response.json()
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", "sim-small")
    [block] = body["content"]
    assert block["type"] == "text" and block["text"].startswith("[simulated sim-small]")
    assert body["stop_reason"] == "end_turn"
    # "Be brief." (3 tokens) went in as the system turn, "Hi there" (2) as the user turn
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 64}
    short = (await messages(http, max_tokens=4)).json()
    assert short["stop_reason"] == "max_tokens" and short["usage"]["output_tokens"] == 4
    assert (await stats(http, "sim-small"))["calls"] == 2


async def test_messages_api_requires_its_headers_and_fields(http: httpx.AsyncClient) -> None:
    missing_version = await messages(http, headers={"x-api-key": "k"})
    assert missing_version.status_code == 400
    assert missing_version.json()["error"]["type"] == "invalid_request_error"
    missing_key = await messages(http, headers={"anthropic-version": "2023-06-01"})
    assert missing_key.status_code == 401
    assert missing_key.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key: header is required"},
    }
    for bad in (
        {"max_tokens": None},
        {"messages": []},
        {"messages": [{"role": "system", "content": "x"}]},
        {"system": 5},
    ):
        assert (await messages(http, **bad)).status_code == 400, bad
    unknown = await messages(http, model="claude-nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert (await stats(http, "sim-small"))["calls"] == 0


async def test_messages_api_shares_the_per_model_faults(http: httpx.AsyncClient) -> None:
    await set_fault(http, "sim-small", "rate_limited", retry_after=0.25)
    limited = await messages(http)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1" and limited.headers["retry-after-ms"] == "250"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert (await messages(http, model="sim-medium")).status_code == 200  # other models unaffected
    await set_fault(http, "sim-small", "down")
    down = await messages(http)
    assert down.status_code == 503 and down.json()["error"]["type"] == "overloaded_error"
    await set_fault(http, "sim-small", "malformed", kind="missing_choices")
    broken = await messages(http)
    assert broken.status_code == 200 and "content" not in broken.json()
