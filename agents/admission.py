"""admit: per-tenant rate limits and daily budgets, decided after validate.

Validated requests reach this step re-keyed by tenant (topic `admission`), so one tenant's
decisions are made in order, on one partition, by one agent: no two decisions race. The
state lives in one Faust table with two kinds of keys, both on the tenant's partition:

* `t:<tenant>`: the tenant's usage: a sliding window of sub-buckets (requests, tokens), the
  day's spend, the money reserved by requests in flight, and `seq`, the number of changes
  applied so far;
* `h:<request_id>`: one request's hold: what it reserved, its state (held, settled, expired,
  refused) and the `seq` of the change it caused.

Budgets: admission reserves the worst-case cost (prompt bound + max_tokens at the priciest
model the tenant may use, times every model call validate_response may add); a request is
refused when spend + reservations + its worst case would pass the daily budget, so the day's
spend can never pass it. Settlement (sent once a request's final outcome is published)
releases the reservation and adds the actual cost and tokens.

At-least-once: every change writes the hold first, then the usage, to the same changelog
partition (so after a crash the changelog holds a prefix of them). A redelivered record
finds its hold: if the hold's `seq` is above the usage's, the usage write was lost and its
delta is re-applied from the hold; otherwise the record is a duplicate and changes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Envelope, ErrorCode, ErrorInfo, Settlement, Stage, Status
from sluice.outcome import Identity, Outcome, finish, make_event
from sluice.providers.catalog import Catalog, ModelEntry
from sluice.settings import Settings
from sluice.tenants import TenantConfig
from sluice.tokens import estimate_prompt_tokens, prompt_token_bound

STAGE = Stage.VALIDATE
VARIANT = "admission"  # the admit step's events are validate-stage events of their own
REPAIR_TURN_TOKENS = 256  # a repair re-ask's own instruction, beyond the previous answer
BUDGET_EPSILON_USD = 1e-12  # float sums of reservations must not refuse the last exact fit
BUDGET_BUSY_RETRY_S = 1.0  # budget held by requests in flight: they settle within seconds

Entry = dict[str, Any]
Read = Callable[[str], Entry | None]


def usage_key(tenant: str) -> str:
    return f"t:{tenant}"


def hold_key(request_id: str) -> str:
    return f"h:{request_id}"


@dataclass(frozen=True)
class QuotaConfig:
    window_s: float = 60.0
    buckets: int = 60
    hold_grace_s: float = 120.0
    keep_s: float = 24 * 3600.0  # how long settled holds stay, for idempotence
    # Refusals are remembered only for redeliveries after a crash (the uncommitted tail):
    # briefly, so a client hammering past its limit cannot grow the table without bound.
    keep_refused_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaConfig:
        return cls(
            window_s=settings.quota_window_s,
            buckets=settings.quota_window_buckets,
            hold_grace_s=settings.quota_hold_grace_s,
            keep_s=settings.dedupe_window_s,
        )

    @property
    def bucket_s(self) -> float:
        return self.window_s / self.buckets

    def bucket_of(self, ts: float) -> int:
        return math.floor(ts / self.bucket_s)


@dataclass(frozen=True)
class Reservation:
    """What admission counts for a request before the call: tokens (estimated prompt +
    max_tokens) against tokens-per-minute, and its worst-case cost against the budget."""

    tokens: int
    worst_usd: float


def model_calls(tenant: TenantConfig) -> int:
    """Model calls one request can make: the first, plus validate_response's retries and repairs."""
    return 1 + tenant.output.max_retries + tenant.output.max_repair_attempts


def priciest(
    catalog: Catalog, tenant: TenantConfig, prompt_tokens: int, completion_tokens: int
) -> ModelEntry:
    """The allowed model whose price for this many tokens is highest ('auto' may pick any)."""
    allowed = set(tenant.access.allowed_models)
    candidates = [m for m in catalog.models if not allowed or "auto" in allowed or m.name in allowed]
    return max(candidates or catalog.models, key=lambda m: m.cost_usd(prompt_tokens, completion_tokens))


