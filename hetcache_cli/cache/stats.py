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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepStats:
    """Collects StepRecords during a run; `summary()` condenses them."""

    dims: ModelDims | None = None
    records: list[StepRecord] = field(default_factory=list)
    cache_memory_bytes: int = 0
    _pending: list = field(default_factory=list, repr=False)

    def start(self, device: torch.device):
        """Open a timing window; pass the handle to `record`."""
        if device.type == "cuda":
            begin = torch.cuda.Event(enable_timing=True)
            begin.record()
            return ("cuda", begin)
        return ("cpu", time.perf_counter())

    def record(self, handle, step: int, timestep: float, branch: str, decision: str, tokens: TokenCounts, flops: float):
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {DECISIONS}")
        rec = StepRecord(step=step, timestep=timestep, branch=branch, decision=decision, tokens=tokens, flops=flops)
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
        self.cache_memory_bytes = 0

    def summary(self) -> dict:
        self.finalize()
        flops = sum(r.flops for r in self.records)
        if self.dims is not None:
            flops_full = sum(forward_flops(self.dims, r.tokens.total) for r in self.records)
        else:
            flops_full = flops
        decisions = {d: 0 for d in DECISIONS}
        for r in self.records:
            decisions[r.decision] += 1
        first_branch = self.records[0].branch if self.records else None
        schedule = "".join(r.decision[0].upper() for r in self.records if r.branch == first_branch)
        return {
            "schedule": schedule,
            "flops": flops,
            "flops_full": flops_full,
            "flops_ratio": (flops / flops_full) if flops_full else 1.0,
            "transformer_ms": sum(r.ms or 0.0 for r in self.records),
            "decisions": decisions,
            "cache_memory_bytes": self.cache_memory_bytes,
        }

    def to_list(self) -> list[dict]:
        self.finalize()
        return [r.to_dict() for r in self.records]
