"""Quota bookkeeping under at-least-once delivery: whatever the order of admissions and
settlements, duplicates and crashes between table writes, spend never passes the budget,
no window holds more than the limit, and the books end as if every record came once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.admission import Reservation, admit, settle, usage_key
from tests.unit.test_admission import CONFIG, T0, Table, envelope, rules, settlement

Op = tuple[str, int, int, bool]  # (kind, request index, seconds after T0, crash after the first write)

ops = st.lists(
    st.tuples(
        st.sampled_from(["admit", "settle"]),
        st.integers(0, 40),
        st.integers(0, 40),
        st.booleans(),
    ),
    max_size=120,
)


def run(table: Table, operations: list[Op], budget: float, rpm: int, cost: float) -> list[float]:
    """Apply the operations (sorted by time, as one partition would deliver them); crashed
    ones are delivered again right after, as a restarted worker would. Returns admit times."""
    tenant = rules(rpm=rpm, budget=budget)
    need = Reservation(tokens=50, worst_usd=0.01)
    admitted: list[float] = []
    # In time order; at equal times admissions first (a settlement never precedes its admission).
    for kind, index, second, crash in sorted(operations, key=lambda op: (op[2], op[0] == "settle")):
        at = T0 + timedelta(seconds=second)
        for attempt in (True, False) if crash else (False,):
            if kind == "admit":
                decision = admit(envelope(f"r{index}", at=at), tenant, need, table.read, CONFIG, at)
                if decision.note == "admitted" and not attempt:
                    admitted.append(second)
            else:
                decision = settle(settlement(f"r{index}", cost=cost), table.read, CONFIG, at)
            table.apply(decision, keep=1 if attempt else None)
            usage = table.data.get(usage_key("acme"))
            if usage is not None:
                assert usage["spent_usd"] <= budget + 1e-12
                assert usage["spent_usd"] + usage["reserved_usd"] <= budget + 1e-9
    return admitted


@settings(max_examples=150, deadline=None)
@given(operations=ops, budget_units=st.integers(1, 12), rpm=st.integers(1, 15))
def test_budget_and_window_hold_under_duplicates_and_crashes(
    operations: list[Op], budget_units: int, rpm: int
) -> None:
    table = Table()
    admitted = run(table, operations + operations[:10], budget_units * 0.01, rpm, cost=0.004)
    # No window of the configured length holds more admissions than the limit (bucket
    # resolution: windows are whole buckets).
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + CONFIG.window_s - CONFIG.bucket_s) <= rpm


@settings(max_examples=100, deadline=None)
@given(operations=ops)
def test_crashes_and_duplicates_leave_the_same_books_as_clean_delivery(operations: list[Op]) -> None:
    clean, messy = Table(), Table()
    run(clean, [(k, i, s, False) for k, i, s, _ in operations], 0.2, 1000, cost=0.003)
    run(messy, operations + operations[::3], 0.2, 1000, cost=0.003)
    if usage_key("acme") in clean.data:
        books, other = clean.usage(), messy.usage()
        assert other["spent_usd"] == pytest.approx(books["spent_usd"])
        assert other["reserved_usd"] == pytest.approx(books["reserved_usd"])


def test_a_budget_of_exactly_n_worst_cases_admits_exactly_n() -> None:
    for worst, n in ((0.0137, 25), (0.1, 3), (1 / 3, 7)):
        table, tenant = Table(), rules(budget=n * worst)
        need = Reservation(tokens=1, worst_usd=worst)
        notes = [
            table.apply(admit(envelope(f"r{i}"), tenant, need, table.read, CONFIG, T0)).note
            for i in range(n + 5)
        ]
        assert notes == ["admitted"] * n + ["budget_exceeded"] * 5
