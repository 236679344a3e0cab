"""Quality metrics between a predicted and a reference video (uint8 RGB [F, H, W, 3]).

Every metric is split by region of the edit mask (see `region_masks`) and pooled over
all region pixels of all frames, so a frame with a large region weighs more:

- PSNR: 10 * log10(255^2 / MSE), MSE = mean squared error over the RGB values of every
  region pixel of every frame (one MSE for the whole clip, not a mean of per-frame PSNRs).
  Identical regions give `inf` here; `compare_videos` clamps to PSNR_CAP_DB for JSON.
- SSIM: Wang et al. 2004 on BT.601 luma (Y = 0.299 R + 0.587 G + 0.114 B, unrounded),
  11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering
  as in the reference implementation: the map only covers pixels whose window lies
  inside the frame (a 5-pixel border is left out). Region value = mean of the map over
  the region's pixels in that interior.
- Temporal (warp error): for each video on its own, Farneback flow from frame t+1 to
  frame t (on BT.601 luma), frame t warped onto t+1 with cv2.remap, mean absolute RGB
  difference (0..255) over pixels whose flow lands inside frame t, in the region of
  frame t+1. 0 for a static clip; flicker and jitter raise it. Each video uses its own
  flow because an edit changes what moves inside the mask.

A region with no pixels gives None, never NaN.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import cv2
import numpy as np

from hetcache_cli.errors import InputError
from hetcache_cli.eval.perceptual import lpips_by_region, lpips_status
from hetcache_cli.eval.regions import DEFAULT_MARGIN_PX, REGIONS, Regions, all_region, pool_regions, region_masks

__all__ = [
    "DEFAULT_MARGIN_PX", "PSNR_CAP_DB", "REGIONS", "SSIM_WINDOW", "compare_videos", "luma", "psnr",
    "psnr_by_region", "region_masks", "ssim", "ssim_by_region", "ssim_map", "warp_error", "warp_error_by_region",
]  # fmt: skip

# JSON has no infinity; identical regions are reported as this many dB (">= 100 dB").
PSNR_CAP_DB = 100.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2, SSIM_L = 11, 1.5, 0.01, 0.03, 255.0
_FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
_BT601 = np.array([0.299, 0.587, 0.114])


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    for name, v in (("prediction", pred), ("reference", ref)):
        if v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"{name} must be [F, H, W, 3] RGB, got shape {v.shape}")
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")


def _single(region: np.ndarray | None, frames: np.ndarray) -> dict[str, np.ndarray]:
    return {"all": np.ones(frames.shape[:3], dtype=bool) if region is None else np.asarray(region, dtype=bool)}


def psnr_by_region(pred: np.ndarray, ref: np.ndarray, regions: Regions | None = None) -> dict:
    """PSNR in dB per region (inf where identical, None where the region is empty)."""
    _check_pair(pred, ref)
    regions = regions if regions is not None else all_region(ref)

    def maps():
        for f in range(ref.shape[0]):
            err = pred[f].astype(np.float64) - ref[f].astype(np.float64)
            yield f, (err * err).mean(axis=-1), None

    out = {}
    for name, mse in pool_regions(maps(), regions).items():
        if mse is None:
            out[name] = None
        else:
            out[name] = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    return out


def psnr(pred: np.ndarray, ref: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """PSNR in dB over one region (bool [F, H, W]; None = every pixel)."""
    return psnr_by_region(pred, ref, _single(region, ref))["all"]


def luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB [..., 3] as float64, unrounded."""
    return np.asarray(frame, dtype=np.float64) @ _BT601


