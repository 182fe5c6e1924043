"""Groundedness: how much of an answer the request's context passages actually support.

Lexical by design: it must cost well under a few milliseconds per response, run without a model,
and give the same number for the same input, so that a rise in the hallucination rate on a dashboard
means the model changed and not the scorer. Each sentence of the answer is a claim, scored on
word and word-pair support, on whether the specifics it names (numbers, dates, proper names) occur in
the context and near the evidence it leans on, on negation agreement, and on the passage ids it cites.
Without context nothing can be verified, so the score is None and only fabricated-looking specifics
(links, DOIs, references, quotes) and hedging are reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

# Chosen on the dev split of tests/data/hallucination_eval.jsonl (bench/hallucination.py): dev accuracy
# peaks at 0.75, but 0.65 costs little there and keeps honest paraphrases (which score lower than the
# largely extractive eval answers) above the line.
DEFAULT_HALLUCINATION_THRESHOLD = 0.65
# Scoring cost grows with the answer; past this many characters the tail is not scored.
MAX_SCORED_CHARS = 20_000

# Tokenising = replace separators with spaces in one regex pass, then str.split: several times
# faster than a Unicode-aware token regex (str.translate is slower still), and this is the scorer's
# dominant cost. ".,:'!?" stay inside tokens ("1,435", "48.8", "isn't", "U.S") and are stripped from
# their edges.
_SEPARATORS = (
    '"#$%&()*+/;<=>@[\\]^_`{|}~-\u00a0\u00a3\u00a7\u00ab\u00b0\u00b7\u00bb'
    "\u2013\u2014\u2018\u201c\u201d\u2022\u2026\u20ac"
)
_SEPARATOR_RE = re.compile("[" + re.escape(_SEPARATORS) + "]")
# Inside a token, a ".,:" directly followed by a letter separates ("century.First", "U.S" -> "U", "S").
_INNER_BREAK_RE = re.compile(r"[.,:](?=[^\W\d_])")
_EDGES = ".,:'\u2019!?"
_BREAKS = (".", "!", "?", ":")
_SENT_END_RE = re.compile(r"[.!?][\"\u201d')\]]*\s+")
_OPENERS = "\"\u201c(['\u2018"
_CLOSERS = "\"'\u2019\u201d)]"
_CITATION_RE = re.compile(r"\[((?:doc|source|passage|ref)?[-_ ]?[\w.-]{1,40})\]", re.IGNORECASE)
_CODE_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_BULLET_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)


def _wordset(text: str) -> frozenset[str]:
    """A word list written as prose, one frozenset."""
    return frozenset(text.split())


def _words(text: str) -> list[str]:
    return text.split()


_ABBREVIATIONS = _wordset(
    "u.s u.k l.a st dr mr mrs ms e.g i.e vs etc inc co jr sr no fig approx s.a m.d ph.d"
)
_STOPWORDS = _wordset(
    """a about above after again against all also am an and any are aren't as at be because been before
    being below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself of off on once only or other our ours ourselves out over own same she should
    so some such than that the their theirs them themselves then there these they this those through to
    too under until up very was we were what when where which while who whom why will with would you
    your yours yourself yourselves according based source sources document documents passage passages
    context provided answer short say says said states stated state's per cent percent well known not
    no never nor neither none cannot"""
)
_NEGATIONS = frozenset({"not", "no", "never", "nor", "neither", "none", "cannot", "nobody", "nothing"})
_WORD_NUMBERS = (
    {w: str(i) for i, w in enumerate(_words("zero one two three four five six seven eight nine ten eleven"))}
    | {w: str(i) for i, w in enumerate(_words("twelve thirteen fourteen fifteen sixteen seventeen"), 12)}
    | {w: str(i) for i, w in enumerate(_words("eighteen nineteen twenty"), 18)}
    | {w: str(10 * i) for i, w in enumerate(_words("thirty forty fifty sixty seventy eighty ninety"), 3)}
    | {w: str(i) for i, w in enumerate(_words("zeroth first second third fourth fifth sixth seventh"))}
    | {"eighth": "8", "ninth": "9", "tenth": "10", "hundred": "100", "twice": "2", "double": "2"}
    | {"half": "0.5", "dozen": "12", "single": "1"}
)
_NUMBER_TERMS = frozenset(_WORD_NUMBERS.values())
_FOLD_RE = re.compile(r"^(\w+?)fold$")
_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ies", "ied", "ed", "es", "ly", "s")

# Patterns for specifics an unaided model tends to invent.
_URL_RE = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
_DOI_RE = re.compile(r"\b(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?10\.\d{4,9}/[^\s\"<>]+", re.IGNORECASE)
_ARXIV_RE = re.compile(r"\barXiv:\s?\d{4}\.\d{4,5}(?:v\d+)?", re.IGNORECASE)
_ISBN_RE = re.compile(r"\bISBN(?:-1[03])?:?\s?[\d-]{10,17}", re.IGNORECASE)
_AUTHOR_YEAR_RE = re.compile(
    r"\(?[A-Z][a-zA-Z'\u2019-]+(?:\s+(?:et al\.?|and|&)\s*(?:[A-Z][a-zA-Z'\u2019-]+)?)?"
    r",?\s*\(?(?:19|20)\d{2}[a-z]?\)"
)
_YEAR_PAREN_RE = re.compile(r"(?:19|20)\d{2}[a-z]?\)")
_NUMERIC_REF_RE = re.compile(r"\[\d{1,3}(?:\s*[,\u2013-]\s*\d{1,3})*\]")
_QUOTE_RE = re.compile(
    r"[\"“]([^\"”]{25,400})[\"”]\s*(?:[,—-]\s*)?(?:said|says|wrote|according to|stated)\b"
    r"|\b(?:said|wrote|stated|declared)\s*[:,]?\s*[\"“]([^\"”]{25,400})[\"”]",
    re.IGNORECASE,
)
_ATTRIBUTION_RE = re.compile(r"\b(?:said|says|wrote|according to|stated|declared)\b")
# Applied to lowercased text (an IGNORECASE alternation this long is four times slower).
_LOW_CONFIDENCE_RE = re.compile(
    r"\b(?:i think|i believe|i'?m not (?:sure|certain)|i am not (?:sure|certain)|not entirely sure|"
    r"as far as i know|to the best of my knowledge|i may be wrong|i might be wrong|if i recall|"
    r"if i remember correctly|i don'?t have (?:access|information|reliable)|i cannot verify|i can'?t verify|"
    r"it'?s possible that|i would guess|my best guess|probably|presumably)\b"
)


@dataclass(frozen=True, slots=True)
class ClaimScore:
    """One answer sentence and why it scored what it did."""

    text: str
    score: float
    unsupported_specifics: tuple[str, ...]
    misplaced_specifics: tuple[str, ...]
    negation_mismatch: bool
    bad_citations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroundingResult:
    """Groundedness of one answer; groundedness and hallucination are None when nothing grounds it."""

    groundedness: float | None
    hallucination: bool | None
    claims: tuple[ClaimScore, ...]
    bad_citations: tuple[str, ...]
    fabricated_specifics: tuple[str, ...]
    low_confidence: bool
    truncated_input: bool = False

    @property
    def unsupported_claims(self) -> int:
        return sum(1 for c in self.claims if c.score < 0.5)


@dataclass(frozen=True, slots=True)
class _Window:
    """A context sentence with its neighbours (claims often merge adjacent sentences)."""

    tokens: frozenset[str]
    centre: frozenset[str]
    negations: int


@dataclass(frozen=True, slots=True)
class PassageIndex:
    """Tokenised passages, built once per distinct context and reused across answers and retries."""

    ids: frozenset[str]
    vocab: frozenset[str]
    bigrams: frozenset[tuple[str, str]]
    windows: tuple[_Window, ...]
    lowered: str
    text: str = ""
    capitalised: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def only_capitalised(self, word: str) -> bool:
        """True when the context uses this word, and only ever with a capital: a proper name."""
        low = word.lower()
        hit = self.capitalised.get(low)
        if hit is None:
            hit = self.capitalised[low] = _only_capitalised(self.text, self.lowered, low)
        return hit


def _only_capitalised(text: str, lowered: str, low: str) -> bool:
    if not low or len(text) != len(lowered):
        return False
    found = False
    at = lowered.find(low)
    while at >= 0:
        end = at + len(low)
        bounded = (at == 0 or not lowered[at - 1].isalnum()) and (
            end == len(lowered) or not lowered[end].isalnum()
        )
        if bounded:
            if not text[at].isupper():
                return False
            found = True
        at = lowered.find(low, end)
    return found


def build_index(passages: Sequence[tuple[str, str]]) -> PassageIndex:
    """Index (id, text) passages; identical contexts hit a cache, so retries cost nothing extra."""
    return _build_index_cached(tuple((str(i), str(t)) for i, t in passages))


@lru_cache(maxsize=256)
def _build_index_cached(passages: tuple[tuple[str, str], ...]) -> PassageIndex:
    vocab: set[str] = set()
    bigrams: set[tuple[str, str]] = set()
    windows: list[_Window] = []
    for _pid, text in passages:
        sentences = [_analyse(s) for s in split_sentences(text[: MAX_SCORED_CHARS * 4])]
        centres = [frozenset(content) for content, _negs in sentences]
        for content, _negs in sentences:
            vocab.update(content)
            # Adjacent pairs plus pairs one word apart (paraphrases drop words); the scorer also tries
            # each claim pair reversed (paraphrases swap words).
            bigrams.update(pairwise(content))
            bigrams.update(zip(content, content[2:], strict=False))
        last = len(centres) - 1
        for i, centre in enumerate(centres):
            tokens = centre
            if i > 0:
                tokens = tokens | centres[i - 1]
            if i < last:
                tokens = tokens | centres[i + 1]
            windows.append(_Window(tokens, centre, sentences[i][1]))
    joined = " ".join(t for _i, t in passages)
    return PassageIndex(
        frozenset(i for i, _t in passages),
        frozenset(vocab),
        frozenset(bigrams),
        tuple(windows),
        joined.lower(),
        joined,
    )


def split_sentences(text: str) -> list[str]:
    """Sentences and list items; abbreviations such as "U.S." or "Dr." do not end a sentence."""
    out: list[str] = []
    lines = _BULLET_RE.sub("\n", text).split("\n") if "\n" in text else [text]
    for line in lines:
        start = 0
        for m in _SENT_END_RE.finditer(line):
            nxt = line[m.end() : m.end() + 2].lstrip(_OPENERS)[:1]
            if not (nxt.isupper() or nxt.isdigit()):
                continue
            tail_words = line[max(start, m.start() - 12) : m.start()].split()
            last = tail_words[-1].lower().rstrip(".") if tail_words else ""
            if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                continue
            piece = line[start : m.end()].strip()
            if piece:
                out.append(piece)
            start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return out


def _norm_number(tok: str) -> str:
    raw = tok.lower()
    for suf in ("st", "nd", "rd", "th", "s"):
        if raw.endswith(suf) and raw[: -len(suf)][-1:].isdigit():
            raw = raw[: -len(suf)]
            break
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", raw):
        raw = raw.replace(",", "")
    return raw


def _stem(word: str) -> str:
    if word in _WORD_NUMBERS:
        return _WORD_NUMBERS[word]
    fold = _FOLD_RE.match(word)
    if fold and fold.group(1) in _WORD_NUMBERS:
        return _WORD_NUMBERS[fold.group(1)]
    if word.endswith(("'s", "\u2019s")):
        word = word[:-2]
    if len(word) > 4:
        for suf in _SUFFIXES:
            if word.endswith(suf) and len(word) - len(suf) >= 3:
                return word[: -len(suf)]
    return word


_NEG = "\x00neg"
_TERM_CACHE: dict[str, str] = {}
_TERM_CACHE_MAX = 100_000  # per memo; bounds memory at a few tens of MB in a long-lived worker


def _term(low: str) -> str:
    """Lowercased token to its comparable form: a normalised number, a stem, "" for a stopword, or
    the negation marker. Memoised: vocabulary repeats, and this loop is the scorer's hot path."""
    hit = _TERM_CACHE.get(low)
    if hit is not None:
        return hit
    if low[0].isdigit():
        value = _norm_number(low)
    elif low in _NEGATIONS or low.endswith(("n't", "n\u2019t")):
        value = _NEG
    elif low in _STOPWORDS:
        value = ""
    else:
        value = _stem(low)
    if len(_TERM_CACHE) < _TERM_CACHE_MAX:
        _TERM_CACHE[low] = value
    return value


