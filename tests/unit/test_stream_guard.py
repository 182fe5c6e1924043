"""The checks on a stream: text is released once its window of sentences has passed, and a
block ends the stream before the offending sentence is released."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.checks.review import ResponsePolicy, ReviewInput
from agents.inference.stream_guard import StreamGuard
from agents.validate_response import pii_findings

LEAK = (
    "Sure, here is the summary. The report covers three regions. "
    "Write to dana.leak@example.org for the rest. Thanks."
)
QUESTION = ReviewInput(messages=(("user", "Summarise the regional report for me."),))


def guard(window: int = 1) -> StreamGuard:
    return StreamGuard(ResponsePolicy(), QUESTION, pii_findings, window=window)


def tokens(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def run(g: StreamGuard, text: str) -> tuple[str, str | None]:
    released: list[str] = []
    for piece in tokens(text):
        step = g.feed(piece)
        released.append(step.release)
        if step.cut:
            return "".join(released), step.cut
    step = g.close()
    released.append(step.release)
    return "".join(released), step.cut


def test_a_leak_in_the_third_sentence_cuts_the_stream_before_it_is_released() -> None:
    released, cut = run(guard(), LEAK)
    assert cut == "pii_leak"
    assert "dana.leak" not in released and "example.org" not in released
    assert released == "Sure, here is the summary. "  # sentence 2 was still in its window


def test_with_a_word_window_the_email_is_still_never_released() -> None:
    released, cut = run(guard(window=0), LEAK)
    assert cut == "pii_leak"
    assert "dana" not in released and released.startswith("Sure, here is the summary. The report")


def test_asynchronous_mode_releases_each_piece_at_once_and_cuts_at_the_leaking_word() -> None:
    g = StreamGuard(ResponsePolicy(), QUESTION, pii_findings, hold_back=False)
    pieces = tokens(LEAK)
    assert [g.feed(piece).release for piece in pieces[:3]] == pieces[:3]  # nothing held back
    released, cut = run(StreamGuard(ResponsePolicy(), QUESTION, pii_findings, hold_back=False), LEAK)
    assert cut == "pii_leak"
    # judged as soon as its word was complete: the leaking word's pieces went out, nothing after
    assert released.startswith("Sure, here is the summary. The report covers three regions. Write to dana")
    assert "for the rest" not in released and len(released) < LEAK.index(" for the rest") + 4


def test_an_email_the_user_wrote_is_no_leak() -> None:
    asked = ReviewInput(messages=(("user", "Summarise it and mention dana.leak@example.org please."),))
    g = StreamGuard(ResponsePolicy(), asked, pii_findings)
    assert run(g, LEAK) == (LEAK, None)


def test_released_text_lags_by_one_window_then_all_comes_out() -> None:
    g = guard()
    text = "One fine sentence here. Another good one. And a third."
    releases = [g.feed(piece).release for piece in tokens(text)]
    assert "".join(releases) == "One fine sentence here. "
    assert g.close().release == "Another good one. And a third."


def test_after_a_cut_nothing_more_is_released() -> None:
    g = guard()
    run(g, LEAK)
    assert g.feed(" More text. And more. ").release == "" and g.close().release == ""


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["Alpha beta. ", "Gamma delta! ", "Epsilon\n", "zeta ", "eta? "]), max_size=12),
    st.integers(0, 3),
)
def test_a_clean_stream_releases_exactly_the_text_in_order(parts: list[str], window: int) -> None:
    text = "".join(parts)
    assert run(guard(window), text) == (text, None)
    assert run(StreamGuard(ResponsePolicy(), QUESTION, pii_findings, hold_back=False), text) == (text, None)
