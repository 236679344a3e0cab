"""An edited stretch of frames kept as the box that changed: the output is the source everywhere else.

A window's result is a `Patch`: clip frames [start, start + n), box columns [x0, x1) and rows
[y0, y1), and the output pixels inside it. Outside the box the output frames are the source's,
bit for bit, so a window's result costs its crop, not whole frames at the source resolution, and the
finished clip is streamed frame by frame: a copy of the source frame with the patch written in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Box", "Patch", "box_union", "changed_patch", "output_region", "patched_frame"]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)


@dataclass
class Patch:
    """Output pixels of clip frames [start, start + len(frames)) inside `box`; uint8 [n, y1-y0, x1-x0, 3]."""

    start: int
    box: Box
    frames: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)

    def to_dict(self) -> dict:
        return {"start": self.start, "box": list(self.box)}


def box_union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def output_region(source: np.ndarray, patch: Patch | None, t0: int, t1: int, box: Box, first: int = 0) -> np.ndarray:
    """uint8 [t1 - t0, y1 - y0, x1 - x0, 3]: the output's clip frames [t0, t1) inside `box`.

    `source` holds source frames [n, H, W, 3] from clip frame `first` on (the frames of the window being
    made); the patch overrides them where it covers the frames and the box.
    """
    x0, y0, x1, y1 = box
    out = np.array(source[t0 - first : t1 - first, y0:y1, x0:x1])
    if patch is None:
        return out
    px0, py0, px1, py1 = patch.box
    ix0, iy0, ix1, iy1 = max(x0, px0), max(y0, py0), min(x1, px1), min(y1, py1)
    f0, f1 = max(t0, patch.start), min(t1, patch.stop)
    if ix0 < ix1 and iy0 < iy1 and f0 < f1:
        out[f0 - t0 : f1 - t0, iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = patch.frames[
            f0 - patch.start : f1 - patch.start, iy0 - py0 : iy1 - py0, ix0 - px0 : ix1 - px0
        ]
    return out


def changed_patch(start: int, box: Box, frames: np.ndarray, source: np.ndarray) -> Patch:
    """The smallest patch holding every pixel where `frames` (the output inside `box`) differs from `source` there."""
    differs = (frames != source).any(axis=(0, 3))  # [h, w]
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if not rows.size:
        return Patch(start, (box[0], box[1], box[0], box[1]), frames[:, :0, :0].copy())
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    tight = (box[0] + c0, box[1] + r0, box[0] + c1, box[1] + r1)
    return Patch(start, tight, np.ascontiguousarray(frames[:, r0:r1, c0:c1]))


def patched_frame(source_frame: np.ndarray, patch: Patch, t: int) -> np.ndarray:
    """uint8 [H, W, 3]: clip frame t of the output (a copy of the source frame with the patch in it)."""
    out = source_frame.copy()
    x0, y0, x1, y1 = patch.box
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = patch.frames[t - patch.start]
    return out