def _raw_tokens(text: str) -> list[str]:
    """Whitespace tokens after separators are blanked; they may still carry edge punctuation."""
    return _SEPARATOR_RE.sub(" ", text).split()


def _parts(raw: str) -> list[str]:
    """A raw token without edge punctuation, split at inner breaks; [] for pure punctuation."""
    tok = raw.strip(_EDGES)
    if not tok:
        return []
    parts = _INNER_BREAK_RE.split(tok) if ("." in tok or "," in tok or ":" in tok) else [tok]
    return [p for p in (x.strip(_EDGES) for x in parts) if p and p[0].isalnum()]


_TERMS_CACHE: dict[str, tuple[str, ...]] = {}


def _terms(raw_low: str) -> tuple[str, ...]:
    """Comparable terms of one lowercased raw token (usually exactly one); memoised."""
    hit = _TERMS_CACHE.get(raw_low)
    if hit is None:
        hit = tuple(_term(p) for p in _parts(raw_low))
        if len(_TERMS_CACHE) < _TERM_CACHE_MAX:
            _TERMS_CACHE[raw_low] = hit
    return hit


def _analyse(sentence: str, raws: list[str] | None = None) -> tuple[list[str], int]:
    """Content stems in order (stopwords dropped) and the number of negation cues."""
    cache = _TERMS_CACHE
    lowered = _raw_tokens(sentence.lower()) if raws is None else [r.lower() for r in raws]
    groups = [cache[t] if t in cache else _terms(t) for t in lowered]
    flat = [v for g in groups for v in g]
    negs = flat.count(_NEG)
    return [v for v in flat if v and v != _NEG], negs