def _gaussian_window() -> np.ndarray:
    g = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)
    return g @ g.T


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map of two grayscale [H, W] images (0..255) -> [H - 10, W - 10] ('valid')."""
    h, w = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise InputError(f"frames are {w}x{h}; SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    window, r = _gaussian_window(), SSIM_WINDOW // 2
    x, y = x.astype(np.float64), y.astype(np.float64)

    def blur(img: np.ndarray) -> np.ndarray:
        # cropping the border keeps only windows that lie inside the image, whatever the border mode
        return cv2.filter2D(img, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT)[r : h - r, r : w - r]

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * SSIM_L) ** 2, (SSIM_K2 * SSIM_L) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim_by_region(pred: np.ndarray, ref: np.ndarray, regions: Regions | None = None) -> dict:
    """Mean luma SSIM per region (None where the region has no pixel in the map's interior)."""
    _check_pair(pred, ref)
    regions = regions if regions is not None else all_region(ref)
    maps = ((f, ssim_map(luma(pred[f]), luma(ref[f])), None) for f in range(ref.shape[0]))
    return pool_regions(maps, regions, crop_px=SSIM_WINDOW // 2)


def ssim(pred: np.ndarray, ref: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """Mean luma SSIM over one region (bool [F, H, W]; None = every pixel)."""
    return ssim_by_region(pred, ref, _single(region, ref))["all"]


def _warp_maps(frames: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per pair (t, t+1): (t+1, |frame t+1 - warp(frame t)| mean over RGB, valid pixels)."""
    _, h, w, _ = frames.shape
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    for t in range(len(frames) - 1):
        # flow[p] = where pixel p of frame t+1 came from in frame t
        flow = cv2.calcOpticalFlowFarneback(gray[t + 1], gray[t], None, **_FARNEBACK)
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        src = frames[t].astype(np.float32)
        warped = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        err = np.abs(frames[t + 1].astype(np.float32) - warped).mean(axis=-1)
        yield t + 1, err, valid


def warp_error_by_region(frames: np.ndarray, regions: Regions | None = None) -> dict:
    """Flow-warped frame difference (0..255) per region; None for a single frame or an empty region."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3] RGB, got shape {frames.shape}")
    regions = regions if regions is not None else all_region(frames)
    return pool_regions(_warp_maps(frames), regions)


def warp_error(frames: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """Flow-warped frame difference over one region (bool [F, H, W]; None = every pixel)."""
    return warp_error_by_region(frames, _single(region, frames))["all"]


def _cap(value: float | None) -> float | None:
    return None if value is None else min(value, PSNR_CAP_DB)


def _delta(a: dict, b: dict) -> dict:
    return {k: (None if a[k] is None or b[k] is None else a[k] - b[k]) for k in a}


def compare_videos(
    pred: np.ndarray,
    ref: np.ndarray,
    mask: np.ndarray | None = None,
    margin_px: int = DEFAULT_MARGIN_PX,
    lpips_fn: Callable[[np.ndarray, np.ndarray, Regions], dict] | None = None,
) -> dict:
    """All metrics between two same-shape uint8 [F, H, W, 3] videos, as a JSON-ready dict.

    Args:
        pred: the video to judge.
        ref: the reference (e.g. the uncached edit, or the source clip).
        mask: bool [F, H, W] edit mask; without it only the region "all" is reported.
        margin_px: width of the "margin" band around the mask.
        lpips_fn: LPIPS by region (for tests); default: the lpips package when it and its
            weights are installed, else LPIPS is skipped and the reason is in "skipped".

    Returns:
        {frames, size: {width, height}, margin_px, pixels: {region: count over all frames},
        psnr: {region: dB, capped at PSNR_CAP_DB}, ssim: {region}, temporal: {pred: {region},
        ref: {region}, delta: {region} (pred - ref)} or None, lpips: {region} or None,
        skipped: {metric: reason}}. Values are None for empty regions.
    """
    _check_pair(pred, ref)
    f, h, w, _ = ref.shape
    if mask is None:
        regions = all_region(ref)
    else:
        if mask.shape != (f, h, w):
            raise ValueError(f"mask shape {mask.shape} does not match the videos' {(f, h, w)}")
        regions = region_masks(mask, margin_px)
    skipped: dict[str, str] = {}

    temporal = None
    if f < 2:
        skipped["temporal"] = "needs at least 2 frames"
    else:
        t_pred, t_ref = warp_error_by_region(pred, regions), warp_error_by_region(ref, regions)
        temporal = {"pred": t_pred, "ref": t_ref, "delta": _delta(t_pred, t_ref)}

    lpips = None
    if lpips_fn is None:
        available, reason = lpips_status()
        if available:
            lpips_fn = lpips_by_region
        else:
            skipped["lpips"] = reason
    if lpips_fn is not None:
        lpips = lpips_fn(pred, ref, regions)

    return {
        "frames": f,
        "size": {"width": w, "height": h},
        "margin_px": margin_px if mask is not None else None,
        "pixels": {name: int(np.count_nonzero(r)) for name, r in regions.items()},
        "psnr": {k: _cap(v) for k, v in psnr_by_region(pred, ref, regions).items()},
        "ssim": ssim_by_region(pred, ref, regions),
        "temporal": temporal,
        "lpips": lpips,
        "skipped": skipped,
    }
