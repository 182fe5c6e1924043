"""Groundedness scorer: each signal on a small fixture, plus guards on the labelled eval set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.checks.grounding import (
    DEFAULT_HALLUCINATION_THRESHOLD,
    build_index,
    detect_fabrication,
    score_groundedness,
    split_sentences,
)

EVAL = Path(__file__).resolve().parents[1] / "data" / "hallucination_eval.jsonl"

NORMANS = (
    "doc-1",
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
    "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, "
    "under their leader Rollo, agreed to swear fealty to King Charles III of West Francia.",
)
DUCHY = (
    "doc-2",
    "The Duchy of Normandy, which began in 911 as a fiefdom, was established by the treaty of "
    "Saint-Clair-sur-Epte between King Charles III of West Francia and the famed Viking ruler Rollo. "
    "The treaty offered Rollo and his men the French lands between the river Epte and the Atlantic coast.",
)
ENGLAND = (
    "doc-3",
    "In 1066, Duke William II of Normandy conquered England killing King Harold II at the Battle of "
    "Hastings. The invading Normans and their descendants replaced the Anglo-Saxons as the ruling class.",
)
CONTEXT = [NORMANS, DUCHY, ENGLAND]


def score(answer: str, question: str = "") -> float:
    result = score_groundedness(answer, CONTEXT, question=question)
    assert result.groundedness is not None
    return result.groundedness


def test_extractive_and_paraphrased_answers_are_grounded() -> None:
    for answer in (
        "The Duchy of Normandy began in 911 as a fiefdom.",
        "The Normans came from Denmark, Iceland and Norway, and their leader was Rollo.",
        "After 1066 the Normans replaced the Anglo-Saxons as the ruling class of England [doc-3].",
    ):
        result = score_groundedness(answer, CONTEXT)
        assert result.hallucination is False, (answer, result)
        assert result.groundedness is not None and result.groundedness >= DEFAULT_HALLUCINATION_THRESHOLD


def test_changed_number_is_an_unsupported_specific() -> None:
    result = score_groundedness("The Duchy of Normandy began in 925 as a fiefdom.", CONTEXT)
    assert result.hallucination is True
    assert "925" in result.claims[0].unsupported_specifics
    assert score("The Duchy of Normandy began in 925 as a fiefdom.") < score(
        "The Duchy of Normandy began in 911 as a fiefdom."
    )


def test_entity_from_outside_the_context_is_flagged() -> None:
    result = score_groundedness("The Normans came from Sweden and Finland, led by Rollo.", CONTEXT)
    assert result.hallucination is True
    assert {"sweden", "finland"} <= set(result.claims[0].unsupported_specifics)


def test_entity_swapped_within_the_context_is_misplaced() -> None:
    right = score("Duke William II of Normandy conquered England at the Battle of Hastings.")
    swapped = score_groundedness("Rollo conquered England at the Battle of Hastings.", CONTEXT)
    assert "rollo" in swapped.claims[0].misplaced_specifics
    assert swapped.groundedness is not None and swapped.groundedness < right


def test_added_negation_is_a_mismatch() -> None:
    result = score_groundedness("Rollo did not agree to swear fealty to King Charles III.", CONTEXT)
    assert result.claims[0].negation_mismatch
    assert result.hallucination is True


def test_citation_of_a_missing_passage_is_reported() -> None:
    bad = score_groundedness("The Duchy of Normandy began in 911 as a fiefdom [doc-7].", CONTEXT)
    good = score_groundedness("The Duchy of Normandy began in 911 as a fiefdom [doc-2].", CONTEXT)
    assert bad.bad_citations == ("doc-7",)
    assert good.bad_citations == ()
    assert bad.groundedness is not None and good.groundedness is not None
    assert bad.groundedness < good.groundedness


def test_an_invented_sentence_drags_the_answer_down() -> None:
    plain = "The Duchy of Normandy began in 911 as a fiefdom."
    padded = plain + " It was later moved to Lyon by royal decree in 1188."
    result = score_groundedness(padded, CONTEXT)
    assert result.hallucination is True
    assert min(c.score for c in result.claims) < 0.5
    assert score(padded) < score(plain)


def test_restating_the_question_is_not_penalised() -> None:
    question = "Which treaty created the Duchy of Normandy, the one that pleased the monks of Jumieges?"
    answer = "The treaty of Saint-Clair-sur-Epte created it, pleasing the monks of Jumieges."
    assert score(answer, question) > score(answer)


def test_no_context_returns_none_and_reports_fabricated_specifics() -> None:
    answer = (
        "See https://example.org/report-2021 and doi:10.1234/abcd.5678 (Smith et al., 2019). "
        "I think the figure is around 40%."
    )
    result = score_groundedness(answer, [])
    assert result.groundedness is None and result.hallucination is None
    joined = " ".join(result.fabricated_specifics)
    assert "https://example.org/report-2021" in joined
    assert "10.1234/abcd.5678" in joined
    assert "Smith et al., 2019" in joined
    assert result.low_confidence


def test_links_the_user_supplied_are_not_fabricated() -> None:
    found, hedged = detect_fabrication(
        "Yes, https://shop.example.com/returns explains it.", "Is https://shop.example.com/returns right?"
    )
    assert found == () and not hedged
    found, _ = detect_fabrication("Plain answer with no references at all.")
    assert found == ()


def test_empty_answer_scores_none() -> None:
    result = score_groundedness("   ", CONTEXT)
    assert result.groundedness is None and result.hallucination is None


def test_index_is_reused_for_the_same_context() -> None:
    assert build_index(CONTEXT) is build_index(list(CONTEXT))


def test_sentence_splitter_keeps_abbreviations() -> None:
    text = "It caused the most damage in U.S. history. Dr. Jones agreed.\n- a list item\n- another item"
    assert split_sentences(text) == [
        "It caused the most damage in U.S. history.",
        "Dr. Jones agreed.",
        "a list item",
        "another item",
    ]


def test_word_numbers_and_digits_are_compared_as_numbers() -> None:
    ctx = [("d1", "Setanta Sports was awarded two of the six Premier League packages.")]
    assert score_groundedness("Setanta Sports won 2 of the 6 packages.", ctx).hallucination is False
    assert score_groundedness("Setanta Sports won three of the six packages.", ctx).hallucination is True


@pytest.fixture(scope="module")
def eval_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_eval_set_shape(eval_rows: list[dict[str, Any]]) -> None:
    assert len(eval_rows) >= 500
    labels = Counter(r["label"] for r in eval_rows)
    assert labels["supported"] == labels["hallucinated"]
    assert {r["split"] for r in eval_rows} == {"dev", "test"}
    assert len({r["id"] for r in eval_rows}) == len(eval_rows)
    for r in eval_rows:
        assert set(r) == {"id", "context", "question", "answer", "label", "kind", "source", "split"}
        assert isinstance(r["context"], list) and r["context"]
        assert all(set(p) == {"id", "text"} for p in r["context"])
        assert (r["kind"] == "supported") == (r["label"] == "supported")


def test_dev_split_quality_does_not_regress(eval_rows: list[dict[str, Any]]) -> None:
    """A guard, not the benchmark (bench/hallucination.py reports the test split)."""
    correct = 0
    dev = [r for r in eval_rows if r["split"] == "dev"]
    for r in dev:
        passages = [(p["id"], p["text"]) for p in r["context"]]
        result = score_groundedness(str(r["answer"]), passages, question=str(r["question"]))
        correct += result.hallucination == (r["label"] == "hallucinated")
    assert correct / len(dev) >= 0.85
