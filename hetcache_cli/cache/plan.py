"""The cache plan of one run: a frozen value that the hook executes and the dry run prints.

`planning.plan_run` makes it from the model config(s), the timesteps, the token counts of the
mask and the cache settings, before any step: the decision and the FLOPs of every step, the
token counts, how each expert keeps its caches and their bytes, and what was dropped to fit
`max_cache_memory`. Nothing here imports torch or reads a tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from hetcache_cli.cache.flops import ModelDims

FULL, PARTIAL, REUSE = "full", "partial", "reuse"
DECISIONS = (FULL, PARTIAL, REUSE)


def guidance_branches(guidance_scale: float) -> int:
    """Forwards per step: the pipeline runs a second (unconditional) one when guidance_scale > 1."""
    return 2 if guidance_scale > 1.0 else 1


def schedule_letters(decisions) -> str:
    """['full', 'partial', 'reuse'] -> 'FPR'."""
    return "".join(d[0].upper() for d in decisions)


def count_decisions(decisions, times: int = 1) -> dict:
    """{'full': n, 'partial': n, 'reuse': n}, each counted `times` (e.g. once per guidance branch)."""
    return {d: times * sum(1 for x in decisions if x == d) for d in DECISIONS}


@dataclass(frozen=True)
class TokenPlan:
    """Token counts of one run; the classes are None when only the total is known (a bare transformer)."""

    total: int
    active: int  # computed on a PARTIAL step
    generative: int | None = None
    margin: int | None = None
    context: int | None = None

    def to_dict(self) -> dict:
        return {"total": self.total, "generative": self.generative, "margin": self.margin,
                "context": self.context, "active": self.active}  # fmt: skip


@dataclass(frozen=True)
class StepPlan:
    """One denoising step, the same for every guidance branch."""

    step: int
    timestep: float
    expert: str
    decision: str
    computed: int  # tokens computed by each forward
    flops: float  # one forward (one branch)
    flops_full: float  # the same forward uncached


@dataclass(frozen=True)
class ExpertPlan:
    """One transformer of the run: its steps, dimensions and caches."""

    name: str
    steps: tuple[int, ...]
    dims: ModelDims
    layout: object | None  # storage.CacheLayout (frozen): K/V dtype and device, forecasts, text K/V; None for none
    memory: Mapping[str, int]  # state.cache_memory(): bytes by part, 'cache', 'text', 'device', 'host', 'total'

    @property
    def cache_bytes(self) -> int:
        return self.memory.get("cache", 0)

    @property
    def text_kv_bytes(self) -> int:
        return self.memory.get("text", 0)


@dataclass(frozen=True)
class CachePlan:
    """What a run will do. `method` is what runs: `teacache` when `on_cache_overflow` fell back to it."""

    method: str
    branches: int
    tokens: TokenPlan
    steps: tuple[StepPlan, ...]
    experts: tuple[ExpertPlan, ...]
    max_cache_memory_bytes: int | None = None
    dropped: tuple[str, ...] = ()  # what the memory bound took away ("the K/V forecast", ...)
    notes: tuple[str, ...] = ()  # what the user should know (logged when the run begins)

    @property
    def decisions(self) -> tuple[str, ...]:
        return tuple(s.decision for s in self.steps)

    @property
    def schedule(self) -> str:
        return schedule_letters(self.decisions)

    @property
    def timesteps(self) -> tuple[float, ...]:
        return tuple(s.timestep for s in self.steps)

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(s.expert for s in self.steps)

    def expert(self, name: str) -> ExpertPlan | None:
        return next((e for e in self.experts if e.name == name), None)

    def step(self, index: int) -> StepPlan | None:
        return self.steps[index] if 0 <= index < len(self.steps) else None

    def forward_flops(self, expert: str | None = None) -> list[float]:
        """FLOPs of every forward in run order (step by step, branch by branch), optionally of one expert."""
        return [s.flops for s in self.steps if expert in (None, s.expert) for _ in range(self.branches)]

    @property
    def flops(self) -> float:
        return math.fsum(self.forward_flops())

    @property
    def flops_full(self) -> float:
        return math.fsum(s.flops_full for s in self.steps for _ in range(self.branches))

    @property
    def peak_expert(self) -> ExpertPlan:
        """The expert whose caches are the largest: one expert's are freed before the next allocates."""
        return max(self.experts, key=lambda e: e.memory.get("total", 0))

    @property
    def fits(self) -> bool:
        limit = self.max_cache_memory_bytes
        return limit is None or self.peak_expert.memory.get("total", 0) <= limit

    def to_dict(self) -> dict:
        """The dry run's JSON (`hetcache edit --dry-run --json`, one window)."""
        flops, full = self.flops, self.flops_full
        experts = {}
        for e in self.experts:
            mine = [s for s in self.steps if s.expert == e.name]
            experts[e.name] = {
                "first_step": e.steps[0] if e.steps else None,
                "last_step": e.steps[-1] if e.steps else None,
                "schedule": schedule_letters(s.decision for s in mine),
                "decisions": count_decisions([s.decision for s in mine], self.branches),
                "flops": math.fsum(self.forward_flops(e.name)),
                "flops_full": math.fsum(s.flops_full for s in mine for _ in range(self.branches)),
                "cache_memory_bytes": e.cache_bytes,
                "text_kv_memory_bytes": e.text_kv_bytes,
                "cache_memory": dict(e.memory),
                "cache_layout": e.layout.describe() if e.layout is not None else None,
            }
        peak = self.peak_expert
        return {
            "method": self.method,
            "schedule": self.schedule,
            "tokens": self.tokens.to_dict(),
            "branches": self.branches,
            "flops": flops,
            "flops_full": full,
            "flops_ratio": flops / full if full else 1.0,
            "decisions": count_decisions(self.decisions, self.branches),
            "cache_memory_bytes": peak.cache_bytes,
            "text_kv_memory_bytes": peak.text_kv_bytes,
            "cache_memory": dict(peak.memory),
            "cache_memory_fits": self.fits,
            "dropped": list(self.dropped),
            "experts": experts,
            "notes": list(self.notes),
        }
