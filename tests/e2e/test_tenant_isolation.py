"""Two keyed tenants on a real broker, worker, sink, simulator and HTTP gateway: identity is
decided by the key (HTTP) or by tenant + api_key (Kafka); nothing of one tenant reaches the
other (answers, ratings, models, retries); a key revoked in the tenants file stops working on
both paths within 5 s, with no restart; a reply reader that dies is seen on readiness, is
restarted, and loses no answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka.admin import NewTopic

from sluice import kafka_clients
from sluice.cli import add_key_to_config, revoke_key_in_config
from sluice.edge.client import SluiceClient
from sluice.edge.gateway import Gateway, serve_gateway
from sluice.local.broker import EmbeddedBroker, free_port
from sluice.tenants import read_tenants_file
from tests.e2e.stack import Stack, read_topic, running_stack, settings_env, stack_settings

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Say hello."}]
REVOCATION_LIMIT_S = 5.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tenants file: acme may use sim-small only; globex everything; `demo` is not configured."""
    path = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    path.write_text(
        '[tenants.acme.access]\nallowed_models = ["auto", "sim-small"]\n\n[tenants.globex.access]\n'
    )
    return {
        "file": str(path),
        "acme": add_key_to_config(path, "acme"),
        "globex": add_key_to_config(path, "globex"),
    }


@pytest.fixture(scope="module")
def stack(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, str]
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("isolation")
    path = Path(keys["file"])
    settings = stack_settings(
        broker.bootstrap, root, "iso", tenants=read_tenants_file(path), tenants_file=path, tenants_poll_s=0.5
    )
    with running_stack(settings, root / "logs") as running:
        yield running


@pytest.fixture()
async def gateway(stack: Stack) -> AsyncIterator[tuple[str, Gateway]]:
    port = free_port()
    async with serve_gateway(stack.settings, "127.0.0.1", port) as running:
        yield f"http://127.0.0.1:{port}", running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def chat(http: httpx.AsyncClient, key: str | None, **body: object) -> httpx.Response:
    headers = bearer(key) if key is not None else {}
    return await http.post("/v1/chat/completions", json={"messages": HELLO, **body}, headers=headers)


async def test_keys_decide_the_tenant_on_both_paths(
    stack: Stack, gateway: tuple[str, Gateway], keys: dict[str, str]
) -> None:
    url, _ = gateway
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        keyless = await chat(http, None)
        unknown = await chat(http, "sk-sluice-not-a-key")
        acme = await chat(http, keys["acme"], max_tokens=16)
    assert keyless.status_code == unknown.status_code == 401
    assert keyless.json()["error"]["code"] == unknown.json()["error"]["code"] == "unauthorized"
    assert acme.status_code == 200, acme.text
    async with SluiceClient(settings=stack.settings, timeout_s=30) as client:
        refused = await asyncio.gather(
            client.request(HELLO, tenant="acme"),
            client.request(HELLO, tenant="acme", api_key="sk-sluice-not-a-key"),
            client.request(HELLO, tenant="acme", api_key=keys["globex"]),  # a key of another tenant
            client.request(HELLO, tenant="demo"),  # not configured while tenants have keys
        )
        served = await client.request(HELLO, tenant="globex", api_key=keys["globex"], max_tokens=16)
    for response in refused:
        assert response.status.value == "rejected" and response.error is not None
        assert response.error.code.value == "unauthorized", response.error
    assert served.status.value == "ok" and served.tenant == "globex"


async def test_the_same_correlation_id_from_two_tenants_gets_two_answers(
    stack: Stack, keys: dict[str, str]
) -> None:
    cid = f"shared-{time.monotonic_ns()}"
    async with SluiceClient(settings=stack.settings, timeout_s=30) as client:
        acme, globex = await asyncio.gather(
            client.request("Name a colour.", tenant="acme", api_key=keys["acme"], correlation_id=cid),
            client.request("Name an animal.", tenant="globex", api_key=keys["globex"], correlation_id=cid),
        )
    assert (acme.tenant, globex.tenant) == ("acme", "globex")
    assert acme.status.value == globex.status.value == "ok"
    assert acme.request_id != globex.request_id
    on_topic = [
        orjson.loads(value or b"{}")
        for _, value, _, _ in await read_topic(
            stack.settings.bootstrap, f"{stack.settings.topic_prefix}responses"
        )
    ]
    mine = sorted((body["tenant"], body["request_id"]) for body in on_topic if body["correlation_id"] == cid)
    assert mine == sorted([("acme", acme.request_id), ("globex", globex.request_id)])


