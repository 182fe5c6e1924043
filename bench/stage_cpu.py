"""CPU per request of Sluice's own work, without Kafka, Faust or HTTP (run by hand).

Runs the stages' pure functions on the requests the side-by-side benchmark sends: validate on
the raw bytes, sanitize, route, infer against a model that answers at once (infer's own logic:
the cache lookup and store, the breaker, the cost, the event; no HTTP), validate_response, then encoding
the response and the five stage events with the one codec, as the worker publishes them.
Reports the CPU each part takes per request (median of the rounds).

This is the part of the worker's CPU that batching Kafka records cannot remove: the work each
request needs whatever carries it. Compare it with the budget that 4x the proxy's goodput
leaves (`bench/stack_floor.py`).

    .venv/bin/python bench/stage_cpu.py [--requests 3000] [--rounds 5]

Writes bench/results/stage_cpu.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from harness import machine

from agents.infer import Resilience, infer
from agents.inference.cache import ResponseCache
from agents.route import route
from agents.routing.advice import AdviceBook
from agents.sanitize import sanitize
from agents.validate import Decided, Limits, RawRecord, validate_record
from agents.validate_response import pii_findings, validate_response
from schemas import Envelope, Event
from sluice.codec import encode
from sluice.outcome import Outcome, utcnow
from sluice.providers.calls import Completion
from sluice.providers.catalog import Catalog, ModelEntry, load_catalog
from sluice.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("validate", "sanitize", "route", "infer", "validate_response", "encode")
UNCOUNTED = "uncounted"  # the bench's own bookkeeping between the parts
ANSWER = "A log is an append-only sequence of records, ordered by time."  # what the mock says


class AnswersAtOnce:
    """A model that replies immediately, with the mock upstream's kind of answer."""

    async def complete(self, entry: ModelEntry, payload: dict[str, Any], budget_s: float) -> Completion:
        return Completion(
            content=ANSWER, finish_reason="stop", prompt_tokens=12, completion_tokens=14, latency_ms=0.1
        )


def raw_requests(count: int, tag: str) -> list[bytes]:
    """The side-by-side benchmark's requests, as the Kafka client sends them."""
    return [
        orjson.dumps(
            {
                "correlation_id": f"{tag}-{i}",
                "tenant": "demo",
                "model": "sim-small",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": f"side by side question {tag} {i}: what is a log?"}],
            }
        )
        for i in range(count)
    ]


class Clock:
    """CPU seconds per part: `lap(part)` books the time since the previous lap to `part`."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys((*PARTS, UNCOUNTED), 0.0)
        self.last = time.process_time()

    def lap(self, part: str) -> None:
        now = time.process_time()
        self.spent[part] += now - self.last
        self.last = now


async def one_round(settings: Settings, catalog: Catalog, requests: list[bytes]) -> dict[str, float]:
    """CPU seconds of each part over all `requests` (the checks between laps are not counted)."""
    limits = Limits.from_settings(settings, "sluice.responses")
    seen: dict[str, Any] = {}
    advice = AdviceBook()
    model = AnswersAtOnce()
    tenant = settings.tenant
    # The worker's one shared infer state: breakers, slots and the response cache (every request
    # here is distinct, so each is a cache miss that then stores its answer, as in the worker).
    cache = ResponseCache({}, ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries)
    resilience = Resilience.from_settings(settings, catalog, cache)
    clock = Clock()
    for offset, raw in enumerate(requests):
        record = RawRecord(value=raw, topic="sluice.requests", partition=0, offset=offset)
        clock.lap(UNCOUNTED)
        decision = validate_record(record, limits, seen, utcnow(), tenant)
        clock.lap("validate")
        assert isinstance(decision, Decided) and decision.outcome.forward is not None, decision
        events = [decision.outcome.event]
        envelope: Envelope = decision.outcome.forward
        rules = tenant(envelope.tenant)
        clock.lap(UNCOUNTED)
        outcome = sanitize(envelope, utcnow(), tenant=rules)
        clock.lap("sanitize")
        envelope = forwarded(outcome, events)
        clock.lap(UNCOUNTED)
        outcome = route(envelope, catalog, utcnow(), tenant=rules, advice=advice, unavailable=set())
        clock.lap("route")
        envelope = forwarded(outcome, events)
        clock.lap(UNCOUNTED)
        outcome = await infer(envelope, catalog, model, resilience=resilience)
        clock.lap("infer")
        envelope = forwarded(outcome, events)
        clock.lap(UNCOUNTED)
        outcome = validate_response(
            envelope, utcnow(), tenant=rules, catalog=catalog, pii_detector=pii_findings
        )
        clock.lap("validate_response")
        assert outcome.response is not None and outcome.response.status.value == "ok", outcome.event
        events.append(outcome.event)
        clock.lap(UNCOUNTED)
        encoded = [encode(outcome.response), *(encode(event) for event in events)]
        clock.lap("encode")
        assert len(encoded) == 6
    return {part: seconds for part, seconds in clock.spent.items() if part in PARTS}


def forwarded(outcome: Outcome, events: list[Event]) -> Envelope:
    """The envelope a stage passed on (the bench counts only requests that pass every stage)."""
    assert outcome.forward is not None, outcome.event
    events.append(outcome.event)
    return outcome.forward


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    settings = Settings()
    catalog = load_catalog(settings)
    asyncio.run(one_round(settings, catalog, raw_requests(300, "warm")))
    rounds = [
        asyncio.run(one_round(settings, catalog, raw_requests(args.requests, f"r{n}")))
        for n in range(args.rounds)
    ]
    per_request_us = {
        part: round(statistics.median(r[part] for r in rounds) / args.requests * 1e6, 1) for part in PARTS
    }
    totals = [sum(r.values()) / args.requests * 1e6 for r in rounds]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load_start),
        "settings": {
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "tenant": "demo",
            "model": "sim-small",
        },
        "per_request_us": per_request_us,
        "total_us": {"median": round(statistics.median(totals), 1), "min": round(min(totals), 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the median is reported)")
    result = run(parser.parse_args())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stage_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["per_request_us"]), "total", result["total_us"])


if __name__ == "__main__":
    main()
