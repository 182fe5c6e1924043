"""What a request looks like to the router: cheap, explainable features, each worth points.

No model is consulted: a handful of regular expressions and counts, so routing costs
microseconds and every decision can be explained in one line (`route_reason`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas import Request
from sluice.providers.catalog import TIER_RANK, RoutingConfig, Tier
from sluice.tokens import estimate_prompt_tokens, estimate_tokens

LENGTH_CAP_TOKENS = 1_000
TURNS_CAP = 5
CONSTRAINTS_CAP = 4
REASONING_CAP = 2
SIMPLE_MAX_CHARS = 160
ASKS_CAP = 4

_CODE = re.compile(
    r"```|\bdef \w+\s*\(|\bfunction\s*\w*\s*\(|\bclass \w+[:(]|=>|\breturn\b|#include|\bimport \w+|"
    r"\b(python|javascript|typescript|java|c\+\+|golang|rust|sql|bash|shell script|regex|regular expression|"
    r"algorithm|implement|refactor|debug|traceback|stack trace|compile[rs]?|unit tests?|recursion|recursive|"
    r"time complexity|big-o|code|function|program|script|api|endpoint|query|dataframe|linked list|"
    r"binary search|array|string of|integer|docstring)\b",
    re.IGNORECASE,
)
_MATH_WORDS = re.compile(
    r"\b(equation|solve|integral|derivative|probability|prove|proof|theorem|factorial|prime|matrix|"
    r"polynomial|logarithm|expected value|percent|percentage|ratio|average|remainder|divisible|"
    r"how many|how much|how long|how far|how old|how fast|speed|rate|total cost|per hour|per day|"
    r"per week|profit|calculate|compute)\b|%|\$\d",
    re.IGNORECASE,
)
_FORMULA = re.compile(r"\d\s*[-+*/^=\u00d7\u00f7]\s*\d|\b[xyzn]\s*[\^=]\s*\d|\b\d+[xyz]\b")
_NUMBER = re.compile(
    r"\d+(?:[.,]\d+)?|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|hundred|"
    r"thousand|half|halves|third|thirds|quarter|twice|thrice|double|triple|dozen)\b",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"\b(step[- ]by[- ]step|explain why|why (?:does|do|is|are|did|would)|compare|contrast|analy[sz]e|"
    r"analysis|trade-?offs?|pros and cons|evaluate|justify|derive|design|architecture|plan|strategy|"
    r"critique|in detail|detailed|essay|reason(?:ing)?|implications?|argue|assess|recommend|propose|"
    r"outline|walk me through|think through|consequences|hypothes[ie]s|explain|why|"
    # the same asks in the other languages the language detector knows
    r"paso a paso|explica|analiza|compara|eval[uú]a|argumenta|justifica|por qu[eé]|"
    r"[eé]tape par [eé]tape|explique|analyse[rz]?|compare[rz]|[eé]value[rz]?|justifie[rz]?|pourquoi|"
    r"schritt f[uü]r schritt|erkl[aä]re|analysiere|vergleiche|bewerte|begr[uü]nde|warum|"
    r"passo a passo|explique|analise|avalie|perch[eé]|spiega|analizza|confronta|valuta)\b|"
    r"説明|分析|詳しく|比較|理由|解释|分析|比较|为什么",
    re.IGNORECASE,
)
_ASK = re.compile(
    r"\b(explain|compare|describe|write|design|evaluate|analy[sz]e|propose|recommend|discuss|justify|"
    r"identify|estimate|derive|prove|implement|list|summari[sz]e|assess|outline|plan|draft|critique|"
    r"calculate|create|build|show|suggest|give)\b|\?",
    re.IGNORECASE,
)
_CONSTRAINT = re.compile(
    r"\b(must|should|at least|at most|exactly|no more than|no fewer than|without using|only use|"
    r"make sure|ensure|include|do not|don't)\b|^\s*(?:\d+[.)]|[-*•])\s+",
    re.IGNORECASE | re.MULTILINE,
)
_SIMPLE = re.compile(
    r"^\s*(what is|what's|what are|who is|who was|who wrote|when did|when was|where is|where was|"
    r"define|translate|name|list|give me|tell me|which|is it|are there|how do you spell|spell|"
    r"classify|identify|convert|rewrite|fix the (?:grammar|spelling)|summari[sz]e|extract)\b",
    re.IGNORECASE,
)
_JSON_ASKED = re.compile(r"\b(?:in|as|valid|return|output) json\b|\bjson (?:object|schema)\b", re.IGNORECASE)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS: dict[str, frozenset[str]] = {
    "es": _words("el la los las que de y es en por para una un con como qué cuál"),
    "fr": _words("le la les est et des une un pour dans que qui avec quel quelle"),
    "de": _words("der die das und ist nicht ein eine mit für wie was ich zu"),
    "pt": _words("o a os as que de e é em para uma um com como não"),
    "it": _words("il lo la gli che di e è per una un con come non sono"),
}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class Features:
    """The request as the router sees it; each field is a feature's raw value."""

    prompt_tokens: int
    ask_tokens: int
    earlier_turns: int
    asks: int
    has_context: bool
    code: bool
    math: bool
    reasoning_cues: int
    json_requested: int
    language: str
    constraints: int
    simple_cue: bool

    def values(self) -> dict[str, float]:
        """Feature name -> value that its weight multiplies (names as in FeatureWeights)."""
        return {
            "length": min(self.ask_tokens, LENGTH_CAP_TOKENS) / 100,
            "turns": float(min(self.earlier_turns, TURNS_CAP)),
            "asks": float(max(0, min(self.asks, ASKS_CAP) - 1)),
            "context": float(self.has_context),
            "code": float(self.code),
            "math": float(self.math),
            "reasoning": float(min(self.reasoning_cues, REASONING_CAP)),
            "json_output": float(self.json_requested),
            "non_english": float(self.language != "en"),
            "constraints": float(min(self.constraints, CONSTRAINTS_CAP)),
            "simple": float(self.simple_cue),
        }


