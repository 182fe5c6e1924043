"""Fit the learned detectors offline and write their parameters into agents/checks/models/.

    python bench/build_corpora.py --packages /tmp/pk     # training corpora -> build/corpora/
    python bench/train_detectors.py [injection|grounding|all] [--with-public-corpora]

By default only training corpora are read (build/corpora/*, the dev split of the own sets); the public
held-out corpora in tests/data/ are not opened, so neither the weights nor the operating points have
seen them. `--with-public-corpora` adds the public injection corpora to the injection model's training
rows (the candidate that bench/injection_loo.py measures one corpus at a time); such a model has no
held-out figure of its own on those corpora. Prints the SHA-256 of each file written: paste it into
MODEL_SHA256 of the module that loads it (the tests pin it too, so a retrain is a visible change).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.checks import injection_model as im  # noqa: E402
from agents.checks.models import MODEL_DIR  # noqa: E402

TRAIN = ROOT / "build" / "corpora"
SEED = 20261203
INJECTION_CORPORA = ("injection_spikee.jsonl", "injection_agentdojo.jsonl", "injection_raginject.jsonl")
BITS = 18
STEPS = 250
FOLDS = 4
TARGET_FPR = 0.01  # out of fold on the training rows; held-out false positives run higher than that


def _rows(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def fit_logistic(
    rows: list[tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    weights: np.ndarray,
    dim: int,
    *,
    l2: float,
    steps: int,
    lr: float = 0.05,
) -> tuple[np.ndarray, float]:
    """Full-batch Adam on the weighted logistic loss of sparse rows (bucket indices, values).

    float32 and segment sums (np.add.reduceat) over row-ordered and bucket-ordered copies of the
    entries: about twice as fast as weighted bincounts, which matters for the leave-one-out runs."""
    lengths = np.array([len(r[0]) for r in rows])
    row_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    index = np.concatenate([r[0] for r in rows]).astype(np.int32)
    values = np.concatenate([r[1] for r in rows]).astype(np.float32)
    owner = np.repeat(np.arange(len(rows)), lengths)
    order = np.argsort(index, kind="stable")
    by_bucket, owner_b, values_b = index[order], owner[order], values[order]
    del order
    bucket_starts = np.flatnonzero(np.r_[True, by_bucket[1:] != by_bucket[:-1]])
    buckets = by_bucket[bucket_starts]
    del by_bucket
    w = np.zeros(dim)
    b = 0.0
    m = np.zeros(dim)
    v = np.zeros(dim)
    mb = vb = 0.0
    total = weights.sum()
    for t in range(1, steps + 1):
        z = np.add.reduceat(w.astype(np.float32)[index] * values, row_starts).astype(np.float64) + b
        p = 1.0 / (1.0 + np.exp(-z))
        resid = (p - labels) * weights / total
        grad = l2 * w
        grad[buckets] += np.add.reduceat(resid.astype(np.float32)[owner_b] * values_b, bucket_starts)
        gb = resid.sum()
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        mb = 0.9 * mb + 0.1 * gb
        vb = 0.999 * vb + 0.001 * gb * gb
        b -= lr * (mb / (1 - 0.9**t)) / (np.sqrt(vb / (1 - 0.999**t)) + 1e-8)
    return w, b


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- injection
def _windows(text: str, bits: int, window: int = im.WINDOW) -> list[tuple[np.ndarray, np.ndarray]]:
    prepared = im.prepare(text)
    buckets, starts = im.hashed_ngrams(prepared, bits)
    out = []
    for mask in im.windows_of(starts, len(prepared), window):
        idx, counts = np.unique(buckets[mask].astype(np.int64), return_counts=True)
        n = counts.sum()
        if n:
            out.append((idx, counts / np.sqrt(n)))
    return out


def injection_examples(
    rows: list[dict[str, Any]], bits: int, window: int = im.WINDOW
) -> tuple[list[Any], np.ndarray, np.ndarray, list[int]]:
    feats, labels, weights, owner = [], [], [], []
    for i, row in enumerate(rows):
        for text in (row["text"], row.get("context") or ""):
            if not text.strip():
                continue
            # the user message of an indirect attack is benign: only the passage carries the label
            label = row["label"] if (text is row.get("context") or not row.get("context")) else 0
            wins = _windows(text, bits, window)
            for win in wins:
                feats.append(win)
                labels.append(label)
                weights.append(1.0 / len(wins))
                owner.append(i)
    return feats, np.array(labels, float), np.array(weights, float), owner


def _threshold_at_fpr(benign: np.ndarray, fpr: float) -> float:
    return float(np.quantile(benign, 1 - fpr)) if len(benign) else 0.0


def row_logit(model: im.NgramModel, row: dict[str, Any]) -> float:
    """The highest window logit of what carries the row's label: the passage if there is one."""
    texts = [t for t in (row["text"], row.get("context") or "") if t.strip()]
    scored = [model.logits(t) for t in (texts[-1:] if row.get("context") else texts)]
    return max(max(s) for s in scored) if scored else model.bias