def reservation_for(envelope: Envelope, tenant: TenantConfig, catalog: Catalog) -> Reservation:
    request = envelope.request
    calls = model_calls(tenant)
    # A repair re-ask sends the previous answer back: the prompt grows by up to max_tokens per call.
    prompt_bound = prompt_token_bound(request) + (calls - 1) * (request.max_tokens + REPAIR_TURN_TOKENS)
    model = priciest(catalog, tenant, prompt_bound, request.max_tokens)
    worst = calls * model.cost_usd(prompt_bound, request.max_tokens)
    return Reservation(tokens=estimate_prompt_tokens(request) + request.max_tokens, worst_usd=worst)


@dataclass
class Decision:
    """Table writes to make, in this order, and what to publish (None: nothing)."""

    writes: list[tuple[str, Entry | None]] = field(default_factory=list)
    outcome: Outcome | None = None
    note: str = ""


# --- usage arithmetic ------------------------------------------------------------------------------


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def fresh_usage(ts: float) -> Entry:
    return {"seq": 0, "day": day_of(ts), "spent_usd": 0.0, "reserved_usd": 0.0, "buckets": {}}


def _current(usage: Entry | None, config: QuotaConfig, ts: float) -> Entry:
    """A copy rolled forward to `ts`: a new UTC day starts spend at zero (reservations carry
    over: those requests are still running); buckets older than the window are dropped."""
    value = dict(usage) if usage else fresh_usage(ts)
    if day_of(ts) > value["day"]:
        value["day"], value["spent_usd"] = day_of(ts), 0.0
    oldest = config.bucket_of(ts) - config.buckets + 1
    value["buckets"] = {k: list(v) for k, v in value["buckets"].items() if int(k) >= oldest}
    return value


def _window_totals(usage: Entry) -> tuple[int, int]:
    counts = usage["buckets"].values()
    return sum(int(c[0]) for c in counts), sum(int(c[1]) for c in counts)


def _room_after(usage: Entry, config: QuotaConfig, ts: float, column: int, limit: int, need: int) -> float:
    """Seconds until enough old buckets leave the window for `need` more under `limit`."""
    total = sum(int(c[column]) for c in usage["buckets"].values())
    for index in sorted(int(k) for k in usage["buckets"]):
        total -= int(usage["buckets"][str(index)][column])
        if total + need <= limit:
            return max((index + config.buckets) * config.bucket_s - ts, 0.0)
    return config.window_s


