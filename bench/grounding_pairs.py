"""Claim-level alignment for groundedness, measured on the held-out corpora without fitting anything:

    PYTHONPATH=.:/path/to/bigbench-1.0.0 nice -n 19 python bench/grounding_pairs.py

Why: every overlap signal asks "are the answer's words in the context?". The unfaithful summaries of
BIG-bench `factuality_of_summary` copy the article's words and get the relations wrong (a name moved to
another event, a figure to another quantity), so overlap ranks them as supported. These signals ask
instead whether words the answer puts *together* also stand together in one sentence of the context
(or two adjacent ones): a claim is aligned when its parts share a source sentence.

  * pairs (present words): of the pairs of content words within one answer sentence (the question's
    content words included) whose words both occur in the context, the share found in a common window;
  * pairs (all words): the same over every pair, a pair with a word the context lacks counting as
    unsupported;
  * entity pairs: the first signal restricted to names, numbers and dates (capitalised words inside a
    sentence, digits, month names).

Each is parameter-free, so nothing is fitted or tuned; ROC AUC per corpus and subset, higher = the
signal ranks supported answers above unsupported ones. Writes bench/results/grounding_pairs.json.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import heldout  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "grounding_pairs.json"
_WORD = re.compile(r"[^\W_]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = frozenset(
    _WORD.findall(
        """a an the of to in on at by for with from and or but is are was were be been being it its this that
    these those as he she they them his her their we you i not no do does did has have had will would can
    could which who whom what when where why how there here than then so if into about over after before
    also said says say one two more most some any all up out new after just has may might"""
    )
)
_MONTHS = frozenset(
    _WORD.findall("january february march april may june july august september october november december")
)
MAX_PAIRS = 400  # per answer: enough for a 1 KB answer, bounded for long ones


def _content(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if (w not in _STOP and len(w) > 2) or w.isdigit()]


def _entities(sentence: str) -> list[str]:
    words = _WORD.findall(sentence)
    out = [
        w.lower() for i, w in enumerate(words) if (i > 0 and w[:1].isupper()) or any(c.isdigit() for c in w)
    ]
    return out + [w.lower() for w in words if w.lower() in _MONTHS]


def _windows(context: str) -> list[frozenset[str]]:
    """Word sets of each context sentence joined with the next (a claim may span a sentence break)."""
    sentences = [frozenset(_content(s)) for s in _SENTENCE.split(context) if s.strip()]
    return [a | b for a, b in zip(sentences, [*sentences[1:], frozenset()], strict=True)] or [frozenset()]


def _share(pairs: list[tuple[str, str]], windows: list[frozenset[str]]) -> float:
    if not pairs:
        return 1.0
    hits = sum(any(a in w and b in w for w in windows) for a, b in pairs[:MAX_PAIRS])
    return hits / min(len(pairs), MAX_PAIRS)


def signals(answer: str, context: str, question: str) -> dict[str, float]:
    windows = _windows(context)
    vocabulary = frozenset().union(*windows)
    asked = _content(question)
    present: list[tuple[str, str]] = []
    every: list[tuple[str, str]] = []
    entity: list[tuple[str, str]] = []
    for sentence in _SENTENCE.split(answer):
        words = sorted(set(_content(sentence)) | set(asked))
        for a, b in combinations(words, 2):
            every.append((a, b))
            if a in vocabulary and b in vocabulary:
                present.append((a, b))
        names = sorted({w for w in _entities(sentence) if w in vocabulary})
        entity += list(combinations(names, 2))
    return {
        "pairs (present words)": _share(present, windows),
        "pairs (all words)": _share(every, windows),
        "entity pairs": _share(entity, windows),
    }


def main() -> None:
    started = time.time()
    load_before = list(os.getloadavg())
    out: dict[str, Any] = {}
    corpora: tuple[tuple[str, str], ...] = heldout.GROUNDING_CORPORA
    for name, key in corpora:
        groups: dict[str, list[tuple[dict[str, float], bool]]] = defaultdict(list)
        for row in heldout.load(name):
            context = "\n".join(p["text"] for p in row["context"])
            item = (signals(row["answer"], context, row["question"]), row["label"] == "hallucinated")
            groups[row[key]].append(item)
            groups["all"].append(item)
        table: dict[str, Any] = {}
        for group, items in groups.items():
            table[group] = {"n": len(items)} | {
                signal: {"auc": heldout.roc_auc([(s[signal], h) for s, h in items])} for signal in items[0][0]
            }
        corpus = name.split(".")[0]
        out[corpus] = table
        print(f"\n{corpus}: ROC AUC of each parameter-free alignment signal (nothing fitted)")
        for group, m in table.items():
            cells = "  ".join(f"{k} {v['auc']}" for k, v in m.items() if k != "n")
            print(f"  {group:8s} n={m['n']:5d}  {cells}")
    results = {
        "what": "parameter-free claim-alignment signals on the held-out groundedness corpora",
        "settings": {"window": "a context sentence with the next one", "max_pairs_per_answer": MAX_PAIRS},
        "public_corpora": out,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
