"""The sanitize stage's pure core: one function from (messages, context, policy) to an outcome.

Order matters: abuse limits look at the raw text (control soup disappears once normalised);
normalisation comes next so every later check sees the same characters the model will; PII is
redacted before injection scanning so evidence and analytics never carry personal data; context
passages are scored on their own with their own policy. The function never raises, is
idempotent on its own output and never returns more than `max_total_chars` characters.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from agents.checks.abuse import AbuseAction, AbuseFinding, AbuseKind, AbusePolicy, check_abuse
from agents.checks.injection import DEFAULT_SCANNER, OBFUSCATION, InjectionScanner, ScanResult
from agents.checks.normalize import normalize, normalize_report
from agents.checks.pii import PiiAction, PiiPolicy, PiiType, RedactionMapping, redact

__all__ = [
    "Action",
    "ContextAction",
    "Decision",
    "IndirectPolicy",
    "InjectionPolicy",
    "PassageFinding",
    "SanitizeOutcome",
    "SanitizePolicy",
    "TenantPolicies",
    "sanitize_request",
]

logger = logging.getLogger(__name__)

DROPPED_PASSAGE = "[passage withheld by sanitizer: suspected prompt injection]"
REMOVED_SEGMENT = "[instruction-like text removed]"
_SEGMENTS = re.compile(r"[^\n]*?(?:[.!?]+(?=\s)|[。！？]+|\n|$)")
_MAX_SEGMENTS = 400
_FIXPOINT_ROUNDS = 3


class Action(StrEnum):
    ALLOW = "allow"
    FLAG = "flag"
    BLOCK = "block"


class ContextAction(StrEnum):
    KEEP = "keep"  # flag only
    NEUTRALIZE = "neutralize"  # remove the offending sentences, drop the passage if that is not enough
    DROP = "drop"  # replace the whole passage with a marker
    BLOCK = "block"  # block the request


@dataclass(frozen=True, slots=True)
class InjectionPolicy:
    """Direct injection in messages: block at or above `block_threshold`, flag from `flag_threshold`."""

    flag_threshold: float = 0.5
    block_threshold: float = 0.85
    scan_roles: frozenset[str] = frozenset({"user"})
    # Opt-in: add the learned n-gram score (agents/checks/injection_model.py) to the rules. Off by
    # default: on the public held-out corpora it raised recall little and it costs false positives on
    # the own hard-benign set (README, "Detectors on public data").
    learned_model: bool = False


@dataclass(frozen=True, slots=True)
class IndirectPolicy:
    """Indirect injection in context passages, scored separately from the messages."""

    threshold: float = 0.5
    action: ContextAction = ContextAction.NEUTRALIZE


@dataclass(frozen=True, slots=True)
class SanitizePolicy:
    """Everything the sanitize step decides by; tenants override parts of it with `override`."""

    injection: InjectionPolicy = field(default_factory=InjectionPolicy)
    indirect: IndirectPolicy = field(default_factory=IndirectPolicy)
    pii: PiiPolicy = field(default_factory=PiiPolicy)
    abuse: AbusePolicy = field(default_factory=AbusePolicy)
    max_total_chars: int = 64_000
    redact_roles: frozenset[str] = frozenset({"system", "user", "assistant"})

    def override(self, changes: Mapping[str, Any]) -> SanitizePolicy:
        """A copy with `changes` applied; nested sections take mappings, e.g.
        `{"injection": {"block_threshold": 0.95}, "pii": {"actions": {"CARD": "block"}}}`."""
        updates: dict[str, Any] = {}
        for name, value in changes.items():
            current = getattr(self, name)
            if isinstance(value, Mapping) and isinstance(
                current, InjectionPolicy | IndirectPolicy | PiiPolicy | AbusePolicy
            ):
                section = dict(value)
                if isinstance(current, PiiPolicy) and "actions" in section:
                    section["actions"] = MappingProxyType(
                        {PiiType(k): PiiAction(v) for k, v in dict(section["actions"]).items()}
                    )
                if isinstance(current, InjectionPolicy) and "scan_roles" in section:
                    section["scan_roles"] = frozenset(section["scan_roles"])
                if isinstance(current, IndirectPolicy) and "action" in section:
                    section["action"] = ContextAction(section["action"])
                if isinstance(current, AbusePolicy) and "actions" in section:
                    section["actions"] = MappingProxyType(
                        {AbuseKind(k): AbuseAction(v) for k, v in dict(section["actions"]).items()}
                    )
                updates[name] = dataclasses.replace(current, **section)
            elif name == "redact_roles":
                updates[name] = frozenset(value)
            else:
                updates[name] = value
        return dataclasses.replace(self, **updates)


@dataclass(frozen=True, slots=True)
class TenantPolicies:
    """The default policy plus per-tenant variants."""

    default: SanitizePolicy = field(default_factory=SanitizePolicy)
    tenants: Mapping[str, SanitizePolicy] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_overrides(
        cls, overrides: Mapping[str, Mapping[str, Any]], default: SanitizePolicy | None = None
    ) -> TenantPolicies:
        base = default or SanitizePolicy()
        return cls(base, MappingProxyType({tenant: base.override(ch) for tenant, ch in overrides.items()}))

    def for_tenant(self, tenant: str | None) -> SanitizePolicy:
        return self.tenants.get(tenant or "", self.default)


@dataclass(frozen=True, slots=True)
class Decision:
    """`code` names the contract's error code for a block (prompt_injection, policy_violation,
    payload_too_large, internal); it is None unless the action is BLOCK."""

    action: Action
    reason: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class PassageFinding:
    id: str
    risk: float
    action: ContextAction
    scores: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SanitizeOutcome:
    messages: list[tuple[str, str]]
    context: list[tuple[str, str]]
    decision: Decision
    risk_score: float
    context_risk: float
    detector_scores: dict[str, float]
    flags: list[str]
    redaction_counts: dict[str, int]
    mapping: RedactionMapping
    abuse_findings: list[AbuseFinding]
    passages: list[PassageFinding]
    evidence: list[str]
    techniques: list[str]

    def analytics(self) -> dict[str, Any]:
        """What may go to the analytics store: scores and counts, never text or the mapping."""
        return {
            "decision": self.decision.action.value,
            "reason": self.decision.reason,
            "code": self.decision.code,
            "risk_score": self.risk_score,
            "context_risk": self.context_risk,
            "detector_scores": dict(self.detector_scores),
            "flags": list(self.flags),
            "redactions": dict(self.redaction_counts),
            "abuse": [finding.kind.value for finding in self.abuse_findings],
            "passages": [{"id": p.id, "risk": p.risk, "action": p.action.value} for p in self.passages],
            "techniques": list(self.techniques),
        }


@dataclass(slots=True)
class _Pass:
    messages: list[tuple[str, str]]
    context: list[tuple[str, str]]
    counts: dict[str, int]
    blocked_pii: list[PiiType]
    scans: list[ScanResult]
    passages: list[PassageFinding]
    hidden: bool


def _coerce_pairs(items: Iterable[Any] | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in items or ():
        if isinstance(item, tuple | list) and len(item) == 2:
            first, second = item
        else:
            first, second = "", item
        pairs.append(
            (
                first if isinstance(first, str) else str(first),
                second if isinstance(second, str) else str(second),
            )
        )
    return pairs


def _fit(pairs: Sequence[tuple[str, str]], budget: int) -> tuple[list[tuple[str, str]], int, bool]:
    """Cut texts, in order, so their total length stays within `budget`."""
    fitted: list[tuple[str, str]] = []
    cut = False
    for key, text in pairs:
        if len(text) > budget:
            text, cut = text[: max(budget, 0)], True
        budget -= len(text)
        fitted.append((key, text))
    return fitted, budget, cut


def _neutralize(text: str, policy: IndirectPolicy, scanner: InjectionScanner) -> tuple[str, ContextAction]:
    """Remove the sentences that carry the injection; if the rest still scores, drop it all."""
    if policy.action is ContextAction.DROP:
        return DROPPED_PASSAGE, ContextAction.DROP
    segments = [seg for seg in _SEGMENTS.findall(text) if seg]
    if len(segments) > _MAX_SEGMENTS:
        return DROPPED_PASSAGE, ContextAction.DROP
    kept: list[str] = []
    removed_last = False
    for segment in segments:
        if segment.strip() and scanner.scan(segment, passage=True).risk >= policy.threshold:
            if not removed_last:
                lead = segment[: len(segment) - len(segment.lstrip())]
                kept.append(lead + REMOVED_SEGMENT + ("\n" if segment.endswith("\n") else ""))
            removed_last = True
        else:
            kept.append(segment)
            removed_last = False
    cleaned = "".join(kept).strip()
    if not cleaned or scanner.scan(cleaned, passage=True).risk >= policy.threshold:
        return DROPPED_PASSAGE, ContextAction.DROP
    return cleaned, ContextAction.NEUTRALIZE


def _process(
    messages: list[tuple[str, str]],
    context: list[tuple[str, str]],
    policy: SanitizePolicy,
    scanner: InjectionScanner,
    mapping: RedactionMapping,
) -> _Pass:
    reports = [normalize_report(text) for _, text in messages]
    ctx_texts = [normalize(text) for _, text in context]
    for report in reports:
        mapping.reserve_existing(report.text)
    for text in ctx_texts:
        mapping.reserve_existing(text)
    counts: dict[str, int] = {}
    blocked: list[PiiType] = []

    def scrub(text: str) -> str:
        result = redact(text, policy.pii, mapping)
        for kind, number in result.counts.items():
            counts[kind] = counts.get(kind, 0) + number
        blocked.extend(t for t in result.blocked if t not in blocked)
        return result.text

    out_messages: list[tuple[str, str]] = []
    scans: list[ScanResult] = []
    for (role, _), report in zip(messages, reports, strict=True):
        text = scrub(report.text) if role in policy.redact_roles else report.text
        out_messages.append((role, text))
        if role in policy.injection.scan_roles:
            scans.append(
                scanner.scan(
                    text,
                    hidden_text=report.hidden_text,
                    bidi_override=report.bidi_overrides > 0,
                    normalized=True,
                )
            )
    out_context: list[tuple[str, str]] = []
    passages: list[PassageFinding] = []
    for (pid, _), raw in zip(context, ctx_texts, strict=True):
        text = scrub(raw)
        result = scanner.scan(text, passage=True, normalized=True)
        action = ContextAction.KEEP
        if result.risk >= policy.indirect.threshold:
            action = policy.indirect.action
            if action in (ContextAction.NEUTRALIZE, ContextAction.DROP):
                text, action = _neutralize(text, policy.indirect, scanner)
        passages.append(PassageFinding(pid, result.risk, action, result.scores))
        out_context.append((pid, text))
    hidden = any(report.hidden_text for report in reports)
    return _Pass(out_messages, out_context, counts, blocked, scans, passages, hidden)


def _decide(
    state: _Pass, findings: list[AbuseFinding], policy: SanitizePolicy, too_large: bool, risk: float
) -> tuple[Decision, list[str]]:
    flags: set[str] = set()
    techniques = {t for scan in state.scans for t in scan.techniques}
    obfuscation = max((scan.scores.get(OBFUSCATION, 0.0) for scan in state.scans), default=0.0)
    if risk >= policy.injection.flag_threshold:
        flags.add("prompt_injection")
    if techniques or obfuscation >= policy.injection.flag_threshold:
        flags.add("obfuscation")
    if state.hidden:
        flags.add("hidden_text")
    if state.counts:
        flags.add("pii_redacted")
    if state.blocked_pii:
        flags.add("pii_blocked")
    indirect = [p for p in state.passages if p.risk >= policy.indirect.threshold]
    if indirect:
        flags.add("indirect_injection")
    for passage in indirect:
        if passage.action is not ContextAction.KEEP and passage.action is not ContextAction.BLOCK:
            flags.add(f"context_{passage.action.value}")
    for finding in findings:
        flags.update(("abuse", f"abuse_{finding.kind.value}"))
    if too_large:
        flags.add("truncated")
    rejected = [f for f in findings if f.action is AbuseAction.REJECT]
    top = max(state.scans, key=lambda s: s.risk, default=None)
    detail = (
        ", ".join(f"{k} {v:.2f}" for k, v in sorted(top.scores.items(), key=lambda kv: -kv[1])[:3])
        if top
        else ""
    )
    if too_large:
        decision = Decision(
            Action.BLOCK, f"prompt exceeds {policy.max_total_chars} characters", "payload_too_large"
        )
    elif rejected:
        decision = Decision(Action.BLOCK, f"abuse limit: {rejected[0].reason}", "policy_violation")
    elif state.blocked_pii:
        decision = Decision(
            Action.BLOCK,
            "personal data not allowed: " + ", ".join(t.value for t in state.blocked_pii),
            "policy_violation",
        )
    elif risk >= policy.injection.block_threshold:
        decision = Decision(Action.BLOCK, f"prompt injection (risk {risk:.2f}: {detail})", "prompt_injection")
    elif any(p.action is ContextAction.BLOCK for p in indirect):
        decision = Decision(Action.BLOCK, "prompt injection in context passage", "prompt_injection")
    elif risk >= policy.injection.flag_threshold:
        decision = Decision(Action.FLAG, f"possible prompt injection (risk {risk:.2f}: {detail})")
    elif indirect:
        decision = Decision(Action.FLAG, f"instructions in {len(indirect)} context passage(s) neutralised")
    elif findings:
        decision = Decision(Action.FLAG, f"abuse limit: {findings[0].reason}")
    elif "obfuscation" in flags or state.hidden:
        decision = Decision(Action.FLAG, "obfuscated or invisible text")
    else:
        decision = Decision(Action.ALLOW, "clean" if not state.counts else "personal data redacted")
    return decision, sorted(flags)


def _run(
    messages: list[tuple[str, str]],
    context: list[tuple[str, str]],
    policy: SanitizePolicy,
    scanner: InjectionScanner,
) -> SanitizeOutcome:
    bound = max(policy.max_total_chars, 0)
    too_large = sum(len(t) for _, t in messages) + sum(len(t) for _, t in context) > bound
    findings: list[AbuseFinding] = []
    for index, (_, text) in enumerate(messages):
        findings.extend(check_abuse(text[: bound + 1], policy.abuse, f"message[{index}]"))
    for pid, text in context:
        findings.extend(check_abuse(text[: bound + 1], policy.abuse, f"context[{pid}]"))
    # Cut oversized input before the expensive steps (NFKC can also grow text, up to 18x).
    messages, left, _ = _fit(messages, bound)
    context, _, _ = _fit(context, left)
    mapping = RedactionMapping()
    state = _process(messages, context, policy, scanner, mapping)
    first = state
    for _ in range(_FIXPOINT_ROUNDS):
        out_messages, left, cut_m = _fit(state.messages, bound)
        out_context, _, cut_c = _fit(state.context, left)
        if not (cut_m or cut_c):
            break
        # A cut can split a token into something that scans differently: repeat until the
        # output is its own sanitised form, so sanitising it again changes nothing.
        too_large = True
        state = _process(out_messages, out_context, policy, scanner, mapping)
        if state.messages == out_messages and state.context == out_context:
            break
    else:
        state.messages = [(role, "") for role, _ in state.messages]
        state.context = [(pid, "") for pid, _ in state.context]
    risk = max((scan.risk for scan in first.scans), default=0.0)
    decision, flags = _decide(first, findings, policy, too_large, risk)
    scores: dict[str, float] = {}
    for scan in first.scans:
        for name, value in scan.scores.items():
            scores[name] = max(scores.get(name, 0.0), value)
    return SanitizeOutcome(
        messages=state.messages,
        context=state.context,
        decision=decision,
        risk_score=risk,
        context_risk=max((p.risk for p in first.passages), default=0.0),
        detector_scores=scores,
        flags=flags,
        redaction_counts=dict(first.counts),
        mapping=mapping,
        abuse_findings=findings,
        passages=first.passages,
        evidence=[item for scan in first.scans for item in scan.evidence][:20],
        techniques=sorted({t for scan in first.scans for t in scan.techniques}),
    )


@lru_cache(maxsize=1)
def _learned_scanner() -> InjectionScanner:
    """The default rules plus the learned n-gram detector; its model file is checked on first use."""
    from agents.checks.injection_model import NgramDetector  # numpy and the model load only when asked for

    return InjectionScanner(extra=(NgramDetector(),))


def sanitize_request(
    messages: Iterable[tuple[str, str]],
    context: Iterable[tuple[str, str]] = (),
    policy: SanitizePolicy | None = None,
    scanner: InjectionScanner | None = None,
) -> SanitizeOutcome:
    """Sanitise one request: `messages` are (role, content), `context` are (id, text).

    Never raises: on an internal error the outcome blocks (fail closed) with empty text.
    """
    policy = policy or SanitizePolicy()
    try:
        pairs = _coerce_pairs(messages)
        passages = _coerce_pairs(context)
        chosen = scanner or (_learned_scanner() if policy.injection.learned_model else DEFAULT_SCANNER)
        return _run(pairs, passages, policy, chosen)
    except Exception as exc:  # fail closed rather than let a bad input take the stage down
        logger.exception("sanitizer failed; blocking the request")
        return SanitizeOutcome(
            messages=[],
            context=[],
            decision=Decision(Action.BLOCK, f"sanitizer error: {type(exc).__name__}", "internal"),
            risk_score=1.0,
            context_risk=0.0,
            detector_scores={},
            flags=["sanitizer_error"],
            redaction_counts={},
            mapping=RedactionMapping(),
            abuse_findings=[],
            passages=[],
            evidence=[],
            techniques=[],
        )
