"""The admit step's pure logic: rate windows, budgets with worst-case reservations,
settlement, idempotence under redelivery, and repair after a crash between table writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.admission import (
    Decision,
    QuotaConfig,
    Reservation,
    admit,
    expiry_of,
    hold_key,
    model_calls,
    reservation_for,
    settle,
    sweepable,
    usage_key,
)
from schemas import Envelope, ErrorCode, Request, Settlement, Status
from sluice.providers.catalog import BUILTIN_CATALOG
from sluice.tenants import AccessRules, QuotaRules, TenantConfig
from sluice.tokens import estimate_prompt_tokens, prompt_token_bound

T0 = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
CONFIG = QuotaConfig(window_s=10.0, buckets=10, hold_grace_s=5.0, keep_s=3600.0)
NEED = Reservation(tokens=100, worst_usd=0.01)


class Table:
    """The quota table as the agent keeps it: writes applied in order."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def read(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def apply(self, decision: Decision, keep: int | None = None) -> Decision:
        """Apply the writes; `keep`: only the first N (a crash before the rest were durable)."""
        for key, value in decision.writes[:keep]:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = dict(value)
        return decision

    def usage(self, tenant: str = "acme") -> dict[str, Any]:
        return self.data[usage_key(tenant)]


def envelope(request_id: str, tenant: str = "acme", max_tokens: int = 64, at: datetime = T0) -> Envelope:
    request = Request.model_validate(
        {
            "correlation_id": f"c-{request_id}",
            "tenant": tenant,
            "messages": [{"role": "user", "content": "What is Kafka, in one line?"}],
            "max_tokens": max_tokens,
        }
    )
    return Envelope(
        request_id=request_id,
        correlation_id=f"c-{request_id}",
        tenant=tenant,
        reply_to="sluice.responses",
        received_at=at,
        deadline_at=at + timedelta(seconds=30),
        request=request,
    )


def rules(rpm: int | None = None, tpm: int | None = None, budget: float | None = None) -> TenantConfig:
    return TenantConfig(
        quota=QuotaRules(requests_per_minute=rpm, tokens_per_minute=tpm, daily_budget_usd=budget)
    )


def settlement(request_id: str, cost: float = 0.001, tokens: int = 40, tenant: str = "acme") -> Settlement:
    return Settlement(
        request_id=request_id,
        tenant=tenant,
        status=Status.OK,
        cost_usd=cost,
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
        finished_at=T0,
    )


def run_admit(
    table: Table, request_id: str, tenant_rules: TenantConfig, at: datetime = T0, need: Reservation = NEED
) -> Decision:
    return table.apply(admit(envelope(request_id, at=at), tenant_rules, need, table.read, CONFIG, at))


def code_of(decision: Decision) -> ErrorCode | None:
    assert decision.outcome is not None
    response = decision.outcome.response
    if response is None:
        assert decision.outcome.forward is not None
        return None
    assert response.status is Status.REJECTED and response.error is not None
    return response.error.code


def test_requests_per_window_admits_exactly_the_limit() -> None:
    table, limited = Table(), rules(rpm=5)
    codes = [code_of(run_admit(table, f"r{i}", limited)) for i in range(8)]
    assert codes == [None] * 5 + [ErrorCode.RATE_LIMITED] * 3
    refused = run_admit(table, "r9", limited).outcome
    assert refused is not None and refused.response is not None and refused.response.error is not None
    assert refused.response.error.retry_after_s == pytest.approx(10.0)
    assert refused.event.attributes["retry_after_s"] == "10.000"
    # The window slides: once the first bucket has left it, there is room again.
    assert code_of(run_admit(table, "later", limited, at=T0 + timedelta(seconds=10.01))) is None


def test_the_window_slides_bucket_by_bucket() -> None:
    table, limited = Table(), rules(rpm=4)
    for i in range(4):  # one admission per second
        assert code_of(run_admit(table, f"r{i}", limited, at=T0 + timedelta(seconds=i))) is None
    blocked = run_admit(table, "x", limited, at=T0 + timedelta(seconds=5))
    assert code_of(blocked) is ErrorCode.RATE_LIMITED
    assert blocked.outcome is not None and blocked.outcome.response is not None
    assert blocked.outcome.response.error is not None
    assert blocked.outcome.response.error.retry_after_s == pytest.approx(5.0)  # r0 leaves at T0 + 10 s
    assert code_of(run_admit(table, "y", limited, at=T0 + timedelta(seconds=10))) is None
    assert code_of(run_admit(table, "z", limited, at=T0 + timedelta(seconds=10.5))) is ErrorCode.RATE_LIMITED


