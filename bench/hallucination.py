"""Hallucination-detector benchmark: quality of the groundedness score and its cost.

Run by hand: /work/venv/bin/python bench/hallucination.py [--split test|dev|all]

Quality is measured on tests/data/hallucination_eval.jsonl (see its PROVENANCE.md): accuracy, precision
and recall of the hallucination flag at the default threshold (positive class = hallucinated), ROC AUC
of the groundedness score, overall and per kind. The threshold was chosen on the dev split only; the
test split is for reporting. Latency is p50/p99 of scoring a ~1 KB answer against 5 ~1 KB passages.
Then one table per public held-out corpus (bench/heldout.py: BIG-bench factuality_of_summary, XSum and
CNN/DM apart, which needs `pip install --no-deps bigbench==1.0.0`; BIG-bench knowledge-conflict QA),
for the shipped lexical scorer and the learned model, and the learned model's latency for a 1 KB answer
against 4 KB of context. Results go to bench/results/hallucination.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.checks.grounding import (  # noqa: E402
    DEFAULT_HALLUCINATION_THRESHOLD,
    _build_index_cached,
    build_index,
    score_groundedness,
)
from bench import heldout  # noqa: E402

DATA = ROOT / "tests" / "data" / "hallucination_eval.jsonl"
RESULTS = ROOT / "bench" / "results" / "hallucination.json"


def load(split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows if split == "all" else [r for r in rows if r["split"] == split]


def score_rows(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    out = []
    for r in rows:
        passages = [(p["id"], p["text"]) for p in r["context"]]
        res = score_groundedness(r["answer"], passages, question=r["question"])
        assert res.groundedness is not None
        out.append((r, res.groundedness))
    return out


def roc_auc(scored: list[tuple[float, bool]]) -> float:
    """AUC of "lower groundedness means hallucinated": the Mann-Whitney U statistic, ties counted half."""
    pos = [s for s, halluc in scored if halluc]
    neg = [s for s, halluc in scored if not halluc]
    if not pos or not neg:
        return float("nan")
    ranked = sorted((-s, i) for i, (s, _h) in enumerate(scored))  # higher rank = more hallucinated
    ranks = [0.0] * len(scored)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[ranked[k][1]] = (i + j) / 2 + 1
        i = j + 1
    pos_rank_sum = sum(ranks[i] for i, (_s, h) in enumerate(scored) if h)
    u = pos_rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def metrics(pairs: list[tuple[dict[str, Any], float]], threshold: float) -> dict[str, float]:
    tp = fp = tn = fn = 0
    for r, g in pairs:
        predicted = g < threshold
        actual = r["label"] == "hallucinated"
        tp += predicted and actual
        fp += predicted and not actual
        tn += (not predicted) and (not actual)
        fn += (not predicted) and actual
    n = max(1, tp + fp + tn + fn)
    return {
        "n": tp + fp + tn + fn,
        "accuracy": round((tp + tn) / n, 4),
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
        "auc": round(roc_auc([(g, r["label"] == "hallucinated") for r, g in pairs]), 4),
    }


def per_kind(pairs: list[tuple[dict[str, Any], float]], threshold: float) -> dict[str, dict[str, float]]:
    """Each hallucination kind against all supported items of the split, so AUC stays defined."""
    supported = [p for p in pairs if p[0]["label"] == "supported"]
    kinds: dict[str, list[tuple[dict[str, Any], float]]] = defaultdict(list)
    for p in pairs:
        if p[0]["label"] == "hallucinated":
            kinds[p[0]["kind"]].append(p)
    out = {}
    for kind, items in sorted(kinds.items()):
        m = metrics(items + supported, threshold)
        m["recall"] = round(sum(1 for _r, g in items if g < threshold) / len(items), 4)
        m["n_kind"] = len(items)
        out[kind] = m
    out["supported"] = {
        "n_kind": len(supported),
        "specificity": round(sum(1 for _r, g in supported if g >= threshold) / max(1, len(supported)), 4),
    }
    return out


def best_threshold(pairs: list[tuple[dict[str, Any], float]]) -> tuple[float, float]:
    best = (0.5, 0.0)
    for t in [x / 100 for x in range(20, 96)]:
        acc = metrics(pairs, t)["accuracy"]
        if acc > best[1]:
            best = (t, acc)
    return best


def latency(iterations: int = 2000) -> dict[str, float]:
    """~1 KB answer against five ~1 KB passages. The passage index is rebuilt on every call (cache
    cleared), which is the per-request cost when every request brings a new context. Wall time is the
    target; thread CPU time is recorded too, since other processes on a shared 2-core box inflate the
    wall-clock tail."""
    rows = load("all")
    rng = random.Random(7)
    texts = [p["text"] for r in rows for p in r["context"]]
    answers = [r["answer"] for r in rows if len(r["answer"]) > 150]
    samples = []
    for _ in range(50):
        passages = []
        for k in range(5):
            text = ""
            while len(text) < 1000:
                text += " " + rng.choice(texts)
            passages.append((f"doc-{k + 1}", text[:1100]))
        answer = ""
        while len(answer) < 1000:
            answer += " " + rng.choice(answers)
        samples.append((answer[:1050], passages))
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(iterations):
        answer, passages = samples[i % len(samples)]
        _build_index_cached.cache_clear()
        t0, c0 = time.perf_counter(), time.thread_time()
        score_groundedness(answer, build_index(passages), question="What happened?")
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    wall.sort()
    cpu.sort()
    return {
        "iterations": iterations,
        "p50_ms": round(statistics.median(wall), 3),
        "p99_ms": round(wall[int(len(wall) * 0.99) - 1], 3),
        "max_ms": round(wall[-1], 3),
        "cpu_p50_ms": round(statistics.median(cpu), 3),
        "cpu_p99_ms": round(cpu[int(len(cpu) * 0.99) - 1], 3),
        "answer_chars": 1050,
        "passages": 5,
        "passage_chars": 1100,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "dev", "all"])
    args = parser.parse_args()
    threshold = DEFAULT_HALLUCINATION_THRESHOLD
    results: dict[str, Any] = {
        "threshold": threshold,
        "data": str(DATA.relative_to(ROOT)),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for split in ("dev", "test") if args.split != "all" else ("all",):
        pairs = score_rows(load(split))
        results[split] = {
            "overall": metrics(pairs, threshold),
            "per_kind": per_kind(pairs, threshold),
            "best_threshold_on_this_split": best_threshold(pairs),
        }
    results["public_corpora"] = heldout.grounding_tables(threshold)
    results["latency"] = latency()
    results["learned_model_latency"] = heldout.grounding_model_latency()
    results["load_average"] = list(os.getloadavg())
    results["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for split in [s for s in ("dev", "test", "all") if s in results]:
        o = results[split]["overall"]
        print(
            f"[{split}] n={o['n']} threshold={threshold} accuracy={o['accuracy']:.3f} "
            f"precision={o['precision']:.3f} recall={o['recall']:.3f} auc={o['auc']:.3f}"
        )
        for kind, m in results[split]["per_kind"].items():
            if kind == "supported":
                print(f"    {kind:<12} n={m['n_kind']:<4} specificity={m['specificity']:.3f}")
            else:
                print(f"    {kind:<12} n={m['n_kind']:<4} recall={m['recall']:.3f} auc={m['auc']:.3f}")
    lat = results["latency"]
    print(
        f"[latency] wall p50={lat['p50_ms']:.3f} ms p99={lat['p99_ms']:.3f} ms max={lat['max_ms']:.3f} ms; "
        f"cpu p50={lat['cpu_p50_ms']:.3f} ms p99={lat['cpu_p99_ms']:.3f} ms "
        f"({lat['iterations']} runs, 1 KB answer x 5 passages, load {lat['load_average_1m']})"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
