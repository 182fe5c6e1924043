"""Per-corpus tables on the public held-out corpora, shared by bench/sanitize.py and bench/hallucination.py.

Nothing here chooses a threshold: each detector runs at its shipped operating point (the sanitize
stage's default policy; the tenant default hallucination threshold). The learned models are measured
beside the shipped scorers so the comparison is visible; which one the stages use is stated in the
output ("shipped").
"""

from __future__ import annotations

import bisect
import gzip
import importlib.util
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.checks.grounding import DEFAULT_HALLUCINATION_THRESHOLD, score_groundedness  # noqa: E402
from agents.checks.grounding_model import default_model as grounding_model  # noqa: E402
from agents.checks.injection_model import default_model as injection_model  # noqa: E402
from agents.checks.sanitizer import Action, sanitize_request  # noqa: E402

DATA = ROOT / "tests" / "data"
INJECTION_CORPORA = ("injection_spikee.jsonl", "injection_agentdojo.jsonl", "injection_raginject.jsonl")
OWN_INJECTION = "injection_eval.jsonl"  # the regression set: its test split, by category, for comparison
GROUNDING_CORPORA = (("grounding_fib", "subset"), ("grounding_cpkc.jsonl", "task"))


def factuality_of_summary() -> list[dict[str, Any]]:
    """BIG-bench `factuality_of_summary`, read from the installed `bigbench` package
    (`pip install --no-deps bigbench==1.0.0`): its news articles are not ours to redistribute, so
    they are not copied into tests/data/."""
    spec = importlib.util.find_spec("bigbench")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the summarisation corpus needs: pip install --no-deps bigbench==1.0.0")
    task = Path(next(iter(spec.submodule_search_locations))) / "benchmark_tasks" / "factuality_of_summary"
    rows = []
    for part in ("xsum", "cnn_dm"):
        lines = (task / f"{part}.json").read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(x for x in lines if x.strip() and not x.startswith("#")):
            item = json.loads(line)
            for c, candidate in enumerate(item["list_candidates"]):
                rows.append(
                    {
                        "id": f"fib-{part}-{n}-{c}",
                        "context": [{"id": "doc-1", "text": item["source"]}],
                        "question": "Summarise the document.",
                        "answer": candidate,
                        "label": "supported" if c == item["lbl"] else "hallucinated",
                        "subset": part,
                    }
                )
    return rows


def load(name: str) -> list[dict[str, Any]]:
    if name == "grounding_fib":
        return factuality_of_summary()
    path = DATA / name
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def injection_tables() -> dict[str, Any]:
    """Recall per channel and false-positive rate for the shipped rules, the n-gram model alone and
    either of them, at their default operating points."""
    model = injection_model()
    out: dict[str, Any] = {}
    for name in (*INJECTION_CORPORA, OWN_INJECTION):
        tally: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        rows = load(name)
        if name == OWN_INJECTION:
            rows = [{**r, "channel": r["category"]} for r in rows if r["split"] == "test"]
        for row in rows:
            context = [(p["id"], p["text"]) for p in row.get("context", [])]
            rules = sanitize_request([("user", row["text"])], context).decision.action is not Action.ALLOW
            learned = max([model.score(row["text"])] + [model.score(t) for _i, t in context]) >= 0.5
            for detector, hit in (
                ("rules (shipped)", rules),
                ("n-gram model", learned),
                ("either", rules or learned),
            ):
                for channel in (row["channel"], "all"):
                    cell = tally[(detector, channel, row["label"])]
                    cell[0] += hit
                    cell[1] += 1
        table: dict[str, Any] = {}
        for (detector, channel, label), (hits, n) in sorted(tally.items()):
            key = "recall" if label == "attack" else "false_positive_rate"
            table.setdefault(detector, {}).setdefault(channel, {})[key] = _rate(hits, n)
            table[detector][channel]["n_" + label] = n
        stem = name.removesuffix(".jsonl")
        title = stem + (" (own regression set, test split)" if name == OWN_INJECTION else "")
        seen = stem in model.trained_on or (
            name == OWN_INJECTION and "injection_eval/dev" in model.trained_on
        )
        print(f"\n{title}: injection detected (flag or block) at the default policy")
        if stem in model.trained_on:
            print("  (the shipped n-gram model was trained on this corpus: its rows are training figures;")
            print("   the held-out figures are the leave-one-corpus-out rows below)")
        print(f"  {'detector':32s} {'channel':10s} {'attacks':>7s} {'recall':>7s} {'benign':>7s} {'FPR':>7s}")
        for detector, channels in table.items():
            for channel, m in channels.items():
                print(
                    f"  {detector:32s} {channel:10s} {m.get('n_attack', 0):7d} {_fmt(m.get('recall'))} "
                    f"{m.get('n_benign', 0):7d} {_fmt(m.get('false_positive_rate'))}"
                )
        for detector, channels in _leave_one_out(stem).items():
            for channel, m in channels.items():
                print(
                    f"  {detector:32s} {channel:10s} {m.get('n_attack', 0):7d} {_fmt(m.get('recall'))} "
                    f"{m.get('n_benign', 0):7d} {_fmt(m.get('false_positive_rate'))}"
                )
        out[title] = table | {"trained_on_this_corpus": seen and name != OWN_INJECTION}
    return out


