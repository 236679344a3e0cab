"""Box keyframes -> a mask: linear interpolation between keyframes, held before the first and after the last.

Rasterisation rule: pixel (row r, column c) is inside the box when its centre (c + 0.5, r + 0.5)
lies in [x0, x1) x [y0, y1). Integer boxes cover exactly columns x0..x1-1 and rows y0..y1-1;
fractional (interpolated) boxes follow the same rule, so every frame's result is exact and
reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from hetcache_cli.spec.prompts import Box

__all__ = ["box_mask", "interpolate_boxes", "pixel_span"]


def pixel_span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Pixel indices [start, stop) whose centres i + 0.5 lie in [lo, hi), within 0..size."""
    start = min(max(math.ceil(lo - 0.5), 0), size)
    stop = min(max(math.ceil(hi - 0.5), 0), size)
    return start, max(start, stop)


def interpolate_boxes(keyframes: list[Box], num_frames: int) -> np.ndarray:
    """float64 [F, 4] (x0, y0, x1, y1) per frame from keyframes sorted by frame (see prompts.fit_boxes)."""
    if not keyframes:
        raise ValueError("at least one box keyframe is needed")
    frames = np.array([b.frame for b in keyframes], dtype=np.float64)
    coords = np.array([(b.x0, b.y0, b.x1, b.y1) for b in keyframes], dtype=np.float64)  # [K, 4]
    t = np.arange(num_frames, dtype=np.float64)
    # np.interp holds the end values outside [first, last]: exactly "held before and after".
    return np.stack([np.interp(t, frames, coords[:, k]) for k in range(4)], axis=1)


def box_mask(keyframes: list[Box], num_frames: int, height: int, width: int) -> np.ndarray:
    """bool [F, H, W]: each frame's interpolated box, rasterised by the pixel-centre rule."""
    mask = np.zeros((num_frames, height, width), dtype=bool)
    for f, (x0, y0, x1, y1) in enumerate(interpolate_boxes(keyframes, num_frames)):
        c0, c1 = pixel_span(x0, x1, width)
        r0, r1 = pixel_span(y0, y1, height)
        mask[f, r0:r1, c0:c1] = True
    return mask
