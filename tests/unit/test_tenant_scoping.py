"""Tenant scoping of what happens after the model answered: retries stay inside the tenant's
allowed models and cost cap (or end in a typed error); alerts and route advice change state
only once published, keep a bounded history, and a malformed advice record is skipped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agents.validate_response import validate_response
from schemas import Alert, Envelope, ErrorCode, Inference, Request, RouteDecision, Status
from sluice.observability.rules import AlertRule
from sluice.outcome import utcnow
from sluice.providers.catalog import BUILTIN_CATALOG
from sluice.settings import Settings
from sluice.tenants import AccessRules, TenantConfig
from sluice.warehouse import monitors
from sluice.warehouse.monitors import AlertEvaluator, FeedbackAdvisor


def answered(content: str, model: str = "sim-small", cost: float = 0.0, **fields: Any) -> Envelope:
    """An envelope as validate_response receives it: routed to `model`, which answered `content`."""
    now = utcnow()
    request = Request.model_validate(
        {"correlation_id": "c1", "tenant": "acme", "messages": [{"role": "user", "content": "hi"}],
         "max_tokens": 100, **fields}
    )  # fmt: skip
    return Envelope(
        request_id="r1",
        correlation_id="c1",
        tenant="acme",
        reply_to="sluice.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=30),
        request=request,
        route=RouteDecision(model=model, reason="test", tier="small", estimated_prompt_tokens=10),
        inference=Inference(model=model, content=content, finish_reason="stop", cost_usd=cost),
        tried_models=[model],
    )


def test_an_empty_answer_is_retried_on_a_stronger_model_when_the_tenant_allows_it() -> None:
    outcome = validate_response(answered(""), utcnow(), tenant=TenantConfig(), catalog=BUILTIN_CATALOG)
    assert outcome.forward is not None and outcome.forward.route is not None
    assert outcome.forward.route.model == "sim-medium"


@pytest.mark.parametrize(
    "access",
    [
        AccessRules(allowed_models=("sim-small",)),
        AccessRules(allowed_models=("auto", "sim-small", "sim-large"), max_cost_per_request_usd=0.0005),
        AccessRules(max_cost_per_request_usd=0.00008),  # even sim-medium's worst case is over it
    ],
)
def test_a_retry_never_leaves_the_allow_list_or_the_cost_cap(access: AccessRules) -> None:
    tenant = TenantConfig(access=access)
    outcome = validate_response(answered(""), utcnow(), tenant=tenant, catalog=BUILTIN_CATALOG)
    assert outcome.forward is None and outcome.response is not None
    assert outcome.response.status is Status.FAILED and outcome.response.error is not None
    assert outcome.response.error.code is ErrorCode.RESPONSE_INVALID
    assert "access rules" in outcome.response.error.message


def test_a_retry_picks_the_allowed_model_that_fits() -> None:
    tenant = TenantConfig(access=AccessRules(allowed_models=("sim-small", "sim-large")))
    outcome = validate_response(answered(""), utcnow(), tenant=tenant, catalog=BUILTIN_CATALOG)
    assert outcome.forward is not None and outcome.forward.route is not None
    assert outcome.forward.route.model == "sim-large"


def test_a_repair_counts_what_the_request_already_cost() -> None:
    def broken_json(cost: float) -> Envelope:
        return answered("{not json", cost=cost, response_format={"type": "json_object"})

    tenant = TenantConfig(access=AccessRules(max_cost_per_request_usd=0.001))
    cheap = validate_response(broken_json(0.0), utcnow(), tenant=tenant, catalog=BUILTIN_CATALOG)
    assert cheap.forward is not None and cheap.forward.repair_attempts == 1
    spent = validate_response(broken_json(0.00095), utcnow(), tenant=tenant, catalog=BUILTIN_CATALOG)
    assert spent.response is not None and spent.response.error is not None
    assert spent.response.error.code is ErrorCode.RESPONSE_INVALID


def test_a_crash_injected_into_pii_leak_blocks_the_answer() -> None:
    def crashing(_text: str) -> list[tuple[str, str]]:
        raise RuntimeError("injected: the PII detector crashed")

    envelope = answered("Your parcel ships tomorrow.")
    outcome = validate_response(envelope, utcnow(), tenant=TenantConfig(), pii_detector=crashing)
    assert outcome.response is not None and outcome.response.status is Status.BLOCKED
    assert outcome.response.error is not None and outcome.response.error.code is ErrorCode.POLICY_VIOLATION
    assert outcome.response.content == TenantConfig().output.safe_message
    assert "check_error" in outcome.response.checks.flags
    healthy = validate_response(envelope, utcnow(), tenant=TenantConfig(), pii_detector=lambda _t: [])
    assert healthy.response is not None and healthy.response.status is Status.OK


# --- alerts and route advice ------------------------------------------------------------------


class FlakyProducer:
    """Refuses the first `failures` sends, then records them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[bytes] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append(value)


class Values:
    def __init__(self, answers: list[list[dict[str, Any]]]) -> None:
        self.answers = answers

    async def aquery(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.answers.pop(0)


async def test_an_alert_whose_publish_failed_is_published_on_the_next_evaluation(settings: Settings) -> None:
    rule = AlertRule(name="errors", metric="error_rate", threshold=0.2, window_minutes=1)
    here = settings.with_overrides(alert_rules=[rule.model_dump()])
    producer = FlakyProducer(failures=1)
    evaluator = AlertEvaluator(here, Values([[{"value": 0.5}], [{"value": 0.5}]]), producer)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await evaluator.evaluate()
    assert evaluator.firing == {}  # not firing until announced
    await evaluator.evaluate()
    assert [Alert.model_validate_json(value).state for value in producer.sent] == ["firing"]
    assert "errors" in evaluator.firing


async def test_alert_history_is_bounded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitors, "HISTORY", 10)
    rule = AlertRule(name="errors", metric="error_rate", threshold=0.2, window_minutes=1)
    here = settings.with_overrides(alert_rules=[rule.model_dump()])
    values = [[{"value": 0.5}], [{"value": 0.0}]] * 30
    producer = FlakyProducer(0)
    evaluator = AlertEvaluator(here, Values(values), producer)  # type: ignore[arg-type]
    for _ in range(60):
        await evaluator.evaluate()
    assert len(producer.sent) == 60 and len(evaluator.published) == 10
    assert evaluator.published[-1] == Alert.model_validate_json(producer.sent[-1])


def test_a_malformed_route_advice_record_is_skipped(settings: Settings) -> None:
    advisor = FeedbackAdvisor(settings, Values([]), FlakyProducer(0))  # type: ignore[arg-type]
    advisor._remember(b"{not json", "sluice.route_advice@0")
    advisor._remember(b'{"route": "simple"}', "sluice.route_advice@1")
    advisor._remember(None, "sluice.route_advice@2")
    good = (
        b'{"route": "simple", "model": "sim-small", "demote": true, "satisfaction": -0.5, "samples": 9,'
        b' "reason": "r", "ts": "2026-01-01T00:00:00Z"}'
    )
    advisor._remember(good, "sluice.route_advice@3")
    assert advisor.skipped_records == 2 and advisor.demoted == {("simple", "sim-small"): True}
