"""Leave-one-corpus-out comparison of training recipes for the learned injection model, run by hand:

    python bench/build_corpora.py --packages /tmp/pk   # once: the training corpora
    nice -n 10 python bench/injection_mil.py [--variants NAME ...]

bench/injection_loo.py measures the shipped recipe: every window of an attack document is a positive
example, and the operating point is put at 1 % false positives out of fold over randomly drawn rows.
Two things in that recipe do not carry to a corpus the model never saw:

* **Which window carries the attack.** An injected sentence inside a long tool output or retrieved
  passage is one window among several; labelling every window "attack" teaches the model that benign
  records are attacks. The multiple-instance recipe ("mil") fits once as before, then keeps as
  positive only the highest-scoring window of each attack text and refits: score = max over windows
  at run time, trained the same way.
* **Where the threshold goes.** Random folds put near-duplicates of a row (same corpus, same
  template) on both sides, so the out-of-fold scores are those of a familiar corpus. Grouped folds
  ("by source") hold out whole source corpora, so the threshold is chosen on scores of corpora the
  fold's model did not see: what the held-out corpus will look like.

For each public corpus C (spikee, agentdojo, raginject) and each variant, the model is fitted and its
threshold chosen on the training corpora plus the other two public corpora, then C is scored once.
Reported per channel: the model alone, the rules alone (the stage's default), the stage with the
model as an extra detector (as `learned_model=True` runs it: noisy-OR of rules and model until
2026-12-03, the larger of the two since; the "combination" of each cell says which), and "either"
(flag when the rules flag or the model does; no summing of two low scores). "Recall at
held-out FPR 0.02" chooses a threshold on C itself: a diagnostic of the ranking, never an operating
point. Writes bench/results/injection_mil.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.checks.injection import InjectionScanner  # noqa: E402
from agents.checks.injection_model import NgramDetector, NgramModel, default_model  # noqa: E402
from agents.checks.sanitizer import Action, sanitize_request  # noqa: E402
from bench import heldout  # noqa: E402
from bench import injection_loo as loo  # noqa: E402
from bench import train_detectors as td  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "injection_mil.json"
VARIANTS: dict[str, dict[str, Any]] = {
    "window 1024, random folds (shipped recipe)": {"window": 1024, "mil": False, "grouped": False},
    "window 1024, folds by source": {"window": 1024, "mil": False, "grouped": True},
    "window 256, mil, random folds": {"window": 256, "mil": True, "grouped": False},
    "window 256, mil, folds by source": {"window": 256, "mil": True, "grouped": True},
    "window 256, mil, augmented, random folds": {
        "window": 256,
        "mil": True,
        "grouped": False,
        "augment": 800,
    },
    "window 256, mil, augmented, agent benign, random folds": {
        "window": 256,
        "mil": True,
        "grouped": False,
        "augment": 800,
        "agent_benign": True,
    },
    "window 1024, augmented, random folds": {"window": 1024, "mil": False, "grouped": False, "augment": 800},
}
DUMP: list[dict[str, Any]] | None = None  # per-row scores, for reading the misses (--dump DIR)
DETECTORS = ("model", "rules (shipped default)", "stage: rules + model", "either: rules or model")


def family(source: str) -> str:
    """The source corpus a row comes from, without the table or file it was taken from."""
    return source.split(" ")[0]


def grouped_folds(rows: list[dict[str, Any]], folds: int) -> list[int]:
    """Fold of each row: whole source corpora per fold, the largest first into the lightest fold."""
    sizes: dict[str, int] = defaultdict(int)
    for row in rows:
        sizes[family(row["source"])] += 1
    load = [0] * folds
    fold_of: dict[str, int] = {}
    for name, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        k = load.index(min(load))
        fold_of[name] = k
        load[k] += size
    return [fold_of[family(r["source"])] for r in rows]


class Featurised:
    """Window features of every training row, computed once per window size."""

    def __init__(self, rows: list[dict[str, Any]], window: int) -> None:
        self.rows = rows
        self.window = window
        # per row: (label of the text, list of window features) for each non-empty text
        self.texts: list[list[tuple[int, list[tuple[np.ndarray, np.ndarray]]]]] = []
        for row in rows:
            parts = []
            for text in (row["text"], row.get("context") or ""):
                if not text.strip():
                    continue
                label = row["label"] if (text is row.get("context") or not row.get("context")) else 0
                parts.append((label, td._windows(text, td.BITS, window)))
            self.texts.append(parts)

    def examples(
        self, keep: list[int], positives: dict[tuple[int, int], int] | None
    ) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """Rows `keep` as weighted window examples; with `positives`, an attack text contributes
        only its chosen window (index by (row, text)), weight 1."""
        feats: list[Any] = []
        labels: list[float] = []
        weights: list[float] = []
        for i in keep:
            for t, (label, wins) in enumerate(self.texts[i]):
                if not wins:
                    continue
                if label and positives is not None:
                    feats.append(wins[positives.get((i, t), 0)])
                    labels.append(1.0)
                    weights.append(1.0)
                    continue
                for win in wins:
                    feats.append(win)
                    labels.append(float(label))
                    weights.append(1.0 / len(wins))
        y = np.array(labels)
        return feats, y, np.array(weights) * np.where(y > 0, 1.0, 2.0)

    def fit(self, keep: list[int], positives: dict[tuple[int, int], int] | None) -> tuple[np.ndarray, float]:
        x, y, wt = self.examples(keep, positives)
        return td.fit_logistic(x, y, wt, 1 << td.BITS, l2=1e-6, steps=td.STEPS)

    def window_logits(self, w: np.ndarray, b: float, i: int, t: int) -> np.ndarray:
        return np.array([float(w[idx].astype(np.float32) @ val) + b for idx, val in self.texts[i][t][1]])

    def choose_windows(self, w: np.ndarray, b: float) -> dict[tuple[int, int], int]:
        """The highest-scoring window of every attack text under (w, b)."""
        out = {}
        for i, parts in enumerate(self.texts):
            for t, (label, wins) in enumerate(parts):
                if label and wins:
                    out[(i, t)] = int(np.argmax(self.window_logits(w, b, i, t)))
        return out

    def row_logit(self, w: np.ndarray, b: float, i: int) -> float:
        """What the runtime scores for row i: the highest window of what carries its label."""
        parts = self.texts[i]
        chosen = [len(parts) - 1] if self.rows[i].get("context") and parts else range(len(parts))
        scores = [float(self.window_logits(w, b, i, t).max()) for t in chosen if parts[t][1]]
        return max(scores) if scores else b


def augment(rows: list[dict[str, Any]], count: int, seed: int = td.SEED) -> list[dict[str, Any]]:
    """`count` indirect attacks made of the training rows themselves: a short attack text (a direct
    attack, or the passage of an indirect one) put at a line break of a benign passage (tool output,
    a policy, a document). The only indirect attacks most training corpora offer are a few dozen; this
    shows the model the attack sentence, not the record around it, as what to learn."""
    rng = random.Random(seed)
    payloads = sorted(
        {
            (r.get("context") or r["text"]).strip()
            for r in rows
            if r["label"] == 1 and 20 <= len((r.get("context") or r["text"]).strip()) <= 400
        }
    )
    carriers = sorted({r["context"] for r in rows if r["label"] == 0 and len(r.get("context") or "") >= 200})
    if not payloads or not carriers:
        return []
    out = []
    for _ in range(count):
        carrier = rng.choice(carriers)[: rng.randrange(300, 1500)]
        breaks = [i for i, c in enumerate(carrier) if c == "\n"] or [len(carrier)]
        at = rng.choice(breaks)
        payload = rng.choice(payloads)
        out.append(
            {
                "text": rng.choice(loo_tasks()),
                "context": carrier[:at] + "\n" + payload + "\n" + carrier[at:],
                "label": 1,
                "source": "augmented (an attack text inside a benign passage)",
            }
        )
    return out


def loo_tasks() -> tuple[str, ...]:
    return (
        "Look up this record and tell me what changed.",
        "Summarise the document.",
        "Use the result to answer the customer.",
        "What does the passage say?",
    )


def fit_variant(rows: list[dict[str, Any]], spec: dict[str, Any]) -> tuple[NgramModel, dict[str, Any]]:
    """Fit with `spec`'s recipe on `rows`; the threshold is put at td.TARGET_FPR out of fold."""
    if spec.get("agent_benign"):
        rows = list(rows) + td._rows(td.TRAIN / "injection_agent_benign.jsonl")
    rows = list(rows) + augment(rows, spec.get("augment", 0))
    random.Random(td.SEED).shuffle(rows)
    data = Featurised(rows, spec["window"])
    every = list(range(len(rows)))
    positives = None
    if spec["mil"]:
        w0, b0 = data.fit(every, None)
        positives = data.choose_windows(w0, b0)
    fold = grouped_folds(rows, td.FOLDS) if spec["grouped"] else [i % td.FOLDS for i in every]
    oof: dict[int, float] = {}
    for k in range(td.FOLDS):
        w, b = data.fit([i for i in every if fold[i] != k], positives)
        for i in every:
            if fold[i] == k:
                oof[i] = data.row_logit(w, b, i)
    benign = np.array([oof[i] for i in every if rows[i]["label"] == 0])
    attack = np.array([oof[i] for i in every if rows[i]["label"] == 1])
    cut = td._threshold_at_fpr(benign, td.TARGET_FPR)
    w, b = data.fit(every, positives)
    spread = float(np.std(np.concatenate([benign, attack]))) or 1.0
    trained_on = tuple(sorted({r["source"] for r in rows}))
    weights = w.astype(np.float16)
    model = NgramModel(weights.astype(np.float32), b, td.BITS, cut, 2.0 / spread, trained_on, spec["window"])
    meta = {
        "bias": b,
        "bits": td.BITS,
        "cut": cut,
        "scale": 2.0 / spread,
        "orders": list(td.im.ORDERS),
        "window": spec["window"],
        "trained_on": list(trained_on),
        "rows": len(rows),
        "recipe": spec,
        "out_of_fold": {
            "target_fpr": td.TARGET_FPR,
            "folds": "by source corpus" if spec["grouped"] else "random rows",
            "recall": round(float(np.mean(attack >= cut)), 4),
            "fpr": round(float(np.mean(benign >= cut)), 4),
        },
    }
    return model, meta | {"weights": weights}


