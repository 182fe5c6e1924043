"""The literal prefilter must never reject a text its rule matches (it only saves regex work)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agents.checks.injection import DEFAULT_SCANNER, _lower
from agents.checks.literals import cheap_opening, literal_alternatives, literal_sets

EVAL_SET = Path(__file__).resolve().parents[1] / "data" / "injection_eval.jsonl"


def test_sets_of_a_plain_alternation() -> None:
    sets = literal_sets(re.compile(r"(?:ignore|disregard)\s+(?:all|any)\s+(?:rules|instructions)"))
    assert frozenset({"ignore", "disregard"}) in sets
    assert frozenset({"rules", "instructions"}) in sets


def test_alternatives_each_need_their_own_literals() -> None:
    alternatives = literal_alternatives(re.compile(r"reply only|tell the user|focus on it"))
    assert alternatives == (
        (frozenset({"reply only"}),),
        (frozenset({"tell the user"}),),
        (frozenset({"focus on it"}),),
    )
    assert literal_alternatives(re.compile(r"reply only|\w+")) == ()  # one alternative is open


def test_optional_and_unbounded_parts_give_no_set() -> None:
    assert literal_sets(re.compile(r"(?:foo)?\w+")) == ()
    assert literal_sets(re.compile(r"(?i)ignore all")) == ()  # case-insensitive: not plain literals


def test_cheap_openings() -> None:
    assert cheap_opening(re.compile(r"from now on"))
    assert cheap_opening(re.compile(r"[.!?\n]\s*(?:add|include)"))
    assert not cheap_opening(re.compile(r"(?:ignore|disregard) all"))
    assert not cheap_opening(re.compile(r"[a-z]+ mode"))


def test_every_rule_match_contains_its_literals() -> None:
    texts = [json.loads(line) for line in EVAL_SET.read_text(encoding="utf-8").splitlines()]
    lowered = [_lower(r["text"]) for r in texts] + [
        _lower(p["text"]) for r in texts for p in r.get("context", [])
    ]
    checked = 0
    for detector in (*DEFAULT_SCANNER.detectors, *DEFAULT_SCANNER.context_detectors):
        for rule in detector.rules:
            sets = literal_sets(rule.pattern)
            alternatives = literal_alternatives(rule.pattern)
            for text in lowered:
                if rule.pattern.search(text) is not None:
                    checked += 1
                    assert all(any(s in text for s in strings) for strings in sets), (rule.label, text)
                    assert not alternatives or any(
                        all(any(s in text for s in strings) for strings in alternative)
                        for alternative in alternatives
                    ), (rule.label, text)
    assert checked > 200  # the eval set exercises most rules
