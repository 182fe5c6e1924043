"""Fuzz both ways in on a real stack (bench/fuzz.py runs the same with 10,000 inputs): random and
mutated inputs through the HTTP front door and straight onto the requests topic. No process
crashes; every HTTP input gets one answer that is neither a 500 nor a 504; every Kafka input
gets exactly one response or one dead-letter record."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sluice.edge.gateway import serve_gateway
from sluice.local.broker import EmbeddedBroker, free_port
from sluice.tenants import AccessRules, TenantConfig, hash_key
from tests.e2e.fuzz import FuzzReport, fuzz_http, fuzz_kafka
from tests.e2e.stack import Stack, running_stack, stack_settings

pytestmark = pytest.mark.e2e

KEY = "sk-sluice-fuzz-key"
INPUTS_PER_WAY = 200  # CI time; bench/fuzz.py sends 5,000 each way


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fuzz")
    tenants = {
        "acme": TenantConfig(access=AccessRules(api_key_sha256=(hash_key(KEY),))),
        "demo": TenantConfig(),
    }
    settings = stack_settings(broker.bootstrap, root, "fz", tenants=tenants)
    with running_stack(settings, root / "logs", simulator_latency_ms=5.0) as running:
        yield running


async def test_fuzzed_inputs_each_get_one_answer_and_nothing_crashes(stack: Stack) -> None:
    report = FuzzReport()
    port = free_port()
    async with serve_gateway(stack.settings, "127.0.0.1", port):
        await fuzz_http(f"http://127.0.0.1:{port}", INPUTS_PER_WAY, 11, [KEY, "sk-unknown"], report)
    await fuzz_kafka(
        stack.settings, INPUTS_PER_WAY, 11, {"acme": KEY, "demo": None, "nobody": None}, report, timeout_s=90
    )
    print(report.summary())
    assert report.http_answered == report.http_sent == INPUTS_PER_WAY
    assert report.kafka_answered + report.kafka_dead_lettered >= INPUTS_PER_WAY
    assert report.lost == 0, report.summary()
    # the mix exercises every outcome: served, refused at the door, refused by validate, dead-lettered
    assert report.http_statuses[200] > 0 and report.http_statuses[400] > 0 and report.http_statuses[401] > 0
    assert report.kafka_outcomes["ok"] > 0 and report.kafka_outcomes["rejected:invalid_request"] > 0
    assert report.kafka_outcomes["rejected:unauthorized"] > 0 and report.kafka_dead_lettered > 0
    assert all(process.poll() is None for process in stack.processes.values()), "a process crashed"
