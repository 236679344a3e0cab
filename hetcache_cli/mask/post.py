"""Per-frame mask post-processing: grow, convex hull, bounding box, invert.

`postprocess` applies them in that order, so `--as-box --dilate 8` is the box grown by 8 pixels on
every side and `--hull --dilate 8` the hull of the grown mask. Empty frames stay empty (before the
invert).
"""

from __future__ import annotations

import cv2
import numpy as np

from hetcache_cli.io.mask import dilation_kernel

__all__ = ["bounding_box", "convex_hull", "dilate", "postprocess"]


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """bool [F, H, W] grown by `px` pixels (elliptical kernel, as `--mask-dilation` in hetcache edit)."""
    kernel = dilation_kernel(px)
    if kernel is None:
        return mask.copy()
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in mask])


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """bool [F, H, W]: per frame, the convex hull of every selected pixel (all parts together)."""
    out = np.zeros_like(mask)
    for f, m in enumerate(mask):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        hull = cv2.convexHull(np.concatenate(contours))
        frame = np.zeros(m.shape, dtype=np.uint8)
        cv2.fillConvexPoly(frame, hull, 1)
        out[f] = frame.astype(bool) | m
    return out


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """bool [F, H, W]: per frame, the smallest axis-aligned box holding every selected pixel."""
    rows = mask.any(axis=2)  # [F, H]
    cols = mask.any(axis=1)  # [F, W]

    def between_first_and_last(x: np.ndarray) -> np.ndarray:
        return np.logical_or.accumulate(x, axis=1) & np.logical_or.accumulate(x[:, ::-1], axis=1)[:, ::-1]

    return between_first_and_last(rows)[:, :, None] & between_first_and_last(cols)[:, None, :]


def postprocess(
    mask: np.ndarray, dilate_px: int = 0, hull: bool = False, as_box: bool = False, invert: bool = False
) -> np.ndarray:
    """bool [F, H, W] -> bool [F, H, W]: dilate, then hull, then bounding box, then invert."""
    out = dilate(mask, dilate_px) if dilate_px > 0 else mask
    if hull:
        out = convex_hull(out)
    if as_box:
        out = bounding_box(out)
    if invert:
        out = ~out
    return out