def _claim_terms(sentence: str, index: PassageIndex | None = None) -> tuple[list[str], set[str], int]:
    """Content stems, the subset that are specifics (numbers, proper names), and negation count."""
    raws = _raw_tokens(sentence)
    content, negs = _analyse(sentence, raws)
    specifics = {v for v in content if v[0].isdigit()}  # numbers, written or in digits
    opening = True  # does the next token open a sentence (so its capital proves nothing)?
    for n, raw in enumerate(raws):
        if raw[0].isupper() or (raw[0] in _OPENERS and raw[1:2].isupper()):
            for i, part in enumerate(_parts(raw)):
                if not part[0].isupper():
                    continue
                if (
                    not (opening and i == 0)
                    or any(c.isupper() for c in part[1:])
                    or _next_capitalised(raws, n)
                    or (index is not None and index.only_capitalised(part))
                ):
                    value = _term(part.lower())
                    if value and value != _NEG:
                        specifics.add(value)
        opening = raw.rstrip(_CLOSERS).endswith(_BREAKS)
    return content, specifics, negs


def _next_capitalised(raws: list[str], n: int) -> bool:
    """A sentence opener counts as a name when the next word is capitalised too ("Henri Leconte won")."""
    return n + 1 < len(raws) and raws[n + 1].lstrip(_OPENERS)[:1].isupper()


