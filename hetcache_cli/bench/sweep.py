"""Sweeps over each method's knob and the Pareto fronts they give: best quality for a given cut in work.

    methods = sweep_methods(["hetcache", "teacache", "diffusers:fbcache"], pipe.transformer, timesteps)
    report = run_bench(prep, pipe, info, [Method("none")] + methods, repeat, out_dir)
    front = fronts(report["methods"])["hetcache"]        # rows, by increasing measured FLOPs cut

Ours are swept over the share of steps they compute: each grid point (fraction of FULL steps,
fraction of REUSE steps, the preset whose token settings it keeps) becomes thresholds through
`cache.schedule.calibrate_thresholds` on the model's own modulation signal, so the points spread
evenly in work whatever the model and step count; points that give the same schedule are run
once. Peers are swept over their main knob (`bench/peers.py`). Nothing here depends on the clip:
run the same methods on several clips and `combine` the reports.
"""

from __future__ import annotations

import statistics
from typing import Callable, Iterable, Sequence

from hetcache_cli.bench.methods import FORECAST_REUSE, Method

# (fraction of FULL steps, fraction of REUSE steps, preset giving the other settings[, settings changed]);
# the last points allow longer runs without a FULL step than any preset, to reach past `fast`
HETCACHE_GRID = (
    (0.7, 0.0, "quality"), (0.5, 0.1, "quality"), (0.4, 0.2, "balanced"), (0.3, 0.3, "balanced"),
    (0.25, 0.45, "balanced"), (0.2, 0.55, "fast"), (0.15, 0.65, "fast"), (0.1, 0.75, "fast"),
    (0.08, 0.85, "fast", {"max_partial_run": 10}), (0.05, 0.9, "fast", {"max_partial_run": 16}),
)  # fmt: skip
TEACACHE_GRID = (0.2, 0.35, 0.5, 0.65, 0.8)  # fractions of REUSE steps
PEER_GRIDS = {
    "diffusers:fbcache": (0.05, 0.1, 0.2, 0.3, 0.5),
    "diffusers:magcache": (0.03, 0.06, 0.12, 0.25, 0.5),
    "diffusers:taylorseer": (2, 3, 5, 8),
    "diffusers:seacache": (0.25,),
    "diffusers:pab": (2, 3, 4, 6),
    "diffusers:fastercache": (2,),
    "cache-dit:dbcache": (0.04, 0.08, 0.16, 0.32),
    "cache-dit:dbcache+taylorseer": (0.04, 0.08, 0.16, 0.32),
}
FAMILIES = ("hetcache", "teacache", FORECAST_REUSE, *PEER_GRIDS)


def ours_grid(method: str, transformer, timesteps, grid: Sequence | None = None) -> list[Method]:
    """`hetcache`, `teacache` or `teacache+forecast` points with explicit thresholds, one per distinct schedule."""
    from hetcache_cli.cache.config import build_config, preset_overrides
    from hetcache_cli.cache.schedule import calibrate_thresholds, decide, modulation_signal, normalise_signal

    signal = modulation_signal(transformer, timesteps)
    cache_method = Method(method).cache_method
    if cache_method == "teacache":
        points = [(0.0, reuse, "balanced") for reuse in (grid or TEACACHE_GRID)]
    else:
        points = list(grid or HETCACHE_GRID)
    out, seen = [], set()
    for full_fraction, reuse_fraction, preset, *extra in points:
        changed = extra[0] if extra else {}
        config = build_config({"method": cache_method, **changed}, preset=preset)
        reuse, full = calibrate_thresholds(signal, config, full_fraction, reuse_fraction)
        config.reuse_threshold, config.full_threshold = round(reuse, 4), round(max(full, reuse), 4)
        schedule = tuple(decide(normalise_signal(signal, config.rescale), config))
        if schedule in seen:
            continue
        seen.add(schedule)
        values = preset_overrides(preset) | changed
        values |= {"reuse_threshold": config.reuse_threshold, "full_threshold": config.full_threshold}
        out.append(Method(method, settings=tuple(sorted(values.items())), base=preset))
    return out


def sweep_methods(families: Iterable[str], transformer, timesteps) -> list[Method]:
    """Every grid point of the given families (ours need the model and the run's timesteps)."""
    out: list[Method] = []
    for family in families:
        if family in ("hetcache", "teacache", FORECAST_REUSE):
            out += ours_grid(family, transformer, timesteps)
        elif family in PEER_GRIDS:
            default = Method(family).peer().default
            out += [Method(family, value=None if v == default else float(v)) for v in PEER_GRIDS[family]]
        elif family != "none":
            raise ValueError(f"no sweep grid for {family!r}; sweepable: {', '.join(FAMILIES)}")
    return out


def pareto_front(points: Sequence, x: Callable, y: Callable) -> list:
    """The points no other point beats on both x and y (both larger = better), by increasing x."""
    valid = [p for p in points if x(p) is not None and y(p) is not None]
    front = []
    for p in sorted(valid, key=lambda p: (-x(p), -y(p))):
        if not front or y(p) > y(front[-1]):
            front.append(p)
    return front[::-1]


def psnr_inside(row: dict) -> float | None:
    quality = row.get("quality") or {}
    return (quality.get("psnr") or {}).get("inside")


def psnr_visible(row: dict) -> float | None:
    """PSNR after paste-back over the mask and its paste band (eval/visible.py); in-mask for older reports."""
    psnr = (row.get("quality") or {}).get("psnr") or {}
    return psnr.get("visible", psnr.get("inside"))


def fronts(rows: Sequence[dict], x: str = "flops_cut", plotted=("ok", "broken")) -> dict[str, list[dict]]:
    """Per method family, its Pareto front of visible-region PSNR against `x` (rows that ran and changed something)."""
    by_family: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("status") in plotted and row["method"] != "none":
            by_family.setdefault(row["family"], []).append(row)
    return {family: pareto_front(group, lambda r: r.get(x), psnr_visible) for family, group in by_family.items()}


def combine(reports: Sequence[dict]) -> list[dict]:
    """One row per method over several clips' reports: worst visible-region and in-mask PSNR, mean cuts and speedups."""
    rows: dict[str, list[dict]] = {}
    for report in reports:
        for row in report["methods"]:
            rows.setdefault(row["method"], []).append(row)
    out = []
    for label, group in rows.items():
        ran = [r for r in group if r.get("flops_cut") is not None]
        combined = {"method": label, "family": group[0]["family"], "clips": len(group), "ran": len(ran)}
        combined["status"] = "ok" if len(ran) == len(group) else group[0]["status"]
        for key in ("flops_cut", "transformer_speedup", "speedup", "analytic_cut"):
            values = [r[key] for r in ran if r.get(key) is not None]
            combined[key] = statistics.mean(values) if values else None
        psnrs = [psnr_inside(r) for r in ran if psnr_inside(r) is not None]
        combined["psnr_inside_min"] = min(psnrs) if psnrs else None
        combined["psnr_inside_mean"] = statistics.mean(psnrs) if psnrs else None
        visible = [psnr_visible(r) for r in ran if psnr_visible(r) is not None]
        combined["psnr_visible_min"] = min(visible) if visible else None
        combined["psnr_visible_mean"] = statistics.mean(visible) if visible else None
        combined["quality"] = {"psnr": {"inside": combined["psnr_inside_min"], "visible": combined["psnr_visible_min"]}}
        out.append(combined)
    return out