async def test_models_and_ratings_are_per_tenant(gateway: tuple[str, Gateway], keys: dict[str, str]) -> None:
    url, _ = gateway
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        acme_models = (await http.get("/v1/models", headers=bearer(keys["acme"]))).json()
        globex_models = (await http.get("/v1/models", headers=bearer(keys["globex"]))).json()
        anonymous = await http.get("/v1/models")
        answer = await chat(http, keys["acme"], max_tokens=16)
        request_id = answer.json()["sluice"]["request_id"]
        rating = {"request_id": request_id, "rating": -1, "label": "unhelpful"}
        foreign = await http.post("/v1/feedback", json=rating, headers=bearer(keys["globex"]))
        own = await http.post("/v1/feedback", json=rating, headers=bearer(keys["acme"]))
    assert [m["id"] for m in acme_models["data"]] == ["auto", "sim-small"]
    assert {m["id"] for m in globex_models["data"]} > {"auto", "sim-small", "sim-medium"}
    assert anonymous.status_code == 401
    assert foreign.status_code == 404 and own.status_code == 202


async def test_a_rating_is_owned_by_its_request_id_whichever_gateway_is_asked(
    stack: Stack, keys: dict[str, str]
) -> None:
    """Ownership comes from the request_id itself: a gateway that relayed nothing (a second
    replica, or one restarted since) still refuses another tenant's request and ids no request
    ever had, for requests sent over Kafka as well as through another gateway."""
    async with SluiceClient(settings=stack.settings, timeout_s=30) as client:
        over_kafka = await client.request(HELLO, tenant="acme", api_key=keys["acme"], max_tokens=16)
    first = free_port()
    async with (
        serve_gateway(stack.settings, "127.0.0.1", first),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{first}", timeout=30) as http,
    ):
        relayed = (await chat(http, keys["globex"], max_tokens=16)).json()["sluice"]["request_id"]
    second = free_port()
    async with (
        serve_gateway(stack.settings, "127.0.0.1", second),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{second}", timeout=30) as http,
    ):

        async def rate(request_id: str, tenant: str) -> int:
            rating = {"request_id": request_id, "rating": 1, "label": "good"}
            reply = await http.post("/v1/feedback", json=rating, headers=bearer(keys[tenant]))
            return reply.status_code

        outcomes = {
            "acme rates its Kafka request": await rate(over_kafka.request_id, "acme"),
            "globex rates acme's Kafka request": await rate(over_kafka.request_id, "globex"),
            "globex rates its relayed request": await rate(relayed, "globex"),
            "acme rates globex's relayed request": await rate(relayed, "acme"),
            "acme rates an id no request had": await rate(str(uuid.uuid4()), "acme"),
        }
    assert outcomes == {
        "acme rates its Kafka request": 202,
        "globex rates acme's Kafka request": 404,
        "globex rates its relayed request": 202,
        "acme rates globex's relayed request": 404,
        "acme rates an id no request had": 404,
    }
    ratings = [
        orjson.loads(value or b"{}")
        for _, value, _, _ in await read_topic(
            stack.settings.bootstrap, f"{stack.settings.topic_prefix}feedback"
        )
    ]
    sent = sorted(
        (r["tenant"], r["request_id"]) for r in ratings if r["request_id"] in (over_kafka.request_id, relayed)
    )
    assert sent == sorted([("acme", over_kafka.request_id), ("globex", relayed)]), (
        "refused ones never reach Kafka"
    )


