"""How the five stages are cut into chains: which hops Kafka carries, and which run in-process.

A *chain* runs consecutive stages in one Faust agent, passing the request from one stage to the
next by function call (Flink's operator chaining; a Kafka Streams sub-topology). A *break* before
a stage starts a new chain there: the stage before it publishes to the break's input topic.

- The default layout has no breaks: one chain from validate to validate_response.
- `infer` as a break lets infer (and what follows) scale on workers of its own.
- `all` breaks before every stage: today's five hops, for debugging one stage at a time.

Two hops exist in every layout, because Kafka must carry the data: the re-partition by tenant
for admission (tenants with quotas; admitted requests re-enter at sanitize), and a retry from
validate_response re-enters at infer through its topic when infer is in another chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas import Stage
from topics import INFERRED, REQUESTS, ROUTED, SANITIZED, VALIDATED, TopicSpec

STAGE_ORDER: tuple[Stage, ...] = (
    Stage.VALIDATE,
    Stage.SANITIZE,
    Stage.ROUTE,
    Stage.INFER,
    Stage.VALIDATE_RESPONSE,
)

# The topic each stage reads when it starts a chain.
INPUT_TOPIC: dict[Stage, TopicSpec] = {
    Stage.VALIDATE: REQUESTS,
    Stage.SANITIZE: VALIDATED,
    Stage.ROUTE: SANITIZED,
    Stage.INFER: ROUTED,
    Stage.VALIDATE_RESPONSE: INFERRED,
}

# Admitted requests (tenants with quotas) come back from the admission topic here.
ADMISSION_REENTRY = Stage.SANITIZE
ALL_BREAKS = "all"


@dataclass(frozen=True)
class ChainLayout:
    """The stages that start a chain. Validate always does (it reads the clients' topic), and
    so does sanitize, where admitted requests re-enter after the tenant-keyed admission hop."""

    breaks: frozenset[Stage] = frozenset()

    @classmethod
    def parse(cls, spec: str | Iterable[str]) -> ChainLayout:
        """`""` (one chain), `"all"` (every stage alone), or stage names like `"infer"`."""
        names = [part.strip() for part in spec.split(",")] if isinstance(spec, str) else list(spec)
        names = [name for name in names if name]
        if names == [ALL_BREAKS]:
            return cls(frozenset(STAGE_ORDER[1:]))
        known = {stage.value: stage for stage in STAGE_ORDER}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"chain breaks: unknown stage {', '.join(unknown)}; use 'all' or any of "
                f"{', '.join(stage.value for stage in STAGE_ORDER[1:])}"
            )
        return cls(frozenset(known[name] for name in names) - {Stage.VALIDATE})

    @property
    def entries(self) -> tuple[Stage, ...]:
        """Every stage that starts a chain, in pipeline order; each gets a Faust agent."""
        starts = {Stage.VALIDATE, ADMISSION_REENTRY, *self.breaks}
        return tuple(stage for stage in STAGE_ORDER if stage in starts)

    def chain_of(self, stage: Stage) -> Stage:
        """The stage whose chain `stage` runs in when it is reached by function call."""
        head = Stage.VALIDATE
        for candidate in STAGE_ORDER:
            if candidate in self.breaks:
                head = candidate
            if candidate is stage:
                return head
        raise ValueError(f"not a pipeline stage: {stage}")

    def in_process(self, current: Stage, following: Stage) -> bool:
        """Whether `following` runs right here, after `current`, without a Kafka hop. A retry
        (validate_response back to infer) loops in-process when both share a chain."""
        return self.chain_of(current) is self.chain_of(following)

    def describe(self) -> str:
        """The layout as an operator reads it, e.g. `validate..route | infer..validate_response`."""
        chains: list[list[Stage]] = []
        for stage in STAGE_ORDER:
            if not chains or stage in self.breaks:
                chains.append([])
            chains[-1].append(stage)
        return " | ".join(
            chain[0].value if len(chain) == 1 else f"{chain[0].value}..{chain[-1].value}" for chain in chains
        )


def next_stage(stage: Stage, *, retry: bool = False) -> Stage | None:
    """The stage a forwarded request goes to: the next in order, or infer again for a retry."""
    if retry or stage is Stage.VALIDATE_RESPONSE:
        return Stage.INFER
    position = STAGE_ORDER.index(stage)
    return STAGE_ORDER[position + 1] if position + 1 < len(STAGE_ORDER) else None