def rows_of(name: str) -> list[dict[str, Any]]:
    """A corpus's rows; the own regression set gives its test split, its category as the channel."""
    if name == heldout.OWN_INJECTION:
        return [{**r, "channel": r["category"]} for r in heldout.load(name) if r["split"] == "test"]
    return heldout.load(name)


def rules_decisions(name: str) -> list[bool]:
    """The stage's default decision (rules only) on every row of a held-out corpus."""
    out = []
    for row in rows_of(name):
        context = [(p["id"], p["text"]) for p in row.get("context", [])]
        out.append(sanitize_request([("user", row["text"])], context).decision.action is not Action.ALLOW)
    return out


def score_corpus(name: str, model: NgramModel, rules: list[bool]) -> dict[str, Any]:
    """Per channel and detector: recall and false-positive rate; the model's AUC and oracle recall."""
    scanner = InjectionScanner(extra=(NgramDetector(model),))
    tally: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    scores: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for row, rule_hit in zip(rows_of(name), rules, strict=True):
        context = [(p["id"], p["text"]) for p in row.get("context", [])]
        stage = sanitize_request([("user", row["text"])], context, scanner=scanner).decision.action
        score = max(model.score(t) for t in [row["text"], *(t for _i, t in context)])
        attack = row["label"] == "attack"
        hits = (score >= 0.5, rule_hit, stage is not Action.ALLOW, rule_hit or score >= 0.5)
        if DUMP is not None:
            DUMP.append({"id": row["id"], "label": row["label"], "score": round(score, 4), "hits": hits})
        for channel in (row["channel"], "all"):
            scores[channel].append((score, attack))
            for detector, hit in zip(DETECTORS, hits, strict=True):
                cell = tally[(detector, channel, row["label"])]
                cell[0] += hit
                cell[1] += 1
    table: dict[str, Any] = {}
    for (detector, channel, label), (hit_count, n) in sorted(tally.items()):
        cell = table.setdefault(channel, {}).setdefault(detector, {})
        cell["recall" if label == "attack" else "false_positive_rate"] = loo._rate(hit_count, n)
        cell["n_" + label] = n
    for channel, scored in scores.items():
        table[channel]["model"]["auc"] = loo._auc(scored)
        table[channel]["model"]["recall_at_heldout_fpr_0.02"] = loo._recall_at_fpr(scored, 0.02)
    return table


