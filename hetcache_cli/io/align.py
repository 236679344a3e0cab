"""Fit a clip to the Wan model's size rules: H and W multiples of 16.

Every frame is kept (the 4k+1 rule applies to each window of the model, see
pipeline/windows.py, never to the clip) unless `--frames` asks for fewer, which keeps the first
ones; the fps and timing are never changed. The plan's size is the whole frame's at the model
(`crop: full`); `io/crop.py` plans the crops `crop: auto` works on instead.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np

from hetcache_cli.errors import InputError
from hetcache_cli.io.crop import resize_frames

__all__ = ["AlignmentPlan", "plan_alignment", "apply_alignment"]


@dataclass
class AlignmentPlan:
    """What `apply_alignment` will do to a clip.

    Args:
        frames: frames used (the first `frames` of the source).
        height: output height, a multiple of `size_multiple`.
        width: output width, a multiple of `size_multiple`.
        trimmed_frames: source frames dropped at the end.
        resized: True if (height, width) differs from the source size.
        messages: one human-readable line per change, for the user.
        src_frames: source frame count.
        src_height: source height.
        src_width: source width.
        resize_message: the line of `messages` that tells the resize, None when there is none.
    """

    frames: int
    height: int
    width: int
    trimmed_frames: int
    resized: bool
    messages: list[str] = field(default_factory=list)
    src_frames: int = 0
    src_height: int = 0
    src_width: int = 0
    resize_message: str | None = None


def _as_int(value, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(f"{name} {value!r} is not a whole number; give an integer") from None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _plan_frames(src_frames: int, frames: int | None, fps: float | None) -> tuple[int, list[str]]:
    if frames is None:
        return src_frames, []
    used = _as_int(frames, "--frames")
    if used < 1:
        raise InputError(f"--frames {used} is not positive; use --frames 1 or more")
    if used > src_frames:
        raise InputError(
            f"--frames {used} asks for more frames than the video has ({src_frames}); use --frames {src_frames} or fewer"
        )
    dropped = src_frames - used
    if not dropped:
        return used, []
    dropped_txt = _plural(dropped, "frame") + (f", {dropped / fps:.2f} s" if fps else "")
    return used, [f"using the first {used} of {src_frames} frames as set by --frames {used} ({dropped_txt} left out)"]


def _nearest(x: float, q: int) -> int:
    # Round half up, never below one multiple.
    return max(q, int(math.floor(x / q + 0.5)) * q)


def _check_side(value, name: str, q: int) -> int:
    value = _as_int(value, name)
    if value < 2 * q:
        raise InputError(f"{name} {value} is too small; the minimum is {2 * q}: use {name} {2 * q} or more")
    if value % q:
        below = value // q * q
        options = [v for v in (below, below + q) if v >= 2 * q]
        raise InputError(
            f"{name} {value} is not a multiple of {q} (the model needs multiples of {q}); "
            f"use {name} {' or '.join(map(str, options))}"
        )
    return value


def _fit_area(tw: float, th: float, aspect: float, max_area: int | None, q: int) -> tuple[int, int]:
    """Multiples of q near (tw, th): nearest per side if within max_area, else best aspect that fits."""
    w, h = _nearest(tw, q), _nearest(th, q)
    if max_area is None or w * h <= max_area:
        return w, h
    ws = {max(q, math.floor(tw / q) * q), max(q, math.ceil(tw / q) * q)}
    hs = {max(q, math.floor(th / q) * q), max(q, math.ceil(th / q) * q)}
    fits = [(cw, ch) for cw in ws for ch in hs if cw * ch <= max_area]
    if not fits:
        return min(ws), min(hs)
    return min(fits, key=lambda s: (abs(s[0] / s[1] / aspect - 1), -s[0] * s[1]))


def _plan_size(src_h, src_w, height, width, max_area, q) -> tuple[int, int, str]:
    aspect = src_w / src_h
    min_side = 2 * q
    if width is not None and height is not None:
        return _check_side(height, "--height", q), _check_side(width, "--width", q), "as requested"
    if width is not None or height is not None:
        given_name, other_name = ("--width", "--height") if width is not None else ("--height", "--width")
        given = _check_side(width if width is not None else height, given_name, q)
        raw = given / aspect if width is not None else given * aspect
        other = _nearest(raw, q)
        if other < min_side:
            raise InputError(
                f"{given_name} {given} gives {other_name} {raw:.0f} for this {src_w}x{src_h} video, below the "
                f"minimum {min_side}; use a larger {given_name} or set {other_name} too"
            )
        w, h = (given, other) if width is not None else (other, given)
        return h, w, f"{given_name} {given}, {other_name} from the aspect ratio"
    if max_area is not None:
        max_area = _as_int(max_area, "max_area")
        if max_area < min_side * min_side:
            raise InputError(f"max_area {max_area} is below {min_side}x{min_side}={min_side ** 2}; raise it")
    tw, th = float(src_w), float(src_h)
    scaled = max_area is not None and src_w * src_h > max_area
    if scaled:
        scale = math.sqrt(max_area / (src_w * src_h))
        tw, th = src_w * scale, src_h * scale
    w, h = _fit_area(tw, th, aspect, max_area, q)
    if w < min_side or h < min_side:
        fix = "raise max_area (edit spec) or pass --width/--height" if scaled else "pass --width/--height to upscale it"
        raise InputError(
            f"video {src_w}x{src_h} becomes {w}x{h} in multiples of {q}, below the minimum "
            f"{min_side}x{min_side}; {fix}"
        )
    reason = f"multiples of {q}" + (f", fits max_area {max_area}" if scaled else "")
    return h, w, reason


def plan_alignment(
    src_frames: int,
    src_h: int,
    src_w: int,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    max_area: int | None = None,
    size_multiple: int = 16,
    fps: float | None = None,
) -> AlignmentPlan:
    """Decide the frame count and size the model will run at.

    Args:
        src_frames, src_h, src_w: the source clip.
        frames: edit only the first `frames` frames (1..src_frames); None = every frame.
        height, width: requested size (multiples of size_multiple, >= 2*size_multiple).
            One alone: the other follows the aspect ratio. Both given: used as is.
        max_area: only when neither height nor width is given: scale down (aspect kept)
            so that height*width <= max_area.
        size_multiple: the model's size rule (Wan: 16).
        fps: only used to express dropped frames in seconds in the messages.

    Raises:
        InputError: invalid requested frames or size, a size that
            cannot reach the minimum.
    """
    used, messages = _plan_frames(src_frames, frames, fps)
    h, w, reason = _plan_size(src_h, src_w, height, width, max_area, size_multiple)
    resized = (h, w) != (src_h, src_w)
    resize_message = None
    if resized:
        change = abs((w / h) / (src_w / src_h) - 1)
        aspect_txt = "aspect kept within 1%" if change < 0.01 else f"aspect ratio changed by {change:.1%}"
        resize_message = f"resizing {src_w}x{src_h} -> {w}x{h} ({reason}; {aspect_txt})"
        messages.append(resize_message)
    return AlignmentPlan(
        frames=used,
        height=h,
        width=w,
        trimmed_frames=src_frames - used,
        resized=resized,
        messages=messages,
        src_frames=src_frames,
        src_height=src_h,
        src_width=src_w,
        resize_message=resize_message,
    )


def apply_alignment(frames_uint8: np.ndarray, plan: AlignmentPlan) -> np.ndarray:
    """Trim to plan.frames and resize to (plan.height, plan.width): uint8 [F, H, W, 3].

    Without a resize the result is a view of the input. Downscaling uses INTER_AREA,
    anything else INTER_CUBIC (saturated to 0..255).
    """
    if frames_uint8.ndim != 4 or frames_uint8.dtype != np.uint8:
        raise ValueError(f"expected uint8 [F, H, W, C], got {frames_uint8.dtype} {frames_uint8.shape}")
    f, h, w = frames_uint8.shape[:3]
    if f < plan.frames or (plan.src_height and (h, w) != (plan.src_height, plan.src_width)):
        raise ValueError(
            f"clip is {f}x{h}x{w}, the plan was made for {plan.src_frames}x{plan.src_height}x{plan.src_width}"
        )
    return resize_frames(frames_uint8[: plan.frames], (plan.height, plan.width))
