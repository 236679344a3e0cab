"""Speed and quality of cache settings on one edit, against the uncached run in the same process.

Every method runs the same edit (same seed, same inputs, same loaded pipeline). Timing:
a warm-up first (excluded: on CUDA one run per method, which also compiles the Triton
kernels; on CPU one short uncached run), then `repeat` timed runs per method, interleaved
so that a load spike hits every method alike; the median is reported. `run_edit` syncs
the device before it stops the clock. Quality compares each method's model output (before
paste-back, so the background is judged too) with the uncached output, split by region.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hetcache_cli.cache.config import METHODS, PRESETS
from hetcache_cli.errors import InputError
from hetcache_cli.eval import compare_videos
from hetcache_cli.pipeline.edit import PreparedEdit, run_edit

logger = logging.getLogger(__name__)

DEFAULT_METHODS = "none,teacache,hetcache:quality,hetcache:balanced,hetcache:fast"


@dataclass(frozen=True)
class Method:
    method: str
    preset: str | None = None

    @property
    def label(self) -> str:
        return self.method if self.preset is None else f"{self.method}:{self.preset}"


def parse_methods(text: str) -> list[Method]:
    """'none,teacache,hetcache:fast' -> methods; the uncached run is always first."""
    out: list[Method] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        method, _, preset = item.partition(":")
        if method not in METHODS:
            raise InputError(f"--methods: unknown method {method!r}; use {', '.join(METHODS)}, optionally :PRESET")
        if preset and preset not in PRESETS:
            raise InputError(f"--methods: unknown preset {preset!r} in {item!r}; use {', '.join(PRESETS)}")
        if method == "none" and preset:
            raise InputError(f"--methods: {item!r}: the uncached run takes no preset; write none")
        m = Method(method, preset or None)
        if m not in out:
            out.append(m)
    out = [m for m in out if m.method != "none"]
    return [Method("none")] + out


@dataclass
class MethodResult:
    label: str
    cache: dict
    wall_s: list[float] = field(default_factory=list)
    transformer_ms: list[float] = field(default_factory=list)
    stats: dict | None = None
    quality: dict | None = None
    output: str | None = None

    def row(self, base: "MethodResult") -> dict:
        s = self.stats["summary"]
        wall = statistics.median(self.wall_s)
        tr = statistics.median(self.transformer_ms)
        speedup = statistics.median(base.wall_s) / wall
        tr_speedup = statistics.median(base.transformer_ms) / tr if tr > 0 else None
        flops_cut = s["flops_full"] / s["flops"] if s["flops"] > 0 else None
        return {
            "method": self.label,
            "schedule": s["schedule"],
            "wall_s": wall,
            "speedup": speedup,
            "transformer_ms": tr,
            "transformer_speedup": tr_speedup,
            "flops": s["flops"],
            "flops_cut": flops_cut,
            "efficiency": (tr_speedup / flops_cut) if (tr_speedup and flops_cut) else None,
            "end_to_end_efficiency": (speedup / flops_cut) if flops_cut else None,
            "peak_memory_bytes": s["peak_memory_bytes"],
            "cache_memory_bytes": s["cache_memory_bytes"],
            "decisions": s["decisions"],
            "quality": self.quality,
            "output": self.output,
            "wall_s_runs": self.wall_s,
        }


def variant(prep: PreparedEdit, method: Method, out_dir: Path) -> PreparedEdit:
    """The prepared edit with another cache setting and its own output files."""
    from hetcache_cli.cache.config import build_config

    overrides = {k: v for k, v in prep.spec.cache.items() if k not in ("method", "preset")}
    overrides["method"] = method.method
    if method.method == "none":
        overrides = {"method": "none"}
    try:
        cache = build_config(overrides, preset=method.preset)
    except ValueError as exc:
        raise InputError(f"{method.label}: {exc}") from exc
    name = method.label.replace(":", "_")
    return dataclasses.replace(
        prep, cache=cache, output=out_dir / f"{name}.mp4", stats_path=out_dir / f"{name}.stats.json"
    )


def run_bench(prep: PreparedEdit, pipe, model_info: dict, methods: list[Method], repeat: int, out_dir: Path,
              warmup: bool = True, progress=None) -> dict:
    """Run every method `repeat` times (after a warm-up) and compare each with the uncached output."""
    device = pipe._execution_device
    variants = [variant(prep, m, out_dir) for m in methods]
    results = [MethodResult(m.label, v.cache.to_dict()) for m, v in zip(methods, variants)]
    if warmup:
        if device.type == "cuda":
            for v in variants:
                _run(v, pipe, model_info, progress, f"warm-up {v.cache.method}")
        else:
            short = dataclasses.replace(prep.spec, steps=min(2, prep.spec.steps))
            _run(dataclasses.replace(variants[0], spec=short), pipe, model_info, progress, "warm-up")
    raws: list[np.ndarray | None] = [None] * len(methods)
    for r in range(repeat):
        for i, (v, res) in enumerate(zip(variants, results)):
            result = _run(v, pipe, model_info, progress, f"{res.label} ({r + 1}/{repeat})")
            summary = result.stats["summary"]
            res.wall_s.append(summary["wall_s"])
            res.transformer_ms.append(summary["transformer_ms"])
            res.stats, res.output, raws[i] = result.stats, str(result.output), result.raw
    reference = raws[0]
    for res, raw in zip(results, raws):
        res.quality = compare_videos(raw, reference, prep.mask)
    base = results[0]
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
        "repeat": repeat,
        "methods": [res.row(base) for res in results],
        "steps_detail": {res.label: res.stats["steps"] for res in results},
    }


def _run(prep: PreparedEdit, pipe, model_info: dict, progress, label: str):
    if progress is not None:
        progress.start(label, prep.spec.steps)
    try:
        return run_edit(prep, pipe, model_info, progress=progress.update if progress is not None else None, keep_frames=True)
    finally:
        if progress is not None:
            progress.stop()
