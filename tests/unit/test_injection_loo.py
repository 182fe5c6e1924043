"""The leave-one-corpus-out bench never lets a held-out corpus into the fit or the threshold, and its
diagnostic recall picks the threshold the way it says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import injection_loo, train_detectors  # noqa: E402


@pytest.mark.parametrize("held", train_detectors.INJECTION_CORPORA)
def test_the_held_out_corpus_is_not_in_its_training_rows(held: str) -> None:
    own = [{"text": "What is the capital of France?", "label": 0, "source": "own"}]
    rows = injection_loo.training_rows(own, held)
    sources = {row["source"] for row in rows}
    assert held.removesuffix(".jsonl") not in sources
    others = {name.removesuffix(".jsonl") for name in train_detectors.INJECTION_CORPORA if name != held}
    assert others | {"own"} == sources
    held_texts = {row["text"] for row in train_detectors.heldout_rows(held)}
    contexts = {row["context"] for row in train_detectors.heldout_rows(held) if row["context"]}
    assert not any(row.get("context") and row["context"] in contexts for row in rows)
    assert len(held_texts) > 0


def test_heldout_rows_carry_the_passage_and_an_integer_label() -> None:
    rows = train_detectors.heldout_rows("injection_raginject.jsonl")
    assert {row["label"] for row in rows} == {0, 1}
    assert all(row["context"] for row in rows)  # every raginject item is a retrieved document


def test_recall_at_heldout_fpr_lets_only_that_share_of_benign_through() -> None:
    benign = [(float(s), False) for s in range(100)]  # scores 0..99
    attacks = [(98.5, True), (97.5, True), (50.0, True), (10.0, True)]
    # 2 % of 100 benign may score at or above the cut: the cut is the third-highest benign score (97)
    assert injection_loo._recall_at_fpr(benign + attacks, 0.02) == 0.5
    assert injection_loo._recall_at_fpr(attacks, 0.02) is None
