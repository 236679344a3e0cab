"""One bench row in the making: a method's runs, FLOPs, quality and verdict (ok, no effect, broken,
failed, not installed), and the row it becomes in the report.

Its own module so that the runner (`bench/runs.py`) and the bench loop (`bench/core.py`) both use it
without importing each other.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from hetcache_cli.bench.methods import Method
from hetcache_cli.eval import PSNR_CAP_DB, compare_videos
from hetcache_cli.eval.visible import visible_alpha, visible_psnr
from hetcache_cli.pipeline.edit import EditPlan

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
            stages=s.get("stages"),
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


def judge(res: MethodResult, base: MethodResult) -> None:
    """Quality against uncached, and the status of a method that ran: ok, no effect or broken."""
    if res.raw is None:
        return
    mask = res.prep.mask.dense()
    res.quality = compare_videos(res.raw, base.raw, mask)
    # what reaches the output: the mask and the band the paste-back blends, with its alpha (eval/visible.py)
    spec = res.prep.spec
    alpha = visible_alpha(mask, spec.paste_dilation, spec.paste_feather, spec.paste_back)
    visible = visible_psnr(res.raw, base.raw, alpha)
    res.quality["psnr"]["visible"] = None if visible is None else min(visible, PSNR_CAP_DB)
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
