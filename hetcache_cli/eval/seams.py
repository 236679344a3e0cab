"""Seams and drift of a video edited in windows (pipeline/windows.py).

- Temporal error per frame pair (t, t+1): the flow-warped error of `metrics.warp_error` (frame t
  warped onto t+1 by the video's own flow, mean absolute RGB difference), inside the edit mask of
  frame t+1. The pairs of a join are those from the last frame before the frames a window shares
  with the previous one to its first new frame: where the output switches from one window's result
  to the next, cross-fade included. The report compares the worst join with the median of the pairs inside windows.
- Colour drift: the mean RGB inside the mask over the frames each window owns; drift is the
  distance (0..441) between the last window's mean and the first's. Editing keeps the object's
  colour, so a drift larger than the reference's (e.g. the uncached or one-window edit, or the
  source) is colour the windows added.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hetcache_cli.eval.metrics import _warp_maps

__all__ = ["colour_by_window", "join_pairs", "pair_errors", "seam_report"]


def pair_errors(frames: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """float64 [F - 1]: warp error of each pair (t, t+1) inside `region` of frame t+1 (NaN where empty)."""
    out = np.full(max(frames.shape[0] - 1, 0), np.nan)
    for t1, err, valid in _warp_maps(frames):
        sel = valid if region is None else valid & region[t1]
        if sel.any():
            out[t1 - 1] = float(err[sel].mean())
    return out


def join_pairs(windows: Sequence[dict]) -> list[list[int]]:
    """For each window after the first, the pair indices (t for pair (t, t+1)) of its join."""
    joins = []
    for w in windows[1:]:
        blend = w["shared"] - w.get("known", w["shared"])
        first_faded = w["start"] + (w["known"] if blend else 0)
        joins.append(list(range(max(first_faded - 1, 0), w["start"] + w["shared"])))
    return joins


def _owned(windows: Sequence[dict]) -> list[tuple[int, int]]:
    return [(w["start"], windows[i + 1]["start"] if i + 1 < len(windows) else w["stop"]) for i, w in enumerate(windows)]


def colour_by_window(frames: np.ndarray, mask: np.ndarray, windows: Sequence[dict]) -> list[list[float] | None]:
    """Mean RGB inside the mask over the frames each window owns (None where the mask is empty there)."""
    out = []
    for start, stop in _owned(windows):
        sel = mask[start:stop]
        out.append(frames[start:stop][sel].reshape(-1, 3).mean(axis=0).round(2).tolist() if sel.any() else None)
    return out


def _drift(colours: list) -> float | None:
    present = [c for c in colours if c is not None]
    if len(present) < 2:
        return None
    return float(np.linalg.norm(np.subtract(present[-1], present[0])))


def _run_max_median(errors: np.ndarray, in_join: np.ndarray, length: int) -> float | None:
    """Median over runs of `length` consecutive pairs inside windows of the run's worst pair."""
    maxima = []
    for p in range(len(errors) - length + 1):
        run = errors[p : p + length]
        if not in_join[p : p + length].any() and not np.isnan(run).any():
            maxima.append(run.max())
    return float(np.median(maxima)) if maxima else None


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def seam_report(
    pred: np.ndarray, mask: np.ndarray, windows: Sequence[dict], ref: np.ndarray | None = None
) -> dict:
    """Join vs within-window temporal error inside the mask, and the masked region's colour drift.

    Args:
        pred: the edited video, uint8 [F, H, W, 3].
        mask: the edit mask, bool [F, H, W].
        windows: the edit's windows (`index`, `start`, `stop`, `shared` each), as its statistics list them.
        ref: optional reference video (same shape) whose drift is reported beside the prediction's.

    Returns:
        {"joins": [{window, frames: [first, last], error (its worst pair), within (the reference for a
        run of its length), ratio}], "join_max" (the error of the join with the largest ratio),
        "within_median" (of single pairs inside windows), "ratio" (the largest join ratio), "median_ratio",
        "pairs": [per-pair error or None], "colour": {"pred": [...], "ref": [...]}, "drift": {"pred", "ref"}}.
    """
    errors = pair_errors(pred, mask)
    joins = join_pairs(windows)
    in_join = np.zeros(len(errors), bool)
    for pairs in joins:
        in_join[[p for p in pairs if p < len(errors)]] = True
    inside = [e for p, e in enumerate(errors) if not in_join[p] and not math.isnan(e)]
    rows = []
    for w, pairs in zip(windows[1:], joins):
        values = [errors[p] for p in pairs if p < len(errors) and not math.isnan(errors[p])]
        reference = _run_max_median(errors, in_join, len(pairs))
        error = max(values) if values else None
        rows.append({
            "window": w["index"], "frames": [pairs[0], pairs[-1] + 1], "error": error,
            "within": reference, "ratio": error / reference if error is not None and reference else None,
        })  # fmt: skip
    worst = max((r for r in rows if r["ratio"] is not None), key=lambda r: r["ratio"], default=None)
    colour = {"pred": colour_by_window(pred, mask, windows)}
    drift = {"pred": _drift(colour["pred"])}
    if ref is not None:
        colour["ref"] = colour_by_window(ref, mask, windows)
        drift["ref"] = _drift(colour["ref"])
    return {
        "joins": rows,
        "join_max": None if worst is None else worst["error"],
        "within_median": float(np.median(inside)) if inside else None,
        "ratio": None if worst is None else worst["ratio"],
        "median_ratio": float(np.median([r["ratio"] for r in rows if r["ratio"] is not None])) if worst else None,
        "pairs": [_nan_to_none(e) for e in errors],
        "colour": colour,
        "drift": drift,
    }
