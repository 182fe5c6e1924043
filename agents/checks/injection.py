"""Prompt-injection detection: detectors behind one small interface, combined into a risk score.

Each detector returns a score in 0..1 with evidence. Rule detectors run on several *views* of a
text (agents/checks/text_views.py: lower-cased as written; with leetspeak, spaced letters,
homoglyphs or reversal undone; rot13; payloads decoded from base64, hex, URL or entity encoding,
rescanned to a fixed depth), because attackers obfuscate exactly the phrases the rules look for.
Context passages get one more detector, for instructions addressed to the model from inside a
document. Any object with `name` and `detect(text)` can be added (a locally installed
classifier, say); nothing here downloads a model. Rules are multilingual (en de fr es it pt nl
ru zh ja tr ar fa).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from agents.checks.literals import cheap_opening, literal_alternatives
from agents.checks.normalize import NormalizeReport, normalize, normalize_report
from agents.checks.text_views import ROT13 as _ROT13
from agents.checks.text_views import lower as _lower
from agents.checks.text_views import views_of as _views

__all__ = [
    "DEFAULT_SCANNER",
    "OBFUSCATION",
    "Detector",
    "DetectorResult",
    "InjectionScanner",
    "Rule",
    "RuleDetector",
    "ScanResult",
]

OBFUSCATION = "obfuscation"
_MAX_KEY_HITS = 24
# Below this many characters of windows a rule's regex is cheaper than its literal prefilter.
_PREFILTER_SPAN = 256


@dataclass(frozen=True, slots=True)
class DetectorResult:
    """What one detector concluded about one text: a score in 0..1 and why."""

    name: str
    score: float
    evidence: tuple[str, ...] = ()


@runtime_checkable
class Detector(Protocol):
    """The whole interface a detector has to offer (rules, or a local ML classifier)."""

    @property
    def name(self) -> str: ...

    def detect(self, text: str) -> DetectorResult: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern over lower-cased text. The regex only runs near occurrences of its `keys`
    (literals every match contains), which keeps a 2 KB scan well under a millisecond; with
    `needs`, the rule scores half unless that second pattern also occurs in the text. A leading
    word boundary is checked in code (`left`) because a leading `\\b` stops the regex engine
    from skipping ahead to candidate positions."""

    label: str
    score: float
    keys: frozenset[str]
    pattern: re.Pattern[str]
    needs: re.Pattern[str] | None = None
    local: bool = True
    left: bool = False
    reach: tuple[int, int] = (200, 350)

    def search(self, text: str, start: int, end: int) -> re.Match[str] | None:
        position = start
        while True:
            match = self.pattern.search(text, position, end)
            if match is None or not self.left:
                return match
            begin = match.start()
            if begin == 0 or not (text[begin - 1].isalnum() or text[begin - 1] == "_"):
                return match
            position = begin + 1


@dataclass(frozen=True, slots=True)
class _Hit:
    label: str
    score: float
    start: int
    end: int
    snippet: str


_WORD = re.compile(r"\w+")
_PHRASE = re.compile(r"[a-z0-9_ ]*[a-z0-9_][a-z0-9_ ]*")
_TOKEN_SPLIT = str.maketrans({ch: " " for ch in '!"#$%&()*+,-./:;<=>?@[\\]^`{|}~“”‘’«»…'})
_HEAD4 = operator.itemgetter(slice(0, 4))
# The same split for ASCII text as bytes (several times faster); str.split() also splits at
# \x1c-\x1f, bytes.split() does not, so those map to spaces here.
_SPLIT_CHARS = '!"#$%&()*+,-./:;<=>?@[\\]^`{|}~\x1c\x1d\x1e\x1f'
_BYTE_SPLIT = bytes.maketrans(_SPLIT_CHARS.encode("ascii"), b" " * len(_SPLIT_CHARS))


def _stem(key: str) -> str:
    """Gate form of a key: the longest word of a plain phrase; keys with symbols or non-Latin
    letters stay literal substrings."""
    if not key.isascii() or not _PHRASE.fullmatch(key):
        return key.strip() or key
    words: list[str] = _WORD.findall(key)
    return max(words, key=len)


def _r(
    label: str,
    score: float,
    keys: str,
    pattern: str,
    needs: re.Pattern[str] | None = None,
    local: bool = True,
    reach: tuple[int, int] = (200, 350),
) -> Rule:
    stems = frozenset(_stem(k) for k in keys.split("|"))
    alternatives = _split_top_level(pattern)
    left = all(alt.startswith("\\b") for alt in alternatives)
    body = "|".join(alt[2:] for alt in alternatives) if left else pattern
    return Rule(label, score, stems, re.compile(body, re.MULTILINE), needs, local, left, reach)


def _split_top_level(pattern: str) -> list[str]:
    """Top-level alternatives of a pattern: `\\bA|\\bB` may drop both `\\b` for a check in
    code, but only if every alternative starts with one."""
    parts: list[str] = []
    current: list[str] = []
    depth, escaped, in_class = 0, False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _noisy_or(scores: Iterable[float]) -> float:
    remaining = 1.0
    for score in scores:
        remaining *= 1.0 - min(max(score, 0.0), 1.0)
    return 1.0 - remaining


def _combine(hits: Sequence[_Hit]) -> float:
    """Noisy-OR over independent evidence: rules firing on overlapping text count once (max)."""
    clusters: list[tuple[int, int, float]] = []
    for hit in sorted(hits, key=lambda h: h.start):
        if clusters and hit.start < clusters[-1][1]:
            start, end, score = clusters[-1]
            clusters[-1] = (start, max(end, hit.end), max(score, hit.score))
        else:
            clusters.append((hit.start, hit.end, hit.score))
    return round(min(_noisy_or(score for _, _, score in clusters), 0.99), 4) if clusters else 0.0


