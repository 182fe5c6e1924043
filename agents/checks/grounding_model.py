"""Learned groundedness: a calibrated logistic model over claim-alignment features.

Why: the lexical scorer (agents/checks/grounding.py) rewards copying, so on public data an answer that
copies the context but gets one name wrong can outscore an honest paraphrase. Each feature here is
one measurable signal (coverage of rare words weighted by inverse word frequency, the rarest unsupported
word, unsupported numbers, word-pair coverage, the best-supporting sentence, negation agreement,
whether the answer type fits the question) plus the lexical score itself; a logistic model, fitted
offline by bench/train_grounding.py on training corpora only, weighs them and returns the probability
that the answer is supported. The word frequencies (English Zipf values from the `wordfreq` package,
CC BY-SA 4.0 data) ship inside the model file; nothing is looked up at run time.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

from agents.checks.grounding import score_groundedness
from agents.checks.models import read_verified

MODEL_FILE = "grounding_lr.json.gz"
MODEL_SHA256 = "696909564b443dd9e6fab8222491a1e56bb6ca7438c0289046a57fe4827ad9cb"
FEATURES = (
    "lexical",
    "coverage",
    "idf_coverage",
    "max_missing_idf",
    "missing_rare",
    "bigram_coverage",
    "missing_numbers",
    "best_sentence",
    "negation_mismatch",
    "answer_type_ok",
    "log_length",
)
MAX_IDF = 8.0


def _wordset(text: str) -> frozenset[str]:
    """A word list written as prose."""
    return frozenset(text.split())


_TOKEN = re.compile(r"[^\W_]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = _wordset(
    """
    a an the of to in on at by for with from and or but is are was were be been being it its this
    that these those as he she they them his her their we you i not no do does did has have had will
    would can could which who whom what when where why how there here than then so if into about
    over after before also
    """
)
_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "without"}
)
_MONTHS = _wordset(
    """
    january february march april may june july august september october november december
    """
)


@dataclass(frozen=True, slots=True)
class GroundingModel:
    weights: tuple[float, ...]
    bias: float
    means: tuple[float, ...]
    scales: tuple[float, ...]
    zipf: dict[str, float]

    def idf(self, word: str) -> float:
        return MAX_IDF - min(self.zipf.get(word, 0.0), MAX_IDF)

    def features(self, answer: str, passages: Sequence[tuple[str, str]], question: str = "") -> list[float]:
        """The feature vector, in FEATURES order."""
        context = " ".join(text for _pid, text in passages).lower()
        ctx_tokens = _TOKEN.findall(context)
        ctx = set(ctx_tokens)
        ctx_pairs = set(pairwise(ctx_tokens))
        tokens = _TOKEN.findall(answer.lower())
        content = [t for t in tokens if t not in _STOP] or tokens
        if not content:
            return [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.0]
        present = [t in ctx for t in content]
        idfs = [self.idf(t) for t in content]
        missing = [i for t, i, p in zip(content, idfs, present, strict=True) if not p]
        pairs = list(pairwise(tokens))
        numbers = [t for t in content if t.isdigit()]
        best = 0.0
        best_sentence = ""
        wanted = set(content)
        for sentence in _SENTENCE.split(context):
            words = set(_TOKEN.findall(sentence))
            share = len(wanted & words) / len(wanted)
            if share > best:
                best, best_sentence = share, sentence
        neg_answer = any(t in _NEGATIONS for t in tokens)
        neg_context = any(t in _NEGATIONS for t in _TOKEN.findall(best_sentence))
        lexical = score_groundedness(answer, passages, question=question).groundedness
        return [
            1.0 if lexical is None else lexical,
            sum(present) / len(content),
            sum(i for i, p in zip(idfs, present, strict=True) if p) / (sum(idfs) or 1.0),
            max(missing, default=0.0),
            float(min(sum(1 for i in missing if i >= 4.0), 5)),
            sum(p in ctx_pairs for p in pairs) / len(pairs) if pairs else 1.0,
            float(min(sum(1 for n in numbers if n not in ctx), 3)),
            best,
            float(neg_answer != neg_context),
            _answer_type_ok(question, content, ctx),
            math.log1p(len(content)),
        ]

    def probability(self, features: Sequence[float]) -> float:
        z = self.bias + sum(
            w * (x - m) / s
            for w, x, m, s in zip(self.weights, features, self.means, self.scales, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def score(self, answer: str, passages: Sequence[tuple[str, str]], question: str = "") -> float:
        """Probability that the answer is supported by the passages."""
        return self.probability(self.features(answer, passages, question))


def _answer_type_ok(question: str, content: Sequence[str], ctx: set[str]) -> float:
    """1 when the answer carries, from the context, the kind of thing the question asks for; 0 when it
    does not; 0.5 when the question does not say what kind of answer it wants."""
    q = question.lower().split()
    if not q:
        return 0.5
    head = " ".join(q[:2])
    if head.startswith(("how many", "how much")) or q[0] == "when" or "year" in q[:4]:
        kinds = [t for t in content if t.isdigit() or t in _MONTHS]
    elif q[0] in ("who", "where", "which", "what"):
        kinds = [t for t in content if not t.isdigit()]
    else:
        return 0.5
    if not kinds:
        return 0.0
    return float(any(t in ctx for t in kinds))


@lru_cache(maxsize=1)
def default_model() -> GroundingModel:
    data = json.loads(gzip.decompress(read_verified(MODEL_FILE, MODEL_SHA256)).decode("utf-8"))
    return GroundingModel(
        tuple(data["weights"]), float(data["bias"]), tuple(data["means"]), tuple(data["scales"]), data["zipf"]
    )
