"""Routing benchmark: what `model: auto` saves, and whether complex prompts still reach a capable model.

Run by hand: /work/venv/bin/python bench/routing.py [--split dev|test|all]

Workload: tests/data/routing_eval/prompts.jsonl (see PROVENANCE.md there), each prompt labelled
`simple` (a small model suffices) or `complex` (needs at least the medium tier: multi-step math,
code, multi-constraint analysis, schema-bound extraction, multi-document synthesis). Every prompt is
routed by the real router (agents.routing.router.decide) over the built-in simulator catalog.

Cost: estimated prompt tokens (sluice.tokens) plus the prompt's `completion_tokens` (an assumed
answer length per category, the same for every model), priced by the catalog. Compared against
always sending everything to the largest model (sim-large). The rules' weights were adjusted while
looking at the dev split only; the test split (by a hash of the prompt id) is reported untouched.

Targets (issue #5): >= 60% cost reduction while >= 95% of complex prompts reach a capable tier
(medium or large). Results go to bench/results/routing.json and routing.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.routing.router import Rejection, decide  # noqa: E402
from schemas import Request, RouteDecision  # noqa: E402
from sluice.providers.catalog import (  # noqa: E402
    BUILTIN_CATALOG,
    TIER_RANK,
    Catalog,
    Experiment,
    RoutingConfig,
)
from sluice.tokens import estimate_prompt_tokens  # noqa: E402

DATA = ROOT / "tests" / "data" / "routing_eval" / "prompts.jsonl"
RESULTS_JSON = ROOT / "bench" / "results" / "routing.json"
RESULTS_TXT = ROOT / "bench" / "results" / "routing.txt"
CAPABLE_RANK = TIER_RANK["medium"]
MAX_TOKENS = 1024


def split_of(item_id: str) -> str:
    return "dev" if hashlib.sha256(item_id.encode()).digest()[0] % 2 == 0 else "test"


def load(split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows if split == "all" else [row for row in rows if split_of(row["id"]) == split]


def to_request(row: dict[str, Any]) -> Request:
    return Request.model_validate(
        {
            "correlation_id": row["id"],
            "tenant": "bench",
            "messages": row["messages"],
            "context": row.get("context", []),
            "response_format": row.get("response_format"),
            "max_tokens": MAX_TOKENS,
        }
    )


def route_all(rows: list[dict[str, Any]], catalog: Catalog) -> list[dict[str, Any]]:
    routed = []
    for row in rows:
        request = to_request(row)
        decision = decide(request, f"bench-{row['id']}", catalog)
        if isinstance(decision, Rejection):
            raise SystemExit(f"{row['id']} rejected: {decision.message}")
        routed.append({"row": row, "request": request, "decision": decision})
    return routed


def costs(routed: list[dict[str, Any]], catalog: Catalog) -> dict[str, Any]:
    largest = max(catalog.models, key=lambda e: (TIER_RANK[e.tier], e.cost_usd(1000, 1000)))
    smallest = min(catalog.models, key=lambda e: (TIER_RANK[e.tier], e.cost_usd(1000, 1000)))
    medium = min(
        (e for e in catalog.models if e.tier == "medium"),
        key=lambda e: e.cost_usd(1000, 1000),
        default=largest,
    )
    total = always_large = oracle = recorded_savings = 0.0
    for item in routed:
        row, decision = item["row"], item["decision"]
        prompt = estimate_prompt_tokens(item["request"])
        completion = int(row["completion_tokens"])
        entry = catalog.get(decision.model)
        assert entry is not None
        total += entry.cost_usd(prompt, completion)
        always_large += largest.cost_usd(prompt, completion)
        needed = smallest if row["label"] == "simple" else medium
        oracle += needed.cost_usd(prompt, completion)
        recorded_savings += catalog.routing_savings(
            decision.baseline_model, decision.model, prompt, completion
        )
    return {
        "largest_model": largest.name,
        "routed_usd": round(total, 6),
        "always_largest_usd": round(always_large, 6),
        "oracle_usd": round(oracle, 6),
        "cost_reduction": round(1 - total / always_large, 4),
        "oracle_cost_reduction": round(1 - oracle / always_large, 4),
        "recorded_routing_savings_usd": round(recorded_savings, 6),
    }


def quality(routed: list[dict[str, Any]]) -> dict[str, Any]:
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    by_category: dict[str, Counter[str]] = defaultdict(Counter)
    misses = []
    for item in routed:
        row, decision = item["row"], item["decision"]
        tier = decision.tier or "small"
        by_label[row["label"]][tier] += 1
        by_category[row["category"]][tier] += 1
        if row["label"] == "complex" and TIER_RANK[tier] < CAPABLE_RANK:
            misses.append({"id": row["id"], "reason": decision.reason})
    complex_n = sum(by_label["complex"].values())
    simple_n = sum(by_label["simple"].values())
    capable = sum(n for tier, n in by_label["complex"].items() if TIER_RANK[tier] >= CAPABLE_RANK)
    return {
        "prompts": len(routed),
        "complex": complex_n,
        "simple": simple_n,
        "complex_to_capable_tier": round(capable / complex_n, 4) if complex_n else None,
        "complex_to_large": round(by_label["complex"]["large"] / complex_n, 4) if complex_n else None,
        "simple_to_small": round(by_label["simple"]["small"] / simple_n, 4) if simple_n else None,
        "tiers_by_label": {label: dict(counts) for label, counts in sorted(by_label.items())},
        "tiers_by_category": {cat: dict(counts) for cat, counts in sorted(by_category.items())},
        "complex_misses": misses,
    }


def experiment_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A 10% challenger split on route 'simple': the observed share and that arms are stable."""
    catalog = BUILTIN_CATALOG.model_copy(
        update={
            "routing": RoutingConfig(
                experiments=(Experiment(route="simple", challenger="sim-medium", fraction=0.1),)
            )
        }
    )
    arms: Counter[str] = Counter()
    stable = True
    for row in rows:
        request = to_request(row)
        first = decide(request, f"exp-{row['id']}", catalog)
        again = decide(request, f"exp-{row['id']}", catalog)
        if isinstance(first, RouteDecision) and first.route == "simple":
            arms[first.arm or "none"] += 1
            stable &= isinstance(again, RouteDecision) and again.arm == first.arm
    on_route = sum(arms.values())
    return {
        "route": "simple",
        "fraction": 0.1,
        "requests_on_route": on_route,
        "arms": dict(arms),
        "challenger_share": round(arms["challenger"] / on_route, 4) if on_route else None,
        "same_arm_on_redelivery": stable,
    }


