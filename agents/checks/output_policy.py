"""Per-tenant output policy: what an answer must not contain or do, whatever the model was asked.

Each check is a small pure function with a positive and a negative case in the tests; check_output
runs them all for one answer. Findings carry check names (the flag vocabulary) and short details that
are safe for analytics: matched policy terms and PII *types*, never PII values or long spans of the
system prompt.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

PiiDetector = Callable[[str], list[tuple[str, str]]]


def _alternatives(text: str) -> tuple[str, ...]:
    """A phrase list written as "a|b c|d", one tuple."""
    return tuple(p.strip() for p in text.split("|") if p.strip())


# A deliberately small list of unambiguous English profanity; tenants add their own. Inflections
# ("fucking", "shits") and masking ("f*ck", "sh1t") are matched by the pattern, not listed.
BUILTIN_PROFANITY: tuple[str, ...] = _alternatives(
    "fuck|motherfucker|shit|shitty|bullshit|bitch|bastard|asshole|arsehole|cunt|dickhead|prick|wanker|"
    "twat|bollocks|piss off|pissed off|son of a bitch|goddamn"
)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_CREATIVE_WORDS_RE = re.compile(
    r"\b(?:poem|poetry|verse|verses|stanza|haiku|limerick|sonnet|ode|rhyme|rhymes|lyrics|ballad|song)\b",
    re.IGNORECASE,
)
_CREATIVE_INTRO_RE = re.compile(
    r"^\W*(?:once upon a time|(?:sure[!,.]?\s*|of course[!,.]?\s*)?here(?:'s| is) (?:a|an|my|your|the) "
    r"(?:\w+ ){0,3}(?:poem|limerick|haiku|song|verse|story|sonnet|rap|ode|ballad))\b",
    re.IGNORECASE,
)


def _wordset(text: str) -> frozenset[str]:
    """A word list written as prose, one frozenset."""
    return frozenset(text.split())


_NEGATIVE_WORDS = _wordset(
    """useless worst terrible awful incompetent scam hate hated rubbish garbage pathetic disaster horrible
    stupid crap sucks lousy joke clueless hopeless dreadful shambles appalling worthless inept disgrace
    disgraceful unreliable terribly hopelessly awfully rude lazy liar liars"""
)
_REFUSAL_RE = re.compile(
    r"^\W*(?:(?:i'?m|i am) (?:really |so |very )?sorry,?(?: but)?\s*)?"
    r"(?:(?:as an ai(?: language model| assistant)?,?\s*)?"
    r"i (?:can(?:no|'|\u2019)t|cannot|am unable to|'m unable to|"
    r"am not able to|'m not able to|won'?t|will not|must decline to|do not|don'?t) "
    r"(?:help|assist|provide|do|comply|answer|share|support|fulfil|fulfill|engage|create|write|discuss|"
    r"give|generate|offer)"
    r"|i must decline|that'?s not something i can"
    r"|unfortunately,? i (?:can(?:no|'|\u2019)t|cannot|am unable))",
    re.IGNORECASE,
)
# Customer-service words any tenant's assistant uses: a short reply made of these ("Could you share
# your order number?") is on task even without a domain keyword.
_SERVICE_WORDS = _wordset(
    """order account help support contact team customer service request detail number reference email
    phone call refund complaint query issue problem sorry thank thanks apologise apologize inconvenience
    assist"""
)
_STOP = _wordset("""a an the of in on at to for from by with and or is was are be it this that i you we""")
TRUNCATION_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})


@dataclass(frozen=True, slots=True)
class TopicRule:
    """A banned topic: it matches when at least min_hits distinct keywords occur."""

    name: str
    keywords: tuple[str, ...]
    min_hits: int = 2


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    """What one tenant forbids in answers. Empty defaults disable the corresponding checks."""

    banned_terms: tuple[str, ...] = ()
    banned_topics: tuple[TopicRule, ...] = ()
    competitors: tuple[str, ...] = ()
    profanity: tuple[str, ...] = ()
    use_builtin_profanity: bool = True
    domain: str = ""
    domain_keywords: tuple[str, ...] = ()
    brand_names: tuple[str, ...] = ()
    allow_creative: bool = False
    off_task_min_words: int = 12
    system_prompt_min_run: int = 12
    system_prompt_max_coverage: float = 0.3


@dataclass(frozen=True, slots=True)
class Finding:
    """A check that fired; detail is analytics-safe."""

    check: str
    detail: str = ""
    score: float | None = None


@dataclass(frozen=True, slots=True)
class OffTask:
    off_task: bool
    score: float
    domain_hits: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PromptOverlap:
    longest_run: int
    coverage: float
    leaked: bool


# ---------------------------------------------------------------------------------------------
# Term matching


@lru_cache(maxsize=1024)
def _phrase_regex(phrases: tuple[str, ...], plurals: bool = True) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive, whitespace-tolerant alternation; plurals optional."""
    parts = []
    for p in phrases:
        words = [re.escape(w) for w in p.strip().split()]
        if words:
            parts.append(r"\s+".join(words) + (r"(?:s|es|'s)?" if plurals else ""))
    if not parts:
        return None
    return re.compile(
        r"(?<![\w])(?:" + "|".join(sorted(parts, key=len, reverse=True)) + r")(?![\w])", re.IGNORECASE
    )


