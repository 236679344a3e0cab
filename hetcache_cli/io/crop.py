"""Crop and stitch: the model works on a box around the mask, the result goes back into the source frames.

`plan_crops` gives every window one box in source pixels and the size the model works it at:

1. the union of the mask over the window's frames, its bounding box grown by the paste-back band
   (so everything paste-back may change lies inside the box);
2. each side times `context` (room for the model to see around the edit), at least `min_size`
   pixels, at most the frame; the long side at most MAX_ASPECT times the short one;
3. between consecutive windows a side changes by at most STEADY_RATIO (earlier or later windows grow
   to meet it), and the centre moves half-way towards the new mask's centre, never so far that the
   window's mask leaves the box: the crop pans and zooms smoothly instead of jumping;
4. the working size: the box at its own resolution when that fits in `max_area` pixels, scaled down
   to fit otherwise (never up), sides multiples of 16 and at least 32; the box is then widened to
   the working size's aspect (inside the frame), so a box that fits is taken pixel for pixel. A box
   that grows to the whole frame is worked at the size `crop: full` would use.

`crop: full` keeps today's fit instead: the whole frame scaled to the model size. `crop_frames` and
`crop_mask` cut a window's frames and mask to its box at the working size, `uncrop` scales the
model's output back to the box's source size. Pure numpy and OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "MAX_ASPECT", "STEADY_RATIO", "Crop", "crop_frames", "crop_mask", "crops_for_boxes", "describe_crops", "mask_box",
    "plan_crops", "resize_frames", "uncrop",
]  # fmt: skip

MAX_ASPECT = 3.0  # long side / short side of an auto crop (Wan trains on 16:9, 9:16 and square)
STEADY_RATIO = 1.25  # the most a crop side grows or shrinks from one window to the next
MIN_SIDE = 32  # two 16-pixel tokens


@dataclass(frozen=True)
class Crop:
    """One window's box in source pixels, columns [x0, x1) and rows [y0, y1), worked at width x height."""

    x0: int
    y0: int
    x1: int
    y1: int
    width: int
    height: int

    @property
    def src_width(self) -> int:
        return self.x1 - self.x0

    @property
    def src_height(self) -> int:
        return self.y1 - self.y0

    @property
    def scale(self) -> float:
        """Model pixels per source pixel, along a side (the geometric mean of both axes)."""
        return math.sqrt(self.area_scale)

    @property
    def area_scale(self) -> float:
        """Model pixels per source pixel, by area."""
        return self.width * self.height / (self.src_width * self.src_height)

    def contains(self, box: tuple[int, int, int, int]) -> bool:
        x0, y0, x1, y1 = box
        return self.x0 <= x0 and self.y0 <= y0 and x1 <= self.x1 and y1 <= self.y1

    def to_dict(self) -> dict:
        return {
            "box": [self.x0, self.y0, self.x1, self.y1], "size": [self.src_width, self.src_height],
            "model_size": [self.width, self.height], "scale": round(self.scale, 4),
            "area_scale": round(self.area_scale, 4),
        }  # fmt: skip

    def text(self) -> str:
        return (
            f"{self.src_width}x{self.src_height} at ({self.x0},{self.y0}) -> {self.width}x{self.height} "
            f"(scale {self.scale:.2f})"
        )


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) bounding the True pixels of bool [..., H, W] (exclusive ends), None when empty."""
    flat = mask.reshape(-1, *mask.shape[-2:]).any(axis=0)
    rows, cols = np.flatnonzero(flat.any(axis=1)), np.flatnonzero(flat.any(axis=0))
    if not rows.size:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _steady(sizes: list[float], ratio: float) -> list[float]:
    """Sizes raised (never lowered) so that neighbours differ by at most `ratio`."""
    out = list(sizes)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] / ratio)
    for i in range(len(out) - 2, -1, -1):
        out[i] = max(out[i], out[i + 1] / ratio)
    return out


def _ceil(x: float, q: int) -> int:
    return max(MIN_SIDE, math.ceil(x / q - 1e-9) * q)


def _working_size(need_w: float, need_h: float, max_area: int, q: int) -> tuple[int, int, float]:
    """(model width, height, scale): the box at scale <= 1 that fits max_area, sides rounded up to q."""
    scale = min(1.0, math.sqrt(max_area / (need_w * need_h)))
    while True:
        w, h = _ceil(need_w * scale, q), _ceil(need_h * scale, q)
        if w * h <= max_area or (w == MIN_SIDE and h == MIN_SIDE):
            return w, h, scale
        scale *= 0.98


def _place(centre: float, size: int, lo: int, hi: int, limit: int) -> int:
    """Start of a `size`-long span near `centre` that covers [lo, hi) and lies in [0, limit)."""
    start = int(round(centre - size / 2))
    start = min(max(start, hi - size), lo)  # cover the mask box
    return min(max(start, 0), limit - size)  # stay in the frame (size <= limit, so the box stays covered)


def plan_crops(
    mask: np.ndarray,
    ranges: list[tuple[int, int]],
    mode: str = "auto",
    context: float = 2.0,
    min_size: int = 384,
    max_area: int = 480 * 832,
    margin: int = 0,
    full_size: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
    q: int = 16,
) -> list[Crop]:
    """One Crop per window.

    Args:
        mask: bool [F, H, W], the edit mask at the source size.
        ranges: each window's clip frames [start, stop).
        mode: `auto` (a box around the mask) or `full` (the whole frame).
        context: each side of the mask's box is multiplied by this.
        min_size: a crop side is at least this many source pixels (or the frame's side).
        max_area: the most model pixels per frame.
        margin: source pixels the mask's box grows by first (the paste-back band).
        full_size: (height, width) the whole frame is worked at for `full`, and for an `auto` crop that
            grows to the whole frame (the alignment plan's).
        size: (height, width) to work every window at instead of the max_area rule (--width/--height).
        q: the model's size multiple.
    """
    boxes = [mask_box(mask[a:b]) for a, b in ranges]
    return crops_for_boxes(boxes, mask.shape[1:], mode, context, min_size, max_area, margin, full_size, size, q)


def crops_for_boxes(
    boxes: list[tuple[int, int, int, int] | None],
    frame_hw: tuple[int, int],
    mode: str = "auto",
    context: float = 2.0,
    min_size: int = 384,
    max_area: int = 480 * 832,
    margin: int = 0,
    full_size: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
    q: int = 16,
) -> list[Crop]:
    """`plan_crops` from each window's mask box (None: no mask pixel) in a frame of `frame_hw` (height, width)."""
    H, W = frame_hw
    if mode == "full":
        h, w = full_size if full_size is not None else (size if size is not None else (H, W))
        return [Crop(0, 0, W, H, w, h) for _ in boxes]
    if mode != "auto":
        raise ValueError(f"crop mode {mode!r} is not auto or full")

    known = [i for i, b in enumerate(boxes) if b is not None]
    if not known:
        raise ValueError("the mask is empty in every window")
    # a window without mask pixels borrows the nearest window's box (it stays steady; nothing changes there)
    boxes = [boxes[i] if boxes[i] is not None else boxes[min(known, key=lambda k: abs(k - i))] for i in range(len(boxes))]
    grown = [(max(0, x0 - margin), max(0, y0 - margin), min(W, x1 + margin), min(H, y1 + margin)) for x0, y0, x1, y1 in boxes]

    need_w, need_h = [], []
    for x0, y0, x1, y1 in grown:
        w = min(W, max((x1 - x0) * context, min_size, MIN_SIDE))
        h = min(H, max((y1 - y0) * context, min_size, MIN_SIDE))
        w, h = min(W, max(w, h / MAX_ASPECT)), min(H, max(h, w / MAX_ASPECT))
        need_w.append(w)
        need_h.append(h)
    need_w, need_h = _steady(need_w, STEADY_RATIO), _steady(need_h, STEADY_RATIO)

    crops: list[Crop] = []
    centre = None
    for (x0, y0, x1, y1), nw, nh in zip(grown, need_w, need_h):
        if size is not None:
            mh, mw = size
            aspect = mw / mh
            nw, nh = max(nw, nh * aspect), max(nh, nw / aspect)
            cw, ch = min(W, round(nw)), min(H, round(nh))
        else:
            mw, mh, scale = _working_size(min(nw, W), min(nh, H), max_area, q)
            cw, ch = min(W, round(mw / scale)), min(H, round(mh / scale))
        cw, ch = max(cw, x1 - x0), max(ch, y1 - y0)
        if (cw, ch) == (W, H) and size is None and full_size is not None:
            mh, mw = full_size  # the whole frame after all: fitted as `crop: full` fits it
        target = ((x0 + x1) / 2, (y0 + y1) / 2)
        centre = target if centre is None else ((centre[0] + target[0]) / 2, (centre[1] + target[1]) / 2)
        cx0 = _place(centre[0], cw, x0, x1, W)
        cy0 = _place(centre[1], ch, y0, y1, H)
        centre = (cx0 + cw / 2, cy0 + ch / 2)
        crops.append(Crop(cx0, cy0, cx0 + cw, cy0 + ch, mw, mh))
    return crops


def describe_crops(crops: list[Crop], src_hw: tuple[int, int]) -> list[str]:
    """One line per distinct crop decision, for the user."""
    H, W = src_hw
    if all(c.x0 == 0 and c.y0 == 0 and c.x1 == W and c.y1 == H for c in crops):
        c = crops[0]
        if (c.width, c.height) == (W, H):
            return []  # nothing to tell: the model sees the frames as they are
        return [f"the model works on the whole {W}x{H} frame scaled to {c.width}x{c.height} (crop: full), "
                f"scaled back to {W}x{H} for the output"]  # fmt: skip
    if len(crops) == 1:
        return [f"the model works on a crop around the mask: {crops[0].text()}; the output stays {W}x{H}"]
    sizes = sorted({(c.width, c.height) for c in crops}, key=lambda s: -s[0] * s[1])
    return [
        f"the model works on a crop around the mask in each of {len(crops)} windows, at "
        + ", ".join(f"{w}x{h}" for w, h in sizes)
        + f"; the output stays {W}x{H}"
    ]


def _interp(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    return cv2.INTER_AREA if dst_hw[0] <= src_hw[0] and dst_hw[1] <= src_hw[1] else cv2.INTER_CUBIC


def resize_frames(frames: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 [n, h, w, C] at size_hw (INTER_AREA when shrinking, INTER_CUBIC otherwise); the input when equal."""
    n, h, w, c = frames.shape
    if (h, w) == tuple(size_hw):
        return frames
    interp = _interp((h, w), size_hw)
    out = np.empty((n, size_hw[0], size_hw[1], c), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(np.ascontiguousarray(frame), (size_hw[1], size_hw[0]), interpolation=interp).reshape(out.shape[1:])
    return out


def crop_frames(frames: np.ndarray, crop: Crop) -> np.ndarray:
    """uint8 [n, height, width, 3]: the crop's box of each frame at the working size."""
    return resize_frames(frames[:, crop.y0 : crop.y1, crop.x0 : crop.x1], (crop.height, crop.width))


def crop_mask(mask: np.ndarray, crop: Crop) -> np.ndarray:
    """bool [n, height, width]: a model pixel is masked when any source pixel it covers is."""
    box = mask[:, crop.y0 : crop.y1, crop.x0 : crop.x1]
    if (crop.src_height, crop.src_width) == (crop.height, crop.width):
        return box.copy()
    interp = _interp((crop.src_height, crop.src_width), (crop.height, crop.width))
    interp = cv2.INTER_AREA if interp == cv2.INTER_AREA else cv2.INTER_LINEAR
    return np.stack(
        [cv2.resize(m.astype(np.float32), (crop.width, crop.height), interpolation=interp) > 0 for m in box]
    )


def uncrop(frames: np.ndarray, crop: Crop) -> np.ndarray:
    """uint8 [n, src_height, src_width, 3]: model-size frames scaled back to the crop's box."""
    return resize_frames(frames, (crop.src_height, crop.src_width))