def latency(rows: list[dict[str, Any]]) -> dict[str, float]:
    requests = [to_request(row) for row in rows]
    samples = []
    for _ in range(5):
        for index, request in enumerate(requests):
            started = time.perf_counter()
            decide(request, f"lat-{index}", BUILTIN_CATALOG)
            samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return {
        "decisions": len(samples),
        "p50_us": round(statistics.median(samples), 1),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "test", "all"], default=None, help="default: all three")
    args = parser.parse_args()
    splits = [args.split] if args.split else ["dev", "test", "all"]
    results: dict[str, Any] = {
        "catalog": {
            e.name: [e.tier, e.input_price_per_1k, e.output_price_per_1k] for e in BUILTIN_CATALOG.models
        },
        "python": platform.python_version(),
    }
    lines = []
    for split in splits:
        rows = load(split)
        routed = route_all(rows, BUILTIN_CATALOG)
        results[split] = {"cost": costs(routed, BUILTIN_CATALOG), "quality": quality(routed)}
        c, q = results[split]["cost"], results[split]["quality"]
        lines.append(
            f"[{split}] {q['prompts']} prompts ({q['simple']} simple, {q['complex']} complex): "
            f"cost ${c['routed_usd']:.4f} vs ${c['always_largest_usd']:.4f} always {c['largest_model']} "
            f"-> {c['cost_reduction']:.1%} reduction (oracle {c['oracle_cost_reduction']:.1%}); "
            f"complex -> capable tier {q['complex_to_capable_tier']:.1%} "
            f"(large {q['complex_to_large']:.1%}); simple -> small {q['simple_to_small']:.1%}"
        )
        for category, tiers in q["tiers_by_category"].items():
            lines.append(f"    {category:22s} {tiers}")
    results["experiment"] = experiment_check(load("all"))
    results["latency"] = latency(load("all"))
    e, lat = results["experiment"], results["latency"]
    lines.append(
        f"experiment: {e['challenger_share']:.1%} of {e['requests_on_route']} requests on route "
        f"'{e['route']}' took the challenger (configured {e['fraction']:.0%}); "
        f"same arm on redelivery: {e['same_arm_on_redelivery']}"
    )
    lines.append(
        f"router latency: p50 {lat['p50_us']} us, p99 {lat['p99_us']} us over {lat['decisions']} decisions"
    )
    if "all" in results:
        misses = results["all"]["quality"]["complex_misses"]
        lines.append(f"complex prompts routed to small ({len(misses)}):")
        lines += [f"    {m['id']}: {m['reason']}" for m in misses]
    text = "\n".join(lines) + "\n"
    RESULTS_JSON.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    RESULTS_TXT.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
