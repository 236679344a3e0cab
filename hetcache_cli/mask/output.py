"""Writing a mask, as a lossless video or a folder of PNGs (one per frame), and its preview video.

Both formats hold white (255) = edit and black (0) = keep, at the clip's size, frame count and (for
the video) fps, so `hetcache edit --mask` reads them as they are. Writes are atomic.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from hetcache_cli.errors import HetcacheError, InputError
from hetcache_cli.io.atomic import atomic_dir
from hetcache_cli.io.mask import IMAGE_SUFFIXES
from hetcache_cli.io.video import VIDEO_SUFFIXES, write_video
from hetcache_cli.spec.prompts import Box, Point

__all__ = ["check_output", "output_kind", "preview_frames", "write_mask", "write_preview"]

_FRAME_FILE = re.compile(r"^\d+\.png$")
TINT = np.array([30, 144, 255], dtype=np.float32)  # RGB
TINT_ALPHA = 0.45
POSITIVE = (0, 230, 0)
NEGATIVE = (255, 40, 40)


def output_kind(path: Path) -> str:
    """'video' for a video extension, 'folder' for an existing folder or a name without extension."""
    suffix = path.suffix.lower()
    if path.is_dir() or not suffix:
        return "folder"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        raise InputError(
            f"-o {path}: a mask has one frame per video frame; give a video ({path.with_suffix('.mp4').name}) "
            f"or a folder name ({path.stem}_frames) for one PNG per frame"
        )
    raise InputError(
        f"-o {path}: unknown extension {path.suffix!r}; use {'/'.join(VIDEO_SUFFIXES)} for a mask video "
        "or a folder name without extension for PNG frames"
    )


def check_output(path: Path, kind: str, overwrite: bool, flag: str = "-o/--output") -> None:
    """An existing output needs --overwrite; a folder is replaced only if it holds nothing but frame PNGs."""
    if not path.exists():
        return
    if not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite or choose another {flag}")
    if kind == "folder":
        if not path.is_dir():
            raise InputError(f"{path} is a file, not a folder; choose another {flag}")
        others = [p.name for p in path.iterdir() if not (p.is_file() and _FRAME_FILE.match(p.name))]
        if others:
            raise InputError(
                f"folder {path} holds other files ({others[0]}, ...); --overwrite replaces only a folder of "
                f"mask frames (00000.png, ...): choose another {flag}"
            )


def _gray_rgb(mask: np.ndarray) -> Iterator[np.ndarray]:
    for m in mask:
        yield np.repeat((m[..., None] * np.uint8(255)).astype(np.uint8), 3, axis=-1)


def write_mask(path: Path, mask: np.ndarray, fps: float, kind: str) -> Path:
    """bool [F, H, W] -> `path`: a lossless H.264 (4:4:4) video, or a folder 00000.png, 00001.png, ..."""
    if kind == "video":
        return write_video(path, _gray_rgb(mask), fps, lossless=True)
    digits = max(5, len(str(len(mask) - 1)))
    with atomic_dir(path) as tmp:
        for i, m in enumerate(mask):
            target = tmp / f"{i:0{digits}d}.png"
            if not cv2.imwrite(str(target), m.astype(np.uint8) * np.uint8(255)):
                raise HetcacheError(f"could not write {target.name} in {path.parent}; check the disk space")
    return path


def preview_frames(frames: np.ndarray, mask: np.ndarray, points: list[Point], boxes: list[Box]) -> Iterator[np.ndarray]:
    """RGB frames with the mask tinted blue (its edge solid) and each frame's prompts drawn on it."""
    height, width = frames.shape[1:3]
    radius = max(2, min(height, width) // 90)
    edge_kernel = np.ones((3, 3), np.uint8)
    for f, (frame, m) in enumerate(zip(frames, mask)):
        out = frame.copy()
        if m.any():
            out[m] = (frame[m] * (1 - TINT_ALPHA) + TINT * TINT_ALPHA + 0.5).astype(np.uint8)
            edge = m & ~cv2.erode(m.astype(np.uint8), edge_kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
            out[edge] = TINT.astype(np.uint8)
        for b in boxes:
            if b.frame == f:
                corner0 = (int(round(b.x0)), int(round(b.y0)))
                corner1 = (int(round(b.x1)) - 1, int(round(b.y1)) - 1)
                cv2.rectangle(out, corner0, corner1, POSITIVE, 1)
        for p in points:
            if p.frame == f:
                centre = (int(round(p.x)), int(round(p.y)))
                cv2.circle(out, centre, radius, POSITIVE if p.positive else NEGATIVE, -1)
                cv2.circle(out, centre, radius, (255, 255, 255), 1)
        yield out


def write_preview(
    path: Path, frames: np.ndarray, mask: np.ndarray, fps: float, points: list[Point], boxes: list[Box]
) -> Path:
    """The clip with the mask tinted over it, as an H.264 video at the clip's fps."""
    return write_video(path, preview_frames(frames, mask, points, boxes), fps)