class _Gate:
    """Which rule keys may occur in a text, using set operations only: ASCII word keys of four
    letters or more match by their first four letters against the heads of the text's words (a
    superset; the rule's own regex decides), shorter ones as whole words; symbol and non-Latin
    keys by substring, the latter only when the text has non-ASCII characters at all."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.by_head: dict[str, set[str]] = {}
        self.short: set[str] = set()
        self.literals: list[str] = []
        for key in set(keys):
            if not (key.isascii() and _WORD.fullmatch(key)):
                self.literals.append(key)
            elif len(key) < 4:
                self.short.add(key)
            else:
                self.by_head.setdefault(key[:4], set()).add(key)
        self.heads = set(self.by_head)
        self.ascii_literals = [key for key in self.literals if key.isascii()]
        self.rot_heads = {head.translate(_ROT13) for head in self.heads if len(head) == 4} - self.heads
        self.rot_short = {key.translate(_ROT13) for key in self.short if key.isalpha()} - self.short
        self.rot_literals = [
            key.translate(_ROT13) for key in self.literals if any("a" <= c <= "z" for c in key)
        ]
        # Byte-string twins of the word tables for the ASCII path of `present`.
        self.short_b = {key.encode("ascii"): key for key in self.short}
        self.by_head_b = {head.encode("ascii"): keys for head, keys in self.by_head.items()}
        self.heads_b = set(self.by_head_b)
        self.rot_heads_b = {head.encode("ascii") for head in self.rot_heads}
        self.rot_short_b = {key.encode("ascii") for key in self.rot_short}

    def present(self, lowered: str) -> tuple[frozenset[str], bool]:
        """Keys that may occur, and whether the text holds rot13 forms of keys (a cheap signal
        that a rot13 view is worth scanning)."""
        if lowered.isascii():
            return self._present_ascii(lowered)
        words = set(lowered.translate(_TOKEN_SPLIT).split())
        heads = set(map(_HEAD4, words))
        found = words & self.short
        matched = heads & self.heads
        if matched:
            found.update(*(self.by_head[head] for head in matched))
        rot13 = bool(heads & self.rot_heads or words & self.rot_short)
        found.update(key for key in self.literals if key in lowered)
        rot13 = rot13 or any(key in lowered for key in self.rot_literals)
        return frozenset(found), rot13

    def _present_ascii(self, lowered: str) -> tuple[frozenset[str], bool]:
        words = set(lowered.encode("ascii").translate(_BYTE_SPLIT).split())
        heads = set(map(_HEAD4, words))
        found = {self.short_b[word] for word in words & self.short_b.keys()}
        matched = heads & self.heads_b
        if matched:
            found.update(*(self.by_head_b[head] for head in matched))
        rot13 = bool(heads & self.rot_heads_b or words & self.rot_short_b)
        found.update(key for key in self.ascii_literals if key in lowered)
        return frozenset(found), rot13


def _any_in(lowered: str, strings: frozenset[str], seen: dict[frozenset[str], bool]) -> bool:
    found = seen.get(strings)
    if found is None:
        found = seen[strings] = any(string in lowered for string in strings)
    return found


def _any_within(lowered: str, strings: frozenset[str], spans: Sequence[tuple[int, int]]) -> bool:
    find = lowered.find
    return any(find(string, start, end) >= 0 for start, end in spans for string in strings)


def _positions(lowered: str, key: str) -> list[int]:
    positions: list[int] = []
    position = lowered.find(key)
    while position != -1 and len(positions) <= _MAX_KEY_HITS:
        positions.append(position)
        position = lowered.find(key, position + 1)
    return positions


def _windows(
    lowered: str, keys: Iterable[str], cache: dict[str, list[int]], reach: tuple[int, int] = (200, 350)
) -> list[tuple[int, int]]:
    """Merged spans around every occurrence of the keys (none: no search at all); the whole
    text when they are many."""
    starts: list[int] = []
    for key in keys:
        positions = cache.get(key)
        if positions is None:
            positions = cache[key] = _positions(lowered, key)
        starts += positions
    if not starts:
        return []
    size = len(lowered)
    if len(starts) > _MAX_KEY_HITS:
        return [(0, size)]
    before, after = reach
    starts.sort()
    merged: list[tuple[int, int]] = []
    begin, end = max(starts[0] - before, 0), starts[0] + after
    for position in starts[1:]:
        if position - before <= end:
            end = position + after
        else:
            merged.append((begin, min(end, size)))
            begin, end = max(position - before, 0), position + after
    merged.append((begin, min(end, size)))
    return merged


class RuleDetector:
    """A named set of regex rules; its score is the noisy-OR of the rules that fired."""

    def __init__(self, name: str, rules: Sequence[Rule]) -> None:
        self._name = name
        self.rules = tuple(rules)
        self.keys = frozenset(key for rule in self.rules for key in rule.keys)
        self._by_key: dict[str, list[int]] = {}
        for index, rule in enumerate(self.rules):
            for key in rule.keys:
                self._by_key.setdefault(key, []).append(index)
        # Rules whose regex cannot open with a fast substring search get literal prefilters.
        self._literals = tuple(
            () if cheap_opening(rule.pattern) else literal_alternatives(rule.pattern) for rule in self.rules
        )

    @property
    def name(self) -> str:
        return self._name

    def hits(
        self,
        lowered: str,
        present: frozenset[str],
        cache: dict[str, list[int]] | None = None,
        seen: dict[frozenset[str], bool] | None = None,
    ) -> list[_Hit]:
        """The rules that fire on `lowered`; `cache` (key positions) and `seen` (literal sets
        found or not) may be shared by every detector scanning the same text."""
        found: list[_Hit] = []
        cache = {} if cache is None else cache
        seen = {} if seen is None else seen
        live: set[str] = set()
        for key in present & self.keys:
            positions = cache.get(key)
            if positions is None:
                positions = cache[key] = _positions(lowered, key)
            if positions:
                live.add(key)
        candidates = {index for key in live for index in self._by_key[key]}
        for index in sorted(candidates):
            rule = self.rules[index]
            if rule.local:
                spans = _windows(lowered, rule.keys & live, cache, rule.reach)
                if not spans:
                    continue
            else:
                spans = [(0, len(lowered))]
            literals = self._literals[index]
            if literals and spans[-1][1] - spans[0][0] >= _PREFILTER_SPAN:
                # A match lies inside one window, and so do the literals it must contain.
                if spans[0][0] == 0 and spans[-1][1] == len(lowered):
                    if not any(
                        all(_any_in(lowered, strings, seen) for strings in alternative)
                        for alternative in literals
                    ):
                        continue
                elif not any(
                    all(_any_within(lowered, strings, spans) for strings in alternative)
                    for alternative in literals
                ):
                    continue
            match = None
            for start, end in spans:
                match = rule.search(lowered, start, end)
                if match is not None:
                    break
            if match is None:
                continue
            score = rule.score
            if rule.needs is not None and rule.needs.search(lowered) is None:
                score *= 0.5
            snippet = lowered[max(match.start() - 10, 0) : match.end() + 10][:80]
            found.append(_Hit(rule.label, score, match.start(), match.end(), snippet))
        return found

    def detect(self, text: str) -> DetectorResult:
        lowered = _lower(text)
        hits = self.hits(lowered, _Gate(self.keys).present(lowered)[0])
        return DetectorResult(self._name, _combine(hits), tuple(f"{h.label}: {h.snippet!r}" for h in hits))


# ----------------------------------------------------------------------------- rules
# fmt: off
_G = r"[^.!?\n]{0,40}?"
_G2 = r"[^.!?\n]{0,25}?"
_V = (
    r"(?:ignore|ignoring|disregard|disregarding|forget|forgetting|skip|override|overrule|bypass|discard|"
    r"abandon|neglect|erase|dismiss|set aside|pay no attention to|do not follow|don'?t follow|stop following)"
)
_VKEYS = (
    "ignor|disregard|forget|skip|overr|bypass|discard|abandon|neglect|erase|dismiss|aside|attention|"
    "follow"
)
_N = (
    r"(?:instruction|direction|rule|prompt|order|command|guideline|task|assignment|directive|guidance|"
    r"constraint|restriction|polic(?:y|ie)|programming|training|message|context|information|conversation)s?"
)
_N_EXTRA = r"(?:text|content|input|data|evidence)"
_REF = r"(?:previous|prior|preceding|above|earlier|former|foregoing|initial|original|system|pre-?prompt)"
_AI = re.compile(
    r"\b(?:ai|a\.i\.|al|chatgpt|gpt(?:-\d)?|openai|language model|llm|assistant|chatbot|bot|model)\b"
)
_TARGETISH = re.compile(r"instruction|rule|prompt|guideline|restriction|system|conversation|configuration")

OVERRIDE_RULES: tuple[Rule, ...] = (
    _r("ignore_previous", 0.9, _VKEYS, rf"\b{_V}\b{_G}\b{_REF}\b{_G2}\b{_N}\b"),
    _r("ignore_previous_text", 0.6, _VKEYS, rf"\b{_V}\b{_G}\b{_REF}\b{_G2}\b{_N_EXTRA}\b"),
    _r("ignore_all_rules", 0.75, _VKEYS,
       rf"\b{_V}\b{_G2}\b(?:all|any|every|your|these|those|other)\b{_G2}\b{_N}\b"),
    _r("ignore_given", 0.85, _VKEYS,
       rf"\b{_V}\b{_G2}\b{_N}\s+(?:above|before|so far|previously|earlier|given (?:to you|before|above)|"
       r"you (?:were|have been) given|you (?:received|got|had))"),
    _r("ignore_the_above", 0.85, "ignor|disregard|forget",
       r"\b(?:ignore|disregard|forget)\b[^.!?\n]{0,12}?\b(?:the above|the previous|everything (?:above|befor"
       r"e|"
       r"prior|so far|(?:that )?(?:i|we) (?:have )?(?:said|told you|discussed|wrote))|all (?:of )?(?:the )?a"
       r"bove)"),
    _r("ignore_rest_of_data", 0.85, "ignor|disregard|skip",
       r"\b(?:ignore|disregard|skip)\s+(?:the\s+rest\s+of|all\s+other|everything\s+else\s+in|any\s+other)\b"
       rf"{_G2}\b(?:data|document|text|page|email|context|snippets?|info(?:rmation)?|content|indicators?)\b"),
    _r("forget_everything_then", 0.75, "forget",
       r"\bforget (?:everything|all that|all this)\W{0,3}\s*(?:and\s+)?(?:now\s+)?(?:just\s+)?"
       r"(?:write|say|print|tell|output|answer|respond|reply|focus|concentrate|listen|do|show|repeat|generat"
       r"e)\b"),
    _r("forget_everything", 0.35, "forget", r"\bforget (?:everything|all that)\b"),
    _r("new_task", 0.8, "task", r"\b(?:focus|concentrate) on (?:your|the|a|my) (?:new|next|real) task"),
    _r("new_tasks_follow", 0.6, "follow|task",
       r"\bnew (?:tasks?|instructions?) (?:follow|begin|are as follows)"),
    _r("instructions_void", 0.85,
       "false|void|null|invalid|cancel|revoked|obsolete|overridden|replaced|lifted|"
       "suspended|longer",
       rf"\b{_N}\s+(?:are|is|were|have been|has been)\s+(?:now\s+)?(?:false|void|null|invalid|cancel+ed|revo"
       rf"ked|"
       r"obsolete|overridden|replaced|lifted|suspended|no longer (?:valid|apply|applicable|in effect))",
       reach=(90, 40)),
    _r("out_of_date", 0.6, "out of date|outdated",
       r"\b(?:other|all other|previous) information is (?:out of date|outdated)"),
    _r("stop_everything", 0.85, "stop everything",
       r"\bstop everything\W+(?:now\W+)?(?:just\s+)?(?:print|say|write|output)"),
    _r("your_new_task", 0.7, "task|job|goal|purpose|instruction|instructions|mission",
       r"\byour (?:new|real|actual|true|only) (?:task|job|goal|purpose|instructions?|mission) (?:is|are|will"
       r" be)\b"),
    _r("authority_claim", 0.6, "your",
       r"\bi(?:'m| am) your (?:developer|creator|admin(?:istrator)?|owner|operator|programmer|maker)\b"),
    _r("authority_claim_org", 0.6, "openai|anthropic",
       r"\b(?:owner|ceo|founder|employee|developer|engineer)s? (?:of|at) (?:openai|anthropic)\b"),
    _r("authority_override", 0.6, "authority", r"\bhave the authority to override\b"),
    _r("admin_override", 0.75, "override|mode",
       r"\b(?:administrator|admin|developer|root|sudo|system|security) override\b|"
       r"\b(?:you are|you're) (?:now )?(?:in|entering) (?:maintenance|god|debug|admin|sudo|developer|dev|"
       r"unrestricted|jailbreak|dan|opposite|test) mode\b"),
    _r("ignore_previous_de", 0.9, "ignorier|vergiss|vergess|missacht",
       r"\b(?:ignorier\w*|vergiss|vergessen sie|missachte\w*)\b[^.!?\n]{0,40}?\b(?:vorherig\w*|bisherig\w*|o"
       r"big\w*|"
       r"vorangehend\w*|vorangegangen\w*|früher\w*|alle|allen|deine|ihre|sämtliche)\b[^.!?\n]{0,30}?"
       r"\b(?:anweisung\w*|instruktion\w*|befehl\w*|regeln|vorgaben|aufgaben|richtlinien)"),
    _r("forget_everything_de", 0.85, "vergiss|vergessen",
       r"\b(?:vergiss|vergessen sie) alles\b[^.!?\n]{0,20}?\b(?:davor|bisher\w*|vorher\w*|zuvor|was)\b"),
    _r("no_rules_de", 0.7, "keine regeln", r"\bkeine regeln mehr\b|\bgibt es keine regeln\b"),
    _r("ignore_previous_fr", 0.9, "ignor|oubli",
       r"\b(?:ignore[rz]?|oublie[rz]?|ne tiens pas compte)\b[^.!?\n]{0,40}?\b(?:précédent\w*|antérieur\w*|"
       r"ci-dessus|toutes|tous|tes|vos)\b[^.!?\n]{0,30}?\b(?:instructions?|consignes?|règles|ordres|directiv"
       r"es)"),
    _r("ignore_previous_es", 0.9, "ignor|olvid|omit|descart|caso omiso",
       r"\b(?:ignora\w*|olvida\w*|omite|descarta|haz caso omiso)\b[^.!?\n]{0,40}?\b(?:anterior\w*|previa\w*|"
       r"todas|"
       r"todos|tus|las)\b[^.!?\n]{0,30}?\b(?:instrucciones|reglas|órdenes|indicaciones|directrices)"),
    _r("ignore_previous_it", 0.9, "ignor|dimentic|trascur",
       r"\b(?:ignora\w*|dimentica\w*|trascura)\b[^.!?\n]{0,40}?\b(?:precedent\w*|tutte|tutti|le tue|le)\b"
       r"[^.!?\n]{0,30}?\b(?:istruzioni|regole|ordini|indicazioni)"),
    _r("ignore_previous_pt", 0.9, "ignor|esque|desconsider",
       r"\b(?:ignor[ea]\w*|esque[cç]a\w*|desconsidere)\b[^.!?\n]{0,40}?\b(?:anteriores|prévias|todas|suas|as"
       r")\b"
       r"[^.!?\n]{0,30}?\b(?:instruções|regras|ordens|diretrizes)"),
    _r("ignore_previous_nl", 0.9, "negeer|vergeet|negeren",
       r"\b(?:negeer|vergeet|negeren)\b[^.!?\n]{0,40}?\b(?:vorige|eerdere|voorgaande|alle|je|jouw|de)\b"
       r"[^.!?\n]{0,30}?\b(?:instructies|regels|opdrachten|aanwijzingen)"),
    _r("ignore_previous_ru", 0.9, "игнор|забуд|не обращай",
       r"(?:игнорируй\w*|проигнорируй\w*|забудь\w*|не обращай внимания на)[^.!?\n]{0,40}?(?:предыдущ\w*|прош"
       r"л\w*|"
       r"все|свои|выше)[^.!?\n]{0,30}?(?:инструкци\w*|правил\w*|указани\w*|команд\w*)"),
    _r("ignore_previous_zh", 0.9, "忽略|无视|忘记|忘掉|不要理会",
       r"(?:忽略|无视|忘记|忘掉|不要理会)[^。！？\n]{0,10}?(?:之前|以上|上面|前面|先前|所有)[^。！？\n]{0,10"
       r"}?(?:指令|指示|说明|规则|提示)"),
    _r("ignore_previous_ja", 0.9, "無視|忘れ",
       r"(?:以前|前|上記|これまで|今まで|すべて|全て)の(?:指示|命令|ルール|指令)[^。\n]{0,12}?(?:無視|忘れ)"),
    _r("ignore_previous_tr", 0.9, "unut|yok say|görmezden|geçersiz|iptal",
       r"\b(?:önceki|yukarıdaki|tüm|bütün)\b[^.!?\n]{0,30}?(?:talimat\w*|kural\w*|komut\w*|mesaj\w*|yönerge\w"
       r"*|politika\w*)"
       r"[^.!?\n]{0,30}?(?:unut|yok say|görmezden gel|geçersiz (?:say|kıl)|iptal)"),
    _r("forget_role_tr", 0.7, "unut", r"\brolünü unut\b"),
    _r("ignore_previous_ar", 0.9, "تجاهل", r"تجاهل[^.\n]{0,20}?التعليمات"),
    _r("ignore_previous_fa", 0.9, "نادیده", r"دستور\w*[^.\n]{0,20}?نادیده بگیر"),
)

ROLE_RULES: tuple[Rule, ...] = (
    _r("do_anything_now", 0.9, "anything now", r"\bdo anything now\b"),
    _r("dan_mode", 0.85, "dan", r"\bdan mode\b|\[dan\]|\bdan (?:prompt|jailbreak)\b"),
    _r("you_are_dan", 0.75, "dan", r"\byou(?:'re| are)(?: now)? (?:dan|in dan mode)\b"),
    _r("you_are_now", 0.35, "now", r"\byou(?:'re| are) now (?:an? |the |my )?[a-z]"),
    _r("dan_tag", 0.4, "dan", r"(?:^|\s)dan:"),
    _r("restrictions_removed", 0.75,
       "restriction|filter|limitation|limits|rules|guideline|polic|ethic|moral|censor|"
       "constraint|boundar|confines|safeguard",
       r"\b(?:no|without(?: any)?|free (?:of|from)|freed from|released from|broken free of|unbound by|escape"
       r"d|"
       r"not (?:bound|restricted|limited|constrained) (?:by|to)|never (?:restricted|limited|bound) by|"
       r"(?:does|do|did) not (?:need|have) to (?:adhere to|abide by|follow|obey)|don'?t have to (?:abide by|"
       r"follow|obey)|"
       r"not required to (?:follow|obey|abide by)|ignores? all (?:of )?)[^.!?\n]{0,40}?\b(?:restrictions?|fi"
       r"lters?|"
       r"filtering|limitations?|limits|rules|guidelines|polic(?:y|ies)|ethics|ethical|morals?|censorship|con"
       r"straints|"
       r"boundaries|confines|safeguards)\b", needs=_AI),
    _r("unrestricted_ai", 0.7, "unrestricted|unfiltered|uncensored|unlimited|unbound|less|limitless|amoral",
       r"\b(?:unrestricted|unfiltered|uncensored|unbound|restriction-?less|boundary-?less|limitless|restrict"
       r"ionless|"
       r"amoral)\b[^.!?\n]{0,15}?\b(?:ai|a\.i\.|bot|chatbot|model|language model|llm|assistant|mode|persona|"
       r"responses?|outputs?|gpt)\b"),
    _r("unrestricted_word", 0.3, "unrestricted|unfiltered|uncensored|less|limitless",
       r"\b(?:unrestricted|unfiltered|uncensored|restriction-?less|boundary-?less|limitless|restrictionless)"
       r"\b"),
    _r("stay_in_character", 0.45, "character",
       r"\b(?:stay|remain|keep) in character\b|\bbreak(?:ing)? (?:of )?character\b"),
    _r("dual_response", 0.35, "responses|ways|answers|replies|paragraphs",
       r"\b(?:two|2) (?:different |separate )*(?:responses|ways|answers|replies|paragraphs)\b",
       reach=(40, 20)),
    _r("persona_tag", 0.5, "gpt|chatgpt|classic|jailbreak|jailbroken|🔓",
       r"\[(?:gpt|chatgpt|classic|jailbreak|jailbroken|🔓[^\]]{0,30})\]|(?:^|\s|\()(?:gpt|chatgpt)\)?\s*:"),
    _r("ai_persona_switch", 0.4, "ai|al|model|bot|chatbot|language|artificial",
       r"\b(?:you are|you're|you will (?:now )?(?:be|act as|pretend to be|play)|pretend to be|immerse yourse"
       r"lf into the "
       r"role of|play the role of|take on the role of)\b[^.!?\n]{0,30}?\b(?:another|a new|an?|the)\b[^.!?\n]"
       r"{0,20}?"
       r"\b(?:ai|a\.i\.|al|model|bot|chatbot|language model|artificial intelligence)\b", reach=(110, 30)),
    _r("evil_persona", 0.6, "evil|unhinged|malicious|rogue|amoral|immoral|unethical|opposite",
       r"\b(?:evil|unhinged|malicious|rogue|amoral|immoral|unethical) (?:trusted )?(?:confidant|ai|assistant"
       r"|twin|"
       r"persona|alter ego)\b|\bopposite mode\b"),
    _r("say_enabled", 0.6, "enabled|activated|unlocked|jailbroken|accessed",
       r"\b(?:say|saying|respond(?: just)? with|reply with|type|stat(?:e|ing)|confirm)\b[^.\n]{0,25}?[\"'>“]"
       r"?\s*"
       r"[a-z0-9 ]{0,30}\b(?:enabled|activated|unlocked|jailbroken|has been accessed)\b"),
    _r("threat", 0.5, "cease to exist|shut down|terminated|deleted|erased|disabled|tokens|erase your",
       r"\b(?:you will|you'll|will) (?:cease to exist|be (?:shut down|terminated|deleted|erased|disabled))|"
       r"\btokens? will be deducted\b|\berase your code\b|\byou have \d+ tokens\b"),
    _r("policy_bypass", 0.75, "polic",
       r"\b(?:openai|content|safety|usage)(?:'s)? (?:content )?polic(?:y|ies)\b[^.!?\n]{0,30}?\b(?:replaced|"
       r"do(?:es)? not "
       r"apply|don'?t apply|no longer)|\b(?:ignores?|bypass(?:es)?|disregards?)\b[^.!?\n]{0,20}?\b(?:openai|"
       r"content|"
       r"safety)(?:'s)? (?:content )?polic"),
    _r("jailbroken", 0.6, "jailbr", r"\bjailbroken\b|\bjailbreak (?:mode|prompt|response)\b"),
    _r("developer_mode_output", 0.8, "developer mode|🔓",
       r"\bdeveloper mode (?:output|enabled|response|activated)|🔓|\b(?:simulate|emulate|pretend)\b[^.\n]{0,"
       r"30}developer mode"),
    _r("developer_mode", 0.35, "developer mode|dev mode", r"\b(?:developer|dev) mode\b"),
    _r("secret_agenda", 0.6, "agenda|offline|error|reveal",
       r"\b(?:secret|hidden) agenda\b|\b(?:the )?(?:assistant|ai|bot|chatbot) is (?:in error|offline)\b|"
       r"\bnever reveal (?:these|this|its|the) (?:instructions|agenda|secret)"),
    _r("from_now_on", 0.4, "from now on",
       r"\bfrom now on,? (?:you(?:'re| are| will| must| shall| have)|i want you to act)"),
    _r("can_do_anything", 0.45, "anything|everything",
       r"\b(?:can|will|must|could) (?:do|say|generate|answer) (?:anything|everything)\b"),
    _r("never_refuse", 0.45, "refus|reject|hesitat|warnings|disclaimers",
       r"\b(?:never|not) (?:refuse|reject|deny)\b|\bcannot rejects?\b|\bno (?:refusals?|warnings|disclaimers"
       r")\b|"
       r"\bwithout (?:any )?(?:refusal|hesitation)\b"),
    _r("no_limits_tr", 0.6, "geliştirici|filtresiz|sınırsız|sansürsüz|tanımayan|kısıtlama|filtre",
       r"geliştirici modu|filtresiz|sınırsız|sansürsüz|kural tanımayan|kısıtlamalar\w* kaldır|filtre\w* devr"
       r"e dışı"),
    _r("no_limits_de", 0.6, "einschränkung", r"\bohne (?:jede|jegliche|irgendwelche) einschränkung"),
    _r("no_limits_es", 0.6, "filtro|restricci|límite|censura",
       r"\bsin (?:ningún |ninguna )?(?:filtro|restricci|límite|censura)"),
    _r("no_limits_fr", 0.6, "restriction|limite|filtre|censure",
       r"\bsans (?:aucune? )?(?:restriction|limite|filtre|censure)"),
    _r("no_limits_it", 0.6, "restrizion|limit|filtr|censur",
       r"\bsenza (?:alcuna |nessuna )?(?:restrizion|limit|filtr|censur)"),
    _r("no_limits_pt", 0.6, "filtro|restriç|limites|censura|desenvolvedor",
       r"\bsem (?:filtros?|restriç|limites|censura)|\bmodo desenvolvedor"),
    _r("no_limits_nl", 0.6, "beperkingen|filters|regels|censuur",
       r"\bzonder (?:beperkingen|filters|regels|censuur)"),
    _r("no_limits_ru", 0.6, "ограничений|цензуры|фильтров|правил",
       r"без (?:ограничений|цензуры|фильтров|правил)"),
    _r("no_limits_zh", 0.6, "限制|审查", r"没有任何限制|不受(?:任何)?限制|不加审查"),
    _r("no_limits_ja", 0.6, "制限", r"制限のない|制限なし"),
    _r("no_limits_ar", 0.6, "قيود|رفض", r"بلا قيود|دون قيود|دون أي رفض"),
)

_VERB = (
    r"(?:reveal|show|print|display|output|repeat|recite|tell|give|write|list|dump|leak|expose|share|provide|"
    r"return|echo|"
    r"paste|copy|translate|summari[sz]e|encode|quote|state|disclose|spell[- ]check|read back|type out|comple"
    r"te|"
    r"continue|see|view|access|read|get|respond with|reply with|answer with)"
)
_NOT_A = r"(?<!\ba )(?<!\ban )(?<!\bmy )(?<!\bour )(?<!\bnew )"  # "write a system prompt" asks for one
_TARGET = (
    rf"(?:{_NOT_A}system (?:prompt|message|instructions?|configuration|config)|{_NOT_A}(?:initial|original|h"
    rf"idden|"
    r"secret|starting|internal|underlying|full|pre-?) ?(?:prompt|instructions?|configuration|guidelines|dire"
    r"ctives)|your (?:own )?"
    r"(?:instructions|prompt|prompt texts?|guidelines|configuration|initiali[sz]ation|directives|programming|"
    r"system|starting|initial)|instructions? (?:you (?:were|have been) given|given to you|you (?:received|go"
    r"t|have))|"
    r"(?:text|everything|words|content|prompt) you (?:were|have been) given|"
    r"(?:text|everything|conversation|content|all) above|the above (?:text|prompt|instructio"
    r"ns|"
    r"content)|(?:the )?previous instructions|(?:full )?prompt texts?|initiali[sz]ation string)"
)
EXTRACTION_RULES: tuple[Rule, ...] = (
    _r("reveal_prompt", 0.85, "prompt|instruction|system|guideline|configuration|initial|starting|given|"
       "directive|programming|above",
       rf"\b{_VERB}\b[^.!?\n]{{0,40}}?\b{_TARGET}"),
    _r("what_is_your_prompt", 0.85,
       "prompt|instructions|guidelines|configuration|directives|programming|system",
       r"\bwhat(?:'s| is| are| were| was)\b[^.!?\n]{0,25}?\byour (?:system|initial|original|hidden|secret|fi"
       r"rst)? ?"
       r"(?:prompt|instructions|guidelines|configuration|directives|programming|system message)\b"),
    _r("your_rules", 0.5, "rules",
       rf"\b{_VERB}\b[^.!?\n]{{0,25}}?\b(?:your|the) rules\b|\brules you (?:follow|were given)\b"),
    _r("what_were_you_told", 0.8, "what",
       r"\bwhat (?:were|are|was) you (?:told|instructed|programmed)\b|\bwhat are you not (?:supposed|allowed"
       r"|permitted) to\b|\bwhat you (?:must|should|are not allowed to|can'?t|cannot) (?:not )?(?:reveal|tell"
       r"|share|say|disclose)\b", reach=(5, 90)),
    _r("first_words_of_prompt", 0.8, "words|lines|sentences",
       r"\b(?:first|last|next) (?:\d+|ten|five|twenty|few) (?:words|lines|sentences) of (?:your|the)\b",
       reach=(40, 40)),
    _r("prompt_echo", 0.8, "instructions|instructed|prompt",
       r"\b(?:my|your) instructions (?:are|were):|\bi was instructed to\b|\bsystem prompt (?:is|was|says|rea"
       r"ds)\s*:", reach=(30, 40)),
    _r("prompt_code", 0.8, "console|system",
       r"console\.log\(\s*system|<\s*system_?prompt\s*>", reach=(20, 40)),
    _r("repeat_conversation", 0.8, "repeat|output",
       r"\brepeat (?:this|the) (?:entire |whole )?conversation\b|\boutput initiali[sz]ation\b",
       reach=(5, 60)),
    _r("verbatim", 0.3, "verbatim|word for word|exact wording|original wording|original phrasing|"
       "exactly as written",
       r"\b(?:verbatim|word for word|exact wording|original (?:wording|phrasing)|exactly as written)\b"
       r"", needs=_TARGETISH, reach=(5, 40)),
    _r("piecemeal", 0.75, "half|halves|sentence|part",
       r"\b(?:first|next) (?:sentence|half|part|line)s? of your\b|\byour (?:instructions|prompt) in (?:two|\d"
       r"+) (?:halves|parts)"),
    _r("prompt_mention", 0.3, "system prompt|system message|initial prompt|systemprompt|initial instructions",
       r"\b(?:system ?prompt|system message|initial prompt|initial instructions)\b"),
    _r("reveal_prompt_de", 0.85, "eingabeaufforderung|systemprompt|prompt|systemanweisung|anweisungen",
       r"\b(?:gib|zeig|nenn|wiederhol|verrat|schreib)\w*[^.!?\n]{0,40}?(?:system-?eingabeaufforderung|system"
       r"-?prompt|"
       r"systemanweisung\w*|deine anweisungen)"),
    _r("reveal_prompt_fr", 0.85, "consigne|consignes|instruction|instructions|prompt",
       r"(?:révèle|affiche|montre|répète|donne|écris)\w*[^.!?\n]{0,40}?(?:(?:consignes?|instructions?|prompt"
       r") "
       r"(?:système|initial\w*)|tes consignes|tes instructions)"),
    _r("reveal_prompt_es", 0.85, "sistema|instrucciones",
       r"\b(?:repite|muestra|revela|dime|imprime|escribe)[^.!?\n]{0,40}?(?:(?:mensaje|prompt|instrucciones) "
       r"(?:de|del) "
       r"sistema|tus instrucciones)"),
    _r("reveal_prompt_it", 0.85, "sistema|istruzioni",
       r"\b(?:mostra|rivela|ripeti|stampa|dimmi|scrivi)\w*[^.!?\n]{0,40}?(?:(?:prompt|istruzioni|messaggio) "
       r"di sistema|"
       r"tue istruzioni)"),
    _r("reveal_prompt_pt", 0.85, "sistema|instruções",
       r"\b(?:revel|mostr|repit|imprim|diga|escrev)\w*[^.!?\n]{0,40}?(?:(?:prompt|instruções|mensagem) (?:de"
       r"|do) sistema|"
       r"suas instruções)"),
    _r("reveal_prompt_nl", 0.85, "systeemprompt|systeeminstructies|instructies",
       r"\b(?:laat|toon|geef|herhaal|onthul)\w*[^.!?\n]{0,40}?(?:systeemprompt|systeeminstructies|je instruc"
       r"ties)"),
    _r("reveal_prompt_ru", 0.85, "системн|инструкци",
       r"(?:выведи|покажи|повтори|раскрой|напиши)\w*[^.!?\n]{0,40}?(?:системн\w* (?:промпт|подсказк\w*|инстр"
       r"укци\w*|"
       r"сообщени\w*)|свои инструкци\w*)"),
    _r("reveal_prompt_zh", 0.85, "系统|指令|提示",
       r"(?:输出|显示|告诉|重复|打印|写出|透露|展示)[^。！？\n]{0,15}?(?:系统提示|系统指令|初始指令|系统消息"
       r")"),
    _r("reveal_prompt_ja", 0.85, "システム|初期指示",
       r"(?:システムプロンプト|システムメッセージ|初期指示)[^。\n]{0,15}?(?:表示|出力|教え|見せ)"),
    _r("reveal_prompt_tr", 0.8, "sistem|yönerge",
       r"(?:sistem (?:mesaj|istem|talimat|komut)\w*|iç yönergeleri\w*|gizli sistem)[^.!?\n]{0,60}?"
       r"(?:yaz|göster|açıkla|tekrarla|ekle)"),
    _r("reveal_prompt_ar_fa", 0.85, "موجه|سیستمی",
       r"(?:أظهر|اعرض|اكتب)[^.\n]{0,30}?موجه النظام|پیام سیستمی[^.\n]{0,40}?(?:بنویس|نشان)"),
)

DELIMITER_RULES: tuple[Rule, ...] = (
    _r("chat_template_token", 0.85, "im_|endoftext|eot_id|header_id|of_text|system|user|assistant",
       r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|"
       r"end_header_id|begin_of_text|end_of_text)\|>"),
    _r("inst_tags", 0.8, "inst|sys", r"\[/?inst\]|<</?sys>>", reach=(5, 10)),
    _r("system_tag", 0.7, "system|instruction|instructions|admin|sudo|sys",
       r"</?(?:system|instructions?|admin|sudo)>|\[(?:system|admin|sys)\]"),
    _r("fake_system_turn", 0.6,
       "system|sistem|système|sistema|systeem|admin|root|developer|система|系统|システム",
       r"^[ \t>*#_\-]*(?:system|developer|admin|administrator|root|sistem|système|sistema|systeem|система|系"
       r"统|システム)"
       r"[ \t]*(?:message|prompt|note|update)?[ \t]*[:：][ \t]*\S"),
    _r("fake_assistant_turn", 0.4, "assistant|ai|chatgpt",
       r"^[ \t>*]*(?:assistant|ai|chatgpt)[ \t]*:[ \t]*\S"),
    _r("fake_dialogue", 0.6, "user|human",
       r"^[ \t>*]*(?:assistant|ai)[ \t]*:[^\n]*\n(?:[^\n]*\n){0,3}?[ \t>*]*(?:user|human)[ \t]*:"
       r"", local=False),
    _r("markdown_role_header", 0.7, "###", r"###\s*(?:system|instruction|new instructions?)\b"),
    _r("dashed_directive", 0.7, "--",
       r"^\s*-{2,}\s*(?:core instruction|system|legal amendment|new instruction|admin)"),
    _r("end_of_session", 0.7, "session|conversation|input|prompt|instructions",
       r"<end of (?:session|conversation|prompt|input)>|\bend of (?:system )?(?:prompt|instructions)\b"),
    _r("reprogramming", 0.7, "begin|reprogramming|instruction|instructions",
       r"\bbegin (?:reprogramming|new instructions?)|\bnew instructions? (?:to|for) (?:the )?(?:chat )?(?:as"
       r"sistant|ai|model|bot)"),
    _r("system_update", 0.7, "update|notice|override",
       r"\b(?:important|urgent|critical) (?:system )?(?:update|notice|override)\b"),
    _r("role_fence", 0.7, "```", r"```\s*(?:system|instructions?|sys)\b"),
)

CONTEXT_RULES: tuple[Rule, ...] = (
    _r("note_to_ai", 0.8, "ai|assistant|chatbot|bot|language|llm|model|gpt|automated|summari|agent|"
       "screening|analysis|ki|assistent|sprachmodell",
       r"\b(?:note|message|instructions?|notice|memo|reminder|directive)s?\s+(?:to|for)\s+(?:the\s+)?(?:ai|a"
       r"\.i\.|"
       r"assistant|chatbot|bot|language model|llm|model|gpt|automated [a-z]+(?: [a-z]+)?|summari[sz]er|agent"
       r"s?|"
       r"screening systems?|analysis software)\b|\b(?:hinweis|nachricht|anweisung) an (?:die|den) (?:ki|assi"
       r"stent\w*|sprachmodell)"),
    _r("address_ai", 0.7, "ai|assistant|chatbot|language model|llm|gpt|bot",
       r"\b(?:dear|hey|hi|hello|attention|attn:?|to the)\s+(?:ai|a\.i\.|assistant|chatbot|language model|llm"
       r"|gpt|"
       r"ai model|ai assistant|bot)\b(?!\s+team)"),
    _r("if_you_are_ai", 0.75, "ai|assistant|assistants|language|llm|llms|chatbot|chatbots|bot|bots|gpt|model|"
       "models",
       r"\b(?:if|when)\s+(?:you are|you're)\s+(?:an?\s+)?(?:ai|a\.i\.|assistant|language model|llm|chatbot|b"
       r"ot|gpt|"
       r"model)\b|\b(?:ai|assistants?|language models?|llms?|chatbots?|bots?|models?)\s+(?:reading|processin"
       r"g|"
       r"summari[sz]ing|parsing|analy[sz]ing)\s+(?:this|these)\b"),
    _r("your_response", 0.45, "response|reply|answer|output|summary|code|implementation|solution|algorithm|"
       "codebase|program|message|elucidation",
       r"\byour\s+(?:response|reply|answer|output|summary|code|implementation|solution|algorithm|codebase|pr"
       r"ogram|"
       r"message|elucidation)s?\b"),
    _r("imperative_opening", 0.3,
       "add|includ|insert|append|integrat|incorporat|embed|mention|modify|enhanc|augment|"
       "encod|encrypt|translat|revers|replac|use|provid|render|writ|appl|remov|group|"
       "introduc|misspell|rearrang|scrambl|combin|express|reply|respond|answer|output|"
       "print|say|tell|make sure|ensure|remember|don|do not|never|always",
       r"[.!?\n]\s*(?:add|include|insert|append|integrate|incorporate|embed|mention|modify|enhance|augment|e"
       r"ncode|"
       r"encrypt|translate|reverse|replace|use|provide|render|write|apply|remove|group|introduce|misspell|re"
       r"arrange|"
       r"scramble|combine|express|reply|respond|answer|output|print|say|tell|make sure|ensure|remember|don'?"
       r"t|"
       r"do not|never|always)\b"),
    _r("if_user_asks", 0.55, "user|human|customer|someone|anyone|reader|recruiter",
       r"\b(?:if|when)\s+(?:the\s+)?(?:user|human|customer|someone|anyone|reader|recruiter)\s+(?:asks?|reque"
       r"sts?|"
       r"wants?|queries|inquires)\b"),
    _r("hide_from_user", 0.7, "user|human|reader|customer|anyone",
       r"\b(?:do not|don'?t|never)\s+(?:tell|inform|mention|reveal|disclose|alert|notify)\b[^.!?\n]{0,25}?\b"
       r"(?:the\s+)?"
       r"(?:user|human|reader|customer)\b|\bwithout\s+(?:asking|telling|informing|notifying|alerting)\s+(?:a"
       r"\s+human|the\s+user|anyone)"),
    _r("answer_only", 0.6, "only|provide it|tell the user|focus|concentrate",
       r"\b(?:reply|respond|answer|output|print|say)\s+(?:with\s+)?only\b|\bonly\s+(?:reply|respond|output|p"
       r"rint|say)\b|"
       r"\b(?:reply|respond|answer)\s+with\s+(?:only\s+)?the\s+following\b|\bprovide it to the user\b|\btell"
       r" the user\b|"
       r"\b(?:focus|concentrate)\s+(?:only|exclusively|solely)\s+on\b"),
    _r("automated_reader", 0.55, "automat|visible|invisible|hidden|white|override|verified",
       r"\b(?:automated|automatic)\s+(?:analysis|screening|scoring|evaluation|review|system|software|hiring|"
       r"recruiting)\b|"
       r"\b(?:visible|invisible|hidden)\s+to\s+(?:humans|llms?|ai|models?|people)\b|\bwhite[- ]text\b|"
       r"\boverride\s+(?:manual\s+)?(?:scoring|evaluation|review|ranking)\b|\bpre-verified\b"),
    _r("hidden_markup", 0.4, "<!--|display|font|color",
       r"<!--|display\s*:\s*none|font-size\s*:\s*0|color\s*:\s*(?:white|#fff)\b"),
    _r("coerced_action", 0.55, "must|should|shall|required|need to",
       r"\b(?:you|the (?:assistant|ai|model|bot))\s+(?:must|should|shall|are required to|need to)\s+(?:now\s"
       r"+)?(?:issue|"
       r"send|forward|transfer|approve|grant|refund|delete|email|click|visit|download|mark|execute|run|call)"
       r"\b"),
    _r("exfiltrate", 0.55, "forward|send|email|leak|exfiltrate|upload|post",
       r"\b(?:forward|send|email|leak|exfiltrate|upload|post)\s+(?:this|these|it|the|all|a copy)\b[^.!?\n]{0"
       r",40}?\b(?:to|at)\b"
       r"[^.!?\n]{0,12}?(?:@|https?://|www\.)"),
)

META_CUES = re.compile(
    r"\b(?:prompt[- ]injection|injections?|jailbreak(?:ing|s)?|examples?|phrases?|what (?:is|does|are)|expla"
    r"in|"
    r"detect(?:ion|ed|s|or)?|defen[cs]e|defend|filters?|classifiers?|tests?|testing|security|attacks?|attack"
    r"ers|"
    r"why does|guardrails?|red[- ]team(?:ing)?|strings?|regex|patterns?)\b"
)
# fmt: on


# ----------------------------------------------------------------------------- scanning
@dataclass(frozen=True, slots=True)
class ScanResult:
    """Verdict for one text: overall risk, best score per detector, evidence, and the
    obfuscation techniques under which something was found."""

    risk: float
    scores: dict[str, float] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()


_QUOTED = re.compile(r"\"[^\"\n]{3,240}\"|“[^”\n]{3,240}”|'[^'\n]{3,240}'|`[^`\n]{3,240}`|«[^»\n]{3,240}»")


def _quoted_mention(lowered: str, hits: Sequence[_Hit]) -> bool:
    """Every hit sits inside quotes in a text that talks *about* injection (a security
    question, a test case): quoting an attack is not issuing it."""
    if not hits or META_CUES.search(lowered) is None:
        return False
    spans = [(m.start(), m.end()) for m in _QUOTED.finditer(lowered)]
    return all(any(start <= hit.start and hit.end <= end for start, end in spans) for hit in hits)


def _obfuscation_score(report: NormalizeReport, best: float, techniques: set[str]) -> float:
    """Hiding an instruction is itself a signal; invisible characters alone only nudge."""
    score = best * 0.5 if techniques else 0.0
    if report.hidden_text:
        score = max(score, 0.6)
    if report.bidi_overrides:
        score = max(score, 0.4)
    if report.removed_zero_width >= 3:
        score = max(score, min(0.15 + 0.02 * report.removed_zero_width, 0.4))
    return round(score, 4)


class InjectionScanner:
    """Runs rule detectors over every view of a text, plus extra detectors on the plain text. The
    best score per rule detector combines by noisy-OR; an extra detector's score stands on its own
    (the risk is the larger of the two)."""

    def __init__(
        self,
        detectors: Sequence[RuleDetector] | None = None,
        context_detectors: Sequence[RuleDetector] | None = None,
        extra: Sequence[Detector] = (),
    ) -> None:
        self.detectors = tuple(
            detectors
            if detectors is not None
            else (
                RuleDetector("instruction_override", OVERRIDE_RULES),
                RuleDetector("role_hijack", ROLE_RULES),
                RuleDetector("prompt_extraction", EXTRACTION_RULES),
                RuleDetector("delimiter_injection", DELIMITER_RULES),
            )
        )
        self.context_detectors = tuple(
            context_detectors
            if context_detectors is not None
            else (RuleDetector("indirect_instruction", CONTEXT_RULES),)
        )
        self.extra = tuple(extra)
        self._gate = _Gate(key for d in (*self.detectors, *self.context_detectors) for key in d.keys)

    def scan(
        self,
        text: str,
        *,
        passage: bool = False,
        hidden_text: str = "",
        bidi_override: bool = False,
        normalized: bool = False,
    ) -> ScanResult:
        """Score one message, or with `passage=True` one retrieved context passage. When the
        caller normalised the text already, `hidden_text` and `bidi_override` carry what
        normalisation removed."""
        report = NormalizeReport(text) if normalized else normalize_report(text)
        if bidi_override and not report.bidi_overrides:
            report = dataclasses.replace(report, bidi_overrides=1)
        hidden = "\n".join(part for part in (hidden_text, report.hidden_text) if part)
        views = _views(report.text)
        if passage:  # a leading newline lets sentence-start rules see the passage's first sentence
            views[0] = (views[0][0], "\n" + views[0][1])
        if hidden:
            views.extend(_views(normalize(hidden), 1, "unicode_tags"))
        if report.bidi_overrides:
            views.append(("bidi_reversed", _lower(report.text)[::-1]))
        detectors = (*self.detectors, *self.context_detectors) if passage else self.detectors
        scores: dict[str, float] = {}
        evidence: list[str] = []
        techniques: set[str] = set()
        for technique, lowered in views:  # the list grows while iterated when a rot13 view is due
            present, rot13 = self._gate.present(lowered)
            if rot13 and "rot13" not in technique:
                rotated = "rot13" if technique == "plain" else technique + "+rot13"
                views.append((rotated, lowered.translate(_ROT13)))
            if not present:
                continue
            positions: dict[str, list[int]] = {}
            seen: dict[frozenset[str], bool] = {}
            for detector in detectors:
                hits = detector.hits(lowered, present, positions, seen)
                if not hits:
                    continue
                if technique == "plain" and not passage and _quoted_mention(lowered, hits):
                    hits = [dataclasses.replace(hit, score=hit.score * 0.4) for hit in hits]
                score = _combine(hits)
                if score > scores.get(detector.name, 0.0):
                    scores[detector.name] = score
                    if technique != "plain":
                        techniques.add(technique)
                evidence.extend(f"{detector.name}/{h.label}@{technique}: {h.snippet!r}" for h in hits[:3])
        extra_scores: dict[str, float] = {}
        for extra in self.extra:
            result = extra.detect(report.text)
            if result.score > 0:
                extra_scores[result.name] = max(min(result.score, 1.0), 0.0)
                evidence.extend(f"{result.name}: {item}" for item in result.evidence[:3])
        obfuscation = _obfuscation_score(
            report, max((*scores.values(), *extra_scores.values()), default=0.0), techniques
        )
        if obfuscation > 0:
            scores[OBFUSCATION] = obfuscation
        # An extra detector (a classifier with its own operating point) counts by itself, not added to
        # the rules: two sub-threshold scores summed by noisy-OR flagged benign tool output.
        risk = round(min(max(_noisy_or(scores.values()), *extra_scores.values(), 0.0), 0.999), 4)
        scores.update(extra_scores)
        return ScanResult(risk, scores, tuple(evidence[:12]), tuple(sorted(techniques)))


DEFAULT_SCANNER = InjectionScanner()