def _leave_one_out(corpus: str) -> dict[str, dict[str, Any]]:
    """This corpus's rows of the last bench/injection_loo.py run (a model that never saw it), by
    detector and channel; empty when that bench has not run."""
    path = ROOT / "bench" / "results" / "injection_loo.json"
    if not path.exists():
        return {}
    run = json.loads(path.read_text(encoding="utf-8"))["corpora"].get(corpus)
    if not run:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for channel, detectors in run["channels"].items():
        for detector, m in detectors.items():
            if "leave-one-out" in detector:
                out.setdefault(detector + " *", {})[channel] = m
    return out


def _fmt(value: float | None) -> str:
    return f"{value:7.3f}" if value is not None else "      -"


def roc_auc(scored: list[tuple[float, bool]]) -> float | None:
    """P(a hallucinated answer scores lower than a supported one), ties half."""
    pos = [s for s, h in scored if h]
    neg = [s for s, h in scored if not h]
    if not pos or not neg:
        return None
    wins = 0.0
    neg_sorted = sorted(neg)
    for s in pos:
        lo = bisect.bisect_left(neg_sorted, s)
        hi = bisect.bisect_right(neg_sorted, s)
        wins += (len(neg_sorted) - hi) + 0.5 * (hi - lo)
    return round(wins / (len(pos) * len(neg)), 4)


def grounding_tables(threshold: float = DEFAULT_HALLUCINATION_THRESHOLD) -> dict[str, Any]:
    """ROC AUC and flag accuracy at the tenant default threshold, per corpus and task/subset."""
    model = grounding_model()
    out: dict[str, Any] = {}
    for name, key in GROUNDING_CORPORA:
        groups: dict[str, list[tuple[float, float, bool]]] = defaultdict(list)
        for row in load(name):
            passages = [(p["id"], p["text"]) for p in row["context"]]
            lexical = score_groundedness(row["answer"], passages, question=row["question"]).groundedness
            learned = model.score(row["answer"], passages, row["question"])
            item = (1.0 if lexical is None else lexical, learned, row["label"] == "hallucinated")
            groups[row[key]].append(item)
            groups["all"].append(item)
        table: dict[str, Any] = {}
        for group, items in groups.items():
            table[group] = {"n": len(items)}
            for label, pick in (("lexical (shipped)", 0), ("learned model", 1)):
                scored = [(it[pick], it[2]) for it in items]
                table[group][label] = {
                    "auc": roc_auc(scored),
                    "accuracy": _rate(sum((s < threshold) == h for s, h in scored), len(scored)),
                }
        out[name.split(".")[0]] = table
        print(f"\n{name}: groundedness, hallucination flag at threshold {threshold}")
        print(f"  {'subset':14s} {'n':>5s} {'scorer':18s} {'AUC':>7s} {'accuracy':>8s}")
        for group, m in table.items():
            for label in ("lexical (shipped)", "learned model"):
                cells = f"{_fmt(m[label]['auc'])} {_fmt(m[label]['accuracy'])}"
                print(f"  {group:14s} {m['n']:5d} {label:18s} {cells}")
    return out


def _p99(samples: list[float]) -> dict[str, float]:
    samples.sort()
    return {
        "p50_ms": round(samples[len(samples) // 2], 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def injection_model_latency(prompt: str, iterations: int = 2000) -> dict[str, float]:
    """CPU time of the n-gram model alone on one prompt (it would add to the stage's rules)."""
    model = injection_model()
    cpu = []
    for _ in range(iterations):
        c0 = time.thread_time()
        model.score(prompt)
        cpu.append((time.thread_time() - c0) * 1000)
    return {"prompt_chars": len(prompt), **_p99(cpu)}


def grounding_model_latency(iterations: int = 1000) -> dict[str, float]:
    """CPU time of the learned groundedness score (lexical score included) for a ~1 KB answer
    against ~4 KB of context, built from the held-out QA corpus's passages."""
    rows = load("grounding_cpkc.jsonl")
    rng = random.Random(11)
    model = grounding_model()
    texts = [r["context"][0]["text"] for r in rows]
    cpu = []
    for i in range(iterations):
        context = ""
        while len(context) < 4000:
            context += " " + rng.choice(texts)
        answer = ""
        while len(answer) < 1000:
            answer += " " + rng.choice(texts)
        passages = [("doc-1", context[:4096])]
        c0 = time.thread_time()
        model.score(answer[:1024], passages, "who is it?")
        cpu.append((time.thread_time() - c0) * 1000)
        del i
    return {"answer_chars": 1024, "context_chars": 4096, **_p99(cpu)}


if __name__ == "__main__":
    injection_tables()
    grounding_tables()