def detect_language(text: str) -> str:
    """'en', a few Latin-script languages by their stopwords, else 'other' for mostly non-Latin text."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return "en"
    latin = sum(1 for w in words if all(ord(ch) < 0x250 for ch in w))
    if latin / len(words) < 0.5:
        return "other"
    hits = {lang: sum(1 for w in words if w in stop) for lang, stop in _STOPWORDS.items()}
    english = sum(1 for w in words if w in _ENGLISH)
    best = max(hits, key=lambda lang: hits[lang])
    if hits[best] >= 2 and hits[best] > english:
        return best
    return "en"


_ENGLISH = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "is",
        "are",
        "of",
        "to",
        "in",
        "for",
        "with",
        "what",
        "how",
        "why",
        "that",
        "this",
        "it",
        "on",
        "be",
    ]
)


def extract(request: Request) -> Features:
    """Features of the request: prompt length over messages and passages; cues from what the
    client wrote (system and user turns, not retrieved passages, which are data, not asks)."""
    user_turns = [m.content for m in request.messages if m.role == "user"]
    asked = "\n".join(m.content for m in request.messages if m.role in ("system", "user"))
    last = user_turns[-1] if user_turns else ""
    numbers = len(_NUMBER.findall(asked))
    math_words = bool(_MATH_WORDS.search(asked))
    json_format = 0
    if request.response_format is not None and request.response_format.type != "text":
        schema_bound = request.response_format.type == "json_schema" and request.response_format.json_schema
        json_format = 2 if schema_bound else 1
    return Features(
        prompt_tokens=estimate_prompt_tokens(request),
        ask_tokens=estimate_tokens([m.content for m in request.messages if m.role in ("system", "user")]),
        earlier_turns=max(0, len(user_turns) - 1),
        asks=len({m.group(0).lower() for m in _ASK.finditer(last)}),
        has_context=bool(request.context),
        code=bool(_CODE.search(asked)),
        math=bool(_FORMULA.search(asked)) or (math_words and numbers >= 2),
        reasoning_cues=len({m.group(0).lower() for m in _REASONING.finditer(asked)}),
        json_requested=json_format or int(bool(_JSON_ASKED.search(asked))),
        language=detect_language(asked),
        constraints=len(_CONSTRAINT.findall(asked)),
        simple_cue=bool(_SIMPLE.match(last)) and len(last) <= SIMPLE_MAX_CHARS,
    )


@dataclass(frozen=True)
class Assessment:
    """Score, tier and why: the features that contributed, largest first."""

    score: float
    tier: Tier
    contributions: tuple[tuple[str, float], ...]
    floor: tuple[str, Tier] | None = None

    def explain(self) -> str:
        parts = ", ".join(f"{name} {points:+.2f}" for name, points in self.contributions) or "no features"
        floor = f"; floor {self.floor[0]} -> {self.floor[1]}" if self.floor else ""
        return f"score {self.score:.2f} ({parts}) -> tier {self.tier}{floor}"


def assess(features: Features, rules: RoutingConfig) -> Assessment:
    """The complexity score (sum of weight x value) and the tier its thresholds give; a floor
    rule (e.g. code -> medium) can raise the tier, never lower it."""
    weights = rules.weights.model_dump()
    contributions = [
        (name, weights[name] * value)
        for name, value in features.values().items()
        if weights[name] * value != 0
    ]
    contributions.sort(key=lambda item: -abs(item[1]))
    score = sum(points for _, points in contributions)
    tier: Tier = "small"
    if score >= rules.thresholds.large:
        tier = "large"
    elif score >= rules.thresholds.medium:
        tier = "medium"
    present = {name for name, value in features.values().items() if value > 0}
    floor: tuple[str, Tier] | None = None
    for name, floor_tier in rules.floors.items():
        if name in present and TIER_RANK[floor_tier] > TIER_RANK[tier]:
            tier, floor = floor_tier, (name, floor_tier)
    return Assessment(score=round(score, 4), tier=tier, contributions=tuple(contributions), floor=floor)
