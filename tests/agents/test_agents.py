"""Agent tier: the real Faust agents from `register_stages`, driven with `agent.test_context()`.

There is no broker here, so `pipeline.publish` and `pipeline.dead_letter` are replaced by recorders
that keep what each agent would send. Two things differ from a worker on Kafka:

* `test_context()` feeds the agent through a plain in-memory channel, and a plain channel does not
  run the topic's schema. Values are therefore decoded here with the topic's own schema first
  (`WireSchema(Envelope).loads_value`, exactly what the topic does on Kafka) and put decoded:
  an `Envelope`, or a `Poison` for bytes that are not one. The validate agent's topic is raw bytes.
* `ctx.put()` returns once the agent has *taken* the value, not once it has finished with it, so
  each test waits (bounded) until the recorder has seen what it expects.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError
from faust.types.tuples import Message

import agents.faust_wiring as wiring
import sluice.app
from schemas import (
    Admission,
    DeadLetter,
    Envelope,
    ErrorCode,
    Event,
    Inference,
    Request,
    RouteDecision,
    Settlement,
    Stage,
    Status,
)
from sluice.app import Pipeline, PublishFailed, create_app
from sluice.codec import Poison, encode
from sluice.local.simulator import Fault, SimulatorServer
from sluice.outcome import Outcome, utcnow
from sluice.settings import Settings
from sluice.tenants import AccessRules, QuotaRules, TenantConfig
from topics import ADMISSION, INFERRED, ROUTED, SANITIZED, VALIDATED, TopicSpec

WAIT_S = 10.0  # upper bound for an agent to act; never a timing assertion
SECRET = "sk-agent-SECRET-55aa"
MODELS_TOML = """
default = "sim-small"

[[models]]
name = "sim-small"
base_url = "simulator"
input_price_per_1k = 0.0002
output_price_per_1k = 0.0006

[[models]]
name = "sim-large"
base_url = "simulator"
input_price_per_1k = 0.005
output_price_per_1k = 0.015
"""


class Recorder:
    """Stands in for Pipeline.publish / Pipeline.dead_letter and remembers every call."""

    def __init__(self) -> None:
        self.published: list[tuple[Outcome, TopicSpec | None]] = []
        self.earlier: list[tuple[Event, ...]] = []  # the chain's earlier stage events, per publish
        self.dead: list[DeadLetter] = []
        self._changed = asyncio.Condition()

    async def publish(
        self, outcome: Outcome, next_topic: TopicSpec | None = None, *, earlier: Sequence[Event] = ()
    ) -> None:
        async with self._changed:
            self.published.append((outcome, next_topic))
            self.earlier.append(tuple(earlier))
            self._changed.notify_all()

    async def dead_letter(self, letter: DeadLetter) -> None:
        async with self._changed:
            self.dead.append(letter)
            self._changed.notify_all()

    async def wait(self, published: int = 0, dead: int = 0) -> None:
        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len(self.published) >= published and len(self.dead) >= dead
                )

        await asyncio.wait_for(reached(), WAIT_S)


Built = tuple[Pipeline, Recorder]


@pytest.fixture()
def build(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Built]]:
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML)

    def make(**overrides: Any) -> Built:
        # infer_max_in_flight=32: one httpx connection shard (each shard loads the CA bundle).
        # Fully split unless a test says otherwise: each stage is an agent of its own here.
        overrides.setdefault("chain_breaks", "all")
        configured = settings.with_overrides(models=models, infer_max_in_flight=32, **overrides)
        pipeline = Pipeline(configured, create_app(configured))
        wiring.register_stages(pipeline)
        app = pipeline.app
        app.finalize()
        app.conf.store = "memory://"
        app.flow_control.resume()
        recorder = Recorder()
        monkeypatch.setattr(pipeline, "publish", recorder.publish)
        monkeypatch.setattr(pipeline, "dead_letter", recorder.dead_letter)
        return pipeline, recorder

    yield make


def request_bytes(**changes: Any) -> bytes:
    document: dict[str, Any] = {
        "correlation_id": "corr-1",
        "tenant": "acme",
        "api_key": SECRET,
        "messages": [{"role": "user", "content": "Ｗhat is\u200b Kafka?"}],
        "max_tokens": 16,
    }
    document.update(changes)
    return orjson.dumps(document)


def envelope(request_id: str = "req-1", **request_fields: Any) -> Envelope:
    now = utcnow()
    fields: dict[str, Any] = {
        "correlation_id": "corr-1",
        "tenant": "acme",
        "messages": [{"role": "user", "content": "hi\u200b there"}],
        "max_tokens": 16,
        **request_fields,
    }
    return Envelope(
        request_id=request_id,
        correlation_id="corr-1",
        tenant="acme",
        reply_to="sluice.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=30),
        request=Request.model_validate(fields),
    )


def from_wire(pipeline: Pipeline, spec: TopicSpec, raw: bytes) -> Envelope | Poison:
    """What the stage topic hands its agent on Kafka: the topic schema's decoding of the bytes."""
    message = Message(
        topic=spec.name(pipeline.settings.topic_prefix),
        partition=0,
        offset=0,
        timestamp=0.0,
        timestamp_type=0,
        headers=None,
        key=b"corr-1",
        value=raw,
        checksum=None,
    )
    value: Envelope | Poison = pipeline.envelope_topic(spec).schema.loads_value(pipeline.app, message)
    return value


