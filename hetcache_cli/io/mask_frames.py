"""The edit mask of a whole clip without a full-size array per frame: each frame's bounding box and the bits
inside it, packed (1 bit a pixel), frames that repeat the one before sharing its bits.

A mask image costs one frame, a mask video or folder is read one frame at a time. Planning reads the boxes
(the crops), a window reads its mask inside its crop (`region`): the same pixels `io/mask.load_mask` gives,
without ever holding the clip's [F, H, W] array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from hetcache_cli.errors import InputError
from hetcache_cli.io import mask as _mask
from hetcache_cli.io.boxes import interpolate_boxes, pixel_span
from hetcache_cli.io.stitch import Box

__all__ = ["MaskFrames", "box_mask_frames", "read_mask_frames"]


@dataclass(frozen=True)
class MaskFrames:
    """bool masks of `len(index)` frames at height x width: frame t has box `boxes[t]` (None: empty) holding
    `bits[index[t]]` (np.packbits of the box's pixels, row-major) and `counts[t]` masked pixels."""

    height: int
    width: int
    boxes: tuple[Box | None, ...]
    index: tuple[int, ...]
    bits: tuple[np.ndarray, ...]
    counts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.index)

    def box(self, t0: int = 0, t1: int | None = None) -> Box | None:
        """(x0, y0, x1, y1) bounding frames [t0, t1) (exclusive ends), None when they are all empty."""
        found = [b for b in self.boxes[t0:t1] if b is not None]
        if not found:
            return None
        return min(b[0] for b in found), min(b[1] for b in found), max(b[2] for b in found), max(b[3] for b in found)

    def frame(self, t: int) -> np.ndarray:
        """bool [height, width]: frame t's mask (for tests and small clips)."""
        return self.region(t, t + 1, (0, 0, self.width, self.height))[0]

    def region(self, t0: int, t1: int, box: Box) -> np.ndarray:
        """bool [t1 - t0, y1 - y0, x1 - x0]: frames [t0, t1) of the mask inside `box`."""
        x0, y0, x1, y1 = box
        out = np.zeros((t1 - t0, y1 - y0, x1 - x0), bool)
        for k, t in enumerate(range(t0, t1)):
            b = self.boxes[t]
            if b is None:
                continue
            ix0, iy0, ix1, iy1 = max(x0, b[0]), max(y0, b[1]), min(x1, b[2]), min(y1, b[3])
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            h, w = b[3] - b[1], b[2] - b[0]
            inside = np.unpackbits(self.bits[self.index[t]], count=h * w).reshape(h, w).view(bool)
            out[k, iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = inside[iy0 - b[1] : iy1 - b[1], ix0 - b[0] : ix1 - b[0]]
        return out

    def dense(self) -> np.ndarray:
        """bool [F, H, W]: the whole clip's mask (benchmarks and tests of short clips only)."""
        return self.region(0, len(self), (0, 0, self.width, self.height))

    def coverage(self) -> float:
        """Fraction of pixels (over all frames) marked for editing."""
        return sum(self.counts) / (len(self) * self.height * self.width)


class _Builder:
    def __init__(self, size_hw: tuple[int, int]) -> None:
        self.size_hw = size_hw
        self.boxes: list[Box | None] = []
        self.index: list[int] = []
        self.bits: list[np.ndarray] = []
        self.counts: list[int] = []

    def add(self, mask: np.ndarray, repeat: int = 1) -> None:
        """Append `repeat` frames of bool [H, W] `mask`."""
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
            bits = np.packbits(mask[box[1] : box[3], box[0] : box[2]])
        else:
            box, bits = None, np.zeros(0, np.uint8)
        same = self.boxes and self.boxes[-1] == box and np.array_equal(self.bits[self.index[-1]], bits)
        if not same:
            self.bits.append(bits)
        entry = len(self.bits) - 1
        count = int(np.count_nonzero(mask))
        for _ in range(repeat):
            self.boxes.append(box)
            self.index.append(entry)
            self.counts.append(count)

    def build(self) -> MaskFrames:
        h, w = self.size_hw
        return MaskFrames(h, w, tuple(self.boxes), tuple(self.index), tuple(self.bits), tuple(self.counts))


def _check(masks: MaskFrames, what: str, empty_fix: str, full_fix: str) -> MaskFrames:
    if not any(masks.counts):
        raise InputError(f"{what} is empty{empty_fix}")
    if all(c == masks.height * masks.width for c in masks.counts):
        raise InputError(f"{what} covers the whole video{full_fix}")
    return masks


def read_mask_frames(
    path: str | os.PathLike,
    num_frames: int,
    size_hw: tuple[int, int],
    threshold: float = 0.5,
    invert: bool = False,
    dilation_px: int = 0,
) -> MaskFrames:
    """`io/mask.load_mask`'s mask (same arguments, checks and messages), read frame by frame into MaskFrames."""
    path = Path(path)
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"mask threshold {threshold} is outside [0, 1); use e.g. 0.5")
    if dilation_px < 0:
        raise InputError(f"mask dilation {dilation_px} px is negative; use 0 or more")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    kernel = _mask.dilation_kernel(dilation_px)
    out = _Builder(size_hw)

    def add(gray: np.ndarray, repeat: int = 1) -> None:
        out.add(_mask.binarize_mask(gray, size_hw, threshold, invert, kernel), repeat)

    if not path.exists():
        raise InputError(f"mask {path} does not exist; check the path")
    if path.is_dir():
        files = _mask._list_images(path)
        if not files:
            raise InputError(
                f"mask folder {path} has no images ({', '.join(_mask.IMAGE_SUFFIXES)}); put one image per frame in it"
            )
        if len(files) < num_frames:
            raise _mask._too_short(path, "folder", len(files), num_frames)
        for k, f in enumerate(files[:num_frames]):
            gray = _mask._to_unit_gray(_mask._read_image(f), str(f))
            if k == 0:
                _mask._warn_aspect(path, gray.shape, size_hw)
            add(gray)
    elif path.suffix.lower() in _mask.IMAGE_SUFFIXES:
        gray = _mask._to_unit_gray(_mask._read_image(path), str(path))
        _mask._warn_aspect(path, gray.shape, size_hw)
        add(gray, num_frames)
    else:
        _read_mask_video(path, num_frames, size_hw, add)
    how = f"threshold {threshold}" + (", inverted" if invert else "")
    return _check(
        out.build(), f"mask {path}",
        f" ({how}): nothing to edit; check --mask-threshold/--mask-invert (white = edit)",
        f" ({how}, dilation {dilation_px} px): nothing is kept; use a text-to-video tool or fix the mask "
        "(white = edit, black = keep)",
    )  # fmt: skip


