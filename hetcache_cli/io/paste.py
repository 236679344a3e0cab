"""Paste the edited region back into the source video.

The model re-encodes every pixel (VAE round trip), so even "kept" pixels drift. Pasting
keeps the source bit-exact outside a band around the mask:

    alpha = 1                      inside the mask
          = blur(dilate(mask))     in the band (dilation_px + feather_px wide)
          = 0                      beyond the band
    out   = alpha * edited + (1 - alpha) * source
"""

from __future__ import annotations

import cv2
import numpy as np

from hetcache_cli.errors import InputError

__all__ = ["paste_alpha", "paste_back", "paste_region"]


def _ellipse(radius_px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))


def _check_px(dilation_px: int, feather_px: int) -> None:
    for name, value in (("paste dilation", dilation_px), ("paste feather", feather_px)):
        if value < 0:
            raise InputError(f"{name} {value} px is negative; use 0 or more")


def _alpha(mask: np.ndarray, dilation_px: int, feather_px: int) -> np.ndarray:
    """[H, W] bool -> [H, W] float32 alpha in [0, 1]."""
    m = mask.astype(np.uint8)
    dilated = cv2.dilate(m, _ellipse(dilation_px)) if dilation_px else m
    if not feather_px:
        return dilated.astype(np.float32)
    # A Gaussian with radius feather_px (sigma = radius / 2) reaches only a box around the
    # dilated mask; clamping to the elliptical band makes the "exactly 0 beyond
    # dilation + feather" guarantee hold by construction, not by float luck.
    ksize = 2 * feather_px + 1
    blurred = cv2.GaussianBlur(dilated.astype(np.float32), (ksize, ksize), sigmaX=feather_px / 2)
    band = cv2.dilate(dilated, _ellipse(feather_px)).astype(bool)
    alpha = np.where(band, blurred, 0.0).astype(np.float32)
    alpha[mask] = 1.0
    return alpha


def paste_alpha(mask: np.ndarray, dilation_px: int = 4, feather_px: int = 4) -> np.ndarray:
    """float32 [F, H, W]: the blend weight `paste_back` gives the edited pixels (1 in the mask, 0 beyond the band)."""
    _check_px(dilation_px, feather_px)
    return np.stack([_alpha(m.astype(bool), dilation_px, feather_px) for m in mask])


def paste_region(mask: np.ndarray, dilation_px: int = 4, feather_px: int = 4) -> np.ndarray:
    """bool [F, H, W]: pixels `paste_back` may change (alpha > 0); elsewhere out == source."""
    _check_px(dilation_px, feather_px)
    return np.stack([_alpha(m, dilation_px, feather_px) > 0 for m in mask])


def paste_back(
    edited: np.ndarray,
    source: np.ndarray,
    mask: np.ndarray,
    dilation_px: int = 4,
    feather_px: int = 4,
) -> np.ndarray:
    """Blend `edited` into `source` where `mask` (grown and feathered) is set.

    Args:
        edited: model output, uint8 [F, H, W, 3].
        source: the aligned source clip, uint8 [F, H, W, 3].
        mask: edit mask, bool [F, H, W].
        dilation_px: grow the mask before feathering, to cover the model's seam.
        feather_px: width of the soft edge beyond the dilation.

    Returns:
        uint8 [F, H, W, 3]: equal to `edited` inside `mask`, equal to `source` outside
        `paste_region(mask, dilation_px, feather_px)`, bit for bit.
    """
    _check_px(dilation_px, feather_px)
    if edited.shape != source.shape or edited.ndim != 4:
        raise ValueError(f"edited {edited.shape} and source {source.shape} must both be [F, H, W, C]")
    if edited.dtype != np.uint8 or source.dtype != np.uint8:
        raise ValueError(f"edited and source must be uint8, got {edited.dtype} and {source.dtype}")
    if mask.shape != source.shape[:3]:
        raise ValueError(f"mask {mask.shape} does not match the video {source.shape[:3]}")
    out = np.empty_like(source)
    for i in range(source.shape[0]):
        alpha = _alpha(mask[i].astype(bool), dilation_px, feather_px)[..., None]  # [H, W, 1]
        blend = alpha * edited[i].astype(np.float32) + (1.0 - alpha) * source[i].astype(np.float32)
        # alpha in {0, 1} gives exact integers in float32, so rounding returns them unchanged.
        out[i] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out