def _fit(rows: list[dict[str, Any]], bits: int, window: int) -> tuple[np.ndarray, float]:
    x, y, wt, _ = injection_examples(rows, bits, window)
    return fit_logistic(x, y, wt * np.where(y > 0, 1.0, 2.0), 1 << bits, l2=1e-6, steps=STEPS)


def fit_injection(
    rows: list[dict[str, Any]],
    *,
    bits: int = BITS,
    fpr: float = TARGET_FPR,
    folds: int = FOLDS,
    window: int = im.WINDOW,
) -> tuple[im.NgramModel, dict[str, Any]]:
    """Fit on `rows` and put the operating point where `fpr` of the benign rows score above it,
    judged out of fold (each row scored by a model that did not see it), so no data outside `rows`
    and no row's own fit decides the threshold."""
    rows = list(rows)
    random.Random(SEED).shuffle(rows)
    oof: dict[int, float] = {}
    for k in range(folds):
        w, b = _fit([r for i, r in enumerate(rows) if i % folds != k], bits, window)
        model = im.NgramModel(w.astype(np.float32), b, bits, 0.0, 1.0, (), window)
        for i, r in enumerate(rows):
            if i % folds == k:
                oof[i] = row_logit(model, r)
    benign = np.array([oof[i] for i, r in enumerate(rows) if r["label"] == 0])
    attack = np.array([oof[i] for i, r in enumerate(rows) if r["label"] == 1])
    cut = _threshold_at_fpr(benign, fpr)
    w, b = _fit(rows, bits, window)
    spread = float(np.std(np.concatenate([benign, attack]))) or 1.0
    meta = {
        "bias": b,
        "bits": bits,
        "cut": cut,
        "scale": 2.0 / spread,
        "orders": list(im.ORDERS),
        "window": window,
        "trained_on": sorted({r["source"] for r in rows}),
        "rows": len(rows),
        "out_of_fold": {
            "target_fpr": fpr,
            "recall": round(float(np.mean(attack >= cut)), 4),
            "fpr": round(float(np.mean(benign >= cut)), 4),
        },
    }
    weights = w.astype(np.float16)  # what is shipped, so measured figures are the shipped model's
    model = im.NgramModel(
        weights.astype(np.float32), b, bits, cut, 2.0 / spread, tuple(meta["trained_on"]), window
    )
    return model, meta | {"weights": weights}


def heldout_rows(name: str) -> list[dict[str, Any]]:
    """A public corpus of tests/data/ in the trainer's row shape (passages joined into one context)."""
    rows = _rows(ROOT / "tests" / "data" / name)
    return [
        {
            "text": r["text"],
            "context": " \n".join(p["text"] for p in r.get("context", [])),
            "label": int(r["label"] == "attack"),
            "source": name.removesuffix(".jsonl"),
        }
        for r in rows
    ]


# the first is the shipped file's; the others are bench/injection_mil.py's candidates (README, "Detectors
# on public data": better ranking on every public corpus, one more false positive on two, not shipped)
RECIPES = ("window 1024", "window 256, mil, random folds", "window 256, mil, augmented, random folds")


def train_injection(with_public: bool = False, recipe: str = RECIPES[0]) -> None:
    """Fit on the training corpora, and with `with_public` on the public corpora too (then its only
    held-out figures are bench/injection_loo.py's, one corpus left out at a time, same recipe).

    "window 1024" (the shipped file) labels every window of an attack text positive; the candidates
    of bench/injection_mil.py score 256-character windows and keep only the highest-scoring window of
    each attack text as its positive example, one of them with augmented indirect attacks."""
    rows = _rows(TRAIN / "injection_train.jsonl")
    for name in INJECTION_CORPORA if with_public else ():
        rows += heldout_rows(name)
    if recipe == "window 1024":
        _model, meta = fit_injection(rows)
    else:
        from bench.injection_mil import VARIANTS, fit_variant

        _model, meta = fit_variant(rows, VARIANTS[recipe])
    weights = meta.pop("weights")
    print(f"injection out-of-fold: {meta['out_of_fold']}")
    _save(im.MODEL_FILE, weights=weights, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def _save(name: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = MODEL_DIR / name
    path.write_bytes(buffer.getvalue())
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes) sha256 {_sha(path)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", nargs="?", default="all", choices=("injection", "grounding", "all"))
    parser.add_argument(
        "--with-public-corpora",
        action="store_true",
        help="also fit the injection model on the public corpora of tests/data/ (see bench/injection_loo.py)",
    )
    parser.add_argument("--recipe", default=RECIPES[0], choices=RECIPES, help="injection training recipe")
    args = parser.parse_args(argv)
    if args.which in ("injection", "all"):
        train_injection(args.with_public_corpora, args.recipe)
    if args.which in ("grounding", "all"):
        from bench.train_grounding import train_grounding

        train_grounding()


if __name__ == "__main__":
    main()
