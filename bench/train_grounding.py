"""Fit the groundedness model (agents/checks/grounding_model.py); run through bench/train_detectors.py.

Training data: VitaminC claims with their evidence (BIG-bench `vitaminc_fact_verification`, built into
build/corpora/ by bench/build_corpora.py) and the dev split of tests/data/hallucination_eval.jsonl.
The held-out corpora are not read. The intercept is shifted so that the training-accuracy-optimal cut
sits at the tenant default threshold (0.65): the output stays a monotone, calibrated-on-training score.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.checks import grounding_model as gm  # noqa: E402
from agents.checks.grounding import DEFAULT_HALLUCINATION_THRESHOLD  # noqa: E402
from agents.checks.models import MODEL_DIR  # noqa: E402
from bench.train_detectors import TRAIN, _rows, _sha  # noqa: E402

ZIPF_WORDS = 60_000


def zipf_table() -> dict[str, float]:
    from wordfreq import top_n_list, zipf_frequency

    return {w: round(zipf_frequency(w, "en"), 1) for w in top_n_list("en", ZIPF_WORDS)}


def train_grounding() -> None:
    rows = _rows(TRAIN / "grounding_vitaminc.jsonl")[:4000]
    own = _rows(ROOT / "tests" / "data" / "hallucination_eval.jsonl")
    rows += [r for r in own if r["split"] == "dev"]
    zipf = zipf_table()
    probe = gm.GroundingModel(
        (0.0,) * len(gm.FEATURES), 0.0, (0.0,) * len(gm.FEATURES), (1.0,) * len(gm.FEATURES), zipf
    )
    x = np.array(
        [
            probe.features(r["answer"], [(p["id"], p["text"]) for p in r["context"]], r.get("question", ""))
            for r in rows
        ]
    )
    y = np.array([r["label"] == "supported" for r in rows], float)
    means, scales = x.mean(0), x.std(0) + 1e-6
    z = (x - means) / scales
    w = np.zeros(z.shape[1])
    b = 0.0
    for _ in range(3000):  # plain gradient descent: 11 features, a few thousand rows
        p = 1 / (1 + np.exp(-(z @ w + b)))
        w -= 0.1 * (z.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.1 * float(np.mean(p - y))
    p = 1 / (1 + np.exp(-(z @ w + b)))
    for name, column in zip(gm.FEATURES, x.T, strict=True):
        print(f"  feature {name:18s} AUC {auc(column, y):.3f}  weight {w[gm.FEATURES.index(name)]:+.3f}")
    cuts = np.linspace(0.05, 0.95, 91)
    acc = [float(np.mean((p >= c) == (y > 0))) for c in cuts]
    best = float(cuts[int(np.argmax(acc))])
    shift = math.log(DEFAULT_HALLUCINATION_THRESHOLD / (1 - DEFAULT_HALLUCINATION_THRESHOLD)) - math.log(
        best / (1 - best)
    )
    print(
        f"grounding training: AUC {auc(p, y):.3f}, best cut {best:.2f} (accuracy {max(acc):.3f}), "
        f"intercept shift {shift:+.3f}"
    )
    data = {
        "weights": w.tolist(),
        "bias": b + shift,
        "means": means.tolist(),
        "scales": scales.tolist(),
        "features": list(gm.FEATURES),
        "zipf": zipf,
        "trained_on": ["vitaminc (BIG-bench)", "hallucination_eval dev"],
        "rows": len(rows),
    }
    path = MODEL_DIR / gm.MODEL_FILE
    path.write_bytes(gzip.compress(json.dumps(data, sort_keys=True).encode(), mtime=0))
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes) sha256 {_sha(path)}")


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    pos = positive > 0
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (
        float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        if n_pos and n_neg
        else float("nan")
    )
