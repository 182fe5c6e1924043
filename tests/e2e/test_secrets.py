"""API keys end to end: tenant `acme` has a key (only its SHA-256 is configured). Requests with
the right key are answered, a wrong or missing key is `unauthorized`, through the Python client
and through the gateway with the official openai SDK; afterwards the plain key appears nowhere
but on the requests topic: not on any other topic, in no ClickHouse row and in no log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from aiokafka import AIOKafkaConsumer

from sluice.edge.client import SluiceClient
from sluice.edge.gateway import serve_gateway
from sluice.edge.identity import tenant_resolver
from sluice.local.broker import EmbeddedBroker, free_port
from sluice.settings import Settings
from sluice.tenants import AccessRules, TenantConfig, hash_key, new_api_key
from tests.e2e.stack import Stack, eventually, read_topic, running_stack, settings_env, stack_settings

pytestmark = pytest.mark.e2e

KEY = new_api_key()
WRONG = new_api_key()
HELLO = [{"role": "user", "content": "Say hello, securely."}]


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("secrets")
    settings = stack_settings(
        broker.bootstrap,
        root,
        "s",
        simulator_seed=5,
        # demo is configured explicitly: once acme has keys, an unconfigured tenant is refused
        tenants={
            "acme": TenantConfig(access=AccessRules(api_key_sha256=(hash_key(KEY),))),
            "demo": TenantConfig(),
        },
    )
    assert KEY not in json.dumps(settings_env(settings)), "the processes are given the hash only"
    with running_stack(settings, root / "logs") as running:
        yield running


@pytest.fixture()
async def root_url(stack: Stack) -> AsyncIterator[str]:
    port = free_port()
    resolver = tenant_resolver(stack.settings.tenants)
    async with serve_gateway(stack.settings, "127.0.0.1", port, resolve_tenant=resolver):
        yield f"http://127.0.0.1:{port}"


async def test_python_client_needs_the_right_key(stack: Stack) -> None:
    async with SluiceClient(settings=stack.settings, timeout_s=30) as client:
        ok = await client.request(HELLO, tenant="acme", api_key=KEY, max_tokens=16)
        wrong = await client.request(HELLO, tenant="acme", api_key=WRONG)
        missing = await client.request(HELLO, tenant="acme")
        # a key sent to a tenant that needs none is accepted and dropped all the same
        demo = await client.request(HELLO, tenant="demo", api_key=KEY, max_tokens=16)
        # the right key, rejected for something else: the rejection carries no key either
        too_many = await client.request(HELLO, tenant="acme", api_key=KEY, max_tokens=10**6)
    assert ok.status.value == "ok" and ok.content and ok.tenant == "acme"
    assert demo.status.value == "ok"
    for refused in (wrong, missing):
        assert refused.status.value == "rejected" and refused.error is not None
        assert refused.error.code.value == "unauthorized" and refused.error.stage.value == "validate"
        assert refused.error.message.startswith("api_key")
        assert KEY not in refused.error.message and WRONG not in refused.error.message
    assert too_many.error is not None and too_many.error.code.value == "invalid_request"
    assert too_many.error.message.startswith("max_tokens")


async def test_gateway_with_the_openai_sdk(
    stack: Stack, root_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # INFO everywhere (aiokafka's own DEBUG output dumps whole produced records), DEBUG for Sluice
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="sluice")
    async with openai.AsyncOpenAI(base_url=f"{root_url}/v1", api_key=KEY, max_retries=0, timeout=30) as sdk:
        completion = await sdk.chat.completions.create(model="auto", messages=HELLO, max_tokens=16)
    assert completion.choices[0].message.content
    assert (completion.model_extra or {})["sluice"]["status"] == "ok"

    async with openai.AsyncOpenAI(base_url=f"{root_url}/v1", api_key=WRONG, max_retries=0, timeout=30) as sdk:
        with pytest.raises(openai.AuthenticationError) as refused:
            await sdk.chat.completions.create(model="auto", messages=HELLO)
    assert refused.value.status_code == 401 and refused.value.code == "unauthorized"
    assert WRONG not in refused.value.message

    async with httpx.AsyncClient(base_url=root_url, timeout=30) as http:
        # no key at all: the demo tenant, which needs none
        anonymous = await http.post("/v1/chat/completions", json={"model": "auto", "messages": HELLO})
        # a malformed Authorization header is refused before anything reaches Kafka
        malformed = await http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": HELLO},
            headers={"Authorization": f"Basic {KEY}"},
        )
    assert anonymous.status_code == 200 and anonymous.json()["sluice"]["status"] == "ok"
    assert malformed.status_code == 401 and KEY not in malformed.text
    assert KEY not in caplog.text and WRONG not in caplog.text


async def _topics(settings: Settings) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap)
    await consumer.start()
    try:
        names = await consumer.topics()
    finally:
        await consumer.stop()
    return sorted(n for n in names if n.startswith((settings.topic_prefix, settings.app_id)))


def _warehouse_dump(stack: Stack) -> str:
    """Every row of every table of the stack's ClickHouse database, as text (the sink must be
    stopped: only one process may open the chdb path)."""
    script = (
        "import json\n"
        "from sluice.settings import Settings\n"
        "from sluice.warehouse.connection import connect\n"
        "w = connect(Settings())\n"
        'tables = w.query("SELECT name FROM system.tables WHERE database = {d:String}'
        " AND engine != 'MaterializedView'\", {'d': w.database})\n"
        # Every column as text: rollups hold aggregate states, which have no client-side type.
        "rows = {t['name']: w.query(f\"SELECT * APPLY toString FROM `{w.database}`.`{t['name']}`\")"
        " for t in tables}\n"
        "print(json.dumps(rows, default=str))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=settings_env(stack.settings),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout.decode()


async def test_the_key_appears_nowhere_but_on_the_requests_topic(stack: Stack) -> None:
    settings = stack.settings
    key, wrong = KEY.encode(), WRONG.encode()
    requests_topic = f"{settings.topic_prefix}requests"
    sent = b"".join(value or b"" for _, value, _, _ in await read_topic(settings.bootstrap, requests_topic))
    assert key in sent and wrong in sent, "the keys did travel, so the scan below is not vacuous"

    topics = await _topics(settings)
    assert {f"{settings.topic_prefix}{name}" for name in ("validated", "responses", "events")} <= set(topics)
    for topic in topics:
        if topic == requests_topic:
            continue
        for record_key, value, _, _ in await read_topic(settings.bootstrap, topic, idle_s=0.5):
            for data in (record_key or b"", value or b""):
                assert key not in data and wrong not in data, f"an API key on {topic}"

    # ClickHouse through the sink's named queries, once the sink has the finished requests
    def finished() -> int:
        return sum(int(str(row["requests"])) for row in stack.query("totals"))

    await eventually(lambda: finished() >= 7, timeout=30)
    for name in ("dashboard", "totals", "stage_latency", "feedback", "deadletters"):
        text = json.dumps(stack.query(name), default=str)
        assert KEY not in text and WRONG not in text, f"an API key in ClickHouse query {name}"

    stack.stop_all()  # logs complete, and the chdb path free for a full read
    rows = _warehouse_dump(stack)
    assert '"acme"' in rows and "unauthorized" in rows, "the dump holds this test's rows"
    assert KEY not in rows and WRONG not in rows, "an API key in a ClickHouse row"

    logs = _log_files(stack.logs)
    assert set(logs) >= {"worker", "sink", "simulator"}
    for name, text in logs.items():
        assert key not in text and wrong not in text, f"an API key in {name}.log"


def _log_files(logs: Path) -> dict[str, bytes]:
    return {path.stem: path.read_bytes() for path in sorted(logs.glob("*.log"))}
