"""Periodic jobs of the sink process, which owns the warehouse: alert evaluation, the feedback
loop's route advice, consumer-lag measurement and retention.

Each job reads the per-minute rollups (or the broker, for lag) and publishes only transitions:
an Alert when a rule starts or stops firing, a RouteAdvice when a (route, model)'s advice changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from aiokafka import TopicPartition
from pydantic import ValidationError

from schemas import Alert, RouteAdvice
from sluice import kafka_clients
from sluice.observability.prom import ALERTS_FIRING, CONSUMER_LAG
from sluice.observability.rules import AlertRule
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse
from sluice.warehouse.metrics import ALERT_METRICS, SATISFACTION
from topics import (
    ALERTS,
    DEADLETTER,
    EVENTS,
    FEEDBACK,
    INFERRED,
    REQUESTS,
    ROUTE_ADVICE,
    ROUTED,
    SANITIZED,
    VALIDATED,
    TopicSpec,
)

log = logging.getLogger(__name__)

UNROUTED, NO_MODEL = "(unrouted)", "(none)"
DEFAULT_RAW_TTL_DAYS, DEFAULT_ROLLUP_TTL_DAYS = 30, 400
HISTORY = 1000  # transitions kept in memory per job (tests and /stats); the topics have them all


def _history() -> deque[Any]:
    return deque(maxlen=HISTORY)


class Publisher(Protocol):
    """What the jobs need from a Kafka producer (the sink's own, acks=all)."""

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...


async def every(
    interval_s: float, stop: asyncio.Event, job: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run `job` now and then every `interval_s` until `stop`. A failing run is logged and the
    next one tried: a warehouse or broker hiccup must not end monitoring for good."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            await job()
        except Exception as exc:  # warehouse (many driver types), broker or webhook: log, retry
            log.warning("%s failed (next try in %.1fs): %s", what, interval_s, exc, exc_info=True)
        remaining = max(0.0, interval_s - (time.monotonic() - started))
        try:
            await asyncio.wait_for(stop.wait(), timeout=remaining)
        except TimeoutError:
            continue


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --- consumer lag -------------------------------------------------------------------------

# The topic each consumer reads, labelled by the stage that reads it.
STAGE_INPUTS: tuple[tuple[TopicSpec, str], ...] = (
    (REQUESTS, "validate"),
    (VALIDATED, "sanitize"),
    (SANITIZED, "route"),
    (ROUTED, "infer"),
    (INFERRED, "validate_response"),
)


@dataclass
class LagMonitor:
    """End offset minus committed offset per (group, topic): the pipeline worker's group (its
    app_id) on the stage topics and the sink's group on what it mirrors."""

    settings: Settings
    lags: dict[tuple[str, str], int] = field(default_factory=dict)
    _readers: dict[str, Any] = field(default_factory=dict)

    def groups(self) -> dict[str, list[tuple[str, str]]]:
        """group -> (topic, the stage that reads it)."""
        prefix = self.settings.topic_prefix
        sink = [(spec.name(prefix), "sink") for spec in (EVENTS, FEEDBACK, DEADLETTER)]
        return {
            self.settings.app_id: [(spec.name(prefix), stage) for spec, stage in STAGE_INPUTS],
            self.settings.sink_group: sink,
        }

    async def start(self) -> None:
        """One consumer per group that never subscribes: it only reads the group's committed
        offsets (OffsetFetch) and the end offsets, so it never joins or disturbs the group."""
        for group in self.groups():
            reader = kafka_clients.consumer(
                self.settings,
                group_id=group,
                client_id="sluice-lag",
                enable_auto_commit=False,
            )
            await reader.start()
            self._readers[group] = reader

    async def stop(self) -> None:
        for reader in self._readers.values():
            await reader.stop()
        self._readers.clear()

    async def measure(self) -> None:
        lags: dict[tuple[str, str], int] = {}
        for group, topics in self.groups().items():
            reader = self._readers[group]
            for topic, stage in topics:
                partitions = reader.partitions_for_topic(topic)
                if not partitions:
                    await reader._client.force_metadata_update()
                    partitions = reader.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in sorted(partitions)]
                if not tps:
                    continue
                ends = await reader.end_offsets(tps)
                starts = await reader.beginning_offsets(tps)
                total = 0
                for tp in tps:
                    committed = await reader.committed(tp)
                    position = committed if committed is not None and committed >= 0 else starts[tp]
                    total += max(0, ends[tp] - position)
                lags[(group, topic)] = total
                CONSUMER_LAG.labels(group, topic, stage).set(total)
        self.lags = lags

    @property
    def worst(self) -> float | None:
        """The largest lag of any group and topic (None before the first measurement)."""
        return float(max(self.lags.values())) if self.lags else None


# --- alerts -------------------------------------------------------------------------------


@dataclass
class AlertEvaluator:
    """Evaluates every rule each interval; publishes, logs and POSTs only transitions. A rule's
    state changes only once its transition is on the alerts topic: when the publish fails, the
    next evaluation finds the same transition and publishes it then, so none is lost."""

    settings: Settings
    warehouse: Warehouse
    producer: Publisher
    lag: LagMonitor | None = None
    http: httpx.AsyncClient | None = None
    firing: dict[str, datetime] = field(default_factory=dict)
    published: deque[Alert] = field(default_factory=_history)

    async def value(self, rule: AlertRule) -> float | None:
        if rule.metric == "consumer_lag":
            return self.lag.worst if self.lag is not None else None
        query = ALERT_METRICS[rule.metric].query
        rows = await self.warehouse.aquery(
            query.sql_for(rule.window_minutes), {"minutes": rule.window_minutes}
        )
        return _number(rows[0]["value"]) if rows else None

    async def evaluate(self) -> list[Alert]:
        """One pass over the rules; returns the transitions it published."""
        transitions = []
        for rule in self.settings.alert_rules:
            value = await self.value(rule)
            now = datetime.now(UTC)
            if rule.breached(value) and rule.name not in self.firing:
                transitions.append(self._alert(rule, "firing", value, now, now))
            elif not rule.breached(value) and rule.name in self.firing:
                transitions.append(self._alert(rule, "resolved", value, self.firing[rule.name], now))
        for alert in transitions:
            await self._announce(alert)  # raises when the topic refused it: the state stays
            if alert.state == "firing":
                self.firing[alert.rule] = alert.since
            else:
                self.firing.pop(alert.rule, None)
        for rule in self.settings.alert_rules:
            ALERTS_FIRING.labels(rule.name).set(1 if rule.name in self.firing else 0)
        return transitions

    def _alert(
        self, rule: AlertRule, state: str, value: float | None, since: datetime, now: datetime
    ) -> Alert:
        shown = "no data" if value is None else f"{value:.4g}"
        relation = ">" if rule.above else "<"
        verb = "fires" if state == "firing" else "resolved"
        window = "latest" if rule.metric == "consumer_lag" else f"over {rule.window_minutes} min"
        return Alert(
            rule=rule.name,
            metric=rule.metric,
            state=state,  # type: ignore[arg-type]
            severity=rule.severity,
            value=value,
            threshold=rule.threshold,
            above=rule.above,
            window_minutes=rule.window_minutes,
            since=since,
            ts=now,
            message=f"{rule.name} {verb}: {rule.metric} {shown} ({relation} {rule.threshold:g} {window})",
        )

    async def _announce(self, alert: Alert) -> None:
        level = logging.WARNING if alert.state == "firing" else logging.INFO
        log.log(level, "alert %s [%s]: %s", alert.state, alert.severity, alert.message)
        body = alert.model_dump_json().encode()
        topic = ALERTS.name(self.settings.topic_prefix)
        await self.producer.send_and_wait(topic, body, key=alert.rule.encode())
        self.published.append(alert)
        url = self.settings.alert_webhook_url
        if url is not None and self.http is not None:
            try:
                reply = await self.http.post(
                    url.get_secret_value(), content=body, headers={"Content-Type": "application/json"}
                )
                if reply.status_code >= 300:
                    log.warning("alert webhook answered %d", reply.status_code)
            except httpx.HTTPError as exc:  # the topic has the alert; the webhook is best effort
                log.warning("alert webhook failed: %s", type(exc).__name__)


# --- the feedback loop --------------------------------------------------------------------


@dataclass
class FeedbackAdvisor:
    """Turns ratings into route advice. A (route, model) is demoted when its mean rating over
    the window is <= feedback_demote_at with at least feedback_min_samples ratings, and
    un-demoted when the mean recovers to >= feedback_recover_at, or when too few ratings remain
    in the window (a demoted model gets little traffic: it is given another chance rather than
    being shunned for good). Advice is published only when it changes."""

    settings: Settings
    warehouse: Warehouse
    producer: Publisher
    demoted: dict[tuple[str, str], bool] = field(default_factory=dict)
    published: deque[RouteAdvice] = field(default_factory=_history)
    skipped_records: int = 0

    async def load(self) -> None:
        """The newest advice already on the compacted topic, so a restart repeats nothing."""
        topic = ROUTE_ADVICE.name(self.settings.topic_prefix)
        consumer = kafka_clients.consumer(self.settings, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            if not tps:
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while not await _caught_up(consumer, tps, ends):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        self._remember(record.value, f"{record.topic}@{record.offset}")
        finally:
            await consumer.stop()

    def _remember(self, value: bytes | None, where: str) -> None:
        """Fold one record of the advice topic in; a malformed one is logged and skipped, so one
        bad record never stops the sink from starting."""
        if value is None:
            return
        try:
            advice = RouteAdvice.model_validate_json(value)
        except ValidationError as exc:
            self.skipped_records += 1
            log.error("route advice at %s skipped: not a valid RouteAdvice (%s)", where, exc.error_count())
            return
        self.demoted[(advice.route, advice.model)] = advice.demote

    async def evaluate(self) -> list[RouteAdvice]:
        settings = self.settings
        window = settings.feedback_window_minutes
        rows = await self.warehouse.aquery(SATISFACTION.sql_for(window), {"minutes": window})
        seen: dict[tuple[str, str], tuple[float, int]] = {}
        for row in rows:
            if row["route"] == UNROUTED or row["model"] == NO_MODEL:
                continue
            mean = _number(row["mean_rating"])
            if mean is not None:
                seen[(str(row["route"]), str(row["model"]))] = (mean, int(row["ratings"]))
        changes = []
        for pair in sorted(set(seen) | {k for k, demoted in self.demoted.items() if demoted}):
            mean, samples = seen.get(pair, (0.0, 0))
            advice = self._decide(pair, mean, samples)
            if advice is not None:
                changes.append(advice)
        for advice in changes:
            topic = ROUTE_ADVICE.name(settings.topic_prefix)
            key = f"{advice.route}|{advice.model}".encode()
            await self.producer.send_and_wait(topic, advice.model_dump_json().encode(), key=key)
            self.demoted[(advice.route, advice.model)] = advice.demote
            self.published.append(advice)
            log.warning(
                "route advice %s|%s demote=%s: %s", advice.route, advice.model, advice.demote, advice.reason
            )
        return changes

    def _decide(self, pair: tuple[str, str], mean: float, samples: int) -> RouteAdvice | None:
        settings = self.settings
        window = settings.feedback_window_minutes
        enough = samples >= settings.feedback_min_samples
        current = self.demoted.get(pair, False)
        if not current and enough and mean <= settings.feedback_demote_at:
            reason = (
                f"demoted: mean rating {mean:+.2f} over {samples} ratings in {window} min"
                f" <= {settings.feedback_demote_at:+.2f}"
            )
        elif current and enough and mean >= settings.feedback_recover_at:
            reason = (
                f"restored: mean rating {mean:+.2f} over {samples} ratings in {window} min"
                f" >= {settings.feedback_recover_at:+.2f}"
            )
        elif current and not enough:
            reason = (
                f"restored: only {samples} ratings in {window} min"
                f" (< {settings.feedback_min_samples}); trying the model again"
            )
        else:
            return None
        return RouteAdvice(
            route=pair[0],
            model=pair[1],
            demote=not current,
            satisfaction=max(-1.0, min(1.0, mean)),
            samples=samples,
            reason=reason,
            ts=datetime.now(UTC),
        )


async def _caught_up(consumer: Any, tps: list[TopicPartition], ends: dict[TopicPartition, int]) -> bool:
    for tp in tps:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


# --- retention ----------------------------------------------------------------------------

RAW_TTL = {"events": "ts", "requests": "received_at", "feedback": "ts"}
# Rollup -> its time column.
ROLLUPS = {
    "stage_minute": "minute",
    "request_minute": "minute",
    "feedback_minute": "minute",
    "feedback_route_minute": "minute",
    "stage_hour": "hour",
    "request_hour": "hour",
    "feedback_hour": "hour",
    "answers_hour": "hour",
    "deployment_minute": "minute",
    "deployment_hour": "hour",
    # The latest rating per request corrects the rollups when a request is rated again: it lives
    # as long as they do (migration 0008).
    "feedback_latest": "toDateTime(ts)",
}


async def apply_retention(warehouse: Warehouse, settings: Settings) -> None:
    """Make the tables' TTLs match the settings (migrations 0006 and 0007 set the defaults; only a
    changed setting costs an ALTER)."""
    if settings.raw_ttl_days != DEFAULT_RAW_TTL_DAYS:
        for table, column in RAW_TTL.items():
            ttl = f"toDateTime({column}) + INTERVAL {int(settings.raw_ttl_days)} DAY"
            await warehouse.acommand(f"ALTER TABLE {{db}}.{table} MODIFY TTL {ttl}")
    if settings.rollup_ttl_days != DEFAULT_ROLLUP_TTL_DAYS:
        for table, column in ROLLUPS.items():
            ttl = f"{column} + INTERVAL {int(settings.rollup_ttl_days)} DAY"
            await warehouse.acommand(f"ALTER TABLE {{db}}.{table} MODIFY TTL {ttl}")