async def drive_and_wait(
    pipeline: Pipeline, recorder: Recorder, agent_name: str, *values: Any, published: int = 0, dead: int = 0
) -> None:
    async with pipeline.app.agents[agent_name].test_context() as ctx:
        for value in values:
            await ctx.put(value, key=b"corr-1")
        await recorder.wait(published=published, dead=dead)


def only_outcome(recorder: Recorder) -> tuple[Outcome, TopicSpec | None]:
    assert recorder.dead == []
    assert len(recorder.published) == 1, recorder.published
    return recorder.published[0]


# --- registration ---------------------------------------------------------------------------------


def test_register_stages_defines_the_five_agents(build: Callable[..., Built]) -> None:
    pipeline, _ = build()
    stages = {"validate", "sanitize", "route", "infer", "validate_response"}
    assert set(pipeline.app.agents) == stages | {"admit"}  # admit: quotas, between validate and sanitize
    assert pipeline.app.agents["validate"].channel is pipeline.requests
    assert pipeline.app.agents["sanitize"].channel is pipeline.envelope_topic(VALIDATED)
    assert pipeline.app.agents["route"].channel is pipeline.envelope_topic(SANITIZED)
    assert pipeline.app.agents["infer"].channel is pipeline.envelope_topic(ROUTED)
    assert pipeline.app.agents["validate_response"].channel is pipeline.envelope_topic(INFERRED)


# --- validate -------------------------------------------------------------------------------------