def _read_mask_video(path: Path, num_frames: int, size_hw: tuple[int, int], add) -> None:
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-frames:v", str(num_frames)])
    count = 0
    try:
        meta = next(reader)
        width, height = meta["size"]
        _mask._warn_aspect(path, (height, width), size_hw)
        for buf in reader:
            frame = np.frombuffer(buf, np.uint8).reshape(height, width, 3)
            # RGB frames: reverse channels so the BGR luma weights apply to the right colours.
            add(_mask._to_unit_gray(frame[..., ::-1], str(path)))
            count += 1
    except (OSError, RuntimeError, ValueError, KeyError, StopIteration) as err:
        raise InputError(
            f"cannot read video {path}: {str(err).strip().splitlines()[-1] if str(err).strip() else err}; "
            "pass a video file ffmpeg can decode (mp4, mov, webm, ...)"
        ) from None
    finally:
        reader.close()
    if count < num_frames:
        raise _mask._too_short(path, "video", count, num_frames)


def box_mask_frames(
    keyframes: list, num_frames: int, src_hw: tuple[int, int], size_hw: tuple[int, int], threshold: float,
    invert: bool, dilation_px: int, what: str,
) -> MaskFrames:  # fmt: skip
    """Box keyframes (spec/prompts.py, fitted to the clip) drawn frame by frame at the source size, then fitted
    to `size_hw` like a mask file (resize, threshold, invert, dilation): what `hetcache mask --box` writes."""
    src_h, src_w = src_hw
    kernel = _mask.dilation_kernel(dilation_px)
    out = _Builder(size_hw)
    drawn = np.zeros((src_h, src_w), np.float32)
    for x0, y0, x1, y1 in interpolate_boxes(keyframes, num_frames):
        drawn[:] = 0.0
        c0, c1 = pixel_span(x0, x1, src_w)
        r0, r1 = pixel_span(y0, y1, src_h)
        drawn[r0:r1, c0:c1] = 1.0
        out.add(_mask.binarize_mask(drawn, size_hw, threshold, invert, kernel))
    masks = out.build()
    if not any(masks.counts):
        raise InputError(
            f"{what} selects no pixel at {size_hw[1]}x{size_hw[0]}; make the box larger or use --mask-dilation"
        )
    if all(c == masks.height * masks.width for c in masks.counts):
        raise InputError(f"{what} covers the whole video: nothing is kept; use a smaller box or drop --mask-invert")
    return masks
