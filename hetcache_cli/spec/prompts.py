"""Mask prompts: boxes `x0,y0,x1,y1[@FRAME]` and clicks `x,y[@FRAME]` (no torch, no video needed to parse).

Coordinates are pixels of the source video, x to the right and y down from the frame's top-left
corner. A box spans x0 <= x < x1 and y0 <= y < y1 in continuous pixel coordinates, so
`0,0,W,H` is the whole W x H frame and `10,20,30,40` covers columns 10..29 and rows 20..39.
FRAME is a 0-based frame index of the source video, 0 when omitted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from hetcache_cli.errors import InputError

__all__ = ["Box", "Point", "fit_boxes", "fit_points", "parse_box", "parse_boxes", "parse_point"]

logger = logging.getLogger(__name__)

BOX_SYNTAX = "x0,y0,x1,y1[@FRAME] in pixels, e.g. 40,30,200,180 or 40,30,200,180@12"
POINT_SYNTAX = "x,y[@FRAME] in pixels, e.g. 120,80 or 120,80@12"


def _num(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Box:
    """A box keyframe: [x0, x1) x [y0, y1) in source pixels, on frame `frame`."""

    x0: float
    y0: float
    x1: float
    y1: float
    frame: int = 0

    def text(self) -> str:
        return f"{_num(self.x0)},{_num(self.y0)},{_num(self.x1)},{_num(self.y1)}@{self.frame}"


@dataclass(frozen=True)
class Point:
    """A click at (x, y) in source pixels on frame `frame`; positive = on the object, else a negative click."""

    x: float
    y: float
    frame: int = 0
    positive: bool = True

    def text(self) -> str:
        return f"{_num(self.x)},{_num(self.y)}@{self.frame}"


def _split(text: str, count: int, what: str, syntax: str) -> tuple[list[float], int]:
    """'a,b,...[@F]' -> ([a, b, ...], F); InputError naming `what` and the syntax otherwise."""
    raw = str(text).strip()
    body, at, frame_txt = raw.partition("@")
    frame = 0
    if at:
        frame_txt = frame_txt.strip()
        if not frame_txt.isdigit():
            raise InputError(f"{what} {raw!r}: frame {frame_txt!r} is not a frame index (0, 1, 2, ...); use {syntax}")
        frame = int(frame_txt)
    parts = [p.strip() for p in body.split(",")]
    if len(parts) != count:
        raise InputError(f"{what} {raw!r} has {len(parts)} number(s), not {count}; use {syntax}")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"{what} {raw!r}: {part!r} is not a number; use {syntax}") from None
        if not math.isfinite(value):
            raise InputError(f"{what} {raw!r}: {part!r} is not a finite number; use {syntax}")
        values.append(value)
    return values, frame


def parse_box(text: str, what: str = "--box") -> Box:
    """`x0,y0,x1,y1[@FRAME]` -> Box; x1 > x0 and y1 > y0 are required."""
    (x0, y0, x1, y1), frame = _split(text, 4, what, BOX_SYNTAX)
    for lo, hi, axis in ((x0, x1, "x"), (y0, y1, "y")):
        if hi <= lo:
            raise InputError(
                f"{what} {str(text).strip()!r}: {axis}1 ({_num(hi)}) must be greater than {axis}0 ({_num(lo)}); "
                f"use {BOX_SYNTAX}"
            )
    return Box(x0, y0, x1, y1, frame)


def parse_boxes(values: str | list[str] | None, what: str = "--box") -> list[Box]:
    """One box string or a list of them (a spec's `box:`) -> Boxes; None -> []."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [parse_box(v, what) for v in values]


def parse_point(text: str, positive: bool = True, what: str | None = None) -> Point:
    """`x,y[@FRAME]` -> Point."""
    what = what or ("--point" if positive else "--negative")
    (x, y), frame = _split(text, 2, what, POINT_SYNTAX)
    return Point(x, y, frame, positive)


def _check_frame(what: str, text: str, frame: int, num_frames: int) -> None:
    if frame >= num_frames:
        raise InputError(
            f"{what} {text}: frame {frame} is beyond the clip, which has {num_frames} frames (0..{num_frames - 1}); "
            "use a frame index inside it"
        )


def _covers_a_pixel(lo: float, hi: float) -> bool:
    # Pixel i is inside when its centre i + 0.5 lies in [lo, hi) (see boxes.pixel_span).
    return math.ceil(hi - 0.5) > math.ceil(lo - 0.5)


def fit_boxes(boxes: list[Box], num_frames: int, width: int, height: int, what: str = "--box") -> list[Box]:
    """Check box keyframes against a clip, clip them to the frame (with a warning), sort by frame.

    Raises:
        InputError: a frame index beyond the clip, two keyframes on one frame, a box entirely
            outside the frame or one that covers no whole pixel.
    """
    fitted: dict[int, Box] = {}
    for box in boxes:
        text = box.text()
        _check_frame(what, text, box.frame, num_frames)
        if box.frame in fitted:
            raise InputError(
                f"{what} {text}: frame {box.frame} already has the box {fitted[box.frame].text()}; "
                "give one box per frame (keyframes of one moving box)"
            )
        clipped = replace(box, x0=max(box.x0, 0.0), y0=max(box.y0, 0.0), x1=min(box.x1, float(width)),
                          y1=min(box.y1, float(height)))  # fmt: skip
        if clipped.x1 <= clipped.x0 or clipped.y1 <= clipped.y0:
            raise InputError(
                f"{what} {text} lies outside the {width}x{height} frame; boxes are in pixels of the video "
                f"(x in 0..{width}, y in 0..{height})"
            )
        if not (_covers_a_pixel(clipped.x0, clipped.x1) and _covers_a_pixel(clipped.y0, clipped.y1)):
            raise InputError(f"{what} {text} covers no whole pixel; make it at least 1 pixel wide and tall")
        if clipped != box:
            logger.warning("%s %s extends past the %dx%d frame; clipped to %s", what, text, width, height,
                           clipped.text())  # fmt: skip
        fitted[box.frame] = clipped
    return [fitted[f] for f in sorted(fitted)]


def fit_points(points: list[Point], num_frames: int, width: int, height: int) -> list[Point]:
    """Check clicks against a clip: inside the frame, on a frame of the clip."""
    for p in points:
        what = "--point" if p.positive else "--negative"
        _check_frame(what, p.text(), p.frame, num_frames)
        if not (0 <= p.x < width and 0 <= p.y < height):
            raise InputError(
                f"{what} {p.text()} lies outside the {width}x{height} frame; clicks are in pixels of the video "
                f"(x in 0..{width - 1}, y in 0..{height - 1})"
            )
    return list(points)
