"""Two videos side by side and their difference as a heat map: the third panel shows where an edit, a
cache or a preset changed pixels, at a glance and frame by frame.

Panels, left to right: the reference, the prediction, |prediction - reference| (largest channel
difference x HEAT_GAIN: black where they agree, red, then yellow, then white). The mask's outline is
drawn on all three. Frames are streamed to the encoder one at a time; a wide result is scaled down so
that the three panels fit MAX_WIDTH_PX.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from hetcache_cli.report.draw import caption, draw_outline, fit_size, heat_map, resize

__all__ = ["HEAT_GAIN", "MAX_WIDTH_PX", "compose_frame", "panel_size", "write_side_by_side"]

HEAT_GAIN = 4.0  # a difference of 64 levels (of 255) is full scale: small cache errors stay visible
MAX_WIDTH_PX = 1920  # the three panels together; players and encoders handle this everywhere


def panel_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of one panel, even sides, three of them at most MAX_WIDTH_PX wide."""
    return fit_size(height, width, MAX_WIDTH_PX // 3)


def compose_frame(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None, labels: tuple[str, str, str],
    gain: float = HEAT_GAIN,
) -> np.ndarray:  # fmt: skip
    """uint8 [LABEL_PX + h, 3 w, 3]: captions over (reference | prediction | heat map), mask outlined on each.

    Args:
        pred, ref: uint8 [H, W, 3] frames of the same size.
        mask: bool [H, W] or None.
        labels: the three captions.
    """
    h, w = panel_size(*ref.shape[:2])
    small = None if mask is None else resize(mask, (h, w))
    thickness = max(1, w // 320)
    panels = [resize(ref, (h, w)), resize(pred, (h, w)), resize(heat_map(pred, ref, gain), (h, w))]
    panels = [draw_outline(p, small, thickness) for p in panels]
    top = np.concatenate([caption(text, w) for text in labels], axis=1)
    return np.concatenate([top, np.concatenate(panels, axis=1)], axis=0)


def write_side_by_side(
    path: str | Path, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None, rate: float | Fraction,
    names: tuple[str, str] = ("reference", "prediction"), gain: float = HEAT_GAIN,
) -> dict:  # fmt: skip
    """Write the comparison of uint8 [F, H, W, 3] `pred` and `ref` (mask bool [F, H, W] or None) at `rate`.

    Returns {"path", "frames", "width", "height"} of the written video (atomic: all or nothing).
    """
    from hetcache_cli.io.video import write_video

    if pred.shape != ref.shape:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} differ")
    labels = (names[0], names[1], f"|difference| x{gain:g}")

    def frames() -> Iterator[np.ndarray]:
        for t in range(len(ref)):
            yield compose_frame(pred[t], ref[t], None if mask is None else mask[t], labels, gain)

    first = compose_frame(pred[0], ref[0], None if mask is None else mask[0], labels, gain)
    write_video(path, frames(), rate)
    return {"path": str(path), "frames": int(len(ref)), "width": int(first.shape[1]), "height": int(first.shape[0])}