async def test_validate_agent_forwards_a_valid_request(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    await drive_and_wait(pipeline, recorder, "validate", request_bytes(), published=1)
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is VALIDATED  # a tenant without quotas skips the admit step
    assert outcome.response is None
    assert outcome.forward is not None
    # Derived from (topic, partition, offset, record timestamp): a valid UUID, stable per record.
    assert uuid.UUID(outcome.forward.request_id).version == 5
    assert outcome.forward.request.api_key is None
    assert SECRET.encode() not in encode(outcome.forward)
    assert outcome.event.status == "ok" and outcome.event.stage is Stage.VALIDATE
    # the agent remembered the request so a client retry is recognised
    remembered = pipeline.seen.get("acme/corr-1")
    assert remembered is not None and remembered["request_id"] == outcome.forward.request_id


async def test_admit_agent_keeps_the_quota_table_and_refuses_over_the_limit(
    build: Callable[..., Built],
) -> None:
    pipeline, recorder = build(tenants={"acme": TenantConfig(quota=QuotaRules(requests_per_minute=1))})
    first, second = envelope("req-1"), envelope("req-2")
    done = Settlement(
        request_id="req-1", tenant="acme", status=Status.OK, cost_usd=0.001, finished_at=utcnow()
    )
    async with pipeline.app.agents["admit"].test_context() as ctx:
        for record in (Admission(request=first), Admission(request=second), Admission(settlement=done)):
            await ctx.put(record, key=b"acme")
        await recorder.wait(published=2)
        for _ in range(100):  # the settlement publishes nothing: wait for its table write
            if (pipeline.quota.data.get("h:req-1") or {}).get("state") == "settled":
                break
            await asyncio.sleep(0.05)
    (admitted, to), (refused, _) = recorder.published
    assert to is VALIDATED and admitted.forward is not None and admitted.forward.request_id == "req-1"
    assert refused.response is not None and refused.response.error is not None
    assert refused.response.error.code is ErrorCode.RATE_LIMITED
    assert refused.response.error.retry_after_s is not None and refused.response.error.retry_after_s > 0
    assert refused.event.event_id != admitted.event.event_id
    assert pipeline.quota.data["h:req-2"]["state"] == "refused"
    assert pipeline.quota.data["h:req-1"]["state"] == "settled"
    usage = pipeline.quota.data["t:acme"]
    assert usage["spent_usd"] == pytest.approx(0.001) and usage["reserved_usd"] == pytest.approx(0.0)


async def test_validate_agent_dead_letters_garbage(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    await drive_and_wait(pipeline, recorder, "validate", b"\x00not json at all", dead=1)
    assert recorder.published == []
    [letter] = recorder.dead
    assert "not JSON" in letter.reason
    assert base64.b64decode(letter.raw_base64) == b"\x00not json at all"
    assert (letter.source_topic, letter.partition, letter.offset) == ("sluice.requests", 0, 0)
    assert letter.stage == "validate"
    assert pipeline.seen.get("acme/corr-1") is None


async def test_validate_agent_rejects_an_invalid_request(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    await drive_and_wait(pipeline, recorder, "validate", request_bytes(colour="blue"), published=1)
    outcome, _ = only_outcome(recorder)
    assert outcome.forward is None
    assert outcome.response is not None and outcome.response.error is not None
    assert outcome.response.status is Status.REJECTED
    assert outcome.response.error.code is ErrorCode.INVALID_REQUEST
    assert "colour" in outcome.response.error.message
    assert outcome.reply_to == pipeline.default_reply_to


async def test_validate_agent_second_copy_is_a_duplicate(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    await drive_and_wait(pipeline, recorder, "validate", request_bytes(), request_bytes(), published=2)
    (first, _), (second, _) = recorder.published
    assert first.forward is not None
    assert second.forward is None and second.response is None
    assert second.event.status == "duplicate"
    assert second.event.request_id != first.event.request_id
    assert second.event.attributes["original_request_id"] == first.event.request_id
    # the table keeps the original, so every later copy points at it
    remembered = pipeline.seen.get("acme/corr-1")
    assert remembered is not None and remembered["request_id"] == first.event.request_id


async def test_validate_agent_other_correlation_ids_are_not_duplicates(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    raws = [request_bytes(correlation_id="a"), request_bytes(correlation_id="b")]
    await drive_and_wait(pipeline, recorder, "validate", *raws, published=2)
    assert [outcome.forward is not None for outcome, _ in recorder.published] == [True, True]
    assert {"acme/a", "acme/b"} <= set(pipeline.seen.data)


async def test_validate_agent_survives_an_absurd_record_timestamp(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    async with pipeline.app.agents["validate"].test_context() as ctx:
        await ctx.put(request_bytes(), key=b"corr-1", timestamp=1e12)  # seconds: year ~33658
        await ctx.put(request_bytes(correlation_id="next"), key=b"next")
        await recorder.wait(published=2)
    assert all(outcome.forward is not None for outcome, _ in recorder.published)


# --- sanitize / route / validate_response ---------------------------------------------------------


async def test_sanitize_agent_forwards_the_cleaned_envelope(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    value = from_wire(pipeline, VALIDATED, encode(envelope()))
    assert isinstance(value, Envelope)
    await drive_and_wait(pipeline, recorder, "sanitize", value, published=1)
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is SANITIZED
    assert outcome.forward is not None
    assert outcome.forward.request.messages[0].content == "hi there"
    assert outcome.event.stage is Stage.SANITIZE and outcome.event.status == "ok"


async def test_route_agent_routes_auto_to_the_catalog_default(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    await drive_and_wait(
        pipeline, recorder, "route", from_wire(pipeline, SANITIZED, encode(envelope())), published=1
    )
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is ROUTED
    assert outcome.forward is not None and outcome.forward.route is not None
    assert outcome.forward.route.model == "sim-small"


async def test_route_agent_applies_the_router_and_the_tenants_policy(build: Callable[..., Built]) -> None:
    math = "A shop sells 3 boxes at $4 each and 5 bags at $2 each. How much is spent in total?"
    pipeline, recorder = build()
    value = from_wire(pipeline, SANITIZED, encode(envelope(messages=[{"role": "user", "content": math}])))
    await drive_and_wait(pipeline, recorder, "route", value, published=1)
    outcome, _ = only_outcome(recorder)
    assert outcome.forward is not None and outcome.forward.route is not None
    # this catalog gives no tiers (both models default to medium): the cheaper one serves
    assert (outcome.forward.route.route, outcome.forward.route.tier) == ("standard", "medium")
    assert outcome.forward.route.model == "sim-small" and outcome.forward.route.fallbacks == ["sim-large"]
    assert outcome.event.attributes["route_reason"].startswith("auto: score")

    capped = TenantConfig(access=AccessRules(max_cost_per_request_usd=1e-6))
    pipeline, recorder = build(tenants={"acme": capped})
    await drive_and_wait(
        pipeline, recorder, "route", from_wire(pipeline, SANITIZED, encode(envelope())), published=1
    )
    outcome, _ = only_outcome(recorder)
    assert outcome.response is not None and outcome.response.error is not None
    assert outcome.response.error.code is ErrorCode.BUDGET_EXCEEDED


async def test_route_agent_rejects_an_unknown_model(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    value = from_wire(pipeline, SANITIZED, encode(envelope(model="sim-medium")))  # not in this catalog
    await drive_and_wait(pipeline, recorder, "route", value, published=1)
    outcome, _ = only_outcome(recorder)
    assert outcome.forward is None
    assert outcome.response is not None and outcome.response.error is not None
    assert outcome.response.error.code is ErrorCode.INVALID_REQUEST
    assert "sim-large" in outcome.response.error.message


async def test_validate_response_agent_sends_the_final_response(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    done = envelope().model_copy(
        update={
            "route": RouteDecision(model="sim-small", reason="auto"),
            "inference": Inference(model="sim-small", content="Kafka is a log.", finish_reason="stop"),
        }
    )
    await drive_and_wait(
        pipeline, recorder, "validate_response", from_wire(pipeline, INFERRED, encode(done)), published=1
    )
    outcome, _ = only_outcome(recorder)
    assert outcome.forward is None
    assert outcome.response is not None
    assert outcome.response.status is Status.OK
    assert outcome.response.content == "Kafka is a log."
    assert outcome.event.summary is not None


async def test_validate_response_agent_sends_an_empty_answer_back_to_infer(
    build: Callable[..., Built],
) -> None:
    pipeline, recorder = build()
    empty = envelope().model_copy(
        update={
            "route": RouteDecision(model="sim-small", reason="auto"),
            "tried_models": ["sim-small"],
            "inference": Inference(model="sim-small", content="", finish_reason="stop"),
        }
    )
    await drive_and_wait(
        pipeline, recorder, "validate_response", from_wire(pipeline, INFERRED, encode(empty)), published=1
    )
    outcome, next_topic = only_outcome(recorder)
    assert outcome.response is None
    assert next_topic is ROUTED  # infer reads the routed topic
    assert outcome.forward is not None and outcome.forward.route is not None
    assert outcome.forward.route.model == "sim-large"  # the stronger untried model of this catalog
    assert outcome.forward.retries == 1


async def test_a_stage_bug_becomes_an_internal_failure(
    build: Callable[..., Built], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(envelope: Envelope, now: Any, **options: Any) -> Outcome:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(wiring, "sanitize", broken)
    pipeline, recorder = build()
    await drive_and_wait(
        pipeline, recorder, "sanitize", from_wire(pipeline, VALIDATED, encode(envelope())), published=1
    )
    outcome, _ = only_outcome(recorder)
    assert outcome.response is not None and outcome.response.error is not None
    assert outcome.response.status is Status.FAILED
    assert outcome.response.error.code is ErrorCode.INTERNAL
    assert outcome.response.error.stage is Stage.SANITIZE
    assert "secret internals" not in outcome.response.error.message
    assert "RuntimeError" in outcome.response.error.message


# --- poison ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent_name", "source"),
    [("sanitize", VALIDATED), ("route", SANITIZED), ("infer", ROUTED), ("validate_response", INFERRED)],
)
@pytest.mark.parametrize("raw", [b"{broken", b'{"request_id": "r"}'])
async def test_poison_is_dead_lettered(
    build: Callable[..., Built], agent_name: str, source: TopicSpec, raw: bytes
) -> None:
    pipeline, recorder = build()
    value = from_wire(pipeline, source, raw)
    assert isinstance(value, Poison)
    await drive_and_wait(pipeline, recorder, agent_name, value, dead=1)
    assert recorder.published == []
    [letter] = recorder.dead
    assert letter.reason == value.reason
    assert base64.b64decode(letter.raw_base64) == raw
    assert letter.stage == agent_name
    assert letter.source_topic == source.name("sluice.")
    assert (letter.partition, letter.offset) == (0, 0)


async def test_poison_does_not_stop_the_stage(build: Callable[..., Built]) -> None:
    pipeline, recorder = build()
    poison = from_wire(pipeline, VALIDATED, b"[]")
    good = from_wire(pipeline, VALIDATED, encode(envelope()))
    await drive_and_wait(pipeline, recorder, "sanitize", poison, good, published=1, dead=1)
    assert recorder.dead[0].offset == 0
    assert recorder.published[0][0].forward is not None


# --- infer (manual acks; calls the simulator over HTTP) --------------------------------------------


async def test_infer_agent_calls_the_model_and_forwards(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    pipeline, recorder = build(simulator_port=simulator.port)
    routed = envelope().model_copy(update={"route": RouteDecision(model="sim-large", reason="requested")})
    await drive_and_wait(
        pipeline, recorder, "infer", from_wire(pipeline, ROUTED, encode(routed)), published=1
    )
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is INFERRED
    assert outcome.forward is not None and outcome.forward.inference is not None
    inference = outcome.forward.inference
    assert inference.error is None
    assert inference.model == "sim-large"
    assert inference.usage.completion_tokens == 16
    assert simulator.simulator.stats["sim-large"].calls == 1


async def test_infer_agent_skips_a_request_already_answered(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    pipeline, recorder = build(simulator_port=simulator.port)
    pipeline.answered.data["req-old"] = {"at": 0.0, "p": 0}  # as if answered before a redelivery
    old = from_wire(pipeline, ROUTED, encode(envelope("req-old")))
    new = from_wire(pipeline, ROUTED, encode(envelope("req-new")))
    await drive_and_wait(pipeline, recorder, "infer", old, new, published=1)
    outcome, _ = only_outcome(recorder)
    assert outcome.event.request_id == "req-new"
    assert simulator.simulator.stats["sim-small"].calls == 1  # the answered one was not paid for twice


async def test_infer_agent_model_failure_still_forwards(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    pipeline, recorder = build(simulator_port=simulator.port)
    await simulator.close()  # nothing listens any more
    await drive_and_wait(
        pipeline, recorder, "infer", from_wire(pipeline, ROUTED, encode(envelope())), published=1
    )
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is INFERRED
    assert outcome.forward is not None and outcome.forward.inference is not None
    assert outcome.forward.inference.error is not None
    assert outcome.forward.inference.error.code is ErrorCode.MODEL_UNAVAILABLE


async def test_infer_agent_falls_back_and_publishes_the_breaker_transition(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    pipeline, recorder = build(simulator_port=simulator.port, breaker_min_calls=1, infer_retry_attempts=1)
    simulator.simulator.faults["sim-small"] = Fault(mode="down")
    decision = RouteDecision(model="sim-small", reason="test", fallbacks=["sim-large"])
    routed = envelope().model_copy(update={"route": decision})
    await drive_and_wait(
        pipeline, recorder, "infer", from_wire(pipeline, ROUTED, encode(routed)), published=2
    )
    (answer, next_topic), (transition, no_topic) = recorder.published
    assert next_topic is INFERRED and no_topic is None
    assert answer.forward is not None and answer.forward.inference is not None
    assert answer.forward.inference.model == "sim-large"
    assert answer.event.attributes["fallback_from"] == "sim-small"
    assert transition.forward is None and transition.response is None
    event = transition.event
    assert (event.tenant, event.stage, event.status, event.model) == (
        "_system",
        Stage.INFER,
        "breaker_open",
        "sim-small",
    )
    assert event.request_id.startswith("breaker/sim-small/open/")


async def test_infer_agent_answers_a_repeat_from_the_cache(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    pipeline, recorder = build(simulator_port=simulator.port)
    first = from_wire(pipeline, ROUTED, encode(envelope("req-a", temperature=0)))
    await drive_and_wait(pipeline, recorder, "infer", first, published=1)
    again = from_wire(pipeline, ROUTED, encode(envelope("req-b", temperature=0)))
    await drive_and_wait(pipeline, recorder, "infer", again, published=2)
    (miss, _), (hit, _) = recorder.published
    assert miss.forward is not None and miss.forward.inference is not None
    assert hit.forward is not None and hit.forward.inference is not None
    assert not miss.forward.inference.cached
    assert hit.forward.inference.cached and hit.forward.inference.cost_usd == 0.0
    assert hit.forward.inference.cache_savings_usd == pytest.approx(miss.forward.inference.cost_usd)
    assert hit.forward.inference.content == miss.forward.inference.content
    assert simulator.simulator.stats["sim-small"].calls == 1
    assert len(pipeline.cache.data) == 1


# --- the whole chain ------------------------------------------------------------------------------


async def test_one_request_through_every_agent_ends_in_one_response(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    # A tenant with a quota: its requests pass the admit step between validate and sanitize.
    with_quota = {"acme": TenantConfig(quota=QuotaRules(requests_per_minute=100, daily_budget_usd=1.0))}
    pipeline, recorder = build(simulator_port=simulator.port, tenants=with_quota)
    hops = [("sanitize", VALIDATED), ("route", SANITIZED), ("infer", ROUTED), ("validate_response", INFERRED)]
    await drive_and_wait(pipeline, recorder, "validate", request_bytes(), published=1)
    accepted, next_topic = recorder.published[-1]
    assert next_topic is ADMISSION and accepted.forward is not None
    admission = Admission(request=accepted.forward)
    await drive_and_wait(pipeline, recorder, "admit", admission, published=2)
    for count, (agent_name, source) in enumerate(hops, start=3):
        previous, next_topic = recorder.published[-1]
        assert next_topic is source and previous.forward is not None
        value = from_wire(pipeline, source, encode(previous.forward))  # over the wire, as on Kafka
        await drive_and_wait(pipeline, recorder, agent_name, value, published=count)
    assert recorder.dead == []
    outcomes = [outcome for outcome, _ in recorder.published]
    # every stage once, in pipeline order; validate twice: its check, then the quota admission
    assert [o.event.stage for o in outcomes] == [Stage.VALIDATE, *Stage]
    assert outcomes[1].event.attributes["admission"] == "admitted"
    assert len({o.event.request_id for o in outcomes}) == 1
    assert len({o.event.event_id for o in outcomes}) == 6
    responses = [o.response for o in outcomes if o.response is not None]
    assert len(responses) == 1
    final = responses[0]
    assert final.status is Status.OK
    assert final.model == "sim-small"
    assert final.content is not None and final.content.startswith("[simulated sim-small]")
    assert "What is Kafka?" in final.content  # the model saw the sanitized prompt
    assert final.usage.completion_tokens == 16
    assert outcomes[-1].event.summary is not None


# --- the default layout: one chain -----------------------------------------------------------------


def test_the_default_layout_is_one_chain_plus_the_admission_reentry(build: Callable[..., Built]) -> None:
    pipeline, _ = build(chain_breaks="")
    # validate runs the whole chain; sanitize's agent only takes requests back from the admit step
    assert set(pipeline.app.agents) == {"validate", "sanitize", "admit"}
    assert pipeline.app.agents["sanitize"].channel is pipeline.envelope_topic(VALIDATED)


def test_split_before_infer_gives_infer_its_own_agent(build: Callable[..., Built]) -> None:
    pipeline, _ = build(chain_breaks="infer")
    assert set(pipeline.app.agents) == {"validate", "sanitize", "infer", "admit"}
    assert pipeline.app.agents["infer"].channel is pipeline.envelope_topic(ROUTED)


def test_a_worker_can_run_only_some_chains(build: Callable[..., Built]) -> None:
    pipeline, _ = build(chain_breaks="infer", worker_chains="infer")
    assert set(pipeline.app.agents) == {"infer"}


async def test_the_default_chain_answers_with_one_publish_and_every_stage_event(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    pipeline, recorder = build(simulator_port=simulator.port, chain_breaks="")
    await drive_and_wait(pipeline, recorder, "validate", request_bytes(), published=1)
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is None and outcome.response is not None
    assert outcome.response.status is Status.OK
    assert "What is Kafka?" in (outcome.response.content or "")  # the model saw the sanitized prompt
    [earlier] = recorder.earlier
    # one event per stage, each with its own duration, in pipeline order
    assert [e.stage for e in (*earlier, outcome.event)] == list(Stage)
    assert len({e.event_id for e in (*earlier, outcome.event)}) == 5
    assert {e.request_id for e in earlier} == {outcome.response.request_id}
    assert simulator.simulator.stats["sim-small"].calls == 1


async def test_the_default_chain_retries_in_process(
    build: Callable[..., Built], simulator: SimulatorServer
) -> None:
    # sim-small answers with nothing: validate_response sends the request to sim-large, and the
    # retry loops back to infer inside the chain instead of through the routed topic.
    simulator.simulator.faults["sim-small"] = Fault(mode="scripted", content="")
    pipeline, recorder = build(simulator_port=simulator.port, chain_breaks="")
    await drive_and_wait(pipeline, recorder, "validate", request_bytes(), published=1)
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is None and outcome.response is not None
    assert outcome.response.status is Status.OK and outcome.response.model == "sim-large"
    stages = [e.stage for e in (*recorder.earlier[0], outcome.event)]
    assert stages == [*Stage, Stage.INFER, Stage.VALIDATE_RESPONSE]
    assert simulator.simulator.stats["sim-large"].calls == 1


async def test_a_quota_tenant_leaves_the_chain_for_the_admission_hop(build: Callable[..., Built]) -> None:
    with_quota = {"acme": TenantConfig(quota=QuotaRules(requests_per_minute=100))}
    pipeline, recorder = build(chain_breaks="", tenants=with_quota)
    await drive_and_wait(pipeline, recorder, "validate", request_bytes(), published=1)
    outcome, next_topic = only_outcome(recorder)
    assert next_topic is ADMISSION and outcome.forward is not None


# --- publishing: an input is acked only once its outcome is on Kafka ------------------------------


class FlakyProducer:
    """Refuses the first `failures` sends the way a broker does (a failed delivery future), then
    accepts; remembers every accepted (topic, key)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accepted: list[tuple[str, bytes]] = []

    async def send(self, topic: str, key: bytes, value: bytes, *rest: Any) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            delivery.set_exception(KafkaError("not leader for partition"))
        else:
            self.accepted.append((topic, key))
            delivery.set_result(None)
        return delivery


async def test_a_refused_publish_is_sent_again_until_the_broker_takes_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(settings, create_app(settings))
    producer = FlakyProducer(failures=3)
    monkeypatch.setattr(type(pipeline.app), "producer", producer)
    letter = DeadLetter(
        reason="r", raw_base64="", source_topic="t", partition=0, offset=1, stage="validate", ts=utcnow()
    )
    await pipeline.dead_letter(letter)
    assert producer.accepted == [("sluice.deadletter", b"t:0")]
    assert pipeline.publish_failures == 3


async def test_a_publish_refused_for_too_long_raises_so_the_input_is_not_acked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = settings.with_overrides(publish_retry_s=0.2)
    pipeline = Pipeline(configured, create_app(configured))
    monkeypatch.setattr(type(pipeline.app), "producer", FlakyProducer(failures=10_000))
    with pytest.raises(PublishFailed):
        await pipeline.send("sluice.events", b"k", {"v": 1})


class SilentProducer:
    """A broker that takes records and never answers (frozen, cut off): deliveries never end."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: bytes, value: bytes, *rest: Any) -> asyncio.Future[Any]:
        self.deliveries.append(asyncio.get_running_loop().create_future())
        return self.deliveries[-1]


async def test_a_publish_the_broker_never_answers_fails_within_the_publish_window(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only refusals: a silent broker must not hold the record (and the worker) for the
    producer's own 20-minute request timeout."""
    configured = settings.with_overrides(publish_retry_s=0.2)
    pipeline = Pipeline(configured, create_app(configured))
    producer = SilentProducer()
    monkeypatch.setattr(type(pipeline.app), "producer", producer)
    with pytest.raises(PublishFailed, match="not acknowledged"):
        await pipeline.send("sluice.events", b"k", {"v": 1})
    assert pipeline.publish_failures == 1
    assert not any(delivery.cancelled() for delivery in producer.deliveries), "the producer's, not ours"


async def test_a_crash_exits_the_process_if_the_clean_stop_hangs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clean stop after a crash talks to the broker; if it does not answer, the worker must
    still exit so its supervisor restarts it (and the unacked records are delivered again)."""
    configured = settings.with_overrides(crash_stop_timeout_s=0.05)
    pipeline = Pipeline(configured, create_app(configured))
    crashed: list[BaseException] = []
    exited: list[BaseException] = []
    exit_called = threading.Event()

    async def crash(reason: BaseException) -> None:
        crashed.append(reason)

    def exit_now(reason: BaseException) -> None:  # stands in for os._exit
        exited.append(reason)
        exit_called.set()

    monkeypatch.setattr(pipeline.app, "crash", crash)
    monkeypatch.setattr(sluice.app, "_exit_after_crash", exit_now)
    reason = PublishFailed("refused")
    await pipeline.crash(reason)
    await pipeline.crash(reason)  # several records fail together: one exit timer
    assert await asyncio.to_thread(exit_called.wait, 30)
    assert crashed == [reason, reason]
    assert exited == [reason]


async def test_the_agent_acks_a_record_only_after_its_outcome_is_published(
    build: Callable[..., Built], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, recorder = build()
    acked_before_publish: list[bool] = []
    release = asyncio.Event()

    async def slow_publish(outcome: Outcome, next_topic: TopicSpec | None = None, **_: Any) -> None:
        await release.wait()
        await recorder.publish(outcome, next_topic)

    monkeypatch.setattr(pipeline, "publish", slow_publish)
    agent = pipeline.app.agents["validate"]
    async with agent.test_context() as ctx:
        event = await ctx.put(request_bytes(), key=b"corr-1")
        await asyncio.sleep(0.2)  # the record is taken; its publish is held back
        acked_before_publish.append(event.message.acked)
        release.set()
        await recorder.wait(published=1)
        for _ in range(100):
            if event.message.acked:
                break
            await asyncio.sleep(0.02)
    assert acked_before_publish == [False]
    assert event.message.acked