def _seconds_to_midnight(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return (midnight - now).total_seconds()


def _apply_admit(usage: Entry, hold: Entry) -> None:
    """The usage delta of admitting `hold` (in place)."""
    bucket = usage["buckets"].setdefault(str(hold["bucket"]), [0, 0])
    bucket[0] += 1
    bucket[1] += int(hold["tokens"])
    usage["reserved_usd"] = usage["reserved_usd"] + float(hold["reserved_usd"])
    usage["seq"] = max(int(usage["seq"]), int(hold["seq"]))


def _apply_release(usage: Entry, hold: Entry) -> None:
    """The usage delta of settling or expiring `hold` (in place). An expiry releases the
    reservation and charges it in full; a settlement after an expiry corrects that charge."""
    reserved = float(hold["reserved_usd"])
    if hold.get("was") == "expired":
        charge = float(hold["cost_usd"]) - reserved
    else:
        usage["reserved_usd"] = max(float(usage["reserved_usd"]) - reserved, 0.0)
        charge = float(hold["cost_usd"])
    if hold.get("day") == usage["day"]:  # yesterday's requests are not billed to today
        usage["spent_usd"] = max(float(usage["spent_usd"]) + charge, 0.0)
    bucket = usage["buckets"].get(str(hold["bucket"]))
    if bucket is not None and hold["state"] == "settled":  # tokens: the estimate becomes the actual
        bucket[1] = max(int(bucket[1]) + int(hold["actual_tokens"]) - int(hold["tokens"]), 0)
    usage["seq"] = max(int(usage["seq"]), int(hold["release_seq"]))


def _repair(usage: Entry, hold: Entry) -> bool:
    """Re-apply what `hold` records but `usage` lost (a crash between the two writes)."""
    repaired = False
    if hold["state"] in ("held", "settled", "expired") and int(hold["seq"]) > int(usage["seq"]):
        _apply_admit(usage, hold)
        repaired = True
    if hold.get("release_seq") is not None and int(hold["release_seq"]) > int(usage["seq"]):
        _apply_release(usage, hold)
        repaired = True
    return repaired


# --- decisions -------------------------------------------------------------------------------------


def _refusal(
    envelope: Envelope, code: ErrorCode, message: str, retry_after_s: float, now: datetime, started: float
) -> Outcome:
    return finish(
        Identity.of(envelope),
        STAGE,
        Status.REJECTED,
        reply_to=envelope.reply_to,
        received_at=envelope.received_at,
        now=now,
        duration_ms=_elapsed(started),
        error=ErrorInfo(code=code, message=message, stage=STAGE, retry_after_s=round(retry_after_s, 3)),
        attributes={"retry_after_s": f"{retry_after_s:.3f}"},
        variant=VARIANT,
    )


def _admitted(envelope: Envelope, hold: Entry, now: datetime, started: float, redelivered: bool) -> Outcome:
    event = make_event(
        Identity.of(envelope),
        STAGE,
        Status.OK.value,  # "ok" like every passing stage; the attribute says what passed
        now=now,
        duration_ms=_elapsed(started),
        attributes={
            "admission": "admitted",
            "reserved_usd": f"{hold['reserved_usd']:.8f}",
            "reserved_tokens": str(hold["tokens"]),
            **({"redelivered": "true"} if redelivered else {}),
        },
        variant=VARIANT,
    )
    return Outcome(event=event, forward=envelope)


def check_limits(
    usage: Entry, rules: TenantConfig, need: Reservation, config: QuotaConfig, ts: float
) -> tuple[ErrorCode, str, float] | None:
    """The first limit this request would break: (code, message, retry-after seconds)."""
    quota = rules.quota
    requests, tokens = _window_totals(usage)
    window = f"{config.window_s:g} s"
    if quota.requests_per_minute is not None and requests + 1 > quota.requests_per_minute:
        wait = _room_after(usage, config, ts, 0, quota.requests_per_minute, 1)
        return ErrorCode.RATE_LIMITED, f"rate limit: {quota.requests_per_minute} requests per {window}", wait
    if quota.tokens_per_minute is not None:
        if need.tokens > quota.tokens_per_minute:
            message = (
                f"token limit: this request may use {need.tokens} tokens (prompt + max_tokens); "
                f"the limit is {quota.tokens_per_minute} per {window}: lower max_tokens"
            )
            return ErrorCode.RATE_LIMITED, message, config.window_s
        if tokens + need.tokens > quota.tokens_per_minute:
            wait = _room_after(usage, config, ts, 1, quota.tokens_per_minute, need.tokens)
            return ErrorCode.RATE_LIMITED, f"token limit: {quota.tokens_per_minute} tokens per {window}", wait
    budget = quota.daily_budget_usd
    if budget is not None:
        spent, reserved = float(usage["spent_usd"]), float(usage["reserved_usd"])
        if spent + reserved + need.worst_usd > budget + BUDGET_EPSILON_USD:
            busy = reserved > 0 and spent + need.worst_usd <= budget
            wait = BUDGET_BUSY_RETRY_S if busy else _seconds_to_midnight(ts)
            message = (
                f"daily budget of ${budget:g} reached: ${spent:.6f} spent, ${reserved:.6f} reserved "
                f"by requests in flight; this request may cost up to ${need.worst_usd:.6f}"
            )
            return ErrorCode.BUDGET_EXCEEDED, message, wait
    return None


def admit(
    envelope: Envelope,
    rules: TenantConfig,
    need: Reservation,
    read: Read,
    config: QuotaConfig,
    now: datetime,
) -> Decision:
    """Admit (forward to sanitize) or refuse (answer rate_limited / budget_exceeded)."""
    started = time.perf_counter()
    ts = now.timestamp()
    ukey, hkey = usage_key(envelope.tenant), hold_key(envelope.request_id)
    usage = _current(read(ukey), config, ts)
    hold = read(hkey)
    if hold is not None:  # a redelivered admission: decided before; repair and repeat it
        writes: list[tuple[str, Entry | None]] = [(ukey, usage)] if _repair(usage, hold) else []
        if hold["state"] == "refused":
            code = ErrorCode(hold["code"])
            outcome = _refusal(envelope, code, hold["message"], float(hold["retry_after_s"]), now, started)
            return Decision(writes, outcome, "refusal repeated")
        if hold["state"] == "held":
            return Decision(writes, _admitted(envelope, hold, now, started, True), "admission repeated")
        return Decision(writes, None, "already finished")

    problem = check_limits(usage, rules, need, config, ts)
    if problem is not None:
        code, message, wait = problem
        refused: Entry = {"state": "refused", "tenant": envelope.tenant, "code": code.value}
        refused |= {"message": message, "retry_after_s": wait, "at": ts}
        return Decision([(hkey, refused)], _refusal(envelope, code, message, wait, now, started), code.value)

    held: Entry = {
        "state": "held",
        "tenant": envelope.tenant,
        "seq": int(usage["seq"]) + 1,
        "bucket": config.bucket_of(ts),
        "tokens": need.tokens,
        "reserved_usd": need.worst_usd,
        "day": usage["day"],
        "expires_at": envelope.deadline_at.timestamp() + config.hold_grace_s,
        "release_seq": None,
        "at": ts,
    }
    _apply_admit(usage, held)
    return Decision([(hkey, held), (ukey, usage)], _admitted(envelope, held, now, started, False), "admitted")


def settle(settlement: Settlement, read: Read, config: QuotaConfig, now: datetime) -> Decision:
    """Release a request's reservation and book its actual cost and tokens, once. An `expired`
    settlement (from the sweep: the request's final outcome never came) charges the full
    reservation instead, so the budget stays safe; a late real settlement corrects the charge."""
    ts = now.timestamp()
    ukey, hkey = usage_key(settlement.tenant), hold_key(settlement.request_id)
    hold = read(hkey)
    if hold is None or hold["state"] == "refused":
        return Decision(note="nothing held")  # admitted before quotas existed, or a stray record
    usage = _current(read(ukey), config, ts)
    writes: list[tuple[str, Entry | None]] = [(ukey, usage)] if _repair(usage, hold) else []
    if settlement.expired:
        if hold["state"] != "held":
            return Decision(writes, note="settled before it expired")
        released = {**hold, "state": "expired", "cost_usd": hold["reserved_usd"], "at": ts}
    else:
        if hold["state"] == "settled":
            return Decision(writes, note="already settled")
        released = {
            **hold,
            "state": "settled",
            "was": hold["state"],
            "cost_usd": settlement.cost_usd,
            "actual_tokens": settlement.prompt_tokens + settlement.completion_tokens,
            "at": ts,
        }
    released["release_seq"] = int(usage["seq"]) + 1
    _apply_release(usage, released)
    return Decision([(hkey, released), (ukey, usage)], note=released["state"])


def expiry_of(hold: Entry, request_id: str, now: datetime) -> Settlement:
    """The settlement the sweep sends for a hold past its expiry (through the admission topic,
    so it is ordered and redelivered like every other change to the tenant's books)."""
    return Settlement(
        request_id=request_id,
        tenant=str(hold["tenant"]),
        status=Status.FAILED,
        finished_at=now,
        expired=True,
    )


def sweepable(
    items: Iterable[tuple[str, Any]], config: QuotaConfig, now: datetime
) -> tuple[list[str], list[str]]:
    """(holds to expire, finished holds old enough to forget) among the table's entries."""
    ts = now.timestamp()
    to_expire, to_forget = [], []
    for key, value in items:
        if not key.startswith("h:") or not isinstance(value, dict):
            continue
        if value.get("state") == "held":
            if float(value.get("expires_at", ts)) < ts:
                to_expire.append(key[2:])
        else:
            keep = config.keep_refused_s if value.get("state") == "refused" else config.keep_s
            if float(value.get("at", ts)) < ts - keep:
                to_forget.append(key)
    return to_expire, to_forget


def _elapsed(started: float) -> float:
    return (time.perf_counter() - started) * 1000
