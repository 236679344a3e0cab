"""Speed, work and quality of cache methods on one edit, against the uncached run in the same process.

Every method, ours and the peers (`bench/peers.py`), runs the same edit on the same loaded pipeline
(same inputs, seed and settings). Per method:
- one counted run: FLOPs instrumented (`bench/flops_counter.py`: every linear layer, patch
  embedding and attention call of the transformer that actually ran), and its output, compared
  with the uncached output by region (before paste-back, so the background is judged too);
- `repeat` timed runs, uninstrumented, interleaved across methods so that a load spike hits
  every method alike; medians reported. DiT time is the transformer's own (HetCache's hook times
  every transformer forward, a peer's included, since it wraps the peer's forward).
Warm-up first (excluded): on CUDA one run per method (compiling the Triton kernels), on CPU one
short uncached run.

A peer that is not installed, raises, or changes nothing (output identical to uncached and no work
skipped) becomes a row that says so. Each peer is also checked on identical inputs (`vace_check`):
a peer that changes the output when it skips is marked broken, with the evidence. After every peer
run the pipeline is put back exactly as it was (`peer_state`); what the peer itself left is noted.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hetcache_cli.bench.methods import DEFAULT_METHODS, Method, parse_methods, variant  # noqa: F401
from hetcache_cli.eval import compare_videos
from hetcache_cli.pipeline.edit import EditPlan

logger = logging.getLogger(__name__)

OK, BROKEN, NO_EFFECT, FAILED, MISSING = "ok", "broken", "no effect", "failed", "not installed"
NO_SKIP_FRACTION = 0.999  # measured FLOPs at or above this share of uncached: nothing was skipped


@dataclass
class MethodResult:
    method: Method
    label: str
    prep: EditPlan
    status: str = OK
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    wall_s: list[float] = field(default_factory=list)
    transformer_ms: list[float] = field(default_factory=list)
    stats: dict | None = None
    flops: dict | None = None  # FlopCount.to_dict() of the counted run
    raw: np.ndarray | None = None
    quality: dict | None = None
    output: str | None = None
    hint_check: dict | None = None
    peer: object | None = None

    @property
    def runnable(self) -> bool:
        return self.status not in (FAILED, MISSING)

    def note(self, text: str) -> None:
        if text and text not in self.notes:
            self.notes.append(text)

    def row(self, base: "MethodResult", branches: int) -> dict:
        out = {
            "method": self.label, "family": self.method.family, "status": self.status, "note": "; ".join(self.notes),
            "settings": self.settings, "output": self.output, "hint_check": self.hint_check,
        }  # fmt: skip
        if self.stats is None:
            return out
        s = self.stats["summary"]
        timed = bool(self.wall_s and base.wall_s)
        walls, base_walls = (self.wall_s, base.wall_s) if timed else ([s["wall_s"]], [base.stats["summary"]["wall_s"]])
        trs = self.transformer_ms if timed else [s["transformer_ms"]]
        base_trs = base.transformer_ms if timed else [base.stats["summary"]["transformer_ms"]]
        wall, tr = statistics.median(walls), statistics.median(trs)
        speedup = statistics.median(base_walls) / wall
        tr_speedup = statistics.median(base_trs) / tr if tr > 0 else None
        measured, measured_full = self.flops["total"], base.flops["total"]
        cut = measured_full / measured if measured > 0 else None
        ours = not self.method.is_peer
        forwards = self.flops["forwards"]
        letters = measured_schedule(forwards[::branches], base.flops["forwards"][::branches])
        out.update(
            schedule=s["schedule"] if ours else letters,
            measured_schedule=letters,
            wall_s=wall,
            speedup=speedup,
            transformer_ms=tr,
            transformer_speedup=tr_speedup,
            flops=measured,
            flops_cut=cut,
            flops_in_blocks=self.flops["in_blocks"],
            flops_analytic=s["flops"] if ours else None,
            analytic_cut=(s["flops_full"] / s["flops"] if s["flops"] > 0 else None) if ours else None,
            efficiency=(tr_speedup / cut) if (tr_speedup and cut) else None,
            end_to_end_efficiency=(speedup / cut) if cut else None,
            peak_memory_bytes=s["peak_memory_bytes"],
            cache_memory_bytes=s["cache_memory_bytes"] if ours else None,
            decisions=s["decisions"] if ours else {d: letters.count(d[0].upper()) for d in ("full", "partial", "reuse")},
            quality=self.quality,
            wall_s_runs=self.wall_s,
            timed=timed,  # False: times of the counted (instrumented) run only
            forwards=forwards,
        )
        return out


def measured_schedule(forwards: list[float], full: list[float]) -> str:
    """One letter per forward from its measured FLOPs: F (>= 95% of uncached), R (<= 5%), P (in between)."""
    out = []
    for done, ref in zip(forwards, full):
        share = done / ref if ref > 0 else 1.0
        out.append("F" if share >= 0.95 else "R" if share <= 0.05 else "P")
    return "".join(out)


def run_bench(prep: EditPlan, pipe, model_info: dict, methods: list[Method], repeat: int, out_dir: Path,
              warmup: bool = True, progress=None) -> dict:
    """Run every method once counted and `repeat` times timed (after a warm-up); compare each with uncached."""
    from hetcache_cli.bench.runs import Runner

    runner = Runner(prep, pipe, model_info, progress)
    results = [runner.result(m, variant(prep, m, out_dir, prep.spec.model)) for m in methods]
    base = results[0]
    if base.method.method != "none":
        raise ValueError("the first method must be the uncached run (none)")
    for res in results:
        if res.peer is not None and res.runnable:
            runner.check_hints(res)
    if warmup:
        runner.warmup(results)
    for res in results:
        runner.run(res, counted=True)
        if res is base and not res.runnable:
            raise RuntimeError(f"the uncached run failed: {'; '.join(res.notes)}")
    for r in range(repeat):
        for res in results:
            runner.run(res, counted=False, label=f"{res.label} ({r + 1}/{repeat})")
    for res in results:
        judge(res, base)
    for res in results:
        res.raw = None
    branches = 2 if prep.spec.guidance_scale > 1.0 else 1
    return {
        "video": prep.spec.video,
        "mask": prep.spec.mask,
        "prompt": prep.spec.prompt,
        "model": model_info["name"],
        "device": model_info["device"],
        "dtype": model_info["dtype"],
        "frames": prep.plan.frames,
        "height": prep.plan.src_height,
        "width": prep.plan.src_width,
        "crops": [c.to_dict() for c in prep.crops],
        "steps": prep.spec.steps,
        "guidance_scale": prep.spec.guidance_scale,
        "repeat": repeat,
        "methods": [res.row(base, branches) for res in results],
        "steps_detail": {res.label: res.stats["steps"] for res in results if res.stats is not None},
    }


def judge(res: MethodResult, base: MethodResult) -> None:
    """Quality against uncached, and the status of a method that ran: ok, no effect or broken."""
    if res.raw is None:
        return
    res.quality = compare_videos(res.raw, base.raw, res.prep.mask.dense())
    if res is base:
        return
    skipped = res.flops["total"] < NO_SKIP_FRACTION * base.flops["total"]
    identical = res.quality["psnr"]["all"] is not None and res.quality["psnr"]["all"] >= 100.0
    check = res.hint_check or {}
    wrong = check.get("verdict") in ("hints twice", "changed")
    if not skipped:
        res.status = NO_EFFECT
        res.note("output identical to uncached, no work skipped" if identical else "no work skipped")
        if wrong:
            res.note("it skipped nothing in this run; when it skips it is " + check["description"])
    elif wrong:
        res.status = BROKEN
        res.note(check["description"])
