"""What `hetcache mask` is asked to do, with the command's defaults (no heavy imports: the CLI reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_CHUNK_FRAMES", "DEFAULT_TRACKER", "MaskJob"]

DEFAULT_TRACKER = "facebook/sam2.1-hiera-tiny"
DEFAULT_CHUNK_FRAMES = 16


@dataclass
class MaskJob:
    r"""
    One mask to make.

    Args:
        video (`str`): The clip the mask is for.
        output (`str`, *optional*): A video file (`.mp4`, `.mkv`, ...: lossless) or a folder name for one PNG
            per frame; default `<video stem>_mask.mp4` beside the video.
        boxes (`list[str]`): Box keyframes `x0,y0,x1,y1[@FRAME]` (source pixels); tracked by SAM 2 with `track`.
        points (`list[str]`): Clicks on the object `x,y[@FRAME]`, tracked by SAM 2.
        negatives (`list[str]`): Clicks off the object `x,y[@FRAME]`, tracked by SAM 2.
        track (`bool`, defaults to `False`): Track the boxes with SAM 2 instead of interpolating them.
        tracker (`str`, defaults to `"facebook/sam2.1-hiera-tiny"`): SAM 2 folder or hub id in the local cache.
        chunk_frames (`int`, defaults to `16`): Frames prepared for the tracker at a time.
        device (`str`, defaults to `"auto"`): Tracker device: `auto`, `cpu`, `cuda` or `cuda:N`.
        dtype (`str`, defaults to `"auto"`): Tracker dtype; `auto` = bfloat16 on CUDA, float32 on CPU.
        dilate_px (`int`, defaults to `0`): Grow the mask by this many pixels.
        hull (`bool`, defaults to `False`): Replace each frame's mask by its convex hull.
        as_box (`bool`, defaults to `False`): Replace each frame's mask by its bounding box.
        invert (`bool`, defaults to `False`): Swap edit and keep.
        preview (`str`, *optional*): Also write the clip with the mask tinted over it (an MP4).
        overwrite (`bool`, defaults to `False`): Replace existing outputs.
    """

    video: str
    output: str | None = None
    boxes: list[str] = field(default_factory=list)
    points: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    track: bool = False
    tracker: str = DEFAULT_TRACKER
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    device: str = "auto"
    dtype: str = "auto"
    dilate_px: int = 0
    hull: bool = False
    as_box: bool = False
    invert: bool = False
    preview: str | None = None
    overwrite: bool = False

    @property
    def uses_tracker(self) -> bool:
        """Clicks are always tracked; boxes only with `track`."""
        return bool(self.points or self.negatives or self.track)
