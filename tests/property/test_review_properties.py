"""Properties of the response review: total on arbitrary input, and scores always in range."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.checks.grounding import score_groundedness
from agents.checks.output_policy import OutputPolicy, TopicRule
from agents.checks.review import Action, ResponsePolicy, ReviewInput, review_response
from agents.checks.schema_check import check_schema

# Text biased towards the characters the scorers care about: digits, capitals, brackets, quotes.
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list("0123456789 .,;:!?[]()\"'\u2019-\n ABCDEFGHIJKLMNOPQRSTUVWXYZ*@$#")),
    ),
    max_size=400,
)
WORDY = st.lists(
    st.sampled_from(
        [
            "Rollo",
            "Normandy",
            "911",
            "the",
            "not",
            "never",
            "[doc-1]",
            "[doc-9]",
            "parcel",
            "delivery",
            "2,500",
            "https://x.example/a",
            "poem",
            "SwiftShip",
            "useless",
            "\n",
            ".",
            "I",
            "can't",
            "help",
            "with",
            "that",
        ]
    ),
    max_size=60,
).map(" ".join)
ANSWERS = st.one_of(TEXT, WORDY)
PASSAGES = st.lists(st.tuples(st.text(max_size=12), st.one_of(TEXT, WORDY)), max_size=5)
MESSAGES = st.lists(st.tuples(st.sampled_from(["system", "user", "assistant", "tool", ""]), TEXT), max_size=4)
FORMATS = st.sampled_from([None, "text", "json_object", "json_schema", "yaml"])
SCHEMAS = st.one_of(
    st.none(),
    st.just({"type": "object", "required": ["a"]}),
    st.just({"name": "x", "schema": {"type": "array", "items": {"type": "integer"}}}),
    st.just({"type": 12}),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
POLICY = ResponsePolicy(
    output=OutputPolicy(
        banned_terms=("crypto", ""),
        banned_topics=(TopicRule("politics", ("vote", "election")),),
        competitors=("FastFreight",),
        profanity=("muppet",),
        domain="parcel delivery",
        domain_keywords=("parcel", "delivery"),
        brand_names=("SwiftShip",),
    ),
    actions={"hallucination": Action.RETRY},
)


def detector(text: str) -> list[tuple[str, str]]:
    return [("email", w) for w in text.split() if "@" in w]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    answer=ANSWERS,
    finish=st.one_of(st.none(), st.sampled_from(["stop", "length", "max_tokens", ""]), st.text(max_size=8)),
    messages=MESSAGES,
    passages=PASSAGES,
    fmt=FORMATS,
    schema=SCHEMAS,
    repairs=st.integers(min_value=-1, max_value=3),
    retries=st.integers(min_value=-1, max_value=3),
)
def test_review_never_raises_and_stays_in_range(
    answer: str,
    finish: str | None,
    messages: list[tuple[str, str]],
    passages: list[tuple[str, str]],
    fmt: str | None,
    schema: dict[str, object] | None,
    repairs: int,
    retries: int,
) -> None:
    request = ReviewInput(
        messages=tuple(messages),
        context=tuple(passages),
        response_format=fmt,
        json_schema=schema,
        repair_attempts=repairs,
        retries=retries,
    )
    out = review_response(answer, finish, request, POLICY, pii_detector=detector)
    assert out.decision in set(Action)
    assert out.groundedness is None or 0.0 <= out.groundedness <= 1.0
    assert (out.groundedness is None) == (out.hallucination is None)
    assert (out.error_code is not None) == (out.decision is Action.BLOCK)
    assert all(isinstance(v, str | float) for v in out.scores.values())
    assert "check_error" not in out.flags, out.scores


@settings(max_examples=150, deadline=None)
@given(answer=ANSWERS, passages=PASSAGES, question=TEXT)
def test_groundedness_is_none_or_a_unit_interval_score(
    answer: str, passages: list[tuple[str, str]], question: str
) -> None:
    result = score_groundedness(answer, passages, question=question)
    assert result.groundedness is None or 0.0 <= result.groundedness <= 1.0
    assert all(0.0 <= c.score <= 1.0 for c in result.claims)
    if not any(t.strip() for _i, t in passages):
        assert result.groundedness is None


@settings(max_examples=60, deadline=None)
@given(content=TEXT, fmt=FORMATS, schema=SCHEMAS)
def test_schema_check_is_total(content: str, fmt: str | None, schema: dict[str, object] | None) -> None:
    result = check_schema(content, fmt, schema)
    assert result.schema_valid in (None, True, False)
    assert (result.schema_valid is False) == bool(result.errors)
