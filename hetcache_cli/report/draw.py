"""Small pixel helpers shared by the comparison video and the preview sheet (numpy and OpenCV, no torch)."""

from __future__ import annotations

import numpy as np

OUTLINE_RGB = (0, 255, 255)  # cyan: visible on skin, sky, foliage and the heat map's black-red-yellow
LABEL_PX = 20  # height of the caption band above a panel


def outline(mask: np.ndarray, thickness_px: int = 1) -> np.ndarray:
    """bool [H, W]: the pixels of `mask` ([H, W] bool) that touch a pixel outside it (4-neighbours), grown inwards."""
    inner = mask.copy()
    for _ in range(max(1, thickness_px)):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def draw_outline(frame: np.ndarray, mask: np.ndarray | None, thickness_px: int = 1) -> np.ndarray:
    """A copy of uint8 [H, W, 3] `frame` with the edge of bool [H, W] `mask` drawn in OUTLINE_RGB."""
    out = frame.copy()
    if mask is not None:
        out[outline(mask, thickness_px)] = OUTLINE_RGB
    return out


def heat_map(a: np.ndarray, b: np.ndarray, gain: float) -> np.ndarray:
    """uint8 [H, W, 3]: black where a == b, through red and yellow to white as |a - b| grows.

    The value is the largest channel difference times `gain`, out of 255; zero difference is exactly black.
    """
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1).astype(np.float32)  # [H, W]
    v = np.clip(diff * np.float32(gain / 255.0), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


def resize(frame: np.ndarray, size_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """`frame` (uint8 [H, W, 3] or bool [H, W]) at `size_hw`; unchanged when it already has that size."""
    import cv2

    if frame.shape[:2] == tuple(size_hw):
        return frame
    h, w = size_hw
    if frame.dtype == bool:
        return cv2.resize(frame.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def caption(text: str, width: int) -> np.ndarray:
    """uint8 [LABEL_PX, width, 3]: `text` in white on black, cut to fit."""
    import cv2

    band = np.zeros((LABEL_PX, width, 3), np.uint8)
    scale, font = 0.4, cv2.FONT_HERSHEY_SIMPLEX
    while text and cv2.getTextSize(text, font, scale, 1)[0][0] > width - 6:
        text = text[:-1]
    cv2.putText(band, text, (3, LABEL_PX - 6), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return band


def fit_size(height: int, width: int, max_width: int) -> tuple[int, int]:
    """(h, w), even, of a `height` x `width` picture scaled down (never up) to at most `max_width` wide."""
    scale = min(1.0, max_width / width)
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)
