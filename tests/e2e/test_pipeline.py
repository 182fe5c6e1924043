"""End to end on the real broker, real HTTP (simulator) and the real ClickHouse engine (sink):
the pipeline's promises from the skeleton issue, shown with real processes."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker
from tests.e2e.stack import (
    Stack,
    eventually,
    publish_raw,
    read_topic,
    responses_by_correlation,
    responses_of,
    running_stack,
    stack_settings,
)

pytestmark = pytest.mark.e2e

REJECTED_AT_VALIDATE = ("bad-missing", "bad-types", "bad-big")


# The same promises in the default layout (one chain, validate..validate_response in one agent)
# and the fully split one (one Kafka hop per stage).
LAYOUTS = {"chained": "", "split": "all"}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def stack(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"pipeline-{request.param}")
    settings = stack_settings(
        broker.bootstrap,
        root,
        "e",
        simulator_seed=7,
        chain_breaks=LAYOUTS[request.param],
    )
    with running_stack(settings, root / "logs") as running:
        yield running


def total_requests_in_clickhouse(stack: Stack) -> int:
    return sum(int(str(row["requests"])) for row in stack.query("totals"))


async def test_thousand_concurrent_requests_get_exactly_one_response_each(stack: Stack) -> None:
    async with SluiceClient(settings=stack.settings, timeout_s=120) as client:
        ids = [f"bulk-{i}-{uuid.uuid4().hex[:6]}" for i in range(1000)]
        responses = await asyncio.gather(
            *(client.request(f"question {i}", correlation_id=cid, max_tokens=32) for i, cid in enumerate(ids))
        )
    assert [r.correlation_id for r in responses] == ids
    assert {r.status.value for r in responses} == {"ok"}
    assert all(r.usage.total_tokens > 0 and r.cost_usd > 0 and r.model == "sim-small" for r in responses)
    assert len({r.request_id for r in responses}) == 1000
    counts = await responses_by_correlation(stack.settings)
    assert all(counts[cid] == 1 for cid in ids), "every request gets exactly one response on the topic"


async def test_malformed_inputs_get_their_documented_outcomes(stack: Stack) -> None:
    settings = stack.settings
    requests_topic = f"{settings.topic_prefix}requests"
    async with SluiceClient(settings=settings, timeout_s=60) as client:
        await client.publish_raw(b"\xff\xfe not json at all", key="garbage")
        await client.publish_raw(b'{"tenant": "demo", "messages": []}', key="no-cid")

        missing = client.expect("bad-missing")
        await client.publish_raw(
            orjson.dumps({"correlation_id": "bad-missing", "tenant": "demo"}), "bad-missing"
        )
        wrong_type = client.expect("bad-types")
        await client.publish_raw(
            orjson.dumps(
                {"correlation_id": "bad-types", "tenant": "demo", "messages": "hi", "max_tokens": "x"}
            ),
            "bad-types",
        )
        oversized = client.expect("bad-big")
        await client.publish_raw(
            orjson.dumps(
                {
                    "correlation_id": "bad-big",
                    "tenant": "demo",
                    "messages": [{"role": "user", "content": "x" * 70_000}],
                }
            ),
            "bad-big",
        )
        rejected_missing = await client.wait("bad-missing", missing)
        rejected_types = await client.wait("bad-types", wrong_type)
        rejected_big = await client.wait("bad-big", oversized)
        unknown_model = await client.request("hello", model="no-such-model")
        healthy = await client.request("still serving?")

    assert rejected_missing.status.value == "rejected"
    assert rejected_missing.error is not None and rejected_missing.error.code.value == "invalid_request"
    assert "messages" in rejected_missing.error.message
    assert rejected_types.error is not None and rejected_types.error.code.value == "invalid_request"
    assert "max_tokens" in rejected_types.error.message or "messages" in rejected_types.error.message
    assert rejected_big.error is not None and rejected_big.error.code.value == "payload_too_large"
    assert unknown_model.status.value == "rejected" and unknown_model.error is not None
    assert unknown_model.error.code.value == "invalid_request" and unknown_model.error.stage.value == "route"
    assert healthy.status.value == "ok"

    letters = [
        orjson.loads(v or b"")
        for _, v, _, _ in await read_topic(settings.bootstrap, f"{settings.topic_prefix}deadletter")
    ]
    raws = {base64.b64decode(letter["raw_base64"]): letter for letter in letters}
    garbage = raws[b"\xff\xfe not json at all"]
    assert garbage["reason"].startswith("not JSON") and garbage["source_topic"] == requests_topic
    assert garbage["offset"] >= 0 and garbage["stage"] == "validate"
    assert "correlation_id" in raws[b'{"tenant": "demo", "messages": []}']["reason"]


async def test_clickhouse_rows_match_answers_and_redelivery_changes_nothing(stack: Stack) -> None:
    settings = stack.settings
    answered = await responses_by_correlation(settings)
    assert answered and max(answered.values()) == 1
    await eventually(lambda: total_requests_in_clickhouse(stack) == len(answered), timeout=60)
    rows = stack.query("dashboard")
    sim_row = next(row for row in rows if row["model"] == "sim-small")
    assert float(str(sim_row["cost_usd"])) > 0 and int(str(sim_row["completion_tokens"])) > 0
    assert float(str(sim_row["p50_ms"])) > 0

    validate_events_before = validate_event_count(stack)
    # Re-deliver every event, and re-send every request with the same tenant + correlation_id.
    events_topic = f"{settings.topic_prefix}events"
    events = await read_topic(settings.bootstrap, events_topic)
    await publish_raw(settings.bootstrap, events_topic, [(k, v or b"") for k, v, _, _ in events])
    requests_topic = f"{settings.topic_prefix}requests"
    originals = [(k, v or b"") for k, v, _, _ in await read_topic(settings.bootstrap, requests_topic)]
    readable = [r for r in originals if r[1].startswith(b"{") and b"correlation_id" in r[1]]
    await publish_raw(settings.bootstrap, requests_topic, originals)

    # Each re-sent request is recorded once as a validate event; replayed events add nothing.
    expected = validate_events_before + len(readable)
    await eventually(lambda: validate_event_count(stack) == expected, timeout=60)
    # An accepted request is answered once, however often it is re-sent. A request validate
    # rejected was never accepted: its client may fix and re-send it, and gets a fresh answer.
    after = await responses_by_correlation(settings)
    assert {cid: n for cid, n in after.items() if cid not in REJECTED_AT_VALIDATE} == {
        cid: n for cid, n in answered.items() if cid not in REJECTED_AT_VALIDATE
    }, "no second response for any accepted request"
    assert all(after[cid] == 2 for cid in REJECTED_AT_VALIDATE)
    await eventually(
        lambda: total_requests_in_clickhouse(stack) == len(answered) + len(REJECTED_AT_VALIDATE), timeout=60
    )


def validate_event_count(stack: Stack) -> int:
    return sum(int(str(r["events"])) for r in stack.query("stage_latency") if r["stage"] == "validate")


async def test_sigkill_mid_load_loses_no_request(stack: Stack, tmp_path: Path) -> None:
    settings = stack.settings
    ids = [f"kill-{i}-{uuid.uuid4().hex[:6]}" for i in range(400)]
    async with SluiceClient(settings=settings, timeout_s=120) as client:

        async def send_all() -> list[object]:
            tasks = []
            for i, cid in enumerate(ids):
                tasks.append(asyncio.create_task(client.request(f"survive {i}", correlation_id=cid)))
                await asyncio.sleep(0.01)
            return list(await asyncio.gather(*tasks))

        sending = asyncio.create_task(send_all())
        await asyncio.sleep(1.5)
        stack.kill("worker")
        replacement = stack.start("worker-2")
        await asyncio.to_thread(stack.wait_worker_ready, replacement)
        responses = await sending
    assert len(responses) == len(ids)
    counts = await responses_by_correlation(settings)
    missing = [cid for cid in ids if counts[cid] == 0]
    doubled = [cid for cid in ids if counts[cid] > 1]
    details = [await responses_of(settings, cid) for cid in doubled[:3]]
    assert not missing and not doubled, f"missing={missing[:5]} doubled={doubled[:5]} {details}"
