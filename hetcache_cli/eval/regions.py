"""Regions of an edit mask, and per-region pooling of per-pixel metric maps.

Regions are bool [F, H, W]: `inside` (the mask), `margin` (pixels outside the mask within
a Euclidean distance of `margin_px` of it, where seams show), `background` (the rest) and
`all`. A metric's region value is the mean of its per-pixel map over the region's pixels
of all frames; a region with no pixels gives None, never NaN.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import cv2
import numpy as np

from hetcache_cli.errors import InputError

__all__ = ["DEFAULT_MARGIN_PX", "REGIONS", "Regions", "all_region", "pool_regions", "region_masks"]

DEFAULT_MARGIN_PX = 16
REGIONS = ("all", "inside", "margin", "background")

Regions = Mapping[str, np.ndarray]  # name -> bool [F, H, W]


def all_region(frames: np.ndarray) -> dict[str, np.ndarray]:
    """{"all": every pixel} for frames [F, H, W, ...]."""
    return {"all": np.ones(frames.shape[:3], dtype=bool)}


def region_masks(mask: np.ndarray, margin_px: int = DEFAULT_MARGIN_PX) -> dict[str, np.ndarray]:
    """Split every frame by the edit mask (bool [F, H, W]) into the four regions."""
    if margin_px < 0:
        raise InputError(f"margin {margin_px} px is negative; use 0 or more (e.g. {DEFAULT_MARGIN_PX})")
    inside = np.asarray(mask, dtype=bool)
    if inside.ndim != 3:
        raise ValueError(f"mask must be bool [F, H, W], got shape {inside.shape}")
    near = np.zeros_like(inside)
    for f, m in enumerate(inside):
        if m.any():
            # exact Euclidean distance of each pixel to the nearest mask pixel (0 on the mask)
            dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            near[f] = dist <= margin_px
    return {"all": np.ones_like(inside), "inside": inside, "margin": near & ~inside, "background": ~near}


def pool_regions(
    maps: Iterable[tuple[int, np.ndarray, np.ndarray | None]], regions: Regions, crop_px: int = 0
) -> dict[str, float | None]:
    """Mean of per-pixel maps over each region, pooled over frames.

    `maps` yields (frame index, [h, w] map, optional bool [h, w] valid pixels). A map
    smaller than the frame by `crop_px` on every side covers the frame's interior.
    """
    sums = dict.fromkeys(regions, 0.0)
    counts = dict.fromkeys(regions, 0)
    for f, value, valid in maps:
        for name, region in regions.items():
            sel = region[f, crop_px : region.shape[1] - crop_px, crop_px : region.shape[2] - crop_px]
            if valid is not None:
                sel = sel & valid
            n = int(np.count_nonzero(sel))
            if n:
                sums[name] += float(value[sel].sum(dtype=np.float64))
                counts[name] += n
    return {name: (sums[name] / counts[name] if counts[name] else None) for name in regions}
