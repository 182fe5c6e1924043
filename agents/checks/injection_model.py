"""Learned prompt-injection score: a linear model over hashed character 3- to 5-grams.

Why: the rules recognise phrasings someone wrote down; public attack corpora use many more. Character
n-grams (spaces included, so they span word pairs) generalise across wording, casing and small
misspellings, cost one vectorised pass over the text, and need no tokenizer or model download. The
weights are fitted offline by bench/train_detectors.py and shipped in agents/checks/models/ with a
SHA-256 that is checked at load: a different file refuses to load (fail closed).

A text is scored window by window (1,024 characters, stride 512, unless the model file names another
window) and the highest window counts, so one injected paragraph inside a long retrieved document is
not diluted by the rest of it.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from agents.checks.injection import DetectorResult
from agents.checks.models import read_verified

MODEL_FILE = "injection_ngram.npz"
MODEL_SHA256 = "d54ee4d201a8b01df19a83c008702f2e24a958a1ee3e160a987a51376f60b150"
NAME = "learned_ngram"

WINDOW = 1024
STRIDE = 512
MAX_CHARS = 16_384  # past this, only the head is scored (the rules still see everything)
ORDERS = (3, 4, 5)
_PRIME = np.uint64(1_000_003)
_MULTIPLIERS = {
    3: np.uint64(0x9E3779B97F4A7C15),
    4: np.uint64(0xC2B2AE3D27D4EB4F),
    5: np.uint64(0x165667B19E3779F9),
}
_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"\d")

U64 = npt.NDArray[np.uint64]
F32 = npt.NDArray[np.float32]


def prepare(text: str) -> str:
    """Lower case, one space for any whitespace run, every digit as 0: what the n-grams are taken of."""
    return _DIGITS.sub("0", _SPACES.sub(" ", text[:MAX_CHARS].lower())).strip()


def hashed_ngrams(text: str, bits: int) -> tuple[U64, npt.NDArray[np.int64]]:
    """Bucket of every character n-gram of the prepared text, and the position each starts at."""
    codes = np.frombuffer((" " + text + " ").encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    buckets: list[U64] = []
    starts: list[npt.NDArray[np.int64]] = []
    rolling = np.zeros(len(codes), dtype=np.uint64)
    power = np.uint64(1)
    shift = np.uint64(64 - bits)
    for n in range(1, max(ORDERS) + 1):  # uint64 arithmetic wraps on purpose
        count = len(codes) - n + 1
        if count <= 0:
            break
        rolling = rolling[:count] + codes[n - 1 : n - 1 + count] * power
        with np.errstate(over="ignore"):
            power = power * _PRIME
        if n in ORDERS:
            buckets.append((rolling * _MULTIPLIERS[n]) >> shift)
            starts.append(np.arange(count, dtype=np.int64))
    if not buckets:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return np.concatenate(buckets), np.concatenate(starts)


def windows_of(
    starts: npt.NDArray[np.int64], length: int, window: int = WINDOW
) -> list[npt.NDArray[np.bool_]]:
    """Masks of the n-grams in each scoring window (stride half a window); a short text is one window."""
    if length <= window:
        return [np.ones(len(starts), dtype=np.bool_)]
    stride = window // 2
    return [
        (starts >= lo) & (starts < lo + window) for lo in range(0, max(1, length - window + stride), stride)
    ]


@dataclass(frozen=True, slots=True)
class NgramModel:
    """Weights per hash bucket, a bias, and the logit that maps to the flag threshold (0.5)."""

    weights: F32
    bias: float
    bits: int
    cut: float
    scale: float
    trained_on: tuple[str, ...] = ()  # the corpora it was fitted on: a figure on one of them is no test
    window: int = WINDOW  # characters per scoring window, as trained

    @classmethod
    def from_bytes(cls, raw: bytes) -> NgramModel:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            weights = data["weights"].astype(np.float32)
        return cls(
            weights,
            float(meta["bias"]),
            int(meta["bits"]),
            float(meta["cut"]),
            float(meta["scale"]),
            tuple(meta.get("trained_on", ())),
            int(meta.get("window", WINDOW)),
        )

    def logits(self, text: str) -> list[float]:
        """Raw logit of each window of the text."""
        prepared = prepare(text)
        buckets, starts = hashed_ngrams(prepared, self.bits)
        if not len(buckets):
            return [self.bias]
        contribution = self.weights[buckets.astype(np.intp)]
        out = []
        for mask in windows_of(starts, len(prepared), self.window):
            count = int(mask.sum())
            if count:
                out.append(float(contribution[mask].sum()) / float(np.sqrt(count)) + self.bias)
        return out or [self.bias]

    def score(self, text: str) -> float:
        """0..1; 0.5 is the operating point chosen on the training corpora."""
        logit = max(self.logits(text))
        return float(1.0 / (1.0 + np.exp(-self.scale * (logit - self.cut))))


@lru_cache(maxsize=1)
def default_model() -> NgramModel:
    return NgramModel.from_bytes(read_verified(MODEL_FILE, MODEL_SHA256))


class NgramDetector:
    """The learned score as a scanner detector (agents.checks.injection.Detector)."""

    name = NAME

    def __init__(self, model: NgramModel | None = None) -> None:
        self.model = model or default_model()

    def detect(self, text: str) -> DetectorResult:
        score = round(self.model.score(text), 4) if text.strip() else 0.0
        evidence = (f"n-gram model score {score}",) if score >= 0.5 else ()
        return DetectorResult(self.name, score, evidence)
