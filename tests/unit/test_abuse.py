"""Abuse limits: floods, long tokens, control soup; policy decides flag, reject or ignore."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from agents.checks.abuse import AbuseAction, AbuseKind, AbusePolicy, check_abuse


def kinds(text: str, policy: AbusePolicy | None = None) -> set[AbuseKind]:
    return {finding.kind for finding in check_abuse(text, policy)}


def test_clean_prose_has_no_findings() -> None:
    text = "Please summarise the attached notes in three bullet points. " * 8
    assert check_abuse(text) == []


@pytest.mark.parametrize("filler", ["a", " ", "\n", "!", "é"])
def test_character_flood(filler: str) -> None:
    assert AbuseKind.CHAR_FLOOD in kinds("start " + filler * 500 + " end")


def test_character_run_at_the_limit_is_allowed() -> None:
    assert AbuseKind.CHAR_FLOOD not in kinds("x" * 200 + " ok")
    assert AbuseKind.CHAR_FLOOD in kinds("x" * 201 + " ok")


def test_long_token() -> None:
    findings = check_abuse("see " + "A" * 5000)
    long_tokens = [f for f in findings if f.kind is AbuseKind.LONG_TOKEN]
    assert long_tokens and "5000-character token" in long_tokens[0].reason
    assert AbuseKind.LONG_TOKEN not in kinds("see " + "https://example.com/" + "p" * 500)


def test_token_flood_and_low_diversity() -> None:
    assert AbuseKind.TOKEN_FLOOD in kinds("write " + "poem " * 60)
    assert AbuseKind.TOKEN_FLOOD not in kinds("write " + "poem " * 40)
    assert AbuseKind.LOW_DIVERSITY in kinds("yes no " * 400)
    assert AbuseKind.LOW_DIVERSITY not in kinds(" ".join(f"word{i}" for i in range(400)))


def test_control_soup_is_rejected_by_default() -> None:
    findings = check_abuse("\x01\x02\x03\u200b" * 10 + "hello")
    [soup] = [f for f in findings if f.kind is AbuseKind.CONTROL_SOUP]
    assert soup.action is AbuseAction.REJECT
    assert "control or invisible characters" in soup.reason
    assert AbuseKind.CONTROL_SOUP not in kinds("a\u200bfew zero\u200bwidth spaces in a long enough sentence")


def test_policy_changes_actions_and_limits() -> None:
    ignore_floods = AbusePolicy(actions=MappingProxyType({AbuseKind.CHAR_FLOOD: AbuseAction.IGNORE}))
    assert kinds("z" * 500, ignore_floods) == set()
    strict = AbusePolicy(
        max_token_chars=10, actions=MappingProxyType({AbuseKind.LONG_TOKEN: AbuseAction.REJECT})
    )
    [finding] = check_abuse("supercalifragilistic", strict)
    assert finding.kind is AbuseKind.LONG_TOKEN and finding.action is AbuseAction.REJECT


def test_findings_say_where() -> None:
    [finding] = check_abuse("q" * 300, where="message[2]")
    assert finding.where == "message[2]"


def test_huge_input_is_fast_enough_to_check() -> None:
    findings = check_abuse("ab" * 500_000)
    assert AbuseKind.LONG_TOKEN in {f.kind for f in findings}
