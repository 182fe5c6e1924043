"""A model served by several deployments: the catalog form, the balancer's order and the
breakers per deployment (pure: no sockets, no sleeping)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from agents.infer import Resilience, infer
from schemas import Envelope, Request, RouteDecision
from sluice.outcome import utcnow
from sluice.providers.calls import Completion
from sluice.providers.catalog import Catalog, Deployment, ModelEntry, base_url
from sluice.providers.resilience import Balancer, BreakerPolicy, Breakers, BreakerState
from sluice.settings import Settings

PRICES = {"input_price_per_1k": 0.001, "output_price_per_1k": 0.002}


def replicated(*deployments: Deployment, max_concurrency: int = 8) -> ModelEntry:
    return ModelEntry(name="llama", deployments=deployments, max_concurrency=max_concurrency, **PRICES)


A = Deployment(base_url="http://10.0.0.1:8000/v1")
B = Deployment(base_url="http://10.0.0.2:8000/v1", weight=2.0, max_concurrency=2)
C = Deployment(base_url="http://10.0.0.3:8000/v1", name="gpu-c")


def test_the_single_base_url_form_still_works_and_is_one_replica() -> None:
    entry = ModelEntry(name="one", base_url="http://host:1/v1", **PRICES)
    assert not entry.replicated
    assert [d.base_url for d in entry.replicas] == ["http://host:1/v1"]
    assert entry.on(entry.replicas[0]) is entry
    assert entry.total_concurrency == 256


def test_a_model_needs_exactly_one_of_base_url_and_deployments() -> None:
    with pytest.raises(ValidationError, match="either base_url or deployments"):
        ModelEntry(name="none", **PRICES)
    with pytest.raises(ValidationError, match="either base_url or deployments"):
        ModelEntry(name="both", base_url="http://x/v1", deployments=(A,), **PRICES)


def test_deployment_labels_must_be_distinct() -> None:
    with pytest.raises(ValidationError, match="duplicate names"):
        replicated(A, Deployment(base_url="http://10.0.0.1:8000/other/v1"))
    assert [d.label for d in replicated(A, B, C).replicas] == ["10.0.0.1:8000", "10.0.0.2:8000", "gpu-c"]


def test_a_deployment_view_calls_its_own_url_and_key(tmp_path: object) -> None:
    keyed = Deployment(base_url="http://10.0.0.9:1/v1", api_key_env="REPLICA_KEY")
    entry = replicated(A, keyed).model_copy(update={"api_key_env": "MODEL_KEY"})
    settings = Settings()
    assert base_url(entry.on(A), settings) == "http://10.0.0.1:8000/v1"
    assert entry.on(A).api_key_env == "MODEL_KEY"
    assert entry.on(keyed).api_key_env == "REPLICA_KEY"
    assert entry.on(keyed).name == "llama"  # events and prices stay the model's


def test_total_concurrency_is_the_sum_over_replicas_with_the_model_default() -> None:
    assert replicated(A, B, C, max_concurrency=8).total_concurrency == 8 + 2 + 8


def test_the_balancer_prefers_the_replica_with_fewest_calls_in_flight_per_weight() -> None:
    entry = replicated(A, B)
    balancer = Balancer()
    with balancer.hold("llama", A.label):
        # A: 1 in flight (weight 1) vs B: 0 -> B
        assert balancer.ranked(entry)[0] == B
        with balancer.hold("llama", B.label), balancer.hold("llama", B.label):
            # A: 1/1 = 1 vs B: 2/2 = 1, but B is at its max_concurrency of 2 -> A first
            assert balancer.ranked(entry)[0] == A
    assert balancer.in_flight("llama", A.label) == 0 and balancer.started("llama", B.label) == 2


def test_idle_replicas_share_sequential_traffic_by_weight() -> None:
    entry = replicated(A, B)
    balancer = Balancer()
    picks: list[str] = []
    for _ in range(30):
        first = balancer.ranked(entry)[0]
        with balancer.hold("llama", first.label):
            picks.append(first.label)
    assert picks.count(B.label) == 20 and picks.count(A.label) == 10  # weight 2 : 1


def test_replicas_that_failed_this_request_go_last() -> None:
    entry = replicated(A, B, C)
    assert Balancer().ranked(entry, frozenset({A.label, B.label}))[0] == C


def test_a_replicated_model_is_unavailable_only_when_every_replica_is_open() -> None:
    policy = BreakerPolicy(window_s=10.0, min_calls=2, failure_rate=0.5, open_s=5.0)
    breakers = Breakers(policy, {"llama": 2})
    for _ in range(2):
        breakers.of("llama", A.label).record(1.0, 1.0, ok=False, latency_s=0.1)
    assert breakers.of("llama", A.label).state is BreakerState.OPEN
    assert breakers.unavailable(2.0) == frozenset()  # B is still up
    for _ in range(2):
        breakers.of("llama", B.label).record(1.0, 1.0, ok=False, latency_s=0.1)
    assert breakers.unavailable(2.0) == frozenset({"llama"})
    assert breakers.unavailable(7.0) == frozenset()  # open time over: offered again to probe
    changes = breakers.drain()
    assert {(t.deployment, t.state) for t in changes} == {
        (A.label, BreakerState.OPEN),
        (B.label, BreakerState.OPEN),
    }


async def test_a_replica_at_its_max_concurrency_takes_no_more_calls() -> None:
    """Two replicas of one call each, four requests at once: never two calls on one replica,
    and every request is answered (the later ones wait for a slot)."""
    one_each = (
        Deployment(base_url="http://a:1/v1", name="a", max_concurrency=1),
        Deployment(base_url="http://b:1/v1", name="b", max_concurrency=1),
    )
    catalog = Catalog(default="llama", models=(replicated(*one_each),))
    in_flight: dict[str, int] = {"http://a:1/v1": 0, "http://b:1/v1": 0}
    peak: dict[str, int] = dict(in_flight)

    class Caller:
        async def complete(self, entry: ModelEntry, payload: dict[str, Any], budget_s: float) -> Completion:
            url = str(entry.base_url)
            in_flight[url] += 1
            peak[url] = max(peak[url], in_flight[url])
            await asyncio.sleep(0.02)
            in_flight[url] -= 1
            return Completion("answer", "stop", 1, 1, 20.0)

    def envelope(number: int) -> Envelope:
        now = utcnow()
        request = Request.model_validate(
            {"correlation_id": f"c{number}", "tenant": "t", "messages": [{"role": "user", "content": "hi"}]}
        )
        return Envelope(
            request_id=f"r{number}",
            correlation_id=f"c{number}",
            tenant="t",
            reply_to="sluice.responses",
            received_at=now,
            deadline_at=now + timedelta(seconds=5),
            request=request,
            route=RouteDecision(model="llama", reason="test"),
        )

    res = Resilience()
    outcomes = await asyncio.gather(
        *(infer(envelope(n), catalog, Caller(), resilience=res) for n in range(4))
    )
    assert all(o.forward and o.forward.inference and o.forward.inference.error is None for o in outcomes)
    assert peak == {"http://a:1/v1": 1, "http://b:1/v1": 1}
    assert sorted(o.event.attributes["deployment"] for o in outcomes) == ["a", "a", "b", "b"]
