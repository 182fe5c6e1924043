"""The model-call transport (httpx over aiohttp's pool) against a real local HTTP server: bodies,
headers, decoding, streaming, the connection limit, and every failure as the httpx error (and
so the ProviderError) the callers expect."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest
from aiohttp import web

from schemas import ErrorCode
from sluice.local.broker import free_port
from sluice.providers.catalog import ModelEntry
from sluice.providers.openai_http import ChatClient, ProviderError
from sluice.providers.pooled_transport import PooledTransport
from sluice.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REPLY = {
    "choices": [{"message": {"role": "assistant", "content": "four"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a local server with one POST handler; yields its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


def client_for(url: str, **overrides: object) -> tuple[ChatClient, ModelEntry]:
    settings = Settings(infer_max_in_flight=4, infer_connect_timeout_s=1.0, **overrides)  # type: ignore[arg-type]
    return ChatClient(settings), model_at(url, timeout_s=0.5)


def model_at(url: str, **fields: object) -> ModelEntry:
    return ModelEntry.model_validate(
        {"name": "m", "base_url": url, "input_price_per_1k": 0.0, "output_price_per_1k": 0.0, **fields}
    )


async def failed_call(url: str) -> ProviderError:
    """The ProviderError of one call to a model at `url` (the call must fail)."""
    chat, entry = client_for(url)
    try:
        with pytest.raises(ProviderError) as failure:
            await chat.complete(entry, {"messages": []}, 5.0)  # the entry's own 0.5 s bounds it
    finally:
        await chat.close()
    return failure.value


async def test_a_call_carries_body_and_headers_and_reads_the_reply(
    serve: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["body"] = orjson.loads(await request.read())
        seen["authorization"] = request.headers.get("Authorization")
        seen["hosts"] = request.headers.getall("Host")
        return web.json_response(REPLY)

    url = await serve(handler)
    monkeypatch.setenv("M_KEY", "sk-test")
    chat, _ = client_for(url)
    entry = model_at(url, timeout_s=5.0, api_key_env="M_KEY")
    try:
        completion = await chat.complete(entry, {"messages": [{"role": "user", "content": "2+2?"}]}, 5.0)
    finally:
        await chat.close()
    assert completion.content == "four" and completion.prompt_tokens == 5
    assert seen["body"] == {"messages": [{"role": "user", "content": "2+2?"}], "model": "m"}
    assert seen["authorization"] == "Bearer sk-test"
    assert len(seen["hosts"]) == 1  # type: ignore[arg-type]


async def test_a_compressed_reply_is_decoded_once(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(orjson.dumps(REPLY)),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    url = await serve(handler)
    chat, entry = client_for(url)
    try:
        completion = await chat.complete(entry, {"messages": []}, 5.0)
    finally:
        await chat.close()
    assert completion.content == "four"


async def test_connections_are_reused_and_capped(serve: Callable[[Handler], Awaitable[str]]) -> None:
    peers: set[object] = set()
    in_flight = 0
    most = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return web.json_response(REPLY)

    url = await serve(handler)
    transport = PooledTransport(max_connections=2)
    async with httpx.AsyncClient(transport=transport) as http:
        calls = [http.post(f"{url}/chat/completions", content=b"{}") for _ in range(12)]
        replies = await asyncio.gather(*calls)
    assert all(reply.status_code == 200 for reply in replies)
    assert most <= 2
    assert len(peers) <= 2  # twelve calls on at most two connections


async def test_a_stream_arrives_line_by_line_and_closing_it_early_drops_the_connection(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    first_line_read = asyncio.Event()
    server_saw_disconnect = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        await reply.write(b"data: one\n\n")
        await first_line_read.wait()  # only a transport that streams gets past this
        try:
            for _ in range(200):
                await reply.write(b"data: more\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionResetError, ConnectionError):
            server_saw_disconnect.set()
            raise
        return reply

    url = await serve(handler)
    async with httpx.AsyncClient(transport=PooledTransport(max_connections=2)) as http:
        async with http.stream("POST", f"{url}/chat/completions", content=b"{}") as reply:
            async with asyncio.timeout(10):
                async for line in reply.aiter_lines():
                    assert line == "data: one"
                    first_line_read.set()
                    break
        async with asyncio.timeout(10):
            await server_saw_disconnect.wait()


async def test_a_refused_connection_is_the_model_being_unavailable() -> None:
    failure = await failed_call(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    assert failure.code is ErrorCode.MODEL_UNAVAILABLE and failure.retryable
    assert "ConnectError" in str(failure)


async def test_a_silent_server_is_a_timeout(serve: Callable[[Handler], Awaitable[str]]) -> None:
    release = asyncio.Event()

    async def handler(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(REPLY)

    try:
        failure = await failed_call(await serve(handler))
    finally:
        release.set()
    assert failure.code is ErrorCode.TIMEOUT


async def test_a_reply_cut_off_mid_body_is_the_model_being_unavailable(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "500"})
        await reply.prepare(request)
        await reply.write(b'{"choices": [')
        assert request.transport is not None
        request.transport.close()  # the server goes away before the promised 500 bytes
        return reply

    failure = await failed_call(await serve(handler))
    assert failure.code is ErrorCode.MODEL_UNAVAILABLE and failure.retryable


async def test_a_pool_wait_beyond_the_limit_is_a_connect_timeout(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    release = asyncio.Event()

    async def handler(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(REPLY)

    url = await serve(handler)
    async with httpx.AsyncClient(transport=PooledTransport(max_connections=1)) as http:
        holder = asyncio.create_task(http.post(f"{url}/chat/completions", content=b"{}", timeout=10))
        await asyncio.sleep(0.1)  # the one connection is taken
        with pytest.raises(httpx.ConnectTimeout):
            await http.post(f"{url}/chat/completions", content=b"{}", timeout=httpx.Timeout(10, pool=0.2))
        release.set()
        assert (await holder).status_code == 200


async def test_a_proxy_named_in_the_environment_carries_the_call(
    serve: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured as httpx's own transport honours it (and NO_PROXY with it)."""
    targets: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        targets.append(str(request.url))
        return web.json_response(REPLY)

    proxy_root = (await serve(proxy)).removesuffix("/v1")
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_root)
    unreachable = "http://model.invalid:9/v1"  # resolves nowhere: only the proxy can answer
    chat, entry = client_for(unreachable)
    try:
        completion = await chat.complete(entry, {"messages": []}, 5.0)
    finally:
        await chat.close()
    assert completion.content == "four"
    assert targets == ["http://model.invalid:9/v1/chat/completions"]

    monkeypatch.setenv("NO_PROXY", "model.invalid")
    await failed_call(unreachable)  # straight to the unreachable host
    assert len(targets) == 1