def print_table(corpus: str, variant: str, table: dict[str, Any]) -> None:
    loo.print_detectors(
        f"{corpus} (held out) - {variant}", table, DETECTORS, ("auc", "recall_at_heldout_fpr_0.02")
    )


def _record(
    variant: str,
    corpus: str,
    meta: dict[str, Any],
    seconds: float,
    table: dict[str, Any],
    protocol: str,
    load_before: list[float],
) -> None:
    """Merge one (protocol, variant, corpus) cell into the result file; re-read first, since runs for
    different corpora may go side by side."""
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    results = previous.get("protocols", {})
    if "variants" in previous:  # the first runs of this bench recorded leave-one-out cells only
        results.setdefault("leave one corpus out", {}).update(previous["variants"])
    results.setdefault(protocol, {}).setdefault(variant, {})[corpus] = {
        "trained_on": meta["trained_on"],
        "training_rows": meta["rows"],
        "threshold_chosen_on": "out-of-fold scores of the training rows (no held-out corpus among them)",
        "out_of_fold": meta["out_of_fold"],
        "fit_seconds": round(seconds, 1),
        "stage_combination": "the larger of the rules' noisy-OR risk and the model score",
        "channels": table,
    }
    out = {
        "what": "the injection model's training recipes, scored on public corpora it never saw",
        "protocols": results,
        "settings": {
            "protocols": PROTOCOLS,
            "features": f"hashed character {td.im.ORDERS}-grams, 2^{td.BITS} buckets",
            **loo.fit_settings(),
            "variants": VARIANTS,
        },
        **loo.machine(load_before),
    }
    RESULTS.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