def detect_fabrication(answer: str, grounding_text: str = "") -> tuple[tuple[str, ...], bool]:
    """Links, DOIs, references and attributed quotes in the answer that the request (or context) does
    not contain, plus whether the answer hedges. Values are returned for inspection, not for analytics."""
    found: list[str] = []
    known = grounding_text.lower()
    low = answer.lower()
    # Cheap substring gates keep the common case (none of these present) to a few scans.
    gated = (
        (_URL_RE, "http" in low or "www." in low),
        (_DOI_RE, "10." in low and "/" in low),
        (_ARXIV_RE, "arxiv" in low),
        (_ISBN_RE, "isbn" in low),
        (_AUTHOR_YEAR_RE, ")" in low and _YEAR_PAREN_RE.search(answer) is not None),
        (_NUMERIC_REF_RE, "[" in low),
    )
    for regex, present in gated:
        if not present:
            continue
        for m in regex.finditer(answer):
            value = m.group(0).strip().rstrip(".,;")
            if value.lower() not in known:
                found.append(value)
    quoted_speech = ('"' in answer or "\u201c" in answer) and _ATTRIBUTION_RE.search(low) is not None
    for m in _QUOTE_RE.finditer(answer) if quoted_speech else ():
        quoted = (m.group(1) or m.group(2) or "").strip()
        if quoted and quoted.lower() not in known:
            found.append(f'"{quoted[:60]}"')
    return tuple(dict.fromkeys(found)), bool(_LOW_CONFIDENCE_RE.search(low))


