"""Alert rules and route advice decide transitions only: firing once, resolving once; demoting
at the threshold with enough ratings, restoring on recovery or when the evidence runs out."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas import Alert, RouteAdvice
from sluice.observability.rules import AlertRule, default_alert_rules
from sluice.settings import Settings
from sluice.warehouse.monitors import AlertEvaluator, FeedbackAdvisor


class Recorder:
    """Collects what would be published (the monitors' producer interface)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value, key))


class Values:
    """A warehouse whose every query answers the next scripted row set."""

    def __init__(self, answers: list[list[dict[str, Any]]]) -> None:
        self.answers = answers

    async def aquery(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.answers.pop(0)


def test_rule_breach_and_validation() -> None:
    above = AlertRule(name="e", metric="error_rate", threshold=0.2)
    below = AlertRule(name="r", metric="error_rate", threshold=0.2, above=False)
    assert above.breached(0.3) and not above.breached(0.2) and not above.breached(None)
    assert below.breached(0.1) and not below.breached(None)
    assert {rule.metric for rule in default_alert_rules()} == {
        "error_rate", "p95_latency_ms", "cost_per_hour", "hallucination_rate", "consumer_lag"
    }  # fmt: skip
    with pytest.raises(ValidationError):
        AlertRule(name="x", metric="cpu", threshold=1)  # type: ignore[arg-type]


async def test_alerts_publish_transitions_only(settings: Settings) -> None:
    rule = AlertRule(name="errors", metric="error_rate", threshold=0.2, window_minutes=1)
    here = settings.with_overrides(alert_rules=[rule.model_dump()])
    values = [0.0, 0.3, 0.5, None, 0.1]  # quiet, fires, still firing, no data resolves, quiet
    producer = Recorder()
    evaluator = AlertEvaluator(here, Values([[{"value": v}] for v in values]), producer)  # type: ignore[arg-type]
    for _ in values:
        await evaluator.evaluate()
    alerts = [Alert.model_validate_json(value) for _, value, _ in producer.sent]
    assert [(a.state, a.value) for a in alerts] == [("firing", 0.3), ("resolved", None)]
    assert alerts[0].since == alerts[1].since
    assert {topic for topic, _, _ in producer.sent} == {f"{here.topic_prefix}alerts"}
    assert {key for _, _, key in producer.sent} == {b"errors"}


def advice_rows(mean: float, ratings: int) -> list[dict[str, Any]]:
    return [{"route": "support", "model": "sim-small", "mean_rating": mean, "ratings": ratings}]


async def test_advice_hysteresis(settings: Settings) -> None:
    here = settings.with_overrides(feedback_min_samples=5, feedback_demote_at=-0.2, feedback_recover_at=0.2)
    script = [
        advice_rows(-0.8, 4),  # too few ratings: nothing
        advice_rows(-0.6, 10),  # demote
        advice_rows(-0.6, 12),  # unchanged: nothing published
        advice_rows(0.0, 20),  # between the thresholds: stays demoted
        advice_rows(0.4, 25),  # recovered: restore
        advice_rows(-0.5, 30),  # demote again
        [],  # no ratings left in the window: restore
        [{"route": "(unrouted)", "model": "sim-small", "mean_rating": -1.0, "ratings": 50}],  # ignored
    ]
    producer = Recorder()
    advisor = FeedbackAdvisor(here, Values(script), producer)  # type: ignore[arg-type]
    for _ in range(len(script)):
        await advisor.evaluate()
    published = [RouteAdvice.model_validate_json(value) for _, value, _ in producer.sent]
    assert [(a.demote, a.samples) for a in published] == [(True, 10), (False, 25), (True, 30), (False, 0)]
    assert {key for _, _, key in producer.sent} == {b"support|sim-small"}
    assert "demoted" in published[0].reason and "restored" in published[3].reason
