"""What a run did, added up once: steps into a run, experts within it, windows into an edit.

`RunSummary` is made from a run's step records (`StepStats.run_summary`), from a plan before the
run (`RunSummary.from_plan`, the dry run) or from a stored window's record (`from_dict`), and
`combine` adds the windows of one edit. `to_dict` is the one serialisation, used by the
statistics JSON (each window's record and the edit's `summary`), `--json` and the dry run.
FLOPs are summed with `math.fsum`, so a plan and the run that executed it give the same totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from hetcache_cli.cache.plan import DECISIONS, CachePlan, count_decisions, schedule_letters

# 3: `schema_version` added; decision counts of the dry run count forwards (steps x branches), as a run's do
SCHEMA_VERSION = 3


@dataclass(frozen=True)
class ExpertSummary:
    first_step: int | None
    last_step: int | None
    schedule: str  # one letter per step; windows joined by "|"
    decisions: Mapping[str, int]  # forwards (steps x guidance branches)
    flops: float
    flops_full: float
    transformer_ms: float = 0.0
    cache_memory_bytes: int = 0

    def to_dict(self) -> dict:
        return {"first_step": self.first_step, "last_step": self.last_step, "schedule": self.schedule,
                "decisions": dict(self.decisions), "flops": self.flops, "flops_full": self.flops_full,
                "transformer_ms": self.transformer_ms, "cache_memory_bytes": self.cache_memory_bytes}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping) -> "ExpertSummary":
        return cls(d.get("first_step"), d.get("last_step"), d["schedule"], dict(d["decisions"]), d["flops"],
                   d["flops_full"], d.get("transformer_ms", 0.0), d.get("cache_memory_bytes", 0))  # fmt: skip


@dataclass(frozen=True)
class RunSummary:
    schedule: str  # the first guidance branch's letters; an edit's windows joined by "|" when they differ
    decisions: Mapping[str, int]  # forwards (steps x guidance branches)
    flops: float
    flops_full: float
    transformer_ms: float = 0.0
    cache_memory_bytes: int = 0  # planned step caches (K/V, residual, ...), the largest expert's
    cache_memory_measured_bytes: int = 0  # the peak actually held
    text_kv_memory_bytes: int = 0  # the prompt's K/V, planned
    text_kv_memory_measured_bytes: int = 0
    experts: Mapping[str, ExpertSummary] = field(default_factory=dict)
    tokens: int | None = None  # tokens of the run (an edit: summed over its windows)
    windows: int = 1
    resumed_windows: int = 0

    @property
    def flops_ratio(self) -> float:
        return self.flops / self.flops_full if self.flops_full else 1.0

    # ---- made from ... -----------------------------------------------------------------

    @classmethod
    def from_records(cls, records: list, memory: Mapping[str, int] | None = None,
                     expert_memory: Mapping[str, int] | None = None) -> "RunSummary":
        """From `StepRecord`s (stats.py); `memory`: the four `*_memory*_bytes` values of the run."""
        first_branch = records[0].branch if records else None
        experts = {}
        for name in dict.fromkeys(r.expert for r in records):
            mine = [r for r in records if r.expert == name]
            steps = [r.step for r in mine if r.branch == first_branch]
            experts[name] = ExpertSummary(
                min(steps) if steps else None, max(steps) if steps else None,
                schedule_letters(r.decision for r in mine if r.branch == first_branch),
                count_decisions([r.decision for r in mine]), math.fsum(r.flops for r in mine),
                math.fsum(r.flops_full for r in mine), math.fsum(r.ms or 0.0 for r in mine),
                (expert_memory or {}).get(name, 0),
            )  # fmt: skip
        return cls(
            schedule=schedule_letters(r.decision for r in records if r.branch == first_branch),
            decisions=count_decisions([r.decision for r in records]),
            flops=math.fsum(r.flops for r in records),
            flops_full=math.fsum(r.flops_full for r in records),
            transformer_ms=math.fsum(r.ms or 0.0 for r in records),
            experts=experts,
            tokens=records[0].tokens.total if records else None,
            **(memory or {}),
        )

    @classmethod
    def from_plan(cls, plan: CachePlan) -> "RunSummary":
        """What the run of `plan` will add up to (the dry run): no times, no measured memory."""
        experts = {}
        for e in plan.experts:
            mine = [s for s in plan.steps if s.expert == e.name]
            experts[e.name] = ExpertSummary(
                e.steps[0] if e.steps else None, e.steps[-1] if e.steps else None,
                schedule_letters(s.decision for s in mine), count_decisions([s.decision for s in mine], plan.branches),
                math.fsum(plan.forward_flops(e.name)), math.fsum(s.flops_full for s in mine for _ in range(plan.branches)),
                0.0, e.cache_bytes,
            )  # fmt: skip
        peak = plan.peak_expert
        return cls(schedule=plan.schedule, decisions=count_decisions(plan.decisions, plan.branches), flops=plan.flops,
                   flops_full=plan.flops_full, cache_memory_bytes=peak.cache_bytes,
                   text_kv_memory_bytes=peak.text_kv_bytes, experts=experts, tokens=plan.tokens.total)  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping) -> "RunSummary":
        """From `to_dict()` output (a stored window's record, an edit's summary)."""
        return cls(
            schedule=d["schedule"], decisions=dict(d["decisions"]), flops=d["flops"], flops_full=d["flops_full"],
            transformer_ms=d.get("transformer_ms", 0.0), cache_memory_bytes=d.get("cache_memory_bytes", 0),
            cache_memory_measured_bytes=d.get("cache_memory_measured_bytes", 0),
            text_kv_memory_bytes=d.get("text_kv_memory_bytes", 0),
            text_kv_memory_measured_bytes=d.get("text_kv_memory_measured_bytes", 0),
            experts={n: ExpertSummary.from_dict(e) for n, e in (d.get("experts") or {}).items()},
            tokens=d.get("tokens"), windows=d.get("windows", 1),
            resumed_windows=d.get("resumed_windows", int(bool(d.get("resumed")))),
        )  # fmt: skip

    @classmethod
    def combine(cls, parts: Iterable["RunSummary"]) -> "RunSummary":
        """The windows of one edit as one: sums, the largest memory, schedules joined by '|' when they differ."""
        parts = list(parts)
        schedules = [p.schedule for p in parts]
        experts: dict[str, ExpertSummary] = {}
        for name in dict.fromkeys(n for p in parts for n in p.experts):
            mine = [p.experts[name] for p in parts if name in p.experts]
            experts[name] = ExpertSummary(
                mine[0].first_step, mine[0].last_step, "|".join(e.schedule for e in mine),
                _add(e.decisions for e in mine), math.fsum(e.flops for e in mine),
                math.fsum(e.flops_full for e in mine), math.fsum(e.transformer_ms for e in mine),
                max(e.cache_memory_bytes for e in mine),
            )  # fmt: skip
        return cls(
            schedule=schedules[0] if len(set(schedules)) == 1 else "|".join(schedules),
            decisions=_add(p.decisions for p in parts),
            flops=math.fsum(p.flops for p in parts),
            flops_full=math.fsum(p.flops_full for p in parts),
            transformer_ms=math.fsum(p.transformer_ms for p in parts),
            cache_memory_bytes=max(p.cache_memory_bytes for p in parts),
            cache_memory_measured_bytes=max(p.cache_memory_measured_bytes for p in parts),
            text_kv_memory_bytes=max(p.text_kv_memory_bytes for p in parts),
            text_kv_memory_measured_bytes=max(p.text_kv_memory_measured_bytes for p in parts),
            experts=experts,
            tokens=sum(p.tokens or 0 for p in parts),
            windows=sum(p.windows for p in parts),
            resumed_windows=sum(p.resumed_windows for p in parts),
        )

    # ---- serialised as ... ------------------------------------------------------------

    def to_dict(self, edit: bool = False) -> dict:
        """The statistics' keys; `edit`: with the edit-wide ones (windows, resumed windows)."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "schedule": self.schedule,
            "decisions": dict(self.decisions),
            "flops": self.flops,
            "flops_full": self.flops_full,
            "flops_ratio": self.flops_ratio,
            "transformer_ms": self.transformer_ms,
            "cache_memory_bytes": self.cache_memory_bytes,
            "cache_memory_measured_bytes": self.cache_memory_measured_bytes,
            "text_kv_memory_bytes": self.text_kv_memory_bytes,
            "text_kv_memory_measured_bytes": self.text_kv_memory_measured_bytes,
            "experts": {name: e.to_dict() for name, e in self.experts.items()},
            "tokens": self.tokens,
        }
        if edit:
            out.update(windows=self.windows, resumed_windows=self.resumed_windows)
        return out


def _add(counts: Iterable[Mapping[str, int]]) -> dict:
    out = {d: 0 for d in DECISIONS}
    for c in counts:
        for d in DECISIONS:
            out[d] += c.get(d, 0)
    return out
