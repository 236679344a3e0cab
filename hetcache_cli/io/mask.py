"""Edit masks: white = edit, black = keep.

A mask is one image (the same for every frame), a mask video, or a folder of per-frame
images. Processing order, per frame:

1. grayscale in [0, 1] (BT.601 luma; an alpha channel multiplies it, i.e. the image is
   composited over black, so transparent pixels are "keep" whatever RGB they store);
2. resize the *float* mask to the video size (INTER_AREA when shrinking, INTER_LINEAR
   otherwise) so a thin line becomes a grey line that can still pass the threshold,
   instead of being dropped by nearest-neighbour sampling of a binary mask;
3. threshold (`value > threshold`), then optional invert;
4. dilation by `dilation_px` pixels with an elliptical kernel.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from hetcache_cli.errors import InputError
from hetcache_cli.io.video import read_video

__all__ = ["IMAGE_SUFFIXES", "binarize_mask", "dilation_kernel", "load_mask", "mask_coverage", "natural_key"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# A mask whose aspect ratio differs more than this from the video's is probably for another clip.
_ASPECT_WARN = 0.03


def natural_key(name: str) -> tuple:
    """Sort key with numbers compared by value: f2.png < f10.png."""
    # re.split with a group alternates text/number, so positions always compare like types.
    return tuple(int(tok) if i % 2 else tok for i, tok in enumerate(re.split(r"(\d+)", name.lower())))


def mask_coverage(mask: np.ndarray) -> float:
    """Fraction of pixels (over all frames) marked for editing."""
    return float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0


def _to_unit_gray(img: np.ndarray, source: str) -> np.ndarray:
    """[H, W] float32 in [0, 1] from a cv2-decoded gray / BGR / BGRA image, or RGB frame."""
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype == np.bool_ or np.issubdtype(img.dtype, np.floating):
        scale = 1.0
    else:
        raise InputError(f"mask {source} has pixel type {img.dtype}; save it as an 8-bit PNG")
    img = img.astype(np.float32) / scale
    if img.ndim == 2:
        gray = img
    elif img.ndim == 3 and img.shape[2] == 1:
        gray = img[..., 0]
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        gray = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_BGR2GRAY)
        if img.shape[2] == 4:
            gray = gray * img[..., 3]
    else:
        raise InputError(f"mask {source} has shape {img.shape}; save it as a grayscale or RGB PNG")
    return np.clip(gray, 0.0, 1.0)


def _read_image(path: Path) -> np.ndarray:
    # imdecode of the raw bytes, unlike imread, handles any path encoding.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise InputError(f"cannot read mask image {path} ({err.strerror or err}); check the file") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise InputError(
            f"cannot decode mask image {path}; save it as {'/'.join(s[1:] for s in IMAGE_SUFFIXES)}"
        )
    return img


def binarize_mask(
    gray: np.ndarray, size_hw: tuple[int, int], threshold: float, invert: bool, kernel: np.ndarray | None
) -> np.ndarray:
    """[H, W] float gray at any size -> [h, w] bool at size_hw (steps 2-4 above; `kernel` from dilation_kernel)."""
    h, w = size_hw
    if gray.shape != (h, w):
        shrink = h <= gray.shape[0] and w <= gray.shape[1]
        gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    binary = gray > threshold
    if invert:
        binary = ~binary
    if kernel is not None:
        binary = cv2.dilate(binary.astype(np.uint8), kernel).astype(bool)
    return binary


def dilation_kernel(dilation_px: int) -> np.ndarray | None:
    """The elliptical structuring element that grows a mask by `dilation_px` pixels (None for 0)."""
    if dilation_px <= 0:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation_px + 1, 2 * dilation_px + 1))


def _list_images(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _warn_aspect(path: Path, src_hw: tuple[int, int], size_hw: tuple[int, int]) -> None:
    src_aspect = src_hw[1] / src_hw[0]
    dst_aspect = size_hw[1] / size_hw[0]
    if abs(src_aspect / dst_aspect - 1) > _ASPECT_WARN:
        logger.warning(
            "mask %s is %dx%d but the video is %dx%d: the aspect ratio differs, the mask is stretched",
            path, src_hw[1], src_hw[0], size_hw[1], size_hw[0],
        )  # fmt: skip


def _too_short(path: Path, kind: str, have: int, need: int) -> InputError:
    return InputError(
        f"mask {kind} {path} has {have} frames but the video uses {need}; give a mask with at least {need} "
        "frames, or a single image for a mask that is the same in every frame"
    )


def load_mask(
    path: str | os.PathLike,
    num_frames: int,
    size_hw: tuple[int, int],
    threshold: float = 0.5,
    invert: bool = False,
    dilation_px: int = 0,
) -> np.ndarray:
    """Load an edit mask as bool [F, H, W] (True = edit) for a video of `num_frames` at `size_hw`.

    Args:
        path: an image (same mask for every frame), a video, or a folder of images
            (natural name order: f2.png before f10.png; other files ignored).
        num_frames: frames of the (already trimmed) video; extra mask frames are dropped.
        size_hw: (height, width) of the video the mask applies to.
        threshold: a pixel is "edit" where its gray value in [0, 1] is > threshold.
        invert: swap edit and keep (for masks drawn black = edit).
        dilation_px: grow the edit region by this many pixels.

    Raises:
        InputError: missing/unreadable path, empty folder, too few mask frames, a mask
            that selects nothing, or one that selects every pixel of every frame.
    """
    path = Path(path)
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"mask threshold {threshold} is outside [0, 1); use e.g. 0.5")
    if dilation_px < 0:
        raise InputError(f"mask dilation {dilation_px} px is negative; use 0 or more")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    h, w = size_hw
    kernel = dilation_kernel(dilation_px)

    def binarize(gray: np.ndarray) -> np.ndarray:
        return binarize_mask(gray, (h, w), threshold, invert, kernel)

    if not path.exists():
        raise InputError(f"mask {path} does not exist; check the path")
    if path.is_dir():
        files = _list_images(path)
        if not files:
            raise InputError(
                f"mask folder {path} has no images ({', '.join(IMAGE_SUFFIXES)}); put one image per frame in it"
            )
        if len(files) < num_frames:
            raise _too_short(path, "folder", len(files), num_frames)
        grays = [_to_unit_gray(_read_image(f), str(f)) for f in files[:num_frames]]
        _warn_aspect(path, grays[0].shape, (h, w))
        mask = np.stack([binarize(g) for g in grays])
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        gray = _to_unit_gray(_read_image(path), str(path))
        _warn_aspect(path, gray.shape, (h, w))
        mask = np.repeat(binarize(gray)[None], num_frames, axis=0)
    else:
        clip = read_video(path, max_frames=num_frames)
        if clip.num_frames < num_frames:
            raise _too_short(path, "video", clip.num_frames, num_frames)
        _warn_aspect(path, (clip.height, clip.width), (h, w))
        # RGB frames: reverse channels so the BGR luma weights apply to the right colours.
        mask = np.stack([binarize(_to_unit_gray(f[..., ::-1], str(path))) for f in clip.frames])

    how = f"threshold {threshold}" + (", inverted" if invert else "")
    if not mask.any():
        raise InputError(
            f"mask {path} is empty ({how}): nothing to edit; check --mask-threshold/--mask-invert (white = edit)"
        )
    if mask.all():
        raise InputError(
            f"mask {path} covers the whole video ({how}, dilation {dilation_px} px): nothing is kept; "
            "use a text-to-video tool or fix the mask (white = edit, black = keep)"
        )
    return mask
