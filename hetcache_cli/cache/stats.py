"""Per-step cache statistics: one record per denoising step and guidance branch.

Timing never syncs the device inside the loop: on CUDA each record holds a pair of events
that are read once, in `finalize()`, after the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import torch

from hetcache_cli.cache.flops import ModelDims, forward_flops
from hetcache_cli.cache.plan import DECISIONS
from hetcache_cli.cache.summary import RunSummary


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
    """Collects StepRecords during a run; `run_summary()` adds them up."""

    dims: ModelDims | None = None
    records: list[StepRecord] = field(default_factory=list)
    # K/V, residual (and fp8 scales, host staging): planned before the first step, peak over the experts
    cache_memory_bytes: int = 0
    cache_memory_measured_bytes: int = 0  # peak of those tensors actually held during the run
    text_kv_memory_bytes: int = 0  # the prompt's cached text embedding and K/V (text_kv), planned
    text_kv_memory_measured_bytes: int = 0
    cache_memory_by_expert: dict = field(default_factory=dict)  # planned (step cache, text K/V) bytes per expert
    plan: object = None  # the CachePlan of the run being recorded
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
        self.plan = None

    def observe_cache(self, expert: str, cache_bytes: int, text_bytes: int = 0) -> None:
        """The bytes of cache tensors `expert` holds now; the peaks of the sums over experts are kept."""
        self._live[expert] = (cache_bytes, text_bytes)
        cache = sum(c for c, _ in self._live.values())
        text = sum(t for _, t in self._live.values())
        self.cache_memory_measured_bytes = max(self.cache_memory_measured_bytes, cache)
        self.text_kv_memory_measured_bytes = max(self.text_kv_memory_measured_bytes, text)

    def begin(self, plan) -> None:
        """A run of `plan` (a `CachePlan`) starts: records cleared, the planned cache memory taken from it."""
        self.reset()
        self.plan = plan
        if plan is None:
            return
        self.cache_memory_by_expert = {e.name: (e.cache_bytes, e.text_kv_bytes) for e in plan.experts}
        if plan.experts:
            # a group frees an expert's caches when the next one takes over: the peak is the largest
            self.cache_memory_bytes = max(c for c, _ in self.cache_memory_by_expert.values())
            self.text_kv_memory_bytes = max(t for _, t in self.cache_memory_by_expert.values())

    def _full(self, r: StepRecord) -> float:
        if r.flops_full is not None:
            return r.flops_full
        return forward_flops(self.dims, r.tokens.total) if self.dims is not None else r.flops

    def run_summary(self) -> RunSummary:
        """The run added up (summary.py)."""
        self.finalize()
        records = [r if r.flops_full is not None else replace(r, flops_full=self._full(r)) for r in self.records]
        memory = {k: getattr(self, k) for k in ("cache_memory_bytes", "cache_memory_measured_bytes",
                                                "text_kv_memory_bytes", "text_kv_memory_measured_bytes")}
        by_expert = {name: cache for name, (cache, _) in self.cache_memory_by_expert.items()}
        return RunSummary.from_records(records, memory, by_expert)

    def summary(self) -> dict:
        """`run_summary()` as the statistics JSON writes it."""
        return self.run_summary().to_dict()

    def to_list(self) -> list[dict]:
        self.finalize()
        return [r.to_dict() for r in self.records]
