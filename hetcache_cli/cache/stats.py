"""Per-step cache statistics: one record per denoising step and guidance branch.

Timing never syncs the device inside the loop: on CUDA each record holds a pair of events
that are read once, in `finalize()`, after the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from hetcache_cli.cache.flops import ModelDims, forward_flops

DECISIONS = ("full", "partial", "reuse")


@dataclass
class TokenCounts:
    total: int
    computed: int
    generative: int | None = None
    margin: int | None = None
    context: int | None = None


@dataclass
class StepRecord:
    step: int
    timestep: float
    branch: str
    decision: str
    tokens: TokenCounts
    flops: float
    ms: float | None = None
    expert: str = "transformer"  # the pipeline component that ran the step (`transformer_2`: Wan2.2's low-noise expert)
    flops_full: float | None = None  # what the uncached forward would cost (None: from StepStats.dims)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepStats:
    """Collects StepRecords during a run; `summary()` condenses them."""

    dims: ModelDims | None = None
    records: list[StepRecord] = field(default_factory=list)
    # K/V, residual (and fp8 scales, host staging): planned before the first step, peak over the experts
    cache_memory_bytes: int = 0
    cache_memory_measured_bytes: int = 0  # peak of those tensors actually held during the run
    text_kv_memory_bytes: int = 0  # the prompt's cached text embedding and K/V (text_kv), planned
    text_kv_memory_measured_bytes: int = 0
    cache_memory_by_expert: dict = field(default_factory=dict)  # planned step-cache bytes per expert
    _pending: list = field(default_factory=list, repr=False)
    _live: dict = field(default_factory=dict, repr=False)

    def start(self, device: torch.device):
        """Open a timing window; pass the handle to `record`."""
        if device.type == "cuda":
            begin = torch.cuda.Event(enable_timing=True)
            begin.record()
            return ("cuda", begin)
        return ("cpu", time.perf_counter())

    def record(self, handle, step: int, timestep: float, branch: str, decision: str, tokens: TokenCounts, flops: float,
               expert: str = "transformer", flops_full: float | None = None):
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {DECISIONS}")
        rec = StepRecord(step=step, timestep=timestep, branch=branch, decision=decision, tokens=tokens, flops=flops,
                         expert=expert, flops_full=flops_full)
        kind, begin = handle
        if kind == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((rec, begin, end))
        else:
            rec.ms = (time.perf_counter() - begin) * 1e3
        self.records.append(rec)
        return rec

    def finalize(self) -> None:
        """Resolve CUDA event timings (one sync, after the run)."""
        if self._pending:
            torch.cuda.synchronize()
            for rec, begin, end in self._pending:
                rec.ms = begin.elapsed_time(end)
            self._pending.clear()

    def reset(self) -> None:
        self.records.clear()
        self._pending.clear()
        self._live.clear()
        self.cache_memory_bytes = 0
        self.cache_memory_measured_bytes = 0
        self.text_kv_memory_bytes = 0
        self.text_kv_memory_measured_bytes = 0
        self.cache_memory_by_expert = {}

    def observe_cache(self, expert: str, cache_bytes: int, text_bytes: int = 0) -> None:
        """The bytes of cache tensors `expert` holds now; the peaks of the sums over experts are kept."""
        self._live[expert] = (cache_bytes, text_bytes)
        cache = sum(c for c, _ in self._live.values())
        text = sum(t for _, t in self._live.values())
        self.cache_memory_measured_bytes = max(self.cache_memory_measured_bytes, cache)
        self.text_kv_memory_measured_bytes = max(self.text_kv_memory_measured_bytes, text)

    def _full(self, r: StepRecord) -> float:
        if r.flops_full is not None:
            return r.flops_full
        return forward_flops(self.dims, r.tokens.total) if self.dims is not None else r.flops
    def summary(self) -> dict:
        self.finalize()
        flops = sum(r.flops for r in self.records)
        flops_full = sum(self._full(r) for r in self.records)
        first_branch = self.records[0].branch if self.records else None
        experts = {}
        for name in dict.fromkeys(r.expert for r in self.records):
            mine = [r for r in self.records if r.expert == name]
            steps = [r.step for r in mine if r.branch == first_branch]
            experts[name] = {
                "first_step": min(steps) if steps else None,
                "last_step": max(steps) if steps else None,
                "schedule": _letters(mine, first_branch),
                "decisions": _counts(mine),
                "flops": sum(r.flops for r in mine),
                "flops_full": sum(self._full(r) for r in mine),
                "transformer_ms": sum(r.ms or 0.0 for r in mine),
                "cache_memory_bytes": self.cache_memory_by_expert.get(name, (0, 0))[0],
            }
        return {
            "schedule": _letters(self.records, first_branch),
            "flops": flops,
            "flops_full": flops_full,
            "flops_ratio": (flops / flops_full) if flops_full else 1.0,
            "transformer_ms": sum(r.ms or 0.0 for r in self.records),
            "decisions": _counts(self.records),
            "cache_memory_bytes": self.cache_memory_bytes,
            "cache_memory_measured_bytes": self.cache_memory_measured_bytes,
            "text_kv_memory_bytes": self.text_kv_memory_bytes,
            "text_kv_memory_measured_bytes": self.text_kv_memory_measured_bytes,
            "experts": experts,
        }

    def to_list(self) -> list[dict]:
        self.finalize()
        return [r.to_dict() for r in self.records]


def _letters(records: list[StepRecord], branch: str | None) -> str:
    return "".join(r.decision[0].upper() for r in records if r.branch == branch)


def _counts(records: list[StepRecord]) -> dict:
    decisions = {d: 0 for d in DECISIONS}
    for r in records:
        decisions[r.decision] += 1
    return decisions


def combine_experts(per_run: list[dict]) -> dict:
    """`summary()["experts"]` of several runs (windows of one edit) as one: sums, schedules joined by '|'."""
    out: dict = {}
    for experts in per_run:
        for name, e in experts.items():
            if name not in out:
                out[name] = {**e, "decisions": dict(e["decisions"])}
                continue
            o = out[name]
            o["schedule"] += "|" + e["schedule"]
            for key in ("flops", "flops_full", "transformer_ms"):
                o[key] += e[key]
            for d, n in e["decisions"].items():
                o["decisions"][d] += n
            o["cache_memory_bytes"] = max(o["cache_memory_bytes"], e["cache_memory_bytes"])
    return out