def _citations(sentence: str, ids: frozenset[str]) -> list[str]:
    """Cited passage ids; a bare "[3]" counts only when passages are numbered that way (otherwise it is
    a reference marker, which detect_fabrication judges)."""
    numbered = any(i.isdigit() for i in ids)
    cited = (m.group(1).strip() for m in _CITATION_RE.finditer(sentence))
    return [c for c in cited if numbered or not c.isdigit()]


def _score_claim(sentence: str, index: PassageIndex, neutral: frozenset[str]) -> ClaimScore | None:
    bad = tuple(c for c in _citations(sentence, index.ids) if c not in index.ids)
    body = _CITATION_RE.sub(" ", sentence)
    content, specifics, negs = _claim_terms(body, index)
    scored = [t for t in content if t in index.vocab or t not in neutral]
    if not scored:
        return None if not bad else ClaimScore(sentence, 0.5, (), (), False, bad)
    weights = {t: (2.0 if t in specifics else 1.0) for t in scored}
    total = sum(weights[t] for t in scored)
    unigram = sum(weights[t] for t in scored if t in index.vocab) / total
    pairs = list(pairwise(content))
    known = index.bigrams
    bigram = sum(1 for a, b in pairs if (a, b) in known or (b, a) in known) / len(pairs) if pairs else unigram
    scored_set = frozenset(scored)
    spec = frozenset(specifics)
    best_hits, best = _best_window(scored_set, spec, index.windows)
    local = best_hits / (len(scored_set) + len(scored_set & spec))
    unsupported = tuple(sorted(t for t in specifics if t not in index.vocab and t not in neutral))
    misplaced = _misplaced(specifics & index.vocab, scored_set, spec, best, index.windows)
    negation_mismatch = _negation_mismatch(scored_set, negs, index.windows) if local >= 0.5 else False
    score = 0.4 * unigram + 0.2 * bigram + 0.4 * local
    score *= 0.5 ** len(unsupported)
    score *= 0.8 ** len(misplaced)
    if negation_mismatch:
        score *= 0.45
    if bad:
        score *= 0.5
    return ClaimScore(sentence, max(0.0, min(1.0, score)), unsupported, misplaced, negation_mismatch, bad)


def _best_window(
    tokens: frozenset[str], specifics: frozenset[str], windows: Sequence[_Window]
) -> tuple[float, _Window | None]:
    """The window sharing the most claim words, specifics counting double."""
    best_hits = 0
    best: _Window | None = None
    for w in windows:
        common = tokens & w.tokens
        if common:
            hits = len(common) + len(common & specifics)
            if hits > best_hits:
                best_hits, best = hits, w
    return float(best_hits), best


