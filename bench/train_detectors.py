"""Fit the learned detectors offline and write their parameters into agents/checks/models/.

    python bench/build_corpora.py --packages /tmp/pk     # training corpora -> build/corpora/
    python bench/train_detectors.py [injection|grounding|all]

Only training corpora are read here (build/corpora/*, the dev split of the own sets); the held-out
corpora in tests/data/ are never opened, so neither the weights nor the operating points can have
seen them. Prints the SHA-256 of each file written: paste it into MODEL_SHA256 of the module that
loads it (the tests pin it too, so a retrain is a visible change).
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
    """Full-batch Adam on the weighted logistic loss of sparse rows (bucket indices, values)."""
    index = np.concatenate([r[0] for r in rows]).astype(np.int64)
    values = np.concatenate([r[1] for r in rows]).astype(np.float64)
    owner = np.concatenate([np.full(len(r[0]), i) for i, r in enumerate(rows)])
    w = np.zeros(dim)
    b = 0.0
    m = np.zeros(dim)
    v = np.zeros(dim)
    mb = vb = 0.0
    total = weights.sum()
    for t in range(1, steps + 1):
        z = np.bincount(owner, weights=w[index] * values, minlength=len(rows)) + b
        p = 1.0 / (1.0 + np.exp(-z))
        resid = (p - labels) * weights / total
        grad = np.bincount(index, weights=resid[owner] * values, minlength=dim) + l2 * w
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
def _windows(text: str, bits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    prepared = im.prepare(text)
    buckets, starts = im.hashed_ngrams(prepared, bits)
    out = []
    for mask in im.windows_of(starts, len(prepared)):
        idx, counts = np.unique(buckets[mask].astype(np.int64), return_counts=True)
        n = counts.sum()
        if n:
            out.append((idx, counts / np.sqrt(n)))
    return out


def injection_examples(
    rows: list[dict[str, Any]], bits: int
) -> tuple[list[Any], np.ndarray, np.ndarray, list[int]]:
    feats, labels, weights, owner = [], [], [], []
    for i, row in enumerate(rows):
        for text in (row["text"], row.get("context") or ""):
            if not text.strip():
                continue
            # the user message of an indirect attack is benign: only the passage carries the label
            label = row["label"] if (text is row.get("context") or not row.get("context")) else 0
            wins = _windows(text, bits)
            for win in wins:
                feats.append(win)
                labels.append(label)
                weights.append(1.0 / len(wins))
                owner.append(i)
    return feats, np.array(labels, float), np.array(weights, float), owner


def _threshold_at_fpr(benign: np.ndarray, fpr: float) -> float:
    return float(np.quantile(benign, 1 - fpr)) if len(benign) else 0.0


def train_injection(bits: int = 18) -> None:
    rows = _rows(TRAIN / "injection_train.jsonl")
    rng = random.Random(SEED)
    rng.shuffle(rows)
    folds = 4
    oof: dict[int, float] = {}
    for k in range(folds):  # out-of-fold logits choose the operating point without touching held-out data
        fit = [r for i, r in enumerate(rows) if i % folds != k]
        held = [(i, r) for i, r in enumerate(rows) if i % folds == k]
        x, y, wt, _ = injection_examples(fit, bits)
        w, b = fit_logistic(x, y, wt * np.where(y > 0, 1.0, 2.0), 1 << bits, l2=1e-6, steps=250)
        model = im.NgramModel(w.astype(np.float32), b, bits, 0.0, 1.0)
        for i, r in held:
            texts = [t for t in (r["text"], r.get("context") or "") if t.strip()]
            scored = [model.logits(t) for t in (texts[-1:] if r.get("context") else texts)]
            oof[i] = max(max(s) for s in scored)
    benign = np.array([oof[i] for i, r in enumerate(rows) if r["label"] == 0])
    attack = np.array([oof[i] for i, r in enumerate(rows) if r["label"] == 1])
    cut = _threshold_at_fpr(benign, 0.01)
    print(
        f"injection out-of-fold: cut {cut:.3f}, recall {np.mean(attack >= cut):.3f} "
        f"at fpr {np.mean(benign >= cut):.3f}"
    )
    x, y, wt, _ = injection_examples(rows, bits)
    w, b = fit_logistic(x, y, wt * np.where(y > 0, 1.0, 2.0), 1 << bits, l2=1e-6, steps=250)
    spread = float(np.std(np.concatenate([benign, attack]))) or 1.0
    meta = {
        "bias": b,
        "bits": bits,
        "cut": cut,
        "scale": 2.0 / spread,
        "orders": list(im.ORDERS),
        "trained_on": sorted({r["source"] for r in rows}),
        "rows": len(rows),
    }
    _save(
        im.MODEL_FILE,
        weights=w.astype(np.float16),
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )


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
    args = parser.parse_args(argv)
    if args.which in ("injection", "all"):
        train_injection()
    if args.which in ("grounding", "all"):
        from bench.train_grounding import train_grounding

        train_grounding()


if __name__ == "__main__":
    main()
