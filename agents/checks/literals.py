"""Literal strings a regex cannot match without: a cheap, exact prefilter for costly rules.

Rules that open with an alternation ("ignore|disregard|...") make the regex engine try every
alternative at almost every position, which costs tens of microseconds on a 2 KB text even
when nothing matches. Every match of such a rule contains, say, one of the verbs AND one of the
nouns; a few substring checks (`in`, memchr-fast) prove that no match exists far more cheaply.
The sets are derived from the parsed pattern itself, so the prefilter never drifts from the
rule and never rejects a text the rule would match.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

with warnings.catch_warnings():  # the stdlib parser is the only exact reading of a pattern
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants as _c
    import sre_parse as _p

__all__ = ["cheap_opening", "literal_alternatives", "literal_sets"]

_LIMIT = 48  # most distinct strings one subpattern may expand to before it counts as "any"
_REPEATS = (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT)
_ZERO_WIDTH = (_c.AT, _c.ASSERT, _c.ASSERT_NOT)


def _exact_seq(items: Sequence[tuple[Any, Any]]) -> set[str] | None:
    """Every string a parsed sequence can consume, or None when unbounded or too many."""
    out = {""}
    for op, av in items:
        strings = _exact_node(op, av)
        if strings is None:
            return None
        out = {a + b for a in out for b in strings}
        if len(out) > _LIMIT:
            return None
    return out


def _exact_node(op: Any, av: Any) -> set[str] | None:
    if op is _c.LITERAL:
        return {chr(av)}
    if op in _ZERO_WIDTH:  # consumes nothing; only narrows where a match may be
        return {""}
    if op is _c.IN:
        if len(av) <= 4 and all(kind is _c.LITERAL for kind, _ in av):
            return {chr(code) for _, code in av}
        return None
    if op is _c.BRANCH:
        out: set[str] = set()
        for alternative in av[1]:
            strings = _exact_seq(alternative)
            if strings is None:
                return None
            out |= strings
        return out if len(out) <= _LIMIT else None
    if op is _c.SUBPATTERN:
        return None if av[1] or av[2] else _exact_seq(av[3])  # inline flags: give up
    if op is _c.ATOMIC_GROUP:
        return _exact_seq(av)
    if op in _REPEATS:
        low, high, body = av
        if high > 1:
            return None
        strings = _exact_seq(body)
        if strings is None:
            return None
        return strings | {""} if low == 0 else strings
    return None


def _required_seq(items: Sequence[tuple[Any, Any]]) -> list[frozenset[str]]:
    """Sets of strings such that every match contains at least one string of each set."""
    sets: list[frozenset[str]] = []
    run = {""}
    for op, av in items:
        strings = _exact_node(op, av)
        if strings is not None:
            joined = {a + b for a in run for b in strings}
            if len(joined) <= _LIMIT:
                run = joined
                continue
            if "" not in run:
                sets.append(frozenset(run))
            run = set(strings)
            continue
        if "" not in run:
            sets.append(frozenset(run))
        run = {""}
        sets.extend(_required_node(op, av))
    if "" not in run:
        sets.append(frozenset(run))
    return sets


def _required_node(op: Any, av: Any) -> list[frozenset[str]]:
    if op is _c.SUBPATTERN:
        return [] if av[1] or av[2] else _required_seq(av[3])
    if op is _c.ATOMIC_GROUP:
        return _required_seq(av)
    if op in _REPEATS:
        return _required_seq(av[2]) if av[0] >= 1 else []
    if op is _c.BRANCH:
        union: set[str] = set()
        for alternative in av[1]:
            sets = _required_seq(alternative)
            if not sets:
                return []
            chosen: frozenset[str] = max(sets, key=_rank)
            union |= chosen
        return [frozenset(union)]
    return []


def _rank(strings: frozenset[str]) -> tuple[int, int]:
    """Longer shortest string first (rarer in text), then fewer strings (cheaper to check)."""
    return min(map(len, strings)), -len(strings)


def _minimal(strings: frozenset[str]) -> frozenset[str]:
    """Drop strings that contain another string of the set: finding the shorter one suffices."""
    return frozenset(s for s in strings if not any(o != s and o in s for o in strings))


def literal_sets(pattern: re.Pattern[str], keep: int = 3) -> tuple[frozenset[str], ...]:
    """Up to `keep` sets of literals, most selective first: a text that lacks every string of
    any one set cannot contain a match. Empty when the pattern offers nothing useful."""
    if pattern.flags & re.IGNORECASE:
        return ()
    try:
        parsed = _p.parse(pattern.pattern, pattern.flags)
    except re.error:
        return ()
    sets = {_minimal(s) for s in _required_seq(parsed.data)}
    useful = [s for s in sets if min(map(len, s)) >= 2]
    return tuple(sorted(useful, key=_rank, reverse=True)[:keep])


def literal_alternatives(pattern: re.Pattern[str], keep: int = 3) -> tuple[tuple[frozenset[str], ...], ...]:
    """`literal_sets` per top-level alternative of the pattern: a text can hold a match only
    if, for some alternative, every one of its sets has a string in the text. Empty when some
    alternative offers nothing useful (then no text can be ruled out)."""
    if pattern.flags & re.IGNORECASE:
        return ()
    try:
        parsed: list[Any] = _p.parse(pattern.pattern, pattern.flags).data
    except re.error:
        return ()
    branches: list[Any] = parsed[0][1][1] if len(parsed) == 1 and parsed[0][0] is _c.BRANCH else [parsed]
    alternatives: list[tuple[frozenset[str], ...]] = []
    for branch in branches:
        sets = {_minimal(s) for s in _required_seq(branch)}
        useful = sorted((s for s in sets if min(map(len, s)) >= 2), key=_rank, reverse=True)[:keep]
        if not useful:
            return ()
        alternatives.append(tuple(useful))
    return tuple(alternatives)


def _first_chars(items: Sequence[tuple[Any, Any]]) -> set[str] | None:
    """Characters a match of a parsed sequence can start with; None when any (or unknown)."""
    for op, av in items:
        if op in _ZERO_WIDTH:
            continue
        if op is _c.LITERAL:
            return {chr(av)}
        if op is _c.IN:
            if all(kind is _c.LITERAL for kind, _ in av):
                return {chr(code) for _, code in av}
            return None
        if op is _c.BRANCH:
            out: set[str] = set()
            for alternative in av[1]:
                chars = _first_chars(alternative)
                if chars is None:
                    return None
                out |= chars
            return out
        if op is _c.SUBPATTERN and not (av[1] or av[2]):
            return _first_chars(av[3])
        if op in _REPEATS and av[0] >= 1:
            return _first_chars(av[2])
        return None
    return None


def cheap_opening(pattern: re.Pattern[str]) -> bool:
    """Whether the regex engine can skip most positions of ordinary text on its own: the
    pattern opens with a literal string (found by a substring search) or with rare characters
    only (punctuation, `<`, newline). Patterns that may open with a letter are tried at every
    occurrence of that letter, and are the ones worth a literal prefilter."""
    if pattern.flags & re.IGNORECASE:
        return False
    try:
        parsed = _p.parse(pattern.pattern, pattern.flags).data
    except re.error:
        return False
    if parsed and parsed[0][0] is _c.LITERAL and len(parsed) > 1 and parsed[1][0] is _c.LITERAL:
        return True  # a literal prefix of two characters or more: found by a substring search
    chars = _first_chars(parsed)
    return chars is not None and not any(char.isalnum() for char in chars)
