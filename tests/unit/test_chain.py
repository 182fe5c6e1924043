"""The chain layout (sluice/layout.py) and the in-process chain runner (agents/chain.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.chain import MAX_STEPS_PER_RUN, Step, run_chain
from schemas import Envelope, ErrorCode, Request, Stage, Status
from sluice.layout import ChainLayout, next_stage
from sluice.outcome import Outcome, fail, forward, utcnow
from topics import INFERRED, ROUTED, SANITIZED

ORDER = list(Stage)


def envelope() -> Envelope:
    now = utcnow()
    return Envelope(
        request_id="r1",
        correlation_id="c1",
        tenant="acme",
        reply_to="sluice.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=30),
        request=Request.model_validate(
            {"correlation_id": "c1", "tenant": "acme", "messages": [{"role": "user", "content": "hi"}]}
        ),
    )


def passing(stage: Stage, calls: list[Stage]) -> Step:
    async def step(env: Envelope) -> Outcome:
        calls.append(stage)
        return forward(env, stage, now=utcnow(), duration_ms=1.0)

    return step


def answering(stage: Stage, calls: list[Stage]) -> Step:
    async def step(env: Envelope) -> Outcome:
        calls.append(stage)
        return fail(env, stage, Status.OK, ErrorCode.INTERNAL, "done", now=utcnow(), duration_ms=1.0)

    return step


def all_steps(calls: list[Stage]) -> dict[Stage, Step]:
    steps = {stage: passing(stage, calls) for stage in ORDER[1:-1]}
    steps[Stage.VALIDATE_RESPONSE] = answering(Stage.VALIDATE_RESPONSE, calls)
    return steps


@pytest.mark.parametrize(
    ("spec", "entries", "described"),
    [
        ("", ["validate", "sanitize"], "validate..validate_response"),
        ("infer", ["validate", "sanitize", "infer"], "validate..route | infer..validate_response"),
        (
            "all",
            ["validate", "sanitize", "route", "infer", "validate_response"],
            "validate | sanitize | route | infer | validate_response",
        ),
        ("route, validate_response", ["validate", "sanitize", "route", "validate_response"], None),
    ],
)
def test_layouts_parse_into_their_chain_entries(spec: str, entries: list[str], described: str | None) -> None:
    layout = ChainLayout.parse(spec)
    assert [stage.value for stage in layout.entries] == entries
    if described is not None:
        assert layout.describe() == described


def test_an_unknown_stage_in_the_layout_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown stage infr.*'all' or any of sanitize"):
        ChainLayout.parse("infr")


def test_a_retry_loops_in_process_only_when_infer_shares_the_chain() -> None:
    assert next_stage(Stage.VALIDATE_RESPONSE) is Stage.INFER
    assert ChainLayout.parse("").in_process(Stage.VALIDATE_RESPONSE, Stage.INFER)
    assert ChainLayout.parse("infer").in_process(Stage.VALIDATE_RESPONSE, Stage.INFER)
    assert not ChainLayout.parse("validate_response").in_process(Stage.VALIDATE_RESPONSE, Stage.INFER)
    assert not ChainLayout.parse("all").in_process(Stage.ROUTE, Stage.INFER)


async def test_one_chain_runs_every_stage_and_returns_their_events() -> None:
    calls: list[Stage] = []
    run = await run_chain(envelope(), Stage.SANITIZE, ChainLayout.parse(""), all_steps(calls))
    assert calls == ORDER[1:]
    assert run.outcome is not None and run.outcome.response is not None and run.next_topic is None
    assert [event.stage for event in run.earlier] == ORDER[1:-1]


@pytest.mark.parametrize(
    ("spec", "start", "ran", "topic"),
    [
        ("infer", Stage.SANITIZE, [Stage.SANITIZE, Stage.ROUTE], ROUTED),
        ("all", Stage.SANITIZE, [Stage.SANITIZE], SANITIZED),
        ("validate_response", Stage.INFER, [Stage.INFER], INFERRED),
    ],
)
async def test_a_chain_stops_at_the_next_break_and_names_its_topic(
    spec: str, start: Stage, ran: list[Stage], topic: object
) -> None:
    calls: list[Stage] = []
    run = await run_chain(envelope(), start, ChainLayout.parse(spec), all_steps(calls))
    assert calls == ran
    assert run.next_topic is topic
    assert run.outcome is not None and run.outcome.forward is not None
    assert [event.stage for event in run.earlier] == ran[:-1]


async def test_a_stage_that_raises_ends_the_request_as_internal() -> None:
    async def broken(env: Envelope) -> Outcome:
        raise RuntimeError("boom")

    calls: list[Stage] = []
    steps = {**all_steps(calls), Stage.ROUTE: broken}
    run = await run_chain(envelope(), Stage.SANITIZE, ChainLayout.parse(""), steps)
    assert run.outcome is not None and run.outcome.response is not None
    assert run.outcome.response.error is not None
    assert run.outcome.response.error.code is ErrorCode.INTERNAL
    assert run.outcome.response.error.stage is Stage.ROUTE
    assert calls == [Stage.SANITIZE]


async def test_a_retry_loop_that_never_ends_is_cut_and_answered() -> None:
    calls: list[Stage] = []
    steps = {**all_steps(calls), Stage.VALIDATE_RESPONSE: passing(Stage.VALIDATE_RESPONSE, calls)}
    run = await run_chain(envelope(), Stage.INFER, ChainLayout.parse(""), steps)
    assert len(calls) == MAX_STEPS_PER_RUN
    assert run.outcome is not None and run.outcome.response is not None
    assert run.outcome.response.error is not None and run.outcome.response.error.code is ErrorCode.INTERNAL


async def test_nothing_to_do_ends_the_run_quietly() -> None:
    async def already_answered(env: Envelope) -> None:
        return None

    calls: list[Stage] = []
    steps = {**all_steps(calls), Stage.INFER: already_answered}
    run = await run_chain(envelope(), Stage.SANITIZE, ChainLayout.parse(""), steps)
    assert run.outcome is None and run.next_topic is None
    assert calls == [Stage.SANITIZE, Stage.ROUTE]
