"""Output checks on a stream: text is released sentence by sentence once it has passed the
tenant's output policy, so a leak is caught before it reaches the client (windowed mode).

Pure: deltas in, text to release out. The model's text is cut into sentences (a `.`, `!` or
`?` followed by white space, or a line break); the unfinished sentence and the last
`window` whole sentences are held back (window 0: only the unfinished word). With
`hold_back` off (a tenant's `asynchronous` mode) nothing is held: each delta is released at once
and judged with the text before it as soon as its word is complete. Each time a
sentence completes, the checks that can
judge a part of an answer (PII not in the input, system-prompt leak, banned terms and topics,
competitors, profanity, brand disparagement, and off-task once there are three sentences) run on
everything written so far; released text therefore passed them with a window behind it. A check
whose action is `block` cuts the stream: nothing more is released and the caller ends it with
finish_reason "content_filter" and the tenant's safe message. Whole-answer checks (groundedness,
JSON schema) are left to validate_response at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.checks.output_policy import PiiDetector, check_output
from agents.checks.review import Action, ResponsePolicy, ReviewInput

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_OFF_TASK_SENTENCES = 3
# Findings that describe a whole answer, not a part of one: judged at the end only.
_WHOLE_ANSWER = frozenset({"refusal", "truncated", "check_error"})


@dataclass(frozen=True)
class StreamStep:
    """What to do after a delta: `release` this text now; `cut` names the check that blocked."""

    release: str = ""
    cut: str | None = None


@dataclass
class StreamGuard:
    policy: ResponsePolicy
    request: ReviewInput
    pii_detector: PiiDetector | None = None
    window: int = 1
    hold_back: bool = True
    text: str = ""  # everything the model wrote so far
    released: int = 0  # characters of `text` released
    checked_sentences: int = 0
    judged: int = 0  # characters of `text` judged (no hold-back only)
    cut: str | None = None
    system_prompt: str = field(init=False)
    user_text: str = field(init=False)
    context_text: str = field(init=False)

    def __post_init__(self) -> None:
        self.system_prompt = "\n".join(c for r, c in self.request.messages if r == "system")
        self.user_text = "\n".join(c for r, c in self.request.messages if r in ("user", "tool"))
        self.context_text = "\n".join(t for _, t in self.request.context)

    def feed(self, delta: str) -> StreamStep:
        if self.cut is not None:
            return StreamStep(cut=self.cut)
        self.text += delta
        if not self.hold_back:
            return self._feed_unheld()
        if self.window == 0:
            return self._feed_words()
        ends = [m.end() for m in _SENTENCE_END.finditer(self.text)]
        if len(ends) <= self.checked_sentences:
            return StreamStep()  # no new whole sentence: nothing new to judge or release
        self.checked_sentences = len(ends)
        whole = self.text[: ends[-1]]
        if (cut := self._judge(whole, len(ends))) is not None:
            return self._block(cut)
        keep = ends[-1 - self.window] if len(ends) > self.window else 0  # release up to here
        return self._release_to(max(keep, self.released))

    def _feed_words(self) -> StreamStep:
        """Window 0: release up to the last whole word once the text so far passed. Faster to
        the first chunk; a leak that spans several words may show its first words."""
        boundary = max(self.text.rfind(" "), self.text.rfind("\n")) + 1
        if boundary <= self.released:
            return StreamStep()
        sentences = len(_SENTENCE_END.findall(self.text[:boundary]))
        if (cut := self._judge(self.text[:boundary], sentences)) is not None:
            return self._block(cut)
        return self._release_to(boundary)

    def _feed_unheld(self) -> StreamStep:
        """No hold-back: judge the words completed so far, then release all the text. What was
        released before a finding stays with the client (Azure OpenAI's asynchronous filter)."""
        boundary = max(self.text.rfind(" "), self.text.rfind("\n")) + 1
        if boundary > self.judged:
            self.judged = boundary
            sentences = len(_SENTENCE_END.findall(self.text[:boundary]))
            if (cut := self._judge(self.text[:boundary], sentences)) is not None:
                return self._block(cut)
        return self._release_to(len(self.text))

    def close(self) -> StreamStep:
        """The model is done: judge the whole text, then release what is left."""
        if self.cut is not None:
            return StreamStep(cut=self.cut)
        sentences = len(_SENTENCE_END.findall(self.text)) + 1
        if (cut := self._judge(self.text, sentences)) is not None:
            return self._block(cut)
        return self._release_to(len(self.text))

    @property
    def released_text(self) -> str:
        return self.text[: self.released]

    def _judge(self, text: str, sentences: int) -> str | None:
        findings, _ = check_output(
            text,
            self.policy.output,
            system_prompt=self.system_prompt,
            user_text=self.user_text,
            context_text=self.context_text,
            pii_detector=self.pii_detector,
            check_off_task=sentences >= MIN_OFF_TASK_SENTENCES and self.request.response_format is None,
        )
        for finding in findings:
            if finding.check not in _WHOLE_ANSWER and self.policy.action_for(finding.check) is Action.BLOCK:
                return finding.check
        return None

    def _block(self, check: str) -> StreamStep:
        self.cut = check
        return StreamStep(cut=check)

    def _release_to(self, end: int) -> StreamStep:
        piece = self.text[self.released : end]
        self.released = max(self.released, end)
        return StreamStep(release=piece)
