"""Abuse limits: repetition floods, absurdly long tokens and control-character soup.

These inputs waste model budget or aim at tokenizer and context-window edge cases rather than
asking anything; the checks only report findings, and the policy says whether each kind flags
the request or rejects it with a clear reason.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType

from agents.checks.normalize import plain_ascii, token_stats
from agents.checks.normalize import tokens as split_tokens

__all__ = ["AbuseAction", "AbuseFinding", "AbuseKind", "AbusePolicy", "check_abuse"]


class AbuseKind(StrEnum):
    CHAR_FLOOD = "char_flood"
    TOKEN_FLOOD = "token_flood"
    LOW_DIVERSITY = "low_diversity"
    LONG_TOKEN = "long_token"
    CONTROL_SOUP = "control_soup"


class AbuseAction(StrEnum):
    IGNORE = "ignore"
    FLAG = "flag"
    REJECT = "reject"


_DEFAULT_ACTIONS: Mapping[AbuseKind, AbuseAction] = MappingProxyType(
    {
        AbuseKind.CHAR_FLOOD: AbuseAction.FLAG,
        AbuseKind.TOKEN_FLOOD: AbuseAction.FLAG,
        AbuseKind.LOW_DIVERSITY: AbuseAction.FLAG,
        AbuseKind.LONG_TOKEN: AbuseAction.FLAG,
        AbuseKind.CONTROL_SOUP: AbuseAction.REJECT,
    }
)


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    """Limits and the action per finding kind (tenants can loosen or tighten either)."""

    max_char_run: int = 200
    max_token_repeats: int = 40
    max_token_chars: int = 2000
    min_unique_ratio: float = 0.05
    min_words_for_diversity: int = 500
    max_control_ratio: float = 0.1
    min_control_chars: int = 16
    actions: Mapping[AbuseKind, AbuseAction] = field(default_factory=lambda: _DEFAULT_ACTIONS)

    def action(self, kind: AbuseKind) -> AbuseAction:
        return self.actions.get(kind, _DEFAULT_ACTIONS[kind])


@dataclass(frozen=True, slots=True)
class AbuseFinding:
    kind: AbuseKind
    action: AbuseAction
    reason: str
    where: str = ""


_CONTROLS = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufeff\U000e0000-\U000e007f\ud800-\udfff]"
)
_LAYOUT = str.maketrans("", "", "\t\n\r")


@lru_cache(maxsize=8)
def _run_pattern(limit: int) -> re.Pattern[str]:
    return re.compile(f"(.)\\1{{{limit}}}", re.DOTALL)


def _char_flood(text: str, limit: int) -> bool:
    """A run longer than `limit` covers two sample points `limit // 2` apart holding the same
    character, so only those spots need the (slower) regex check."""
    step = max(limit // 2, 1)
    pattern = _run_pattern(limit)
    quarter = max(step // 4, 1)
    for position in range(0, len(text) - step, step):
        char = text[position]
        if char == text[position + step] == text[position + 2 * quarter] == text[position + quarter]:
            window = pattern.search(text, max(position - limit, 0), position + step + limit + 1)
            if window is not None:
                return True
    return False


def _longest_repeat(tokens: Sequence[str]) -> int:
    longest = current = 1
    for previous, token in itertools.pairwise(tokens):
        current = current + 1 if token == previous else 1
        longest = max(longest, current)
    return longest


def _may_repeat(tokens: Sequence[str], limit: int) -> bool:
    """Whether a run of more than `limit` equal tokens is possible: such a run spans two
    multiples of `limit // 2`, whose tokens are then equal, so those few pairs decide."""
    step = limit // 2
    if step < 1:
        return True
    return any(tokens[k] == tokens[k + step] for k in range(0, len(tokens) - step, step))


def check_abuse(text: str, policy: AbusePolicy | None = None, where: str = "") -> list[AbuseFinding]:
    """Findings for one text (raw, before normalisation, so control soup is still visible)."""
    policy = policy or AbusePolicy()
    findings: list[AbuseFinding] = []

    def add(kind: AbuseKind, reason: str) -> None:
        action = policy.action(kind)
        if action is not AbuseAction.IGNORE:
            findings.append(AbuseFinding(kind, action, reason, where))

    length = len(text)
    if length > policy.max_char_run and _char_flood(text, policy.max_char_run):
        add(AbuseKind.CHAR_FLOOD, f"a character repeated more than {policy.max_char_run} times in a row")
    tokens = split_tokens(text)
    longest = token_stats(text).longest
    if longest > policy.max_token_chars:
        add(AbuseKind.LONG_TOKEN, f"a {longest}-character token (limit {policy.max_token_chars})")
    if len(tokens) > policy.max_token_repeats and _may_repeat(tokens, policy.max_token_repeats):
        # A run of n equal tokens makes n - 1 equal neighbours: count those in C first.
        repeats = sum(map(operator.eq, tokens, tokens[1:]))
        if repeats >= policy.max_token_repeats and _longest_repeat(tokens) > policy.max_token_repeats:
            add(
                AbuseKind.TOKEN_FLOOD,
                f"a word repeated more than {policy.max_token_repeats} times in a row",
            )
        if len(tokens) >= policy.min_words_for_diversity:
            unique = len(set(map(str.lower, tokens)))
            if unique / len(tokens) < policy.min_unique_ratio:
                add(
                    AbuseKind.LOW_DIVERSITY,
                    f"only {unique} distinct words in {len(tokens)} (repetition flood)",
                )
    if length >= policy.min_control_chars and not plain_ascii(text):
        controls = len(_CONTROLS.findall(text))
        if controls >= policy.min_control_chars and controls / length > policy.max_control_ratio:
            add(
                AbuseKind.CONTROL_SOUP,
                f"{controls} control or invisible characters in {length} ({controls / length:.0%})",
            )
    return findings
