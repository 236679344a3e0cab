"""Quality in the region the user keeps: the mask plus the band the paste-back blends.

After paste-back (`io/paste.py`) a pixel of the output is `alpha * edited + (1 - alpha) * source`,
with alpha 1 inside the mask, feathered in the dilation + feather band and 0 beyond it. Two
edits of the same source therefore differ by `alpha * (edited_a - edited_b)` and nowhere else.
The visible PSNR is that difference's PSNR over the pixels the paste may change (alpha > 0),
with the alpha the edit composites with (`paste_alpha`, the same code): the background beyond
the band never reaches the output and does not count; the band counts with its blend weight.
"""

from __future__ import annotations

import math

import numpy as np

from hetcache_cli.io.paste import paste_alpha

__all__ = ["visible_alpha", "visible_psnr"]


def visible_alpha(mask: np.ndarray, dilation_px: int = 4, feather_px: int = 4, paste: bool = True) -> np.ndarray:
    """float32 [F, H, W]: the weight of the edited pixels in the output (all ones without paste-back)."""
    if not paste:
        return np.ones(np.asarray(mask).shape, np.float32)
    return paste_alpha(np.asarray(mask, dtype=bool), dilation_px, feather_px)


def visible_psnr(pred: np.ndarray, ref: np.ndarray, alpha: np.ndarray) -> float | None:
    """PSNR (dB) of the composites of `pred` and `ref` over the pixels with alpha > 0.

    `pred`, `ref`: [F, H, W, 3] on 0..255 (float or uint8); `alpha`: [F, H, W] from `visible_alpha`.
    inf where identical there, None when alpha is 0 everywhere.
    """
    if pred.shape != ref.shape or pred.shape[:3] != alpha.shape:
        raise ValueError(f"prediction {pred.shape}, reference {ref.shape} and alpha {alpha.shape} do not match")
    total, count = 0.0, 0
    for f in range(ref.shape[0]):
        region = alpha[f] > 0
        n = int(np.count_nonzero(region))
        if not n:
            continue
        err = (pred[f][region].astype(np.float64) - ref[f][region].astype(np.float64)) * alpha[f][region][:, None]
        total += float((err * err).mean(axis=-1).sum())
        count += n
    if not count:
        return None
    mse = total / count
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
