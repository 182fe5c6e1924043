"""Leave-one-corpus-out figures for the learned prompt-injection model, run by hand:

    python bench/build_corpora.py --packages /tmp/pk   # once: the training corpora
    nice -n 19 python bench/injection_loo.py

For each public held-out corpus C (spikee, agentdojo, raginject), the n-gram model is fitted with the
shipped recipe (bench/train_detectors.py `fit_injection`) on the training corpora plus the other public
corpora, its threshold is put at 1 % false positives out of fold on those same rows, and only then is C
scored, once. C is never used for fitting or for choosing the threshold, so these are the honest
held-out figures of the recipe; the shipped model (all corpora) has seen every corpus and its own
figures on them would be training figures.

Each corpus is scored three ways, direct and indirect channels apart: the rules alone (the stage's
default), the leave-one-out model alone, and both together as the sanitize stage runs them (its
`learned_model` policy switch). "Recall at held-out FPR 0.02" picks the threshold on C itself: a
diagnostic of how separable C is, never an operating point. Writes bench/results/injection_loo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.checks.injection import InjectionScanner  # noqa: E402
from agents.checks.injection_model import NgramDetector, NgramModel  # noqa: E402
from agents.checks.sanitizer import Action, sanitize_request  # noqa: E402
from bench import heldout  # noqa: E402
from bench import train_detectors as td  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "injection_loo.json"
DETECTORS = ("rules (shipped default)", "n-gram, leave-one-out", "rules + n-gram, leave-one-out")


def _rate(part: float, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _recall_at_fpr(scored: list[tuple[float, bool]], fpr: float) -> float | None:
    benign = np.array([s for s, attack in scored if not attack])
    attack = np.array([s for s, is_attack in scored if is_attack])
    if not len(benign) or not len(attack):
        return None
    ordered = np.sort(benign)[::-1]
    allowed = int(np.floor(fpr * len(benign)))  # this many benign rows may score at or above the cut
    cut = ordered[allowed] if allowed < len(ordered) else -np.inf
    return round(float(np.mean(attack > cut)), 4)


def training_rows(own: list[dict[str, Any]], held: str) -> list[dict[str, Any]]:
    """The training corpora plus every public corpus except `held`: what fits the model that `held`
    is then scored by, and what its threshold is chosen on."""
    others = [name for name in td.INJECTION_CORPORA if name != held]
    return own + [row for name in others for row in td.heldout_rows(name)]


def score_corpus(name: str, model: NgramModel) -> dict[str, Any]:
    """Per channel: attacks, benign, recall and false-positive rate of each detector, plus the
    model's ROC AUC and its recall at a held-out FPR of 0.02 (diagnostic)."""
    scanner = InjectionScanner(extra=(NgramDetector(model),))
    tally: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    scores: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for row in heldout.load(name):
        context = [(p["id"], p["text"]) for p in row.get("context", [])]
        messages = [("user", row["text"])]
        rules = sanitize_request(messages, context).decision.action is not Action.ALLOW
        both = sanitize_request(messages, context, scanner=scanner).decision.action is not Action.ALLOW
        score = max(model.score(t) for t in [row["text"], *(t for _i, t in context)])
        attack = row["label"] == "attack"
        for channel in (row["channel"], "all"):
            scores[channel].append((score, attack))
            for detector, hit in zip(DETECTORS, (rules, score >= 0.5, both), strict=True):
                cell = tally[(detector, channel, row["label"])]
                cell[0] += hit
                cell[1] += 1
    table: dict[str, Any] = {}
    for (detector, channel, label), (hits, n) in sorted(tally.items()):
        cell = table.setdefault(channel, {}).setdefault(detector, {})
        cell["recall" if label == "attack" else "false_positive_rate"] = _rate(hits, n)
        cell["n_" + label] = n
    for channel, scored in scores.items():
        table[channel]["n-gram, leave-one-out"]["auc"] = _auc(scored)
        table[channel]["n-gram, leave-one-out"]["recall_at_heldout_fpr_0.02"] = _recall_at_fpr(scored, 0.02)
    return table


