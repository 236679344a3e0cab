"""Presets for a model, chosen from a sweep on the user's own clips (`hetcache calibrate`).

For every clip: the uncached run, then every HetCache grid point of `sweep.ours_grid` (thresholds
fitted to this model's modulation signal by `cache.schedule.calibrate_thresholds`), each run once
with its FLOPs counted from what ran. A candidate's quality is its worst visible-region PSNR against
the uncached output over the clips (the mask and the band the paste-back blends, after paste-back:
what reaches the output, `eval/visible.py`; issue 26); its cost, its mean measured FLOPs cut. Each preset gets the
cheapest candidate (largest cut; ties: the better PSNR) that meets the preset's target. Targets
fall from `quality` to `fast`, so the candidates that meet a stricter target are a subset of those
that meet a looser one, and the cuts come out ordered quality <= balanced <= fast.

The presets are written into a `hetcache_defaults.json` (`spec/model_defaults.py`), merged with
what the file already holds, with a `calibration` record of what was measured.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from hetcache_cli.bench.methods import FORECAST_REUSE, FORECAST_REUSE_SETTINGS, Method
from hetcache_cli.bench.sweep import combine, ours_grid
from hetcache_cli.cache.config import PRESETS
from hetcache_cli.errors import InputError

# visible-region PSNR (dB: mask + paste band) against the uncached output, worst clip. Published step caches
# on Wan2.1 measure 24-27 dB over whole frames at ~2.5x (docs/method.md section 9); the targets ask more there.
DEFAULT_TARGETS = {"quality": 40.0, "balanced": 33.0, "fast": 28.0}


@dataclass
class Calibration:
    targets: dict[str, float]
    candidates: list[dict]  # one combined row per grid point (`sweep.combine`), with its settings
    presets: dict[str, dict] = field(default_factory=dict)  # preset -> cache settings
    chosen: dict[str, dict] = field(default_factory=dict)  # preset -> what was measured for it
    missed: dict[str, str] = field(default_factory=dict)  # preset -> why nothing was chosen
    record: dict = field(default_factory=dict)  # the file's `calibration` entry
    # with step_reuse: preset -> the cheapest step-reuse-with-forecast point meeting its target (None: none does)
    step_reuse: dict[str, dict | None] | None = None
    step_reuse_candidates: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "targets": self.targets, "presets": self.presets, "chosen": self.chosen, "missed": self.missed,
            "candidates": self.candidates, "step_reuse": self.step_reuse,
            "step_reuse_candidates": self.step_reuse_candidates, "calibration": self.record,
        }  # fmt: skip


def parse_targets(text: str | None) -> dict[str, float]:
    """'quality=42,fast=30' -> the defaults with those replaced; they must fall from quality to fast."""
    targets = dict(DEFAULT_TARGETS)
    for item in (p.strip() for p in (text or "").split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        if name not in PRESETS:
            raise InputError(f"--targets: unknown preset {name!r}; use {', '.join(PRESETS)}, e.g. quality=40,fast=28")
        try:
            targets[name] = float(value)
        except ValueError:
            raise InputError(f"--targets: {item!r} needs a PSNR in dB after '=', e.g. {name}=35") from None
    values = [targets[p] for p in PRESETS]
    if any(a <= b for a, b in zip(values, values[1:])):
        shown = ", ".join(f"{p}={targets[p]:g}" for p in PRESETS)
        raise InputError(f"--targets {shown}: each preset needs a lower PSNR than the one before (quality > balanced > fast)")
    return targets


def cheapest(rows: list[dict], target: float) -> dict | None:
    """The row with the largest measured cut whose worst visible-region PSNR meets `target` (ties: better PSNR)."""
    ok = [r for r in rows if r["psnr_visible_min"] is not None and r["psnr_visible_min"] >= target
          and r["flops_cut"] is not None]  # fmt: skip
    return max(ok, key=lambda r: (round(r["flops_cut"], 6), r["psnr_visible_min"])) if ok else None


def calibrate(preps: list, pipe, model_info: dict, targets: dict[str, float], out_dir: Path, progress=None,
              grid=None, step_reuse: bool = False) -> Calibration:
    """Run the grid on every clip and choose each preset's setting (see the module docstring).

    `step_reuse`: also run step reuse with the residual forecast (`teacache+forecast`, no PARTIAL step, no
    K/V caches) over its grid, and record for each preset the cheapest such point that meets its target:
    where it cuts more than the chosen HetCache setting, PARTIAL steps do not pay on these clips and model.
    """
    from hetcache_cli.bench.core import run_bench

    steps = {p.spec.steps for p in preps}
    if len(steps) != 1:
        raise InputError(f"the clips use different step counts {sorted(steps)}: calibrate one step count at a time")
    pipe.scheduler.set_timesteps(preps[0].spec.steps, device=pipe.transformer.device)
    candidates = ours_grid("hetcache", pipe.transformer, pipe.scheduler.timesteps, grid)
    reference = ours_grid(FORECAST_REUSE, pipe.transformer, pipe.scheduler.timesteps) if step_reuse else []
    methods = [Method("none")] + candidates + reference
    reports = []
    for i, prep in enumerate(preps):
        folder = out_dir / f"clip{i}" if len(preps) > 1 else out_dir
        reports.append(run_bench(prep, pipe, model_info, methods, 0, folder, warmup=False, progress=progress))
    by_label = {m.label: m for m in candidates + reference}
    schedules = {r["method"]: r.get("schedule") for r in reports[0]["methods"]}
    combined = [r for r in combine(reports) if r["method"] in by_label]
    for row in combined:
        row["settings"] = dict(by_label[row["method"]].settings)
        row["schedule"] = schedules.get(row["method"])
    rows = [r for r in combined if r["family"] == "hetcache"]
    result = Calibration(targets=targets, candidates=rows)
    if step_reuse:
        result.step_reuse_candidates = [r for r in combined if r["family"] != "hetcache"]
        result.step_reuse = {}
        for name in PRESETS:
            pick = cheapest(result.step_reuse_candidates, targets[name])
            result.step_reuse[name] = None if pick is None else {
                "candidate": pick["method"], "schedule": pick["schedule"], "flops_cut": pick["flops_cut"],
                "psnr_visible_min": pick["psnr_visible_min"], "target": targets[name],
                "settings": {**FORECAST_REUSE_SETTINGS, **pick["settings"]},  # the grid sets thresholds only
            }  # fmt: skip
    for name in PRESETS:
        pick = cheapest(rows, targets[name])
        if pick is None:
            best = max((r["psnr_visible_min"] or 0.0 for r in rows), default=0.0)
            result.missed[name] = (f"no candidate reaches {targets[name]:g} dB in the mask and its paste band "
                                   f"(best {best:.1f} dB)")
            continue
        result.presets[name] = pick["settings"]
        result.chosen[name] = {
            "candidate": pick["method"], "schedule": pick["schedule"], "psnr_visible_min": pick["psnr_visible_min"],
            "psnr_visible_mean": pick["psnr_visible_mean"], "psnr_inside_min": pick["psnr_inside_min"],
            "psnr_inside_mean": pick["psnr_inside_mean"], "flops_cut": pick["flops_cut"],
            "analytic_cut": pick["analytic_cut"], "target": targets[name],
        }  # fmt: skip
    result.record = _record(preps, model_info, result)
    return result


def _record(preps, model_info: dict, result: Calibration) -> dict:
    from hetcache_cli import __version__

    first = preps[0]
    return {
        "hetcache_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": model_info["name"],
        "device": model_info["device"],
        "dtype": model_info["dtype"],
        "steps": first.spec.steps,
        "guidance_scale": first.spec.guidance_scale,
        "metric": "visible-region PSNR (dB: mask + paste band, after paste-back) against the uncached output, "
                  "worst clip; cost = mean measured FLOPs cut",
        "targets": result.targets,
        "clips": [
            {"video": Path(p.spec.video).name, "mask": Path(p.spec.mask).name, "prompt": p.spec.prompt,
             "frames": p.plan.frames, "width": p.plan.width, "height": p.plan.height}
            for p in preps
        ],  # fmt: skip
        "chosen": result.chosen,
        "missed": result.missed,
        **({"step_reuse": result.step_reuse} if result.step_reuse is not None else {}),
    }


def write_presets(path: Path, calibration: Calibration) -> dict:
    """Merge the presets (and the calibration record) into the JSON file at `path`, atomically."""
    from hetcache_cli.io.atomic import atomic_write_text
    from hetcache_cli.spec.model_defaults import _check_presets, read_defaults_file

    if not calibration.presets:
        raise InputError(f"no preset met its target, nothing written: {'; '.join(calibration.missed.values())}")
    existing = read_defaults_file(path) if path.is_file() else {}
    doc = dict(existing)
    doc["presets"] = dict(calibration.presets)  # a preset that missed its target falls back to the shipped one
    doc["calibration"] = calibration.record
    _check_presets(doc["presets"], path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return doc