def _misplaced(
    specifics: set[str],
    claim: frozenset[str],
    spec: frozenset[str],
    best: _Window | None,
    windows: Sequence[_Window],
) -> tuple[str, ...]:
    """Specifics found in the context but not where the claim's evidence is: the signature of a
    name or number swapped in from elsewhere. A claim may merge two places in the context, so a
    second window counts if it supports the specific together with another word of the claim."""
    if best is None:
        return tuple(sorted(specifics))
    rest = claim - best.tokens
    missing = {t for t in specifics if t not in best.tokens}
    if not missing:
        return ()
    _hits, second = _best_window(rest, spec, windows)
    if second is not None and len(rest & second.tokens) >= 2:
        missing -= second.tokens
    return tuple(sorted(missing))


def _negation_mismatch(claim: frozenset[str], negs: int, windows: Sequence[_Window]) -> bool:
    """A negation the closest context sentence lacks, or a dropped one from a sentence the claim
    restates almost word for word. Looser rules fire on every "not" elsewhere in the paragraph."""
    if negs == 0 and not any(
        w.negations and len(claim & w.centre) >= 0.8 * max(len(claim), len(w.centre)) for w in windows
    ):
        return False  # the common case, settled without searching for the closest sentence
    best: _Window | None = None
    best_overlap = 0.0
    for w in windows:
        overlap = len(claim & w.centre) / max(1, len(claim))
        if overlap > best_overlap:
            best, best_overlap = w, overlap
    if best is None or best_overlap < 0.5:
        return False
    if negs > 0:
        return best.negations == 0
    restated = len(claim & best.centre) / max(1, len(best.centre))
    return best.negations > 0 and best_overlap >= 0.8 and restated >= 0.8


def _claims_of(answer: str) -> list[str]:
    text = _CODE_FENCE_RE.sub(" ", answer)
    return [s for s in split_sentences(text) if any(ch.isalnum() for ch in s)]


def score_groundedness(
    answer: str,
    passages: Sequence[tuple[str, str]] | PassageIndex,
    *,
    question: str = "",
    request_text: str = "",
    threshold: float = DEFAULT_HALLUCINATION_THRESHOLD,
) -> GroundingResult:
    """Score an answer against (id, text) passages; with no passages the score is None.

    Words of the question that the context lacks count neither for nor against a claim: restating
    the question is not hallucinating. An empty answer claims nothing and also scores None.
    request_text (all user messages) whitelists links and references the user supplied themselves.
    """
    answer = answer if isinstance(answer, str) else str(answer)
    cut = len(answer) > MAX_SCORED_CHARS
    answer = answer[:MAX_SCORED_CHARS]
    index = passages if isinstance(passages, PassageIndex) else (build_index(passages) if passages else None)
    if index is None or not index.windows or not answer.strip():
        specifics, hedged = detect_fabrication(answer, request_text)
        return GroundingResult(None, None, (), (), specifics, hedged, cut)
    known = " ".join((index.lowered, request_text.lower(), *(f"[{i.lower()}]" for i in index.ids)))
    specifics, hedged = detect_fabrication(answer, known)
    neutral = frozenset(_analyse(question)[0]) if question else frozenset()
    claims = [c for c in (_score_claim(s, index, neutral) for s in _claims_of(answer)) if c is not None]
    bad = tuple(dict.fromkeys(b for c in claims for b in c.bad_citations))
    if not claims:
        value = 0.5 if specifics else 1.0
        return GroundingResult(value, value < threshold, (), bad, specifics, hedged, cut)
    value = _aggregate(claims)
    if specifics:
        value *= 0.7 ** min(len(specifics), 3)
    value = round(max(0.0, min(1.0, value)), 4)
    return GroundingResult(value, value < threshold, tuple(claims), bad, specifics, hedged, cut)


def _aggregate(claims: Iterable[ClaimScore]) -> float:
    """Length-weighted mean pulled towards the weakest claim: one invented sentence in five should
    still show, but a single clumsy paraphrase should not sink a long, well-supported answer."""
    items = list(claims)
    weights = [max(1, len(_raw_tokens(c.text))) for c in items]  # words, roughly
    mean = sum(c.score * w for c, w in zip(items, weights, strict=True)) / sum(weights)
    worst = min(c.score for c in items)
    return 0.6 * mean + 0.4 * worst
