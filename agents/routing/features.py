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
SCAN_CHARS = 6_000
ASKS_CAP = 4


class Lexicon:
    """Cue words and phrases, found by set lookups on the text's words and substring checks on
    its normalised form: linear in the text, unlike one regex alternation tried at every position."""

    def __init__(self, words: str, *phrases: str, scripts: tuple[str, ...] = ()) -> None:
        self.words = frozenset(words.split())
        self.phrases = tuple(f" {phrase} " for phrase in phrases)
        self.scripts = scripts  # cues in scripts without spaces (CJK): plain substrings

    def found(self, text: Text) -> set[str]:
        """The distinct cues present."""
        hits = set(self.words & text.word_set)
        hits.update(p.strip() for p in self.phrases if p in text.normalised)
        hits.update(cue for cue in self.scripts if cue in text.raw)
        return hits

    def count(self, text: Text) -> int:
        """Occurrences of all cues, repeats included."""
        return sum(1 for word in text.words if word in self.words) + sum(
            text.normalised.count(p) for p in self.phrases
        )


_TOKEN = re.compile(r"\w+(?:[-'+#]+\w*)*")


class Text:
    """A text lower-cased and split into words once, for every lexicon to look at."""

    def __init__(self, raw: str) -> None:
        self.raw = raw.lower()
        self.words = _TOKEN.findall(self.raw)
        self.word_set = set(self.words)
        self.normalised = " " + " ".join(self.words) + " "


_CODE_SYNTAX = re.compile(
    r"```|\bdef \w+\s*\(|\bfunction\s*\w*\s*\(|\bclass \w+[:(]|=>|\breturn\b|#include|\bimport \w+"
)
_CODE = Lexicon(
    "python javascript typescript java c++ c# golang rust sql bash regex algorithm implement refactor "
    "debug traceback compile compiler compiles recursion recursive big-o code function program "
    "script api endpoint query dataframe array integer docstring",
    *("shell script", "regular expression", "stack trace", "unit test", "unit tests", "time complexity"),
    *("linked list", "binary search", "string of"),
)
_MATH = Lexicon(
    "equation solve integral derivative probability prove proof theorem factorial prime matrix "
    "polynomial logarithm percent percentage ratio average remainder divisible speed rate profit "
    "calculate compute",
    *("expected value", "how many", "how much", "how long", "how far", "how old", "how fast"),
    *("total cost", "per hour", "per day", "per week"),
)
_MONEY = re.compile(r"\$\d")
_FORMULA = re.compile(r"\d\s*[-+*/^=\u00d7\u00f7]\s*\d|\b[xyzn]\s*[\^=]\s*\d|\b\d+[xyz]\b")
_DIGITS = re.compile(r"\d+(?:[.,]\d+)?")
_NUMBER_WORDS = Lexicon(
    "one two three four five six seven eight nine ten eleven twelve twenty hundred thousand "
    "half halves third thirds quarter twice thrice double triple dozen"
)
_REASONING = Lexicon(
    "step-by-step compare contrast analyze analyse analysis trade-off trade-offs tradeoff tradeoffs "
    "evaluate justify derive design architecture plan strategy critique detailed essay reason "
    "reasoning implication implications argue assess recommend propose outline consequences "
    "hypothesis hypotheses explain why "
    # the same asks in the other languages the language detector knows
    "explica analiza compara evalua evalúa argumenta justifica explique analyse analyser "
    "analysez comparer comparez évalue évaluer évaluez justifie justifier justifiez pourquoi "
    "erkläre erklare analysiere vergleiche bewerte begründe begrunde warum analise avalie "
    "perché perche spiega analizza confronta valuta",
    *("step by step", "pros and cons", "in detail", "walk me through", "think through"),
    *("paso a paso", "por qué", "por que", "étape par étape", "etape par etape", "schritt für schritt"),
    "passo a passo",
    scripts=("説明", "分析", "詳しく", "比較", "理由", "解释", "比较", "为什么"),
)
_ASK = Lexicon(
    "explain compare describe write design evaluate analyze analyse propose recommend discuss "
    "justify identify estimate derive prove implement list summarize summarise assess outline "
    "plan draft critique calculate create build show suggest give"
)
_CONSTRAINT = Lexicon(
    "must should exactly ensure include don't",
    *("at least", "at most", "no more than", "no fewer than", "without using", "only use", "make sure"),
    "do not",
)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+", re.MULTILINE)
_SIMPLE = re.compile(
    r"^\s*(what is|what's|what are|who is|who was|who wrote|when did|when was|where is|where was|"
    r"define|translate|name|list|give me|tell me|which|is it|are there|how do you spell|spell|"
    r"classify|identify|convert|rewrite|fix the (?:grammar|spelling)|summari[sz]e|extract)\b",
    re.IGNORECASE,
)
_JSON_ASKED = Lexicon(
    "", "in json", "as json", "valid json", "return json", "output json", "json object", "json schema"
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS: dict[str, frozenset[str]] = {
    "es": _words("el la los las que de y es en por para una un con como qué cuál"),
    "fr": _words("le la les est et des une un pour dans que qui avec quel quelle"),
    "de": _words("der die das und ist nicht ein eine mit für wie was ich zu"),
    "pt": _words("o a os as que de e é em para uma um com como não"),
    "it": _words("il lo la gli che di e è per una un con come non sono"),
}
_NON_LATIN = re.compile("[^\u0000-\u024f]")


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


def detect_language(text: str | Text) -> str:
    """'en', a few Latin-script languages by their stopwords, else 'other' for mostly non-Latin text."""
    words = [w for w in (text if isinstance(text, Text) else Text(text)).words if not w.isdigit()]
    if not words:
        return "en"
    latin = sum(1 for w in words if w.isascii() or not _NON_LATIN.search(w))  # isascii: no regex for most
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
    written = [m.content for m in request.messages if m.role in ("system", "user")]
    # Cues are looked for in the last SCAN_CHARS characters the client wrote (the newest turns):
    # enough to see what is asked, and routing stays cheap however long the prompt is.
    asked = "\n".join(written)[-SCAN_CHARS:]
    last = user_turns[-1][-SCAN_CHARS:] if user_turns else ""
    text = Text(asked)
    turn = text if last == asked else Text(last)  # one user turn: the same text, split once
    numbers = len(_DIGITS.findall(asked)) + _NUMBER_WORDS.count(text)
    math_words = bool(_MATH.found(text)) or "%" in asked or bool(_MONEY.search(asked))
    json_format = 0
    if request.response_format is not None and request.response_format.type != "text":
        schema_bound = request.response_format.type == "json_schema" and request.response_format.json_schema
        json_format = 2 if schema_bound else 1
    return Features(
        prompt_tokens=estimate_prompt_tokens(request),
        ask_tokens=estimate_tokens(written),
        earlier_turns=max(0, len(user_turns) - 1),
        asks=len(_ASK.found(turn)) + ("?" in last),
        has_context=bool(request.context),
        code=bool(_CODE_SYNTAX.search(asked)) or bool(_CODE.found(text)),
        math=bool(_FORMULA.search(asked)) or (math_words and numbers >= 2),
        reasoning_cues=len(_REASONING.found(text)),
        json_requested=json_format or int(bool(_JSON_ASKED.found(text))),
        language=detect_language(text),
        constraints=_CONSTRAINT.count(text) + len(_LIST_ITEM.findall(asked)),
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