def test_tokens_per_window_uses_the_estimate_then_the_actual_usage() -> None:
    table, limited = Table(), rules(tpm=250)
    assert code_of(run_admit(table, "a", limited)) is None
    assert code_of(run_admit(table, "b", limited)) is None
    assert code_of(run_admit(table, "c", limited)) is ErrorCode.RATE_LIMITED  # 300 > 250
    table.apply(settle(settlement("a", tokens=30), table.read, CONFIG, T0))  # used 30, not 100
    assert code_of(run_admit(table, "c2", limited)) is None  # 30 + 100 + 100 <= 250


def test_a_request_larger_than_the_token_limit_says_so() -> None:
    table = Table()
    refused = run_admit(table, "huge", rules(tpm=50))
    assert code_of(refused) is ErrorCode.RATE_LIMITED
    assert refused.outcome is not None and refused.outcome.response is not None
    assert refused.outcome.response.error is not None
    assert "lower max_tokens" in refused.outcome.response.error.message


def test_budget_reserves_the_worst_case_and_settles_the_actual_cost() -> None:
    table, limited = Table(), rules(budget=0.035)  # three worst cases and a half
    codes = [code_of(run_admit(table, f"r{i}", limited)) for i in range(5)]
    assert codes == [None, None, None, ErrorCode.BUDGET_EXCEEDED, ErrorCode.BUDGET_EXCEEDED]
    refused = run_admit(table, "r5", limited).outcome
    assert refused is not None and refused.response is not None and refused.response.error is not None
    assert refused.response.error.retry_after_s == 1.0  # reservations in flight will settle soon
    assert table.usage()["reserved_usd"] == pytest.approx(0.03)

    table.apply(settle(settlement("r0", cost=0.002), table.read, CONFIG, T0))
    usage = table.usage()
    assert usage["spent_usd"] == pytest.approx(0.002) and usage["reserved_usd"] == pytest.approx(0.02)
    assert code_of(run_admit(table, "r6", limited)) is None  # 0.002 + 0.02 + 0.01 <= 0.035


def test_spend_alone_over_budget_means_retry_tomorrow() -> None:
    table, limited = Table(), rules(budget=0.015)
    run_admit(table, "a", limited)
    table.apply(settle(settlement("a", cost=0.009), table.read, CONFIG, T0))
    refused = run_admit(table, "b", limited).outcome
    assert refused is not None and refused.response is not None and refused.response.error is not None
    assert refused.response.error.code is ErrorCode.BUDGET_EXCEEDED
    assert refused.response.error.retry_after_s == pytest.approx(14 * 3600)  # until midnight UTC
    # A new UTC day starts from zero spend.
    assert code_of(run_admit(table, "c", limited, at=T0 + timedelta(hours=14, seconds=1))) is None


def test_redelivered_admission_and_settlement_count_once() -> None:
    table, limited = Table(), rules(rpm=10, budget=1.0)
    run_admit(table, "a", limited)
    again = run_admit(table, "a", limited)
    assert again.writes == [] and again.outcome is not None and again.outcome.forward is not None
    assert again.outcome.event.attributes["redelivered"] == "true"
    assert table.usage()["buckets"] == {str(CONFIG.bucket_of(T0.timestamp())): [1, 100]}
    for _ in range(2):
        table.apply(settle(settlement("a", cost=0.004), table.read, CONFIG, T0))
    assert table.usage()["spent_usd"] == pytest.approx(0.004)
    assert table.usage()["reserved_usd"] == pytest.approx(0.0)
    # An admission redelivered after its settlement: nothing to forward, nothing counted.
    late = run_admit(table, "a", limited)
    assert late.outcome is None and late.writes == []


def test_a_redelivered_refusal_is_answered_the_same_way() -> None:
    table, limited = Table(), rules(rpm=1)
    run_admit(table, "a", limited)
    first = run_admit(table, "b", limited)
    table.data.pop(usage_key("acme"))  # even if the window has emptied since
    second = run_admit(table, "b", limited)
    assert code_of(first) is code_of(second) is ErrorCode.RATE_LIMITED
    assert second.writes == []


@pytest.mark.parametrize("keep", [1])  # the hold was written, the usage write was lost
def test_a_crash_between_the_two_writes_is_repaired_on_redelivery(keep: int) -> None:
    table, limited = Table(), rules(rpm=10, budget=1.0)
    run_admit(table, "a", limited)
    table.apply(admit(envelope("b"), limited, NEED, table.read, CONFIG, T0), keep=keep)
    assert table.usage()["reserved_usd"] == pytest.approx(0.01)  # b's reservation missing
    repaired = run_admit(table, "b", limited)
    assert repaired.outcome is not None and repaired.outcome.forward is not None
    assert table.usage()["reserved_usd"] == pytest.approx(0.02)
    assert table.usage()["seq"] == 2

    table.apply(settle(settlement("b", cost=0.003), table.read, CONFIG, T0), keep=keep)
    assert table.usage()["spent_usd"] == 0.0  # the settlement's usage write was lost
    table.apply(settle(settlement("b", cost=0.003), table.read, CONFIG, T0))
    assert table.usage()["spent_usd"] == pytest.approx(0.003)
    assert table.usage()["reserved_usd"] == pytest.approx(0.01)
    table.apply(settle(settlement("b", cost=0.003), table.read, CONFIG, T0))  # and only once
    assert table.usage()["spent_usd"] == pytest.approx(0.003)