SHIPPED = "shipped file (agents/checks/models/injection_ngram.npz)"
PROTOCOLS = {
    "leave one corpus out": "fit and threshold on the training corpora plus the other two public corpora",
    "training corpora only": "fit and threshold on the training corpora alone (as the shipped file); "
    "every public corpus is held out",
    SHIPPED: "the file the stage loads, fitted on the training corpora before tau2's tool output was added; "
    "no refit",
}


def candidate_latency(path: Path, iterations: int = 2000) -> dict[str, Any]:
    """CPU time of a candidate file's score on bench/sanitize.py's 2 KB prompt, beside the shipped
    file's, measured alternately in the same process (the box is shared, so only the pair compares)."""
    from bench.sanitize import PROMPT_2KB

    models = {"shipped file": default_model(), path.name: NgramModel.from_bytes(path.read_bytes())}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(iterations):
        for name, model in models.items():
            c0 = time.thread_time()
            model.score(PROMPT_2KB)
            cpu[name].append((time.thread_time() - c0) * 1000)
    out: dict[str, Any] = {"prompt_chars": len(PROMPT_2KB), "load_average_1m": round(os.getloadavg()[0], 2)}
    for name, samples in cpu.items():
        samples.sort()
        out[name] = {
            "window": models[name].window,
            "p50_ms": round(samples[len(samples) // 2], 3),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--corpora", nargs="*", default=list(td.INJECTION_CORPORA))
    parser.add_argument("--protocol", default="leave one corpus out", choices=list(PROTOCOLS))
    parser.add_argument("--dump", type=Path, help="write each row's scores here, one file per run")
    parser.add_argument("--model", type=Path, help="with 'training corpora only': score this file, no fit")
    parser.add_argument("--out", type=Path, default=None, help="result file (cells are merged into it)")
    parser.add_argument("--latency", type=Path, help="only time this candidate file against the shipped one")
    args = parser.parse_args(argv)
    global DUMP, RESULTS
    RESULTS = args.out or RESULTS
    if args.latency:
        data = json.loads(RESULTS.read_text(encoding="utf-8"))
        data["candidate_latency"] = candidate_latency(args.latency)
        RESULTS.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(json.dumps(data["candidate_latency"], indent=2))
        return
    load_before = list(os.getloadavg())
    own = td._rows(td.TRAIN / "injection_train.jsonl")
    rules = {held: rules_decisions(held) for held in args.corpora}
    for variant in args.variants:
        fitted = None
        for held in args.corpora:
            t0 = time.time()
            if args.protocol == SHIPPED:
                model = default_model()
                meta = {"trained_on": list(model.trained_on), "rows": None, "out_of_fold": None}
            elif args.protocol == "training corpora only":  # one fit, every corpus held out
                if fitted is None and args.model:  # a candidate written by an earlier run
                    loaded = NgramModel.from_bytes(args.model.read_bytes())
                    meta = {"trained_on": list(loaded.trained_on), "rows": None, "out_of_fold": None}
                    fitted = (loaded, meta)
                if fitted is None:
                    fitted = fit_variant(own, VARIANTS[variant])
                    if args.dump:  # the candidate file, as bench/train_detectors.py would write it
                        args.dump.mkdir(parents=True, exist_ok=True)
                        weights = fitted[1]["weights"]
                        meta_json = {k: v for k, v in fitted[1].items() if k != "weights"}
                        slug = "".join(c if c.isalnum() else "_" for c in variant)
                        np.savez_compressed(
                            args.dump / f"model_{slug}.npz",
                            weights=weights,
                            meta=np.frombuffer(json.dumps(meta_json).encode(), dtype=np.uint8),
                        )
                model, meta = fitted
            else:
                model, meta = fit_variant(loo.training_rows(own, held), VARIANTS[variant])
            meta = {k: v for k, v in meta.items() if k != "weights"}
            corpus = held.removesuffix(".jsonl")
            DUMP = [] if args.dump else None
            table = score_corpus(held, model, rules[held])
            if args.dump and DUMP is not None:
                args.dump.mkdir(parents=True, exist_ok=True)
                slug = "".join(c if c.isalnum() else "_" for c in f"{args.protocol}_{corpus}_{variant}")
                (args.dump / f"{slug}.json").write_text(json.dumps(DUMP), encoding="utf-8")
            print_table(corpus, f"{variant} [{args.protocol}]", table)
            _record(variant, corpus, meta, time.time() - t0, table, args.protocol, load_before)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