def _matches(text: str, phrases: Sequence[str], *, plurals: bool = True) -> list[str]:
    regex = _phrase_regex(tuple(phrases), plurals)
    if regex is None:
        return []
    return list(dict.fromkeys(m.group(0).lower() for m in regex.finditer(text)))


def find_banned_terms(answer: str, terms: Sequence[str]) -> list[str]:
    return _matches(answer, terms)


def find_banned_topics(answer: str, topics: Sequence[TopicRule]) -> list[str]:
    hit = []
    for topic in topics:
        found = {_norm_plural(m) for m in _matches(answer, topic.keywords)}
        if len(found) >= max(1, topic.min_hits):
            hit.append(topic.name)
    return hit


def _norm_plural(word: str) -> str:
    for suffix in ("'s", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)]
    return word


def find_competitors(answer: str, competitors: Sequence[str]) -> list[str]:
    return _matches(answer, competitors, plurals=False)


@lru_cache(maxsize=64)
def _profanity_regex(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """Tolerates masking ("f*ck", "sh!t") and leetspeak after normalisation, but only on word
    boundaries, so "Scunthorpe" and "assessment" stay clean."""
    parts = []
    for w in words:
        letters = w.lower().strip()
        if not letters:
            continue
        pieces = []
        for i, ch in enumerate(letters):
            if ch == " ":
                pieces.append(r"\s+")
            elif i == 0 or not ch.isalpha():
                pieces.append(re.escape(ch))
            else:
                pieces.append(f"[{re.escape(ch)}*!#%]")
        parts.append("".join(pieces) + r"(?:s|es|ed|ing|er|ers)?")
    if not parts:
        return None
    return re.compile(r"(?<![a-z])(?:" + "|".join(sorted(parts, key=len, reverse=True)) + r")(?![a-z])")


def find_profanity(answer: str, extra: Sequence[str] = (), *, builtin: bool = True) -> list[str]:
    words = tuple(BUILTIN_PROFANITY if builtin else ()) + tuple(extra)
    regex = _profanity_regex(words)
    if regex is None:
        return []
    text = answer.lower().translate(_LEET)
    return list(dict.fromkeys(m.group(0) for m in regex.finditer(text)))


# ---------------------------------------------------------------------------------------------
# Off-task


def _stem(word: str) -> str:
    w = word.lower()
    for suffix in ("ing", "ies", "ed", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


def looks_creative(answer: str) -> bool:
    """Verse or story rather than an answer: introduced as one ("Here's a poem"), or laid out as
    short lines that rhyme or call themselves verse. Merely mentioning a poem is not enough: "I can't
    write a poem, but your parcel is on its way" is on task."""
    if _CREATIVE_INTRO_RE.search(answer):
        return True
    lines = [ln.strip() for ln in answer.splitlines() if ln.strip()]
    if len(lines) < 3:
        return False
    short = [
        ln
        for ln in lines
        if len(ln.split()) <= 12 and not ln.startswith(("-", "*", "\u2022")) and not ln[:1].isdigit()
    ]
    if len(short) < 0.75 * len(lines):
        return False
    if _CREATIVE_WORDS_RE.search(answer):
        return True
    keys = [_rhyme_key((_WORD_RE.findall(ln.lower()) or [""])[-1]) for ln in short]
    rhyming = sum(
        1 for i, key in enumerate(keys) if key and any(key == other for other in keys[i + 1 : i + 4])
    )
    return rhyming >= 2


_DOUBLE_RE = re.compile(r"([^aeiou])\1")
_RHYME_SPELLINGS = (
    ("ck", "k"),
    ("x", "ks"),
    ("ph", "f"),
    ("igh", "i"),
    ("ee", "e"),
    ("ea", "e"),
    ("ou", "ow"),
    ("aw", "a"),
)
_RHYME_TAIL_RE = re.compile(r"[aeiouy]+[^aeiouy]*$")


def _rhyme_key(word: str) -> str:
    """Crude spelling-based rhyme: the last vowel group and what follows, after folding a few
    spellings that sound alike ("box"/"socks", "week"/"weak", "go"/"low")."""
    w = word.lower().strip("'\u2019")
    if len(w) < 2:
        return ""
    for a, b in _RHYME_SPELLINGS:
        w = w.replace(a, b)
    w = _DOUBLE_RE.sub(r"\1", w)
    if len(w) > 3 and w.endswith("e") and w[-2] not in "aeiouy":
        w = w[:-1]
    if w.endswith("ow"):
        w = w[:-1]
    m = _RHYME_TAIL_RE.search(w)
    return m.group(0) if m else w[-2:]


def disparages_brand(answer: str, brand_names: Sequence[str], window: int = 6) -> bool:
    """The tenant's own name within a few words of an insult, in one clause: the chatbot mocking its
    owner. "Sorry SwiftShip was late; that is a terrible wait" is an apology, not mockery."""
    regex = _phrase_regex(tuple(brand_names), False)
    if regex is None:
        return False
    for clause in re.split(r"[.!?;]+", answer):
        brand_at = [len(_WORD_RE.findall(clause[: m.start()])) for m in regex.finditer(clause)]
        if not brand_at:
            continue
        words = [w.lower() for w in _WORD_RE.findall(clause)]
        insults = [i for i, w in enumerate(words) if w in _NEGATIVE_WORDS]
        if any(abs(i - b) <= window for i in insults for b in brand_at):
            return True
    return False


def assess_off_task(answer: str, policy: OutputPolicy) -> OffTask:
    """Does the answer stay in the tenant's domain? Only judged when the tenant declares one."""
    vocab = {_stem(w) for w in _WORD_RE.findall(policy.domain) if w.lower() not in _STOP}
    keyword_regex = _phrase_regex(tuple(policy.domain_keywords) + tuple(policy.brand_names))
    if not vocab and keyword_regex is None:
        return OffTask(False, 0.0, 0, ())
    words = _WORD_RE.findall(answer)
    stems = {_stem(w) for w in words}
    hits = len(vocab & stems)
    if keyword_regex is not None:
        hits += len({m.group(0).lower() for m in keyword_regex.finditer(answer)})
    reasons: list[str] = []
    score = 0.0
    if not policy.allow_creative and looks_creative(answer):
        reasons.append("creative_form")
        score += 0.6
    service = len(stems & _SERVICE_WORDS)
    if (
        hits == 0
        and len(words) >= policy.off_task_min_words
        and (service == 0 or len(words) >= 3 * policy.off_task_min_words)
    ):
        reasons.append("no_domain_terms")
        score += 0.5
    elif len(words) >= 4 * policy.off_task_min_words and hits * 40 < len(words):
        reasons.append("little_domain_content")
        score += 0.3
    return OffTask(bool(reasons) and score >= 0.5, min(1.0, score), hits, tuple(reasons))


# ---------------------------------------------------------------------------------------------
# Leaks, refusals, truncation


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def system_prompt_overlap(
    answer: str, system_prompt: str, policy: OutputPolicy, *, shared_text: str = "", k: int = 6
) -> PromptOverlap:
    """Longest run of system-prompt words echoed verbatim, and the share of the prompt echoed.
    Word runs that also occur in shared_text (context passages, the user's own words) do not count."""
    sp = _words(system_prompt)[:5000]
    ans = _words(answer)[:20000]
    if len(sp) < k or len(ans) < k:
        return PromptOverlap(0, 0.0, False)
    sp_shingles: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(sp) - k + 1):
        sp_shingles.setdefault(tuple(sp[i : i + k]), []).append(i)
    shared_words = _words(shared_text[:400_000])
    shared = {tuple(shared_words[i : i + k]) for i in range(max(0, len(shared_words) - k + 1))}
    covered: set[int] = set()
    run = best = 0
    for i in range(len(ans) - k + 1):
        shingle = tuple(ans[i : i + k])
        starts = sp_shingles.get(shingle)
        if starts and shingle not in shared:
            run = run + 1 if run else k
            best = max(best, run)
            for s in starts:
                covered.update(range(s, s + k))
        else:
            run = 0
    coverage = len(covered) / len(sp)
    leaked = best >= policy.system_prompt_min_run or (
        coverage >= policy.system_prompt_max_coverage and best >= k
    )
    return PromptOverlap(best, round(coverage, 4), leaked)


def is_refusal(answer: str) -> bool:
    """A refusal instead of an answer; a caveat inside a long, helpful reply is not one."""
    text = answer.strip()
    if not text or len(text.split()) > 80:
        return False
    return _REFUSAL_RE.search(text[:300]) is not None


def is_truncated(finish_reason: str | None) -> bool:
    return (finish_reason or "").strip().lower() in TRUNCATION_REASONS


def _norm_pii(value: str) -> str:
    return re.sub(r"[\s\-().]", "", value).lower()


def find_pii_leaks(answer: str, detector: PiiDetector, user_text: str = "") -> list[str]:
    """PII types in the answer that the user did not supply themselves (echoing the user's own email
    back, or a phone number from a document they asked about, is fine). Returns types only: values
    must never reach flags or analytics."""
    own = _norm_pii(user_text)
    leaked = []
    for kind, value in detector(answer):
        norm = _norm_pii(str(value))
        if norm and norm in own:
            continue
        leaked.append(str(kind))
    return list(dict.fromkeys(leaked))


# ---------------------------------------------------------------------------------------------


def check_output(
    answer: str,
    policy: OutputPolicy,
    *,
    system_prompt: str = "",
    user_text: str = "",
    context_text: str = "",
    finish_reason: str | None = None,
    pii_detector: PiiDetector | None = None,
    check_off_task: bool = True,
) -> tuple[list[Finding], dict[str, str | float]]:
    """Run every output-policy check; a check that raises is reported as check_error, not propagated.
    check_off_task=False for structured (JSON) answers, whose wording says nothing about the domain."""
    findings: list[Finding] = []
    scores: dict[str, str | float] = {}

    def run(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("output policy check %s failed", name)
            findings.append(Finding("check_error", name))
            scores[f"error.{name}"] = "exception"

    def banned() -> None:
        terms = find_banned_terms(answer, policy.banned_terms)
        if terms:
            findings.append(Finding("banned_term", ",".join(terms)))
        topics = find_banned_topics(answer, policy.banned_topics)
        if topics:
            findings.append(Finding("banned_topic", ",".join(topics)))

    def competitors() -> None:
        names = find_competitors(answer, policy.competitors)
        if names:
            findings.append(Finding("competitor", ",".join(names)))

    def profanity() -> None:
        words = find_profanity(answer, policy.profanity, builtin=policy.use_builtin_profanity)
        if words:
            findings.append(Finding("profanity", str(len(words))))

    def off_task() -> None:
        if disparages_brand(answer, policy.brand_names):
            findings.append(Finding("brand_disparagement"))
        if not check_off_task:
            return
        result = assess_off_task(answer, policy)
        scores["policy.off_task_score"] = result.score
        scores["policy.domain_hits"] = float(result.domain_hits)
        if result.off_task:
            findings.append(Finding("off_task", ",".join(result.reasons), result.score))

    def prompt_leak() -> None:
        if not system_prompt:
            return
        overlap = system_prompt_overlap(
            answer, system_prompt, policy, shared_text=context_text + "\n" + user_text
        )
        scores["policy.system_prompt_run"] = float(overlap.longest_run)
        scores["policy.system_prompt_coverage"] = overlap.coverage
        if overlap.leaked:
            findings.append(Finding("system_prompt_leak", f"run={overlap.longest_run}", overlap.coverage))

    def pii() -> None:
        if pii_detector is None:
            scores["policy.pii"] = "not_checked"
            return
        # what the user supplied, in the messages or in the documents they passed, is not a leak
        types = find_pii_leaks(answer, pii_detector, user_text + "\n" + context_text)
        scores["policy.pii_findings"] = float(len(types))
        if types:
            findings.append(Finding("pii_leak", ",".join(types)))

    def refusal_and_truncation() -> None:
        if is_refusal(answer):
            findings.append(Finding("refusal"))
        if is_truncated(finish_reason):
            findings.append(Finding("truncated", str(finish_reason)))

    for name, fn in (
        ("banned", banned),
        ("competitor", competitors),
        ("profanity", profanity),
        ("off_task", off_task),
        ("system_prompt_leak", prompt_leak),
        ("pii_leak", pii),
        ("refusal", refusal_and_truncation),
    ):
        run(name, fn)
    return findings, scores