async def test_reply_to_names_only_the_tenants_own_topics(stack: Stack, keys: dict[str, str]) -> None:
    """acme reads its answers from its own reply topic; globex naming acme's topic, and a sender
    without acme's key naming it, are refused (typed errors, on the default reply topic), and
    nothing but acme's own answers is ever written to acme's topic."""
    settings = stack.settings
    acme_topic = f"{settings.allowed_reply_prefix}.acme"
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(acme_topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    async with (
        SluiceClient(settings=settings, reply_to=acme_topic, timeout_s=30) as acme_client,
        SluiceClient(settings=settings, timeout_s=30) as default_client,
    ):
        own = await acme_client.request(HELLO, tenant="acme", api_key=keys["acme"], max_tokens=16)
        foreign, unproven = await asyncio.gather(
            default_client.request(HELLO, tenant="globex", api_key=keys["globex"], reply_to=acme_topic),
            default_client.request(HELLO, tenant="acme", api_key="sk-sluice-not-a-key", reply_to=acme_topic),
        )
    assert own.status.value == "ok" and own.tenant == "acme"
    assert foreign.status.value == "rejected" and foreign.error is not None
    assert foreign.error.code.value == "invalid_request"
    assert foreign.error.message.startswith(
        f"reply_to: tenant 'globex' may be answered only on '{settings.allowed_reply_prefix}.globex'"
    )
    assert unproven.status.value == "rejected" and unproven.error is not None
    assert unproven.error.code.value == "unauthorized"
    on_acme_topic = [
        orjson.loads(value or b"{}") for _, value, _, _ in await read_topic(settings.bootstrap, acme_topic)
    ]
    assert [(body["tenant"], body["request_id"]) for body in on_acme_topic] == [("acme", own.request_id)]


async def test_a_retry_never_leaves_the_allow_list(stack: Stack, keys: dict[str, str]) -> None:
    stack.fault("sim-small", "scripted", content="")  # every answer of sim-small is empty: retry
    try:
        before = stack.simulator_calls("sim-medium")
        async with SluiceClient(settings=stack.settings, timeout_s=30) as client:
            acme = await client.request(HELLO, tenant="acme", api_key=keys["acme"], model="sim-small")
            assert stack.simulator_calls("sim-medium") == before, "acme may not use sim-medium"
            globex = await client.request(HELLO, tenant="globex", api_key=keys["globex"], model="sim-small")
    finally:
        stack.fault("sim-small", "none")
    assert acme.error is not None and acme.error.code.value == "response_invalid"
    assert "access rules" in acme.error.message
    assert globex.model != "sim-small" and stack.simulator_calls("sim-medium") > before


async def _refused_everywhere(http: httpx.AsyncClient, client: SluiceClient, key: str, refused: bool) -> bool:
    reply = await chat(http, key, max_tokens=8)
    answer = await client.request(HELLO, tenant="acme", api_key=key, max_tokens=8)
    unauthorized = answer.error is not None and answer.error.code.value == "unauthorized"
    return (reply.status_code == 401) is refused and unauthorized is refused


async def _within(limit_s: float, check: object) -> float:
    """Seconds until `check()` is true (asserted within `limit_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if await check():  # type: ignore[operator]
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {limit_s} s")


async def test_a_revoked_key_stops_working_within_5_s_without_a_restart(
    stack: Stack, gateway: tuple[str, Gateway], keys: dict[str, str]
) -> None:
    url, _ = gateway
    path = Path(keys["file"])
    fresh = add_key_to_config(path, "acme", label="rotation")
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        SluiceClient(settings=stack.settings, timeout_s=30) as client,
    ):
        accepted_after = await _within(
            REVOCATION_LIMIT_S, lambda: _refused_everywhere(http, client, fresh, False)
        )
        assert revoke_key_in_config(path, "acme", fresh) == 1
        refused_after = await _within(
            REVOCATION_LIMIT_S, lambda: _refused_everywhere(http, client, fresh, True)
        )
        still = await chat(http, keys["acme"], max_tokens=8)  # the other key is untouched
    assert still.status_code == 200
    print(f"new key accepted after {accepted_after:.1f} s, revoked key refused after {refused_after:.1f} s")


async def test_a_dead_reply_reader_shows_on_readiness_and_loses_no_answer(
    gateway: tuple[str, Gateway], keys: dict[str, str]
) -> None:
    url, running = gateway
    client = running._connected()
    assert client._supervisor is not None and client._consumer is not None
    client._supervisor.base_s = 1.5  # a backoff long enough to see the outage from outside
    consumer, original = client._consumer, client._consumer.getmany
    killed = asyncio.Event()

    async def dies_once(*args: object, **kwargs: object) -> object:
        if not killed.is_set():
            killed.set()
            raise RuntimeError("injected: the reply reader dies")
        return await original(*args, **kwargs)

    consumer.getmany = dies_once  # type: ignore[method-assign]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await killed.wait()
        down = await http.get("/healthz")
        # requests sent while the reader is down are answered once it is back
        answers = await asyncio.gather(*(chat(http, keys["globex"], max_tokens=8) for _ in range(5)))
        up = await http.get("/healthz")
    assert down.status_code == 503 and down.json()["parts"]["client.replies"] is False
    assert up.status_code == 200 and up.json()["parts"]["client.replies"] is True
    assert [answer.status_code for answer in answers] == [200] * 5
    assert client._supervisor.tasks["replies"].deaths == 1


def test_the_cli_sends_with_the_tenants_key(stack: Stack, keys: dict[str, str]) -> None:
    def send(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sluice", "send", "Say hello.", "--tenant", "acme", *args]
        return subprocess.run(
            command, env=settings_env(stack.settings), capture_output=True, text=True, timeout=60
        )

    refused, served = send(), send("--api-key", keys["acme"], "--max-tokens", "8")
    assert refused.returncode == 1 and '"unauthorized"' in refused.stdout
    assert served.returncode == 0 and '"status": "ok"' in served.stdout
    assert keys["acme"] not in served.stdout + served.stderr