def test_a_hold_that_never_settles_expires_at_its_worst_case_and_a_late_settlement_corrects_it() -> None:
    table, limited = Table(), rules(budget=1.0)
    run_admit(table, "lost", limited)
    assert sweepable(table.data.items(), CONFIG, T0) == ([], [])  # not yet: deadline + grace ahead
    later = T0 + timedelta(seconds=36)
    assert sweepable(table.data.items(), CONFIG, later) == (["lost"], [])
    hold = table.read(hold_key("lost"))
    assert hold is not None
    expiry = expiry_of(hold, "lost", later)
    table.apply(settle(expiry, table.read, CONFIG, later))
    assert table.apply(settle(expiry, table.read, CONFIG, later)).writes == []  # the sweep repeats itself
    assert table.usage()["reserved_usd"] == pytest.approx(0.0)
    assert table.usage()["spent_usd"] == pytest.approx(0.01)
    table.apply(settle(settlement("lost", cost=0.002), table.read, CONFIG, later))
    assert table.usage()["spent_usd"] == pytest.approx(0.002)
    assert table.usage()["reserved_usd"] == pytest.approx(0.0)
    assert sweepable(table.data.items(), CONFIG, later + timedelta(hours=2)) == ([], [hold_key("lost")])


def test_an_expiry_after_the_real_settlement_changes_nothing() -> None:
    table = Table()
    run_admit(table, "a", rules(budget=1.0))
    hold = table.read(hold_key("a"))
    assert hold is not None
    table.apply(settle(settlement("a", cost=0.002), table.read, CONFIG, T0))
    assert table.apply(settle(expiry_of(hold, "a", T0), table.read, CONFIG, T0)).writes == []
    assert table.usage()["spent_usd"] == pytest.approx(0.002)


def test_refusals_are_forgotten_sooner_than_settled_holds() -> None:
    table, limited = Table(), rules(rpm=1)
    run_admit(table, "a", limited)
    run_admit(table, "b", limited)
    table.apply(settle(settlement("a"), table.read, CONFIG, T0))
    assert sweepable(table.data.items(), CONFIG, T0 + timedelta(seconds=301)) == ([], [hold_key("b")])


def test_tenants_do_not_share_limits() -> None:
    table, limited = Table(), rules(rpm=1)
    first = admit(envelope("a", tenant="one"), limited, NEED, table.read, CONFIG, T0)
    second = admit(envelope("b", tenant="two"), limited, NEED, table.read, CONFIG, T0)
    table.apply(first)
    table.apply(second)
    assert code_of(first) is None and code_of(second) is None


def test_unlimited_tenants_are_admitted_and_still_counted() -> None:
    table = Table()
    for i in range(50):
        assert code_of(run_admit(table, f"r{i}", TenantConfig())) is None
    assert table.usage()["reserved_usd"] == pytest.approx(0.5)


def test_worst_case_covers_the_priciest_allowed_model_and_every_retry() -> None:
    env = envelope("a", max_tokens=200)
    open_tenant = TenantConfig()
    small_only = TenantConfig(access=AccessRules(allowed_models=("sim-small",)))
    wide, narrow = (
        reservation_for(env, open_tenant, BUILTIN_CATALOG),
        reservation_for(env, small_only, BUILTIN_CATALOG),
    )
    assert wide.worst_usd > narrow.worst_usd > 0
    large = BUILTIN_CATALOG.get("sim-large")
    assert large is not None
    calls = model_calls(open_tenant)
    bound = prompt_token_bound(env.request)
    assert wide.worst_usd >= calls * large.cost_usd(bound, 200)
    assert wide.tokens == estimate_prompt_tokens(env.request) + 200


def test_the_prompt_bound_is_never_below_the_bytes() -> None:
    for text in ("plain ascii", "日本語のテキスト", "🙂" * 10, "x"):
        request = Request.model_validate(
            {"correlation_id": "c", "tenant": "t", "messages": [{"role": "user", "content": text}]}
        )
        assert prompt_token_bound(request) >= len(text.encode()) >= estimate_prompt_tokens(request) - 8