def _auc(scored: list[tuple[float, bool]]) -> float | None:
    # heldout.roc_auc counts how often the positive class scores *lower*; attacks should score higher
    return heldout.roc_auc([(-s, attack) for s, attack in scored])


def print_table(corpus: str, table: dict[str, Any], trained_on: list[str]) -> None:
    print_detectors(f"{corpus} (held out; model trained on: {', '.join(trained_on)})", table, DETECTORS)


def print_detectors(
    title: str, table: dict[str, Any], detectors: tuple[str, ...], diagnostic: tuple[str, ...] = ("auc",)
) -> None:
    """One row per channel and detector: attacks and recall, benign and FPR, then the diagnostic
    columns (AUC, and oracle recall where given) where the detector has them."""
    width = max(len(d) for d in detectors)
    heads = " ".join(f"{'oracle' if d.startswith('recall_at') else d.upper():>7s}" for d in diagnostic)
    print(f"\n{title}")
    print(
        f"  {'channel':9s} {'detector':{width}s} {'attacks':>7s} {'recall':>7s} {'benign':>7s} "
        f"{'FPR':>7s} {heads}"
    )
    for channel, cells in table.items():
        for detector in detectors:
            m = cells.get(detector, {})
            extra = " ".join(_fmt(m.get(d)) for d in diagnostic)
            print(
                f"  {channel:9s} {detector:{width}s} {m.get('n_attack', 0):7d} {_fmt(m.get('recall'))} "
                f"{m.get('n_benign', 0):7d} {_fmt(m.get('false_positive_rate'))} {extra}"
            )


def _fmt(value: float | None) -> str:
    return f"{value:7.3f}" if value is not None else "      -"


def run(window: int) -> dict[str, Any]:
    """Fit, threshold and score once per held-out corpus; print one table per corpus."""
    started = time.time()
    load_before = list(os.getloadavg())
    own = td._rows(td.TRAIN / "injection_train.jsonl")
    corpora: dict[str, Any] = {}
    for held in td.INJECTION_CORPORA:
        t0 = time.time()
        model, meta = td.fit_injection(training_rows(own, held), window=window)
        meta.pop("weights")
        corpus = held.removesuffix(".jsonl")
        table = score_corpus(held, model)
        print_table(corpus, table, [o.removesuffix(".jsonl") for o in td.INJECTION_CORPORA if o != held])
        corpora[corpus] = {
            "trained_on": meta["trained_on"],
            "training_rows": meta["rows"],
            "threshold_chosen_on": "out-of-fold scores of the training rows (this corpus excluded)",
            "out_of_fold": meta["out_of_fold"],
            "fit_seconds": round(time.time() - t0, 1),
            "channels": table,
        }
    return {
        "what": "leave-one-corpus-out: fit and threshold on the other corpora, score the held-out one once",
        "settings": {
            "features": f"hashed character {td.im.ORDERS} -grams, 2^{td.BITS} buckets, windows of "
            f"{window} characters (stride {window // 2})",
            **fit_settings(),
        },
        "corpora": corpora,
        **machine(load_before),
        "seconds": round(time.time() - started, 1),
    }


def fit_settings() -> dict[str, Any]:
    """How the model is fitted and where its threshold goes (bench/train_detectors.py's recipe)."""
    return {
        "fit": f"weighted logistic regression, full-batch Adam, {td.STEPS} steps, L2 1e-6, benign weight 2",
        "threshold": f"{td.TARGET_FPR} false positives out of fold ({td.FOLDS} folds) on the training rows",
        "seed": td.SEED,
        "stage_policy": "sanitize defaults (flag at 0.5, indirect passages at 0.5)",
    }


def machine(load_before: list[float]) -> dict[str, Any]:
    """Load, CPUs, date and Python of a run, for its result file."""
    return {
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--window",
        type=int,
        default=td.im.WINDOW,
        help="characters per scoring window; a value other than the shipped one is recorded as a variant",
    )
    args = parser.parse_args(argv)
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    result = run(args.window)
    if args.window == td.im.WINDOW:
        results = result | {"variants": previous.get("variants", {})}
    else:
        results = previous | {"variants": previous.get("variants", {}) | {f"window {args.window}": result}}
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
